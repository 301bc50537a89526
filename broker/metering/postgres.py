"""PostgreSQL ledger: one table shared by many broker instances.

Needs the ``postgres`` extra (psycopg 3), imported when a ``postgresql://`` URL is opened.
Costs are ``NUMERIC(38, 12)`` (exact, to the picodollar like the SQLite backend), timestamps
``TIMESTAMPTZ`` read in UTC, tags ``JSONB``.  A batch is written with ``COPY`` into a
temporary staging table of the session, then moved into ``usage_events`` by one ``INSERT ...
SELECT ... ON CONFLICT (event_id) DO NOTHING``, so a retried batch never counts twice (a batch
of 1,000 goes in at about 1.6x the rate of a pipelined ``executemany``).  Schema creation
holds an advisory lock, so instances starting together do not race.  A broken connection is reopened on the next
call, which lets the meter's retry of a failed flush go through once the server is back.

An event the server refuses (a ``NUMERIC`` or ``BIGINT`` overflow, any ``DataError``, text
that cannot be encoded, usage out of bounds) goes to the ``usage_dead_letter`` table in the
same transaction, and the rest of its batch commits (`broker.metering.deadletter`).
Connection and database errors are `MeteringError` with a one-line message that never
shows the URL's password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from broker.errors import MeteringError, MissingDependency
from broker.metering.deadletter import DeadLetter, isolate, log_refused, reason_of, screen, spill_dead_letters
from broker.metering.events import UsageEvent, tags_json
from broker.metering.paths import data_dir, redact
from broker.metering.query import (
    COST_SCALE,
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

__all__ = ["PostgresLedger"]

log = logging.getLogger("llama_broker.metering")

_SCHEMA_LOCK_KEY = 0x6C6C616D61  # "llama": the advisory lock taken while creating the schema
#: v1: the first table (no version recorded); v2 added needs, decision_id, energy_j, energy_attributed
SCHEMA_VERSION = 2
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS ledger_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
)

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS usage_events (
        event_id            TEXT PRIMARY KEY,
        request_id          TEXT NOT NULL,
        attempt             INTEGER NOT NULL,
        tenant              TEXT NOT NULL,
        tags                JSONB NOT NULL DEFAULT '{}'::jsonb,
        model               TEXT NOT NULL,
        provider            TEXT NOT NULL,
        region              TEXT,
        jurisdiction        TEXT NOT NULL,
        model_id            TEXT NOT NULL,
        route_id            TEXT NOT NULL,
        input_tokens        BIGINT NOT NULL,
        output_tokens       BIGINT NOT NULL,
        cached_input_tokens BIGINT NOT NULL,
        usage_estimated     BOOLEAN NOT NULL,
        cost_usd            NUMERIC(38, 12),
        price_version       TEXT,
        latency_ms          DOUBLE PRECISION,
        ttft_ms             DOUBLE PRECISION,
        status              TEXT NOT NULL,
        error_kind          TEXT,
        ts                  TIMESTAMPTZ NOT NULL,
        policy_version      TEXT NOT NULL,
        prompt_text         TEXT,
        completion_text     TEXT,
        needs               TEXT,
        decision_id         TEXT,
        energy_j            DOUBLE PRECISION,
        energy_attributed   BOOLEAN
    )
    """,
    # a table made by an older broker gains the columns added since (v2)
    "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS needs TEXT",
    "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS decision_id TEXT",
    "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS energy_j DOUBLE PRECISION",
    "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS energy_attributed BOOLEAN",
    "CREATE INDEX IF NOT EXISTS usage_events_tenant_ts ON usage_events (tenant, ts)",
    "CREATE INDEX IF NOT EXISTS usage_events_ts ON usage_events (ts)",
    """
    CREATE TABLE IF NOT EXISTS usage_dead_letter (
        event_id    TEXT PRIMARY KEY,
        event       TEXT NOT NULL,
        reason      TEXT NOT NULL,
        ts          TIMESTAMPTZ NOT NULL
    )
    """,
)

_COLUMNS = (
    "event_id, request_id, attempt, tenant, tags, model, provider, region, jurisdiction, model_id, "
    "route_id, input_tokens, output_tokens, cached_input_tokens, usage_estimated, cost_usd, "
    "price_version, latency_ms, ttft_ms, status, error_kind, ts, policy_version, prompt_text, "
    "completion_text, needs, decision_id, energy_j, energy_attributed"
)
#: A batch is copied into this session's staging table (no indexes, no WAL), then moved into
#: `usage_events` by one statement that empties the stage and skips event ids already present.
_STAGE = "usage_events_incoming"
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (LIKE usage_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN"
_MOVE = (
    f"WITH moved AS (DELETE FROM {_STAGE} RETURNING {_COLUMNS}) "
    f"INSERT INTO usage_events ({_COLUMNS}) SELECT {_COLUMNS} FROM moved ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_DEAD = (
    "INSERT INTO usage_dead_letter (event_id, event, reason, ts) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_METRICS_SQL = (
    "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cost_usd), "
    "COUNT(*) FILTER (WHERE cost_usd IS NULL), COUNT(*) FILTER (WHERE usage_estimated), "
    "COUNT(*) FILTER (WHERE status = 'error'), "
    # energy: joules measured, and the output tokens of the events that have a figure
    "SUM(energy_j), SUM(output_tokens) FILTER (WHERE energy_j IS NOT NULL), "
    # requests (first attempts), attempts after the first, and the usage whose price was unknown
    "COUNT(*) FILTER (WHERE attempt = 1), COUNT(*) FILTER (WHERE attempt > 1), "
    "SUM(input_tokens) FILTER (WHERE cost_usd IS NULL), SUM(output_tokens) FILTER (WHERE cost_usd IS NULL)"
)
#: Attempts after the first, told apart: the same route as the attempt before (a retry) or another
#: (a failover).  Only requests with more than one attempt are windowed.
_MOVES_SQL = (
    "WITH multi AS (SELECT DISTINCT request_id FROM usage_events WHERE attempt > 1), "
    "tried AS (SELECT *, LAG(route_id) OVER (PARTITION BY request_id ORDER BY attempt) AS prev_route "
    "FROM usage_events WHERE request_id IN (SELECT request_id FROM multi)) "
    "SELECT {select}COUNT(*) FILTER (WHERE prev_route = route_id), "
    "COUNT(*) FILTER (WHERE prev_route <> route_id) FROM tried WHERE {where}"
)


def _group_key(values: Sequence[Any]) -> tuple[Any, ...]:
    """A group's dimension values as a hashable key (a JSONB tag set as its sorted label)."""
    return tuple(tags_label(v) if isinstance(v, dict) else v for v in values)


def _filter_clauses(filters: Any, params: list[Any]) -> list[str]:
    """The WHERE clauses of a `ReportFilters` (their values appended to `params`)."""
    clauses = []
    for column, value in filter_equalities(filters):
        clauses.append(f"{column} = %s")
        params.append(value)
    for key, value in getattr(filters, "tags", ()):
        clauses.append("(tags ->> %s) = %s")
        params += [key, value]
    if getattr(filters, "since", None) is not None:
        clauses.append("ts >= %s")
        params.append(utc(filters.since))
    if getattr(filters, "until", None) is not None:
        clauses.append("ts < %s")
        params.append(utc(filters.until))
    return clauses


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg.conninfo
        import psycopg.types.json
    except ImportError as exc:
        err = MissingDependency("postgresql ledger", "psycopg", "postgres")
        err.args = ("a postgresql:// ledger needs psycopg: pip install 'llama-broker[postgres]'",)
        raise err from exc
    return psycopg


def _cost(value: Decimal | None) -> Decimal | None:
    # the same rounding as SQLite's picodollars, so both backends agree to the last digit
    return None if value is None else Decimal(to_picousd(value)).scaleb(-COST_SCALE)


def _dimension_sql(dim: Dimension, params: list[Any]) -> str:
    if dim.tag_key is not None:
        params.append(dim.tag_key)
        return "(tags ->> %s)"
    return {
        "day": "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "month": "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM')",
        "tag": "tags",
    }.get(dim.key, dim.key)


def _where(url: str) -> str:
    """``user@host:port/db`` of a URL, for messages (never the password)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return redact(f"{user}{host}{port}{parts.path}")
    except ValueError:
        return "<malformed URL>"


def _row(e: UsageEvent) -> tuple[Any, ...]:
    """The event's values in `_COLUMNS` order, as COPY takes them (tags as JSON text for the JSONB column)."""
    return (
        e.event_id,
        e.request_id,
        e.attempt,
        e.tenant,
        tags_json(e.tags),
        e.model,
        e.provider,
        e.region,
        e.jurisdiction,
        e.model_id,
        e.route_id,
        e.input_tokens,
        e.output_tokens,
        e.cached_input_tokens,
        bool(e.usage_estimated),
        _cost(e.cost_usd),
        e.price_version,
        e.latency_ms,
        e.ttft_ms,
        e.status,
        e.error_kind,
        utc(e.timestamp),
        e.policy_version,
        e.prompt_text,
        e.completion_text,
        e.needs,
        e.decision_id,
        e.energy_j,
        e.energy_attributed,
    )


class PostgresLedger:
    """A usage ledger in a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        self._psycopg = _psycopg()
        self.url = url
        self.spill_dir = None  # spill files go to the data directory
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._conn: Any = None
        self._staged_on: Any = None  # the connection whose session has the staging table
        self._closed = False
        self._password = self._url_password(url)
        try:
            self._psycopg.conninfo.conninfo_to_dict(url)
        except self._psycopg.Error as exc:  # its message repeats the URL: not kept as the cause
            raise MeteringError(f"malformed ledger URL {redact(url)!r}: {self._reason(exc)}") from None
        with self._lock, self._errors("connect"):
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                    self._migrate(conn)
            except BaseException:
                self.close()
                raise

    def _migrate(self, conn: Any) -> None:
        """Create the schema, or bring an older one up to `SCHEMA_VERSION` (under the advisory lock)."""
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT version FROM ledger_schema WHERE id = 1").fetchone()
        version = 1 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise MeteringError(
                f"the PostgreSQL ledger at {_where(self.url)} has schema v{version}; "
                f"this broker knows v{SCHEMA_VERSION}"
            )
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO ledger_schema (id, version) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
            (SCHEMA_VERSION,),
        )

    @staticmethod
    def _url_password(url: str) -> str | None:
        try:
            return urlsplit(url).password or None
        except ValueError:
            return None

    def _reason(self, exc: BaseException) -> str:
        text = redact(reason_of(exc))
        return text.replace(self._password, "***") if self._password else text

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """psycopg errors as `MeteringError`: one line, naming the server, never the password."""
        try:
            yield
        except self._psycopg.Error as exc:
            where = _where(self.url)
            raise MeteringError(f"the PostgreSQL ledger at {where} could not {action}: {self._reason(exc)}") from exc

    def _refused(self, exc: BaseException) -> bool:
        """Whether an insert failed because of the row's values (not the server or the connection)."""
        psycopg = self._psycopg
        return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, OverflowError, UnicodeError, TypeError))

    def _connection(self) -> Any:
        if self._closed:
            raise RuntimeError("ledger is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._psycopg.connect(
                self.url, autocommit=True, connect_timeout=self.connect_timeout_s
            )
            self._conn.execute("SET TIME ZONE 'UTC'")
        return self._conn

    # ------------------------------------------------------------------ writes

    def write(self, events: Sequence[UsageEvent]) -> int:
        if not events:
            return 0
        rows, refused = screen(events, _row)
        with self._lock, self._errors("write"):
            conn = self._connection()
            if self._staged_on is not conn:  # once per connection, outside any transaction that could undo it
                conn.execute(_CREATE_STAGE)
                self._staged_on = conn
            with conn.transaction():
                inserted, rejected = isolate(rows, lambda part: self._insert_part(conn, part), self._refused)
                refused += rejected
                where = self._set_aside(conn, refused) if refused else ""
        log_refused(refused, where)
        return inserted

    @staticmethod
    def _insert_part(conn: Any, rows: list[tuple[Any, ...]]) -> int:
        """Insert `rows` in a savepoint of the open transaction: all of them or none.

        The rows are copied into the staging table, then moved into `usage_events` in one
        statement; a value the server refuses fails the copy or the move, and the savepoint
        takes the staged rows back with it.
        """
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_MOVE)
            return int(cur.rowcount)

    def _set_aside(self, conn: Any, entries: Sequence[DeadLetter]) -> str:
        """Dead letters into their table, in the open transaction; a spill file if it refuses them."""
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT_DEAD, [(e.event_id, e.event, e.reason, e.timestamp) for e in entries])
        except (self._psycopg.DataError, self._psycopg.IntegrityError, self._psycopg.ProgrammingError) as exc:
            path = spill_dead_letters(data_dir(), entries)
            log.error("the usage_dead_letter table refused a write (%s); written to %s", self._reason(exc), path)
            return str(path)
        return "usage_dead_letter"

    def set_aside(self, entries: Sequence[DeadLetter]) -> None:
        """Keep dead letters made outside `write` (unreadable spill lines)."""
        if not entries:
            return
        with self._lock, self._errors("write"):
            conn = self._connection()
            with conn.transaction():
                where = self._set_aside(conn, entries)
        log_refused(entries, where)

    def dead_letters(self) -> list[DeadLetter]:
        """The events this ledger set aside, oldest first."""
        sql = "SELECT event_id, event, reason, ts FROM usage_dead_letter ORDER BY ts, event_id"
        with self._lock, self._errors("read"):
            fetched = self._connection().execute(sql).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3].astimezone(timezone.utc)) for r in fetched]

    # ------------------------------------------------------------------ reads

    def spend(self, tenant: str, since: datetime, until: datetime | None = None) -> Decimal:
        sql = "SELECT SUM(cost_usd) FROM usage_events WHERE tenant = %s AND ts >= %s"
        params: list[Any] = [tenant, utc(since)]
        if until is not None:
            sql += " AND ts < %s"
            params.append(utc(until))
        with self._lock, self._errors("read"):
            (total,) = self._connection().execute(sql, params).fetchone()
        return Decimal(0) if total is None else tidy_decimal(total)

    def aggregate(self, *, group_by: Sequence[str], filters: Any) -> list[dict[str, Any]]:
        dims = parse_group_by(group_by)
        params: list[Any] = []
        select = [_dimension_sql(d, params) for d in dims]
        clauses = _filter_clauses(filters, params)
        sql = f"SELECT {', '.join([*select, _METRICS_SQL])} FROM usage_events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        if dims:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))
        with self._lock, self._errors("read"):
            fetched = self._connection().execute(sql, params).fetchall()
            n = len(dims)
            moves = self._moves(dims, filters) if any(r[n] and r[n + 11] for r in fetched) else {}
        out = []
        for r in fetched:
            if not r[n]:
                continue
            row: dict[str, Any] = {}
            for i, d in enumerate(dims):
                row[d.key] = tags_label(r[i]) if d.key == "tag" else r[i]
            attempts, tin, tout, tcached, cost, unknown, estimated, errors = r[n : n + 8]
            requests, _extra, unpriced_in, unpriced_out = r[n + 10 : n + 14]
            retries, failovers = moves.get(_group_key(r[:n]), (0, 0))
            row.update(
                calls=int(requests),
                attempts=int(attempts),
                retries=retries,
                failovers=failovers,
                input_tokens=int(tin or 0),
                output_tokens=int(tout or 0),
                cached_input_tokens=int(tcached or 0),
                cost_usd=None if cost is None else tidy_decimal(cost),
                unknown_cost_calls=int(unknown),
                estimated_calls=int(estimated),
                error_calls=int(errors),
                unpriced_input_tokens=int(unpriced_in or 0),
                unpriced_output_tokens=int(unpriced_out or 0),
            )
            energy, energy_tokens = r[n + 8 : n + 10]
            row["energy_j"] = None if energy is None else float(energy)
            row["energy_output_tokens"] = int(energy_tokens or 0)
            out.append(row)
        return out

    def _moves(self, dims: Sequence[Dimension], filters: Any) -> dict[tuple[Any, ...], tuple[int, int]]:
        """Retries and failovers per group (a second, narrow pass over multi-attempt requests)."""
        params: list[Any] = []
        select = "".join(_dimension_sql(d, params) + ", " for d in dims)
        clauses = ["attempt > 1", *_filter_clauses(filters, params)]
        sql = _MOVES_SQL.format(select=select, where=" AND ".join(clauses))
        if dims:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))
        fetched = self._connection().execute(sql, params).fetchall()
        n = len(dims)
        return {_group_key(r[:n]): (int(r[n]), int(r[n + 1])) for r in fetched}

    def count(self) -> int:
        with self._lock, self._errors("read"):
            return int(self._connection().execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

    def attempts(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Every event's replay facts (no text, no tags), oldest first: what `simulate` replays."""
        clauses, params = [], []
        if since is not None:
            clauses.append("ts >= %s")
            params.append(utc(since))
        if until is not None:
            clauses.append("ts < %s")
            params.append(utc(until))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {REPLAY_COLUMNS.replace('cost_picousd', 'cost_usd')} FROM usage_events{where} " \
              "ORDER BY ts, request_id, attempt"
        with self._lock, self._errors("read"):
            fetched = self._connection().execute(sql, params).fetchall()
        keys = [k if k != "cost_picousd" else "cost_usd" for k in REPLAY_KEYS]
        rows = []
        for r in fetched:
            row = dict(zip(keys, r, strict=True))
            row["cost_usd"] = None if row["cost_usd"] is None else tidy_decimal(row["cost_usd"])
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "PostgresLedger(<url>)"  # the URL may carry a password
