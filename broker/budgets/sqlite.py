"""Reservations in the SQLite ledger's file: budgets that hold across threads and processes of one machine.

Two tables beside the ledger's, created here (``CREATE ... IF NOT EXISTS``):

    budget_totals(key, settled)                     settled picodollars per limit and period
    budget_reservations(id, key, amount, expires_at)  one row per limit a reservation holds

A reservation is one ``BEGIN IMMEDIATE`` transaction (the file's write lock, so processes
take turns): for each hold, ``INSERT ... SELECT ... WHERE settled + live reservations +
amount <= cap``; if any hold inserts nothing the transaction rolls back.  Live means
``expires_at`` (Unix seconds, this machine's clock) is still ahead.  Settling deletes the
reservation's rows and adds the cost to its keys' settled spend in one transaction.  Money is
integer picodollars, as in the ledger (a limit up to about $9 million per period).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from broker.errors import MeteringError
from broker.policy.budget import Standing

from .store import SWEEP_AFTER_LEASES, Hold, Outcome, Pool, pico, usd

__all__ = ["SQLiteReservations"]

log = logging.getLogger("llama_broker.budgets")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS budget_totals (key TEXT PRIMARY KEY, settled INTEGER NOT NULL DEFAULT 0, "
    "created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS budget_reservations (id TEXT NOT NULL, key TEXT NOT NULL, amount INTEGER NOT NULL, "
    "expires_at REAL NOT NULL, PRIMARY KEY (id, key))",
    "CREATE INDEX IF NOT EXISTS budget_reservations_live ON budget_reservations (key, expires_at)",
)
_LIVE = "COALESCE((SELECT SUM(r.amount) FROM budget_reservations r WHERE r.key = t.key AND r.expires_at > ?), 0)"
_HOLD = (
    "INSERT INTO budget_reservations (id, key, amount, expires_at) "
    f"SELECT ?, t.key, ?, ? FROM budget_totals t WHERE t.key = ? AND (? IS NULL OR t.settled + {_LIVE} + ? <= ?)"
)


class SQLiteReservations:
    """A reservation store in one SQLite file (WAL), usually the ledger's."""

    blocking = True

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0, pool_size: int = 4,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.clock = clock
        self._known: set[str] = set()
        self._swept_at = 0.0
        self._pool: Pool[sqlite3.Connection] = Pool(self._connect, lambda c: c.close(), pool_size)
        with self._errors("create its tables"), self._pool.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        deadline = time.monotonic() + self.busy_timeout_s
        while True:  # switching to WAL takes a lock the busy handler does not always wait for
            try:
                db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.01)
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _errors(self, action: str) -> _Errors:
        return _Errors(f"the budget store in {self.path} could not {action}")

    # ------------------------------------------------------------------ the protocol

    def ensure(self, key: str, seed: Callable[[], Decimal]) -> None:
        if key in self._known:
            return
        with self._errors("create a period row"), self._pool.connection() as db:
            present = db.execute("SELECT 1 FROM budget_totals WHERE key = ?", (key,)).fetchone()
            if present is None:
                db.execute("INSERT OR IGNORE INTO budget_totals (key, settled, created_at) VALUES (?, ?, ?)",
                           (key, pico(seed()), self.clock()))
        if len(self._known) > 100_000:
            self._known.clear()
        self._known.add(key)

    def reserve(self, reservation_id: str, holds: Sequence[Hold], lease_s: float) -> Outcome:
        keys = [h.key for h in holds]
        with self._errors("reserve"), self._pool.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self.clock()
                self._sweep(db, now, lease_s)
                seen = self._read(db, keys, now)
                expires = now + lease_s
                for h in holds:
                    cap = None if h.cap is None else pico(h.cap, up=False)
                    amount = pico(h.amount)
                    inserted = db.execute(_HOLD, (reservation_id, amount, expires, h.key, cap, now, amount, cap))
                    if inserted.rowcount != 1:
                        db.execute("ROLLBACK")
                        return Outcome(False, seen)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return Outcome(True, seen)

    def settle(self, reservation_id: str, keys: Sequence[str], cost: Decimal) -> None:
        amount = pico(cost)
        with self._errors("settle"), self._pool.connection() as db:
            if amount <= 0:
                db.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation_id,))
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation_id,))
                db.executemany("UPDATE budget_totals SET settled = settled + ? WHERE key = ?",
                               [(amount, key) for key in keys])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def renew(self, reservation_ids: Sequence[str], lease_s: float) -> None:
        if not reservation_ids:
            return
        with self._errors("renew leases"), self._pool.connection() as db:
            expires = self.clock() + lease_s
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("UPDATE budget_reservations SET expires_at = ? WHERE id = ?",
                               [(expires, rid) for rid in reservation_ids])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def standing(self, keys: Sequence[str]) -> dict[str, Standing]:
        with self._errors("read"), self._pool.connection() as db:
            return self._read(db, keys, self.clock())

    def close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _read(db: sqlite3.Connection, keys: Sequence[str], now: float) -> dict[str, Standing]:
        marks = ", ".join("?" for _ in keys)
        rows = db.execute(f"SELECT t.key, t.settled, {_LIVE} FROM budget_totals t WHERE t.key IN ({marks})",
                          (now, *keys)).fetchall()
        return {key: Standing(usd(settled), usd(reserved)) for key, settled, reserved in rows}

    def _sweep(self, db: sqlite3.Connection, now: float, lease_s: float) -> None:
        """Delete reservations long expired (they count for nothing already), at most once a lease."""
        if now - self._swept_at < lease_s:
            return
        self._swept_at = now
        gone = db.execute("DELETE FROM budget_reservations WHERE expires_at < ?",
                          (now - SWEEP_AFTER_LEASES * lease_s,)).rowcount
        if gone:
            log.info("deleted %d budget reservations whose process stopped renewing them", gone)


class _Errors:
    """sqlite3 errors as `MeteringError` with one line naming the file and the action."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise MeteringError(f"{self.what}: {exc}") from exc
