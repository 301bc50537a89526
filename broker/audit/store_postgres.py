"""The audit store in the PostgreSQL ledger database (its own connection, the ledger's tables beside it)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from broker.errors import MeteringError
from broker.metering.deadletter import reason_of
from broker.metering.paths import redact
from broker.metering.postgres import PostgresLedger, _psycopg, _where

from .decisions import DECISION_COLUMNS
from .residency import RESIDENCY_COUNTS, RESIDENCY_VIOLATIONS, ResidencyReport, Violation, residency_rows
from .versions import PolicyVersion

__all__ = ["PostgresAuditStore"]

_SCHEMA_LOCK_KEY = 0x6C6C61756474  # "llaudt": held while the audit tables are created

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS audit_policy_versions (
        version     TEXT PRIMARY KEY,
        sha256      TEXT NOT NULL,
        source      TEXT NOT NULL,
        document    TEXT NOT NULL,
        stored_at   TIMESTAMPTZ NOT NULL DEFAULT now()
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
        ts             TIMESTAMPTZ NOT NULL,
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
    f"INSERT INTO audit_decisions ({', '.join(DECISION_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(DECISION_COLUMNS))}) ON CONFLICT (decision_id) DO NOTHING"
)


class PostgresAuditStore:
    """Decisions and policy versions in the ledger's PostgreSQL database."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        self._psycopg = _psycopg()
        self.url = url
        self._lock = threading.Lock()
        PostgresLedger(url, connect_timeout_s=connect_timeout_s).close()  # the ledger's tables, migrated
        with self._errors("connect"):
            self._conn = self._psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout_s)
            self._conn.execute("SET TIME ZONE 'UTC'")
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                for statement in _SCHEMA:
                    self._conn.execute(statement)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise MeteringError(
                f"the audit store at {_where(self.url)} could not {action}: {redact(reason_of(exc))}"
            ) from exc

    def store_version(self, version: PolicyVersion) -> None:
        """Keep `version` (once: a version already stored is left as it is)."""
        with self._lock, self._errors("store a policy version"), self._conn.transaction():
            self._conn.execute(
                "INSERT INTO audit_policy_versions (version, sha256, source, document) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (version) DO NOTHING",
                (version.version, version.sha256, version.source, version.document),
            )
            with self._conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO audit_policy_residency (version, tenant, jurisdiction) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    residency_rows(version),
                )

    def write_decisions(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        values = [tuple(r[c] for c in DECISION_COLUMNS) for r in rows]
        with self._lock, self._errors("write decisions"), self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(_INSERT_DECISION, values)
            return int(cur.rowcount)

    def decisions(
        self, *, tenant: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        clauses, params = [], []
        for clause, value in (("tenant = %s", tenant), ("ts >= %s", since), ("ts < %s", until)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = f"SELECT {', '.join(DECISION_COLUMNS)} FROM audit_decisions"
        sql += (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY ts, decision_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock, self._errors("read decisions"):
            fetched = self._conn.execute(sql, params).fetchall()
        out = []
        for r in fetched:
            row = dict(zip(DECISION_COLUMNS, r, strict=True))
            row["ts"] = row["ts"].astimezone(dt.timezone.utc)
            row["document"] = json.loads(row["document"])
            out.append(row)
        return out

    def versions(self) -> list[PolicyVersion]:
        with self._lock, self._errors("read policy versions"):
            fetched = self._conn.execute(
                "SELECT version, sha256, source, document FROM audit_policy_versions ORDER BY stored_at, version"
            ).fetchall()
        return [PolicyVersion(*r) for r in fetched]

    def residency(self, *, tenant: str | None = None) -> ResidencyReport:
        params = [tenant] if tenant is not None else []
        with self._lock, self._errors("audit residency"):
            bad = self._conn.execute(
                RESIDENCY_VIOLATIONS.format(tenant="e.tenant = %s AND" if tenant else ""), params
            ).fetchall()
            counts = self._conn.execute(
                RESIDENCY_COUNTS.format(tenant="e.tenant = %s AND" if tenant else ""), params
            ).fetchall()
        violations = tuple(Violation(r[0], r[1], r[2], r[3].astimezone(dt.timezone.utc), *r[4:]) for r in bad)
        checked = sum(int(n) for _, known, n in counts if known)
        return ResidencyReport(checked, violations, {t: int(n) for t, known, n in counts if not known})

    def close(self) -> None:
        with self._lock:
            self._conn.close()
