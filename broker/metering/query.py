"""What a report asks of a ledger, and the SQL helpers both backends share.

Reports group by dimensions (`parse_group_by`) and aggregate in SQL; both backends return
the same row shape (`METRIC_KEYS`).  Costs are kept to the picodollar (`to_picousd`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from broker.metering.events import utc  # re-exported: the backends read it from here

__all__ = [
    "COST_SCALE",
    "DIMENSIONS",
    "METRIC_KEYS",
    "RATE_KEYS",
    "Dimension",
    "ReportFilters",
    "filter_equalities",
    "parse_group_by",
    "tags_label",
    "tidy_decimal",
    "to_picousd",
    "unit_rates",
    "utc",
]

#: Plain group-by dimensions; ``tag:KEY`` is accepted besides these.
DIMENSIONS = (
    "tenant",
    "provider",
    "model",
    "model_id",
    "route_id",
    "region",
    "jurisdiction",
    "status",
    "error_kind",
    "day",
    "month",
    "tag",
    "policy_version",
    "price_version",
)
_ALIASES = {"route": "route_id", "tags": "tag"}

#: Aggregated columns of every report row, in display order.
METRIC_KEYS = (
    "calls",
    "attempts",
    "retries",
    "failovers",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "unknown_cost_calls",
    "estimated_calls",
    "error_calls",
    "unpriced_input_tokens",
    "unpriced_output_tokens",
)
"""``calls`` counts requests (the first attempt of each ``request_id``); ``attempts`` every
attempt; ``retries`` the attempts after the first on the same route, ``failovers`` the attempts
moved to another route, so ``attempts = calls + retries + failovers`` over a whole request.
The ``*_calls`` counters and the ``unpriced_*_tokens`` (usage whose price was unknown) count
attempts."""


class ReportFilters(BaseModel):
    """Which events a report covers; unset fields do not filter.

    `since` is inclusive and `until` exclusive; naive datetimes are taken as UTC.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    provider: str | None = None
    model: str | None = None
    region: str | None = None
    jurisdiction: str | None = None
    route_id: str | None = None
    #: tag filters: every (key, value) pair must be on the event
    tags: tuple[tuple[str, str], ...] = ()

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Dimension:
    """One group-by dimension: its row key and, for ``tag:KEY``, the tag key."""

    key: str
    tag_key: str | None = None

    @property
    def is_tag_value(self) -> bool:
        return self.tag_key is not None


def parse_group_by(names: Iterable[str]) -> tuple[Dimension, ...]:
    """Validate group-by names (comma lists allowed) into dimensions, keeping order, no repeats."""
    out: list[Dimension] = []
    for raw in names:
        for part in str(raw).split(","):
            name = part.strip()
            if not name:
                continue
            if name.lower().startswith("tag:"):
                key = name[4:].strip()
                if not key:
                    raise ValueError("tag:KEY needs a tag key, e.g. tag:team")
                dim = Dimension(key=f"tag:{key}", tag_key=key)
            else:
                name = _ALIASES.get(name.lower(), name.lower())
                if name not in DIMENSIONS:
                    allowed = ", ".join(DIMENSIONS)
                    raise ValueError(f"unknown group-by {part.strip()!r}; choose from {allowed}, tag:KEY")
                dim = Dimension(key=name)
            if dim not in out:
                out.append(dim)
    return tuple(out)


def filter_equalities(filters: Any) -> list[tuple[str, str]]:
    """(column, value) pairs for the equality filters set on a `ReportFilters`."""
    pairs = []
    for column in ("tenant", "provider", "model", "region", "jurisdiction", "route_id"):
        value = getattr(filters, column, None)
        if value is not None:
            pairs.append((column, value))
    return pairs


def tags_label(tags: dict[str, Any] | None) -> str:
    """A tag set as ``k1=v1,k2=v2`` (sorted by key; empty string for no tags)."""
    if not tags:
        return ""
    return ",".join(f"{k}={tags[k]}" for k in sorted(tags))


_EXACT = Context(prec=80)
#: Costs are kept to the picodollar (1e-12 USD); finer digits are rounded half-even.
COST_SCALE = 12


def to_picousd(cost: Decimal) -> int:
    """A cost in integer picodollars (exact for costs with at most 12 decimal places)."""
    return int(_EXACT.scaleb(cost, COST_SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def tidy_decimal(value: Decimal) -> Decimal:
    """`value` without trailing zeros and never in exponent form (``100``, ``0.00072``)."""
    normal = _EXACT.normalize(value)
    exponent = normal.as_tuple().exponent
    if not isinstance(exponent, int) or exponent <= 0:  # a str exponent: NaN or infinity, kept as is
        return normal
    return normal.quantize(Decimal(1), context=_EXACT)


#: Columns `unit_rates` derives from a row's metrics.
RATE_KEYS = ("energy_j", "usd_per_mtok", "tokens_per_joule")


def unit_rates(row: dict[str, Any]) -> dict[str, Any]:
    """$ per million tokens and tokens per joule of an aggregated row, where known.

    ``usd_per_mtok``: the cost over input plus output tokens, only when every call of the row
    had a known price (`None` otherwise: an unknown price is never taken as $0).
    ``tokens_per_joule``: output tokens over joules, counting only the events with an energy
    figure (`None` when none has one).  ``energy_j``: the joules measured, rounded to mJ.
    """
    tokens = int(row.get("input_tokens") or 0) + int(row.get("output_tokens") or 0)
    cost = row.get("cost_usd")
    usd = None
    if cost is not None and tokens and not row.get("unknown_cost_calls"):
        usd = tidy_decimal((Decimal(cost) * 1_000_000 / tokens).quantize(Decimal("0.000001"), context=_EXACT))
    joules = row.get("energy_j")
    per_joule = None
    if joules:
        per_joule = round(int(row.get("energy_output_tokens") or 0) / float(joules), 4)
    return {
        "energy_j": None if joules is None else round(float(joules), 3),
        "usd_per_mtok": usd,
        "tokens_per_joule": per_joule,
    }


#: the event columns a replay reads, in order (SQLite names; PostgreSQL keeps `cost_usd` as NUMERIC)
REPLAY_KEYS = ("request_id", "attempt", "tenant", "model", "route_id", "jurisdiction", "input_tokens",
               "output_tokens", "cached_input_tokens", "cost_picousd", "status", "ts", "needs")
REPLAY_COLUMNS = ", ".join(REPLAY_KEYS)
