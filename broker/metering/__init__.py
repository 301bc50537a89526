"""Per-tenant usage metering: the event record, the ledger backends and the batching meter.

::

    from broker.metering import Meter, UsageEvent, open_ledger

    ledger = open_ledger("sqlite:///var/lib/llama-broker/usage.db")   # or postgresql://...
    meter = Meter(ledger)              # batched; Meter(ledger, durable=True) commits per call
    meter.record(event)
    meter.month_to_date("acme", now)   # budget reads: one query per (tenant, month), then a running total
    meter.close()                      # flushes

An event a ledger refuses (usage out of bounds, values the database rejects) is set aside
as a `DeadLetter` and the rest of its batch commits.  See docs/metering.md for the storage
format, the dead letters and the buffering guarantees.
"""

from typing import TYPE_CHECKING, Any

from broker.metering.deadletter import MAX_TOKENS_PER_EVENT, DeadLetter, usage_problem
from broker.metering.events import UsageEvent, event_from_json, event_to_json, new_event_id
from broker.metering.ledger import Ledger, LedgerNotFound
from broker.metering.location import data_dir, default_ledger_url, open_ledger
from broker.metering.meter import Meter, replay_spill

if TYPE_CHECKING:
    from broker.metering.query import DIMENSIONS, ReportFilters, parse_group_by

_REPORTING = ("DIMENSIONS", "ReportFilters", "parse_group_by")


def __getattr__(name: str) -> Any:
    # what reports ask of a ledger (a pydantic model) loads with the first report, not with the meter
    if name in _REPORTING:
        from broker.metering import query

        value = getattr(query, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DIMENSIONS",
    "MAX_TOKENS_PER_EVENT",
    "DeadLetter",
    "Ledger",
    "LedgerNotFound",
    "Meter",
    "ReportFilters",
    "UsageEvent",
    "data_dir",
    "default_ledger_url",
    "event_from_json",
    "event_to_json",
    "new_event_id",
    "open_ledger",
    "parse_group_by",
    "replay_spill",
    "usage_problem",
]
