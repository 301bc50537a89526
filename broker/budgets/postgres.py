"""Reservations in the PostgreSQL ledger's database: budgets that hold across every host sharing it.

Two tables beside the ledger's, created here under an advisory lock:

    budget_totals(key, settled NUMERIC)                          settled USD per limit and period
    budget_reservations(id, key, amount NUMERIC, expires_at)     one row per limit a reservation holds

A reservation is one transaction of two statements.  The first locks the call's
`budget_totals` rows in key order (``SELECT ... ORDER BY key FOR UPDATE``: no deadlock between
calls sharing limits); the second, whose snapshot therefore sees every reservation committed
before the lock was granted, computes each key's settled spend plus live reservations and
inserts all the holds only if every capped one fits (``INSERT ... SELECT ... WHERE``), returning
what it saw.  Live means ``expires_at`` is after the server's ``clock_timestamp()``: leases use
the database's clock, never a host's.  Settling locks the same rows, deletes the reservation and
adds the cost, in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from broker.errors import MeteringError, MissingDependency
from broker.metering.paths import redact
from broker.policy.budget import Standing

from .store import SWEEP_AFTER_LEASES, Hold, Outcome, Pool

__all__ = ["PostgresReservations"]

log = logging.getLogger("llama_broker.budgets")

_SCHEMA_LOCK_KEY = 0x6275646765747331  # "budgets1"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS budget_totals (key TEXT PRIMARY KEY, settled NUMERIC(38, 12) NOT NULL DEFAULT 0, "
    "created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS budget_reservations (id TEXT NOT NULL, key TEXT NOT NULL, "
    "amount NUMERIC(38, 12) NOT NULL, expires_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (id, key))",
    "CREATE INDEX IF NOT EXISTS budget_reservations_live ON budget_reservations (key, expires_at)",
)
_LOCK = "SELECT key FROM budget_totals WHERE key = ANY(%s) ORDER BY key FOR UPDATE"
_LIVE = ("COALESCE((SELECT SUM(r.amount) FROM budget_reservations r "
         "WHERE r.key = t.key AND r.expires_at > clock_timestamp()), 0)")
_RESERVE = f"""
WITH h AS (SELECT * FROM unnest(%(keys)s::text[], %(amounts)s::numeric[], %(caps)s::numeric[]) AS h(key, amount, cap)),
s AS MATERIALIZED (SELECT h.key, h.amount, h.cap, t.settled, {_LIVE} AS reserved
                   FROM h JOIN budget_totals t ON t.key = h.key),
ok AS (SELECT count(*) = %(n)s AND coalesce(bool_and(cap IS NULL OR settled + reserved + amount <= cap), true) AS taken
       FROM s),
ins AS (INSERT INTO budget_reservations (id, key, amount, expires_at)
        SELECT %(id)s, s.key, s.amount, clock_timestamp() + make_interval(secs => %(lease)s) FROM s, ok WHERE ok.taken
        RETURNING 1)
SELECT s.key, s.settled, s.reserved, ok.taken FROM s, ok
"""
_READ = f"SELECT t.key, t.settled, {_LIVE} FROM budget_totals t WHERE t.key = ANY(%s)"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        err = MissingDependency("postgresql budget store", "psycopg", "postgres")
        err.args = ("budgets in a postgresql:// ledger need psycopg: pip install 'llama-broker[postgres]'",)
        raise err from exc
    return psycopg


class PostgresReservations:
    """A reservation store in a PostgreSQL database, usually the ledger's."""

    blocking = True

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout_s: int = 10) -> None:
        self._psycopg = _psycopg()
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._known: set[str] = set()
        self._swept_at = 0.0
        self._pool: Pool[Any] = Pool(self._connect, lambda c: c.close(), pool_size)
        with self._session("create its tables") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            for statement in _SCHEMA:
                conn.execute(statement)

    def _connect(self) -> Any:
        conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout_s)
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    @contextmanager
    def _session(self, action: str) -> Iterator[Any]:
        """A pooled connection; psycopg errors become one-line `MeteringError`s that never show a password."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._psycopg.Error as exc:
            where = redact(self.url)
            raise MeteringError(f"the budget store at {where} could not {action}: {type(exc).__name__}") from exc

    # ------------------------------------------------------------------ the protocol

    def ensure(self, key: str, seed: Callable[[], Decimal]) -> None:
        if key in self._known:
            return
        with self._session("create a period row") as conn:
            present = conn.execute("SELECT 1 FROM budget_totals WHERE key = %s", (key,)).fetchone()
            if present is None:
                conn.execute("INSERT INTO budget_totals (key, settled) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                             (key, seed()))
        if len(self._known) > 100_000:
            self._known.clear()
        self._known.add(key)

    def reserve(self, reservation_id: str, holds: Sequence[Hold], lease_s: float) -> Outcome:
        keys = [h.key for h in holds]
        params = {"keys": keys, "amounts": [h.amount for h in holds], "caps": [h.cap for h in holds],
                  "n": len(holds), "id": reservation_id, "lease": lease_s}
        with self._session("reserve") as conn:
            self._sweep(conn, lease_s)
            with conn.transaction():
                conn.execute(_LOCK, (sorted(keys),))
                rows = conn.execute(_RESERVE, params).fetchall()
        taken = bool(rows) and bool(rows[0][3])
        return Outcome(taken, {key: Standing(Decimal(s), Decimal(r)) for key, s, r, _ in rows})

    def settle(self, reservation_id: str, keys: Sequence[str], cost: Decimal) -> None:
        with self._session("settle") as conn:
            if cost <= 0:
                conn.execute("DELETE FROM budget_reservations WHERE id = %s", (reservation_id,))
                return
            with conn.transaction():
                conn.execute(_LOCK, (sorted(keys),))
                conn.execute("DELETE FROM budget_reservations WHERE id = %s", (reservation_id,))
                conn.execute("UPDATE budget_totals SET settled = settled + %s WHERE key = ANY(%s)", (cost, list(keys)))

    def renew(self, reservation_ids: Sequence[str], lease_s: float) -> None:
        if not reservation_ids:
            return
        with self._session("renew leases") as conn:
            conn.execute("UPDATE budget_reservations SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                         "WHERE id = ANY(%s)", (lease_s, sorted(reservation_ids)))

    def standing(self, keys: Sequence[str]) -> dict[str, Standing]:
        with self._session("read") as conn:
            rows = conn.execute(_READ, (list(keys),)).fetchall()
        return {key: Standing(Decimal(s), Decimal(r)) for key, s, r in rows}

    def close(self) -> None:
        self._pool.close()

    def _sweep(self, conn: Any, lease_s: float) -> None:
        """Delete reservations long expired (they count for nothing already), at most once a lease."""
        now = time.monotonic()
        if now - self._swept_at < lease_s:
            return
        self._swept_at = now
        gone = conn.execute("DELETE FROM budget_reservations WHERE expires_at < clock_timestamp() - "
                            "make_interval(secs => %s)", (SWEEP_AFTER_LEASES * lease_s,)).rowcount
        if gone:
            log.info("deleted %d budget reservations whose process stopped renewing them", gone)
