"""The usage event: one record per attempt of a call, written to the ledger.

`UsageEvent` is a frozen, slotted dataclass because the engine builds one for every
attempt on the hot path.  Construction checks a naive timestamp and a non-finite cost, so
such an event is refused where it is made.  Anything else a ledger cannot take (usage out
of bounds, values the database rejects) is set aside by the ledger as a dead letter
(`broker.metering.deadletter`), so it never blocks a batch of good ones either.

`cost_usd` is `None` when the price of the route was unknown.  It is never recorded as
zero: reports count such calls in `unknown_cost_calls` instead of adding a false $0.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal

__all__ = ["UsageEvent", "event_from_json", "event_to_json", "new_event_id"]


def new_event_id() -> str:
    """A fresh, globally unique event id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One metered attempt of a chat call.

    The ledger is idempotent by `event_id`: writing the same event twice counts it once.
    `timestamp` must be timezone-aware; it is stored in UTC.  `prompt_text` and
    `completion_text` stay `None` unless the tenant's policy opts in to storing them.
    """

    event_id: str
    request_id: str
    attempt: int
    tenant: str
    tags: Mapping[str, str]
    model: str
    provider: str
    region: str | None
    jurisdiction: str
    model_id: str
    route_id: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    usage_estimated: bool
    cost_usd: Decimal | None
    price_version: str | None
    latency_ms: float | None
    ttft_ms: float | None
    status: Literal["ok", "error"]
    error_kind: str | None
    timestamp: datetime
    policy_version: str
    prompt_text: str | None = None
    completion_text: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("UsageEvent.timestamp must be timezone-aware (UTC)")
        cost = self.cost_usd
        if cost is not None:
            if not isinstance(cost, Decimal):
                # floats would carry binary rounding into the ledger; go through their repr
                object.__setattr__(self, "cost_usd", Decimal(str(cost)))
            elif not cost.is_finite():
                raise ValueError(f"UsageEvent.cost_usd must be finite, got {cost}")
        if self.status not in ("ok", "error"):
            raise ValueError(f"UsageEvent.status must be 'ok' or 'error', got {self.status!r}")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


_FIELD_NAMES = tuple(f.name for f in fields(UsageEvent))


def event_to_json(event: UsageEvent) -> dict[str, Any]:
    """A JSON-safe dict of the event (cost as a decimal string, timestamp as ISO 8601)."""
    out: dict[str, Any] = {name: getattr(event, name) for name in _FIELD_NAMES}
    out["tags"] = dict(event.tags)
    out["cost_usd"] = None if event.cost_usd is None else str(event.cost_usd)
    out["timestamp"] = event.timestamp.astimezone(timezone.utc).isoformat()
    return out


def event_from_json(data: Mapping[str, Any]) -> UsageEvent:
    """The inverse of `event_to_json` (unknown keys are ignored)."""
    values = {name: data[name] for name in _FIELD_NAMES if name in data}
    cost = values.get("cost_usd")
    values["cost_usd"] = None if cost is None else Decimal(str(cost))
    values["timestamp"] = datetime.fromisoformat(str(values["timestamp"]))
    values["tags"] = dict(values.get("tags") or {})
    return UsageEvent(**values)


def dumps_event(event: UsageEvent) -> str:
    """One JSON line for a spill file."""
    return json.dumps(event_to_json(event), sort_keys=True, separators=(",", ":"), default=str)
