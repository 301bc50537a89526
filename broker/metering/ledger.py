"""The usage ledger's protocol: what both backends implement.

A ledger is a table of `UsageEvent`s.  Two backends implement it:

* `SQLiteLedger` (``sqlite:///abs/path.db``): the embedded default, a file in WAL mode;
  many threads and several processes may write one file.
* `PostgresLedger` (``postgresql://user@host:port/db``): for many broker instances; needs
  the ``postgres`` extra (psycopg 3), imported only when such a URL is opened.

Where a ledger lives and how one is opened: `broker.metering.location`.  What a report asks
of it and the SQL helpers both backends share: `broker.metering.query`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from broker.errors import MeteringError

if TYPE_CHECKING:
    from broker.metering.deadletter import DeadLetter
    from broker.metering.events import UsageEvent
    from broker.metering.query import ReportFilters

__all__ = ["Ledger", "LedgerNotFound"]


class LedgerNotFound(MeteringError, FileNotFoundError):
    """A ledger was opened with ``create=False`` and does not exist."""


@runtime_checkable
class Ledger(Protocol):
    """Where usage events are kept.  Implementations are safe to share between threads."""

    url: str

    def write(self, events: Sequence[UsageEvent]) -> int:
        """Insert events, skipping ids already present; returns how many rows were new.

        Events the ledger refuses (usage out of bounds, values the database rejects) are set
        aside as dead letters and the rest of the batch commits; any other failure is a
        `MeteringError` and nothing of the batch is committed.
        """

    def set_aside(self, entries: Sequence[DeadLetter]) -> None:
        """Keep dead letters made elsewhere (unreadable lines of a spill file)."""

    def dead_letters(self) -> list[DeadLetter]:
        """The events this ledger set aside, oldest first."""

    def spend(self, tenant: str, since: datetime, until: datetime | None = None) -> Decimal:
        """Sum of the known costs of `tenant` in ``[since, until)``; unknown costs add nothing."""

    def aggregate(self, *, group_by: Sequence[str], filters: ReportFilters) -> list[dict[str, Any]]:
        """One row per group (SQL ``GROUP BY``) with the `METRIC_KEYS` columns."""

    def count(self) -> int:
        """Number of events in the ledger."""

    def attempts(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Each event's replay facts in ``[since, until)``, oldest first: ids, tenant, model, route,
        jurisdiction, tokens, cost, status, time and the request's needs; never text or tags."""

    def close(self) -> None:
        """Release connections; idempotent."""
