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

The names below are imported from their modules on first use, so code that needs only the
event record (`broker.metering.events`) does not load the meter, the ledgers or the report filters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.metering.deadletter import MAX_TOKENS_PER_EVENT, DeadLetter, usage_problem
    from broker.metering.events import UsageEvent, event_from_json, event_to_json, new_event_id
    from broker.metering.ledger import Ledger, LedgerNotFound
    from broker.metering.location import data_dir, default_ledger_url, open_ledger
    from broker.metering.meter import Meter, replay_spill
    from broker.metering.query import DIMENSIONS, ReportFilters, parse_group_by

_LAZY = {
    "DIMENSIONS": "broker.metering.query",
    "MAX_TOKENS_PER_EVENT": "broker.metering.deadletter",
    "DeadLetter": "broker.metering.deadletter",
    "Ledger": "broker.metering.ledger",
    "LedgerNotFound": "broker.metering.ledger",
    "Meter": "broker.metering.meter",
    "ReportFilters": "broker.metering.query",
    "UsageEvent": "broker.metering.events",
    "data_dir": "broker.metering.location",
    "default_ledger_url": "broker.metering.location",
    "event_from_json": "broker.metering.events",
    "event_to_json": "broker.metering.events",
    "new_event_id": "broker.metering.events",
    "open_ledger": "broker.metering.location",
    "parse_group_by": "broker.metering.query",
    "replay_spill": "broker.metering.meter",
    "usage_problem": "broker.metering.deadletter",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
