"""The audit store in the SQLite ledger file (its own connection; WAL lets it write beside the meter)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from broker.errors import MeteringError
from broker.metering.deadletter import reason_of
from broker.metering.sqlite import SQLiteLedger, ts_text

from .decisions import DECISION_COLUMNS
from .residency import RESIDENCY_COUNTS, RESIDENCY_VIOLATIONS, ResidencyReport, Violation, residency_rows
from .versions import PolicyVersion

__all__ = ["SQLiteAuditStore"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS audit_policy_versions (
        version     TEXT PRIMARY KEY,
        sha256      TEXT NOT NULL,
        source      TEXT NOT NULL,
        document    TEXT NOT NULL,
        stored_at   TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_policy_residency (
        version      TEXT NOT NULL,
        tenant       TEXT NOT NULL,
        jurisdiction TEXT NOT NULL,
        PRIMARY KEY (version, tenant, jurisdiction)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_decisions (
        decision_id    TEXT PRIMARY KEY,
        request_id     TEXT NOT NULL,
        tenant         TEXT NOT NULL,
        rules_tenant   TEXT NOT NULL,
        model          TEXT NOT NULL,
        ts             TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        policy_sha256  TEXT NOT NULL,
        chosen_route   TEXT,
        outcome        TEXT NOT NULL,
        error_kind     TEXT,
        document       TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_decisions_tenant_ts ON audit_decisions (tenant, ts)",
)
_INSERT_DECISION = (
    f"INSERT INTO audit_decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({', '.join('?' * len(DECISION_COLUMNS))}) "
    "ON CONFLICT(decision_id) DO NOTHING"
)
_TS = "%Y-%m-%dT%H:%M:%S.%fZ"


def _time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, _TS).replace(tzinfo=dt.timezone.utc)


class SQLiteAuditStore:
    """Decisions and policy versions in the ledger's SQLite file."""

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self.url = "sqlite://" + path
        self._lock = threading.Lock()
        if path != ":memory:":
            SQLiteLedger(path, busy_timeout_s=busy_timeout_s).close()  # the ledger's own tables, migrated
        with self._errors("open"):
            self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._transaction(lambda db: [db.execute(s) for s in _SCHEMA])

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise MeteringError(f"the audit store in {self.path} could not {action}: {reason_of(exc)}") from exc

    def _transaction(self, body: Any) -> Any:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = body(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out

    def store_version(self, version: PolicyVersion) -> None:
        """Keep `version` (once: a version already stored is left as it is)."""
        now = ts_text(dt.datetime.now(dt.timezone.utc))

        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO audit_policy_versions (version, sha256, source, document, stored_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(version) DO NOTHING",
                (version.version, version.sha256, version.source, version.document, now),
            )
            db.executemany(
                "INSERT INTO audit_policy_residency (version, tenant, jurisdiction) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                residency_rows(version),
            )

        with self._lock, self._errors("store a policy version"):
            self._transaction(body)

    def write_decisions(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        values = [tuple(ts_text(r[c]) if c == "ts" else r[c] for c in DECISION_COLUMNS) for r in rows]

        def body(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(_INSERT_DECISION, values)
            return db.total_changes - before

        with self._lock, self._errors("write decisions"):
            return int(self._transaction(body))

    def decisions(
        self, *, tenant: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        clauses, params = [], []
        for clause, value in (("tenant = ?", tenant), ("ts >= ?", since), ("ts < ?", until)):
            if value is not None:
                clauses.append(clause)
                params.append(ts_text(value) if isinstance(value, dt.datetime) else value)
        sql = f"SELECT {', '.join(DECISION_COLUMNS)} FROM audit_decisions"
        sql += (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY ts, decision_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock, self._errors("read decisions"):
            fetched = self._db.execute(sql, params).fetchall()
        out = []
        for r in fetched:
            row = dict(zip(DECISION_COLUMNS, r, strict=True))
            row["ts"] = _time(row["ts"])
            row["document"] = json.loads(row["document"])
            out.append(row)
        return out

    def versions(self) -> list[PolicyVersion]:
        with self._lock, self._errors("read policy versions"):
            fetched = self._db.execute(
                "SELECT version, sha256, source, document FROM audit_policy_versions ORDER BY stored_at, version"
            ).fetchall()
        return [PolicyVersion(*r) for r in fetched]

    def residency(self, *, tenant: str | None = None) -> ResidencyReport:
        params = [tenant] if tenant is not None else []
        with self._lock, self._errors("audit residency"):
            if not self._has_events():
                return ResidencyReport(0, ())
            bad = self._db.execute(
                RESIDENCY_VIOLATIONS.format(tenant="e.tenant = ? AND" if tenant else ""), params
            ).fetchall()
            counts = self._db.execute(
                RESIDENCY_COUNTS.format(tenant="e.tenant = ? AND" if tenant else ""), params
            ).fetchall()
        violations = tuple(Violation(r[0], r[1], r[2], _time(r[3]), *r[4:]) for r in bad)
        checked = sum(n for _, known, n in counts if known)
        return ResidencyReport(checked, violations, {t: n for t, known, n in counts if not known})

    def _has_events(self) -> bool:
        found = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_events'")
        return found.fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()
