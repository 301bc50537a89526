"""Reservations in the PostgreSQL ledger's database: budgets that hold across every host sharing it.

Two tables and one function beside the ledger's, created here under an advisory lock:

    budget_totals(key, settled NUMERIC)                          settled USD per limit and period
    budget_reservations(id, key, amount NUMERIC, expires_at)     one row per limit a reservation holds
    budget_reserve_v1(id, keys, amounts, caps, lease)            one reservation, one round trip

A reservation is one call of that function, so one transaction.  It first locks the call's
`budget_totals` rows in key order (``SELECT ... ORDER BY key FOR UPDATE``: no deadlock between
calls sharing limits); its next statements take fresh snapshots (a volatile PL/pgSQL function
under READ COMMITTED), so they see every reservation committed before the lock was granted: it
computes each key's settled spend plus live reservations and inserts all the holds only if every
capped one fits (``INSERT ... SELECT ... WHERE``), returning what it saw.  Live means
``expires_at`` is after the server's ``clock_timestamp()``: leases use the database's clock,
never a host's.  Settling locks the same rows, deletes the reservation and
adds the cost, in one statement.  The store's sessions commit with ``synchronous_commit = off``:
a commit is visible to all at once, but the last fraction of a second of reservations and
settlements may be lost if the database server itself crashes.
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
# Reserving, as one function call (one round trip, its own transaction).  The first statement locks
# the call's rows in key order (no deadlock between calls sharing limits); each later statement of a
# volatile function takes a fresh snapshot, so the check sees every reservation committed before the
# lock was granted, and the insert is conditional on it.
_RESERVE_FUNCTION = """
CREATE OR REPLACE FUNCTION budget_reserve_v1(p_id text, p_keys text[], p_amounts numeric[], p_caps numeric[],
                                             p_lease double precision)
RETURNS TABLE (out_key text, out_settled numeric, out_reserved numeric, out_taken boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    row record;
    fits boolean := true;
    seen integer := 0;
    keys text[] := '{}';
    settled numeric[] := '{}';
    reserved numeric[] := '{}';
BEGIN
    PERFORM 1 FROM budget_totals t WHERE t.key = ANY(p_keys) ORDER BY t.key FOR UPDATE;
    FOR row IN
        SELECT h.key AS k, h.amount AS a, h.cap AS c, t.settled AS s,
               COALESCE((SELECT SUM(r.amount) FROM budget_reservations r
                         WHERE r.key = h.key AND r.expires_at > clock_timestamp()), 0) AS r
        FROM unnest(p_keys, p_amounts, p_caps) AS h(key, amount, cap) JOIN budget_totals t ON t.key = h.key
    LOOP
        seen := seen + 1;
        keys := keys || row.k; settled := settled || row.s; reserved := reserved || row.r;
        fits := fits AND (row.c IS NULL OR row.s + row.r + row.a <= row.c);
    END LOOP;
    fits := fits AND seen = cardinality(p_keys);
    INSERT INTO budget_reservations (id, key, amount, expires_at)
    SELECT p_id, h.key, h.amount, clock_timestamp() + make_interval(secs => p_lease)
    FROM unnest(p_keys, p_amounts) AS h(key, amount) WHERE fits;
    RETURN QUERY SELECT u.k, u.s, u.r, fits FROM unnest(keys, settled, reserved) AS u(k, s, r);
END
$fn$
"""
_RESERVE = "SELECT out_key, out_settled, out_reserved, out_taken FROM budget_reserve_v1(%s, %s, %s, %s, %s)"
_LIVE = ("COALESCE((SELECT SUM(r.amount) FROM budget_reservations r "
         "WHERE r.key = t.key AND r.expires_at > clock_timestamp()), 0)")
_READ = f"SELECT t.key, t.settled, {_LIVE} FROM budget_totals t WHERE t.key = ANY(%s)"
# one statement, so its own transaction: the rows locked in key order, the reservation gone, the cost added
_SETTLE = """
WITH locked AS (SELECT key FROM budget_totals WHERE key = ANY(%(keys)s) ORDER BY key FOR UPDATE),
gone AS (DELETE FROM budget_reservations WHERE id = %(id)s)
UPDATE budget_totals t SET settled = t.settled + %(cost)s FROM locked WHERE t.key = locked.key
"""


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
            for statement in (*_SCHEMA, _RESERVE_FUNCTION):
                conn.execute(statement)

    def _connect(self) -> Any:
        conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout_s)
        conn.execute("SET TIME ZONE 'UTC'")
        # a commit is visible to every instance at once; only its survival of a *server* crash waits
        # for the WAL writer (a fraction of a second), which spares each reservation a disk flush
        conn.execute("SET synchronous_commit = off")
        # the same few statements on every call: prepared on first use and planned once
        conn.prepare_threshold = 0
        conn.execute("SET plan_cache_mode = force_generic_plan")
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
        params = (reservation_id, keys, [h.amount for h in holds], [h.cap for h in holds], lease_s)
        with self._session("reserve") as conn:
            self._sweep(conn, lease_s)
            rows = conn.execute(_RESERVE, params).fetchall()
        taken = bool(rows) and bool(rows[0][3])
        return Outcome(taken, {key: Standing(Decimal(s), Decimal(r)) for key, s, r, _ in rows})

    def settle(self, reservation_id: str, keys: Sequence[str], cost: Decimal) -> None:
        with self._session("settle") as conn:
            if cost <= 0:
                conn.execute("DELETE FROM budget_reservations WHERE id = %s", (reservation_id,))
                return
            conn.execute(_SETTLE, {"keys": list(keys), "id": reservation_id, "cost": cost})

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
