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

__all__ = ["UsageEvent", "event_from_json", "event_to_json", "new_event_id", "tags_json", "utc", "utc_text"]

_TAGS_CACHE_SIZE = 4096
_tags_cache: dict[tuple[tuple[str, str], ...], str] = {}


def new_event_id() -> str:
    """A fresh, globally unique event id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One metered attempt of a chat call.

    The ledger is idempotent by `event_id`: writing the same event twice counts it once.
    `timestamp` must be timezone-aware; it is stored in UTC.  `prompt_text` and
    `completion_text` stay `None` unless the tenant's policy opts in to storing them.

    `needs` is what the request asked of a route, as compact JSON with sorted keys (tools,
    vision, json, stream, max_tokens; never text), kept for replay.  `decision_id` links the
    event to the routing decision stored by the audit trail.  `energy_j` (joules) and
    `energy_attributed` (whether the figure is a share of a measured total) are `None` where
    no energy figure is known.
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
    needs: str | None = None
    decision_id: str | None = None
    energy_j: float | None = None
    energy_attributed: bool | None = None
    #: the provider's wait hint (seconds) on a throttled attempt; not stored in the ledger
    retry_after_s: float | None = None

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


def tags_json(tags: Mapping[str, str]) -> str:
    """The tags as compact JSON with sorted keys, as the ledgers store them.

    Most events of a tenant carry the same few tag sets, so the text is cached by the tags'
    items (a snapshot, not the mapping object, so a mapping changed after use is not served
    stale text); the cache is bounded and starts over when full.
    """
    if not tags:
        return "{}"
    key = tuple(tags.items())
    text = _tags_cache.get(key)
    if text is None:
        if len(_tags_cache) >= _TAGS_CACHE_SIZE:
            _tags_cache.clear()
        text = _tags_cache[key] = json.dumps(dict(tags), sort_keys=True, separators=(",", ":"))
    return text


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def utc_text(moment: datetime) -> str:
    """`moment` in UTC as ``2025-01-31T23:59:59.000000Z`` (what `strftime` would give, at a fraction of its cost)."""
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" becomes "Z"


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
