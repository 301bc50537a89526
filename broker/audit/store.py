"""Where the audit trail lives: beside the usage ledger, in the same database.

    audit_policy_versions   one row per policy version: its SHA-256, source and canonical document
    audit_policy_residency  the jurisdictions each tenant of each version may use (`*`: any;
                            tenant `*`: what unknown tenant names get)
    audit_decisions         one row per call's decision, linked to its usage events by
                            `decision_id` and `request_id`

`open_store(url)` picks the backend by the ledger URL's scheme.  Both backends answer the
residency audit in SQL (`broker.audit.residency`), joining `usage_events` to the version each
event records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from .residency import ResidencyReport
from .versions import PolicyVersion

__all__ = ["AuditStore", "open_store"]


class AuditStore(Protocol):
    url: str

    def store_version(self, version: PolicyVersion) -> None: ...
    def write_decisions(self, rows: Sequence[dict[str, Any]]) -> int: ...
    def decisions(
        self, *, tenant: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...
    def versions(self) -> list[PolicyVersion]: ...
    def residency(self, *, tenant: str | None = None) -> ResidencyReport: ...
    def close(self) -> None: ...


def open_store(url: str) -> AuditStore:
    """The audit store in the ledger database at `url` (``sqlite://...`` or ``postgresql://...``)."""
    from broker.metering.location import ledger_kind, sqlite_path_from_url

    if ledger_kind(url) == "sqlite":
        from .store_sqlite import SQLiteAuditStore

        return SQLiteAuditStore(sqlite_path_from_url(url) if "://" in url else url)
    from .store_postgres import PostgresAuditStore

    return PostgresAuditStore(url)
