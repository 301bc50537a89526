"""Per-tenant usage metering: the event record, the ledger backends and the batching meter.

::

    from broker.metering import Meter, UsageEvent, open_ledger

    ledger = open_ledger("sqlite:///var/lib/llama-broker/usage.db")   # or postgresql://...
    meter = Meter(ledger)              # batched; Meter(ledger, durable=True) commits per call
    meter.record(event)
    meter.month_to_date("acme", now)   # budget reads: one query per (tenant, month), then a running total
    meter.close()                      # flushes

See docs/metering.md for the storage format and the buffering guarantees.
"""

from broker.metering.events import UsageEvent, event_from_json, event_to_json, new_event_id
from broker.metering.ledger import Ledger, LedgerNotFound
from broker.metering.location import data_dir, default_ledger_url, open_ledger
from broker.metering.meter import Meter, replay_spill
from broker.metering.query import DIMENSIONS, ReportFilters, parse_group_by

__all__ = [
    "DIMENSIONS",
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
]
