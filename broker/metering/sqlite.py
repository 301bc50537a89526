"""SQLite ledger: the embedded default.

The file runs in WAL mode, so readers never block the writer.  Every write takes the
write lock up front (``BEGIN IMMEDIATE``) and waits up to `busy_timeout_s` for it instead of
failing, so several threads and several processes can share one file without losing an
event.  Inserts are ``ON CONFLICT(event_id) DO NOTHING``: a retried batch never counts twice.
An event the file refuses (usage out of bounds, an integer beyond 64 bits, text that cannot
be encoded) goes to the ``usage_dead_letter`` table in the same transaction, and the rest of
its batch commits (`broker.metering.deadletter`).  Database errors are `MeteringError`.

Exact money: costs are stored as integer picodollars (`cost_picousd`, 1e-12 USD) and summed
in SQL as two integer sums (whole micro-dollars and the picodollar remainder), so a total is
exact and cannot overflow SQLite's 64-bit integers.  Timestamps are UTC text in one fixed
format (``2025-01-31T23:59:59.000000Z``), which sorts as time and gives day and month as
prefixes.  Tags are JSON text with sorted keys.
"""

from __future__ import annotations

import json
import logging
import operator
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.errors import MeteringError
from broker.metering.deadletter import DeadLetter, isolate, log_refused, reason_of, screen, spill_dead_letters
from broker.metering.events import UsageEvent, tags_json, utc_text
from broker.metering.paths import data_dir
from broker.metering.query import (
    REPLAY_COLUMNS,
    REPLAY_KEYS,
    Dimension,
    filter_equalities,
    parse_group_by,
    tags_label,
    tidy_decimal,
    to_picousd,
    utc,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SQLiteLedger"]

log = logging.getLogger("llama_broker.metering")

SCHEMA_VERSION = 4  # v2 added usage_dead_letter; v3 needs, decision_id, energy_j, energy_attributed; v4 move
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS usage_events (
        event_id            TEXT PRIMARY KEY,
        request_id          TEXT NOT NULL,
        attempt             INTEGER NOT NULL,
        tenant              TEXT NOT NULL,
        tags                TEXT NOT NULL DEFAULT '{}',
        model               TEXT NOT NULL,
        provider            TEXT NOT NULL,
        region              TEXT,
        jurisdiction        TEXT NOT NULL,
        model_id            TEXT NOT NULL,
        route_id            TEXT NOT NULL,
        input_tokens        INTEGER NOT NULL,
        output_tokens       INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        usage_estimated     INTEGER NOT NULL,
        cost_picousd        INTEGER,
        price_version       TEXT,
        latency_ms          REAL,
        ttft_ms             REAL,
        status              TEXT NOT NULL,
        error_kind          TEXT,
        ts                  TEXT NOT NULL,
        policy_version      TEXT NOT NULL,
        prompt_text         TEXT,
        completion_text     TEXT,
        needs               TEXT,
        decision_id         TEXT,
        energy_j            REAL,
        energy_attributed   INTEGER,
        move                TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS usage_events_tenant_ts ON usage_events (tenant, ts)",
    "CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts)",
    """
    CREATE TABLE IF NOT EXISTS usage_dead_letter (
        event_id    TEXT PRIMARY KEY,
        event       TEXT NOT NULL,
        reason      TEXT NOT NULL,
        ts          TEXT NOT NULL
    )
    """,
)

#: Indexes on columns added after v1 (made once those columns exist).  `usage_events_failed` finds the
#: attempt before a retry written in an earlier batch (attempts follow failed ones); `usage_events_unsettled`
#: holds the later attempts whose move is not known (rows from before v4), which reports window.
_LATER_INDEXES = (
    "CREATE INDEX IF NOT EXISTS usage_events_failed ON usage_events (request_id, attempt) WHERE status = 'error'",
    "CREATE INDEX IF NOT EXISTS usage_events_unsettled ON usage_events (request_id) "
    "WHERE attempt > 1 AND move IS NULL",
)

#: The columns an event's attributes of the same name fill as they are (read in one `attrgetter` call);
#: `_row` appends the five converted ones (`_CONVERTED`).
_PLAIN = (
    "event_id", "request_id", "attempt", "tenant", "model", "provider", "region", "jurisdiction", "model_id",
    "route_id", "input_tokens", "output_tokens", "cached_input_tokens", "price_version", "latency_ms", "ttft_ms",
    "status", "error_kind", "policy_version", "prompt_text", "completion_text", "needs", "decision_id", "energy_j",
)
_CONVERTED = ("tags", "usage_estimated", "cost_picousd", "ts", "energy_attributed", "move")
_plain_values = operator.attrgetter(*_PLAIN)
_INSERT = (
    f"INSERT INTO usage_events ({', '.join(_PLAIN + _CONVERTED)}) "
    f"VALUES ({', '.join('?' * (len(_PLAIN) + len(_CONVERTED)))}) ON CONFLICT(event_id) DO NOTHING"
)

#: Columns added to `usage_events` after v1, with their types: a v1 or v2 file gains them on open.
_ADDED_COLUMNS = (
    ("needs", "TEXT"),
    ("decision_id", "TEXT"),
    ("energy_j", "REAL"),
    ("energy_attributed", "INTEGER"),
    ("move", "TEXT"),
)

_INSERT_DEAD = (
    "INSERT INTO usage_dead_letter (event_id, event, reason, ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(event_id) DO NOTHING"
)

#: What each aggregated column sums, in `_to_row` order.
_METRIC_TERMS = (
    "1", "input_tokens", "output_tokens", "cached_input_tokens",
    "cost_picousd / 1000000", "cost_picousd % 1000000",
    "cost_picousd IS NULL", "usage_estimated", "status = 'error'",
    # energy: joules measured, and the output tokens of the events that have a figure
    "energy_j", "CASE WHEN energy_j IS NOT NULL THEN output_tokens END",
    # requests (first attempts), attempts after the first, and the usage whose price was unknown
    "attempt = 1", "attempt > 1",
    "CASE WHEN cost_picousd IS NULL THEN input_tokens END",
    "CASE WHEN cost_picousd IS NULL THEN output_tokens END",
    # attempts after the first, told apart when written (`move`), and those whose move is not known
    "move = 'retry'", "move = 'failover'", "attempt > 1 AND move IS NULL",
)
_METRICS_SQL = ", ".join(f"SUM({term})" for term in _METRIC_TERMS)
#: A group-by over the whole table sums into this temporary table, one row per group (``INSERT ... ON
#: CONFLICT DO UPDATE``): one look-up in a small B-tree per event, where ``GROUP BY`` would sort every
#: event first (2-3x slower over 1M events).  A group value that is NULL is keyed as ``x''`` (no
#: dimension yields a blob); each sum adds like ``SUM``, skipping NULLs.
_GROUPS = "temp.report_groups"
_GROUPS_ADD = ", ".join(f"m{i} = coalesce(m{i} + excluded.m{i}, m{i}, excluded.m{i})"
                        for i in range(len(_METRIC_TERMS)))
#: Attempts after the first whose move was not recorded (rows from before v4, or whose attempt
#: before was not found at write), told apart by a window: the same route as the attempt before
#: (a retry) or another (a failover).  Only the requests holding such an attempt are windowed.
_MOVES_SQL = (
    "WITH multi AS (SELECT DISTINCT request_id FROM usage_events WHERE attempt > 1 AND move IS NULL), "
    "tried AS (SELECT *, LAG(route_id) OVER (PARTITION BY request_id ORDER BY attempt) AS prev_route "
    "FROM usage_events WHERE request_id IN (SELECT request_id FROM multi)) "
    "SELECT {select}SUM(prev_route = route_id), SUM(prev_route <> route_id) FROM tried{where}"
)


def _refused(exc: BaseException) -> bool:
    """Whether an insert failed because of the row's values (not the database itself)."""
    if isinstance(
        exc,
        (OverflowError, UnicodeError, TypeError, sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError),
    ):
        return True
    return isinstance(exc, sqlite3.ProgrammingError) and str(exc).startswith("Error binding parameter")


def ts_text(value: datetime) -> str:
    """UTC text in the stored format (naive values are taken to be UTC)."""
    return utc_text(utc(value))


def _row(e: UsageEvent) -> tuple[Any, ...]:
    """The event's values in `_INSERT` order: `_PLAIN`, then `_CONVERTED`."""
    cost, attributed = e.cost_usd, e.energy_attributed
    return (
        *_plain_values(e),
        tags_json(e.tags),
        1 if e.usage_estimated else 0,
        None if cost is None else to_picousd(cost),
        utc_text(e.timestamp),
        None if attributed is None else int(attributed),
        None,  # move: filled in by `SQLiteLedger._settle_moves` for attempts after the first
    )


def picousd_sum(micro: int | None, pico_rest: int | None) -> Decimal | None:
    """Rebuild an exact Decimal from the two integer sums (None when every cost was unknown)."""
    if micro is None:
        return None
    with localcontext() as ctx:
        ctx.prec = 80
        return tidy_decimal(Decimal(micro).scaleb(-6) + Decimal(pico_rest or 0).scaleb(-12))


def _settle_moves(db: sqlite3.Connection, rows: list[tuple[UsageEvent, tuple[Any, ...]]]
                  ) -> list[tuple[UsageEvent, tuple[Any, ...]]]:
    """Rows with `move` set on each later attempt whose attempt before is known: ``retry`` (same route) or
    ``failover``.  The attempt before is looked for in the batch, then among the failed attempts on file;
    where neither has it, `move` stays NULL and reports window that attempt (`_MOVES_SQL`)."""
    later = [i for i, (e, _) in enumerate(rows) if e.attempt > 1]
    if not later:
        return rows
    routes = {(e.request_id, e.attempt): e.route_id for e, _ in rows}
    missing = sorted({rows[i][0].request_id for i in later if (rows[i][0].request_id, rows[i][0].attempt - 1)
                      not in routes})
    for start in range(0, len(missing), 500):
        part = missing[start : start + 500]
        found = db.execute(
            "SELECT request_id, attempt, route_id FROM usage_events INDEXED BY usage_events_failed "
            f"WHERE status = 'error' AND request_id IN ({', '.join('?' * len(part))})",
            part,
        )
        for request_id, attempt, route_id in found:
            routes.setdefault((request_id, attempt), route_id)
    out = list(rows)
    for i in later:
        event, row = rows[i]
        before = routes.get((event.request_id, event.attempt - 1))
        if before is not None:
            out[i] = (event, (*row[:-1], "retry" if before == event.route_id else "failover"))
    return out


def _dimension_sql(dim: Dimension, params: list[Any]) -> str:
    if dim.tag_key is not None:
        if '"' in dim.tag_key:
            params.append(dim.tag_key)
            return "(SELECT value FROM json_each(tags) WHERE key = ?)"
        params.append(f'$."{dim.tag_key}"')
        return "json_extract(tags, ?)"
    return {"day": "substr(ts, 1, 10)", "month": "substr(ts, 1, 7)", "tag": "tags"}.get(dim.key, dim.key)


class SQLiteLedger:
    """A usage ledger in one SQLite file (see the module docstring for the guarantees)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.url = "sqlite://" + (self.path if self.path == ":memory:" else str(Path(self.path).resolve()))
        self.busy_timeout_s = busy_timeout_s
        self.spill_dir: Path | None = None if self.path == ":memory:" else Path(self.path).resolve().parent
        self._lock = threading.RLock()
        self._closed = False
        with self._errors("open"):
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                self._setup(synchronous)
            except BaseException:
                self._db.close()
                raise

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Database errors as `MeteringError` (one line; the cause keeps the original)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise MeteringError(f"the SQLite ledger {self.path} could not {action}: {reason_of(exc)}") from exc

    def _setup(self, synchronous: str) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        if self.path != ":memory:":
            deadline = time.monotonic() + self.busy_timeout_s
            while True:  # switching to WAL takes a lock the busy handler does not always wait for
                try:
                    db.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        db.execute(f"PRAGMA synchronous = {synchronous}")
        # reports: their group tables and sorts in memory, and a page cache of 32 MiB rather than 2
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute("PRAGMA cache_size = -32768")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise MeteringError(
                f"the SQLite ledger {self.path} has schema v{version}; this broker knows v{SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    db.execute(statement)
                present = {row[1] for row in db.execute("PRAGMA table_info(usage_events)")}
                for column, kind in _ADDED_COLUMNS:  # an older file: CREATE ... IF NOT EXISTS kept its table
                    if column not in present:
                        db.execute(f"ALTER TABLE usage_events ADD COLUMN {column} {kind}")
                for statement in _LATER_INDEXES:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ writes

    def write(self, events: Sequence[UsageEvent]) -> int:
        if not events:
            return 0
        rows, refused = screen(events, _row)
        with self._lock, self._errors("write"):
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = _settle_moves(db, rows)
                inserted, rejected = isolate(rows, self._insert_part, _refused)
                refused += rejected
                where = self._set_aside(db, refused) if refused else ""
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        log_refused(refused, where)
        return inserted

    def _insert_part(self, rows: list[tuple[Any, ...]]) -> int:
        """Insert `rows` in a savepoint of the open transaction: all of them or none."""
        db = self._db
        before = db.total_changes
        db.execute("SAVEPOINT part")
        try:
            db.executemany(_INSERT, rows)
        except BaseException:
            db.execute("ROLLBACK TO part")
            db.execute("RELEASE part")
            raise
        db.execute("RELEASE part")
        return db.total_changes - before

    def _set_aside(self, db: sqlite3.Connection, entries: Sequence[DeadLetter]) -> str:
        """Dead letters into their table, in the open transaction; a spill file if it refuses them."""
        db.execute("SAVEPOINT dead")
        try:
            db.executemany(
                _INSERT_DEAD, [(e.event_id, e.event, e.reason, ts_text(e.timestamp)) for e in entries]
            )
        except Exception as exc:
            db.execute("ROLLBACK TO dead")
            db.execute("RELEASE dead")
            path = spill_dead_letters(self.spill_dir or data_dir(), entries)
            log.error("the usage_dead_letter table refused a write (%s); written to %s", reason_of(exc), path)
            return str(path)
        db.execute("RELEASE dead")
        return "usage_dead_letter"

    def set_aside(self, entries: Sequence[DeadLetter]) -> None:
        """Keep dead letters made outside `write` (unreadable spill lines)."""
        if not entries:
            return
        with self._lock, self._errors("write"):
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                where = self._set_aside(db, entries)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        log_refused(entries, where)

    def dead_letters(self) -> list[DeadLetter]:
        """The events this ledger set aside, oldest first."""
        with self._lock, self._errors("read"):
            fetched = (
                self._connection()
                .execute("SELECT event_id, event, reason, ts FROM usage_dead_letter ORDER BY ts, event_id")
                .fetchall()
            )
        return [DeadLetter(r[0], r[1], r[2], datetime.strptime(r[3], _TS_FORMAT).replace(tzinfo=timezone.utc))
                for r in fetched]

    # ------------------------------------------------------------------ reads

    def spend(self, tenant: str, since: datetime, until: datetime | None = None) -> Decimal:
        sql = (
            "SELECT SUM(cost_picousd / 1000000), SUM(cost_picousd % 1000000) FROM usage_events "
            "WHERE tenant = ? AND ts >= ?"
        )
        params: list[Any] = [tenant, ts_text(since)]
        if until is not None:
            sql += " AND ts < ?"
            params.append(ts_text(until))
        with self._lock, self._errors("read"):
            micro, rest = self._connection().execute(sql, params).fetchone()
        return picousd_sum(micro, rest) or Decimal(0)

    def aggregate(self, *, group_by: Sequence[str], filters: Any) -> list[dict[str, Any]]:
        dims = parse_group_by(group_by)
        params: list[Any] = []
        select = [_dimension_sql(d, params) for d in dims]
        where, where_params = self._where(filters)
        # Without a tenant or time filter, reading the table in order and sorting once beats
        # walking the (tenant, ts) index with a random table lookup per row (2-3x on 1M rows).
        indexed = any(getattr(filters, k, None) is not None for k in ("tenant", "since", "until"))
        source = "usage_events" if indexed else "usage_events NOT INDEXED"
        sql = f"SELECT {', '.join([*select, _METRICS_SQL])} FROM {source}{where}"
        if dims:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))
        with self._lock, self._errors("read"):
            if dims and not indexed:
                fetched = self._sum_groups(select, where, [*params, *where_params])
            else:
                fetched = self._connection().execute(sql, [*params, *where_params]).fetchall()
            n = len(dims)
            moves = self._moves(dims, filters) if any(r[n] and r[n + 17] for r in fetched) else {}
        rows = []
        for r in fetched:
            if r[n]:
                row = self._to_row(dims, r)
                retries, failovers = moves.get(tuple(r[:n]), (0, 0))
                row["retries"], row["failovers"] = (r[n + 15] or 0) + retries, (r[n + 16] or 0) + failovers
                rows.append(row)
        return rows

    def _sum_groups(self, select: Sequence[str], where: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A whole-table group-by through `_GROUPS` (rows as ``GROUP BY`` gives them, in group order)."""
        db = self._connection()
        keys = [f"d{i}" for i in range(len(select))]
        sums = [f"m{i}" for i in range(len(_METRIC_TERMS))]
        db.execute(f"DROP TABLE IF EXISTS {_GROUPS}")
        db.execute(f"CREATE TABLE {_GROUPS} ({', '.join(keys + sums)}, PRIMARY KEY ({', '.join(keys)})) WITHOUT ROWID")
        try:
            values = ", ".join([f"ifnull({expr}, x'')" for expr in select] + list(_METRIC_TERMS))
            db.execute(
                f"INSERT INTO {_GROUPS} SELECT {values} FROM usage_events NOT INDEXED{where or ' WHERE true'} "
                f"ON CONFLICT DO UPDATE SET {_GROUPS_ADD}",
                params,
            )
            back = ", ".join(f"nullif({k}, x'')" for k in keys)
            order = ", ".join(str(i + 1) for i in range(len(keys)))
            return db.execute(f"SELECT {back}, {', '.join(sums)} FROM {_GROUPS} ORDER BY {order}").fetchall()
        finally:
            db.execute(f"DROP TABLE IF EXISTS {_GROUPS}")

    def _moves(self, dims: Sequence[Dimension], filters: Any) -> dict[tuple[Any, ...], tuple[int, int]]:
        """Retries and failovers per group among the attempts whose move was not recorded (`_MOVES_SQL`)."""
        params: list[Any] = []
        select = "".join(_dimension_sql(d, params) + ", " for d in dims)
        where, where_params = self._where(filters, ("attempt > 1", "move IS NULL"))
        sql = _MOVES_SQL.format(select=select, where=where)
        if dims:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))
        fetched = self._connection().execute(sql, [*params, *where_params]).fetchall()
        n = len(dims)
        return {tuple(r[:n]): (int(r[n] or 0), int(r[n + 1] or 0)) for r in fetched}

    def _where(self, filters: Any, extra: Sequence[str] = ()) -> tuple[str, list[Any]]:
        clauses, params = list(extra), []
        for column, value in filter_equalities(filters):
            clauses.append(f"{column} = ?")
            params.append(value)
        for key, value in getattr(filters, "tags", ()):
            clauses.append("(SELECT value FROM json_each(tags) WHERE key = ?) = ?")
            params += [key, value]
        if getattr(filters, "since", None) is not None:
            clauses.append("ts >= ?")
            params.append(ts_text(filters.since))
        if getattr(filters, "until", None) is not None:
            clauses.append("ts < ?")
            params.append(ts_text(filters.until))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    @staticmethod
    def _to_row(dims: Sequence[Dimension], r: Sequence[Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for i, d in enumerate(dims):
            row[d.key] = tags_label(json.loads(r[i])) if d.key == "tag" else r[i]
        n = len(dims)
        attempts, tin, tout, tcached, micro, rest, unknown, estimated, errors = r[n : n + 9]
        requests, _extra, unpriced_in, unpriced_out = r[n + 11 : n + 15]
        row.update(
            calls=requests or 0,
            attempts=attempts,
            retries=0,
            failovers=0,
            input_tokens=tin or 0,
            output_tokens=tout or 0,
            cached_input_tokens=tcached or 0,
            cost_usd=picousd_sum(micro, rest),
            unknown_cost_calls=unknown or 0,
            estimated_calls=estimated or 0,
            error_calls=errors or 0,
            unpriced_input_tokens=unpriced_in or 0,
            unpriced_output_tokens=unpriced_out or 0,
        )
        row["energy_j"], row["energy_output_tokens"] = r[n + 9], r[n + 10] or 0
        return row

    def count(self) -> int:
        with self._lock, self._errors("read"):
            return int(self._connection().execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

    def attempts(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Every event's replay facts (no text, no tags), oldest first: what `simulate` replays."""
        clauses, params = [], []
        if since is not None:
            clauses.append("ts >= ?")
            params.append(ts_text(since))
        if until is not None:
            clauses.append("ts < ?")
            params.append(ts_text(until))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {REPLAY_COLUMNS} FROM usage_events{where} ORDER BY ts, request_id, attempt"
        with self._lock, self._errors("read"):
            fetched = self._connection().execute(sql, params).fetchall()
        rows = []
        for r in fetched:
            row = dict(zip(REPLAY_KEYS, r, strict=True))
            pico = row.pop("cost_picousd")
            row["cost_usd"] = None if pico is None else tidy_decimal(Decimal(pico).scaleb(-12))
            ts = datetime.fromisoformat(row["ts"])
            row["ts"] = ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ lifecycle

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"ledger {self.url} is closed")
        return self._db

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"
