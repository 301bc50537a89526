"""What routing saved: each call's cost against the most expensive and the median eligible route.

For the same tokens (input and output, per tenant, logical model and month, from one ledger
``GROUP BY``), the routes the tenant could have used are priced, and the report sums

    actual        what the calls cost (known prices only)
    median        what the median eligible route would have cost
    most costly   what the most expensive eligible route would have cost

per tenant and month ("the policy saved $X this month" = most costly - actual).  Tokens are
priced in aggregate per tenant, model and month, so "most expensive" is the route most
expensive for that month's token mix.

Where the alternatives come from is one function, an `AlternativeCosts`:
`catalog_alternatives` prices the routes the policy's catalog holds for the model that the
tenant's residency and provider rules allow (an estimate: today's catalog, not the decision
made at the time).  A source reading decisions stored with the events plugs in as another
`AlternativeCosts`.  Calls without a known price, and alternatives without one, are left out
and the line says so (`estimate`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from broker.errors import BrokerError
from broker.metering.query import ReportFilters

if TYPE_CHECKING:
    from broker.metering.ledger import Ledger
    from broker.policy.loaded import Policy

__all__ = ["AlternativeCosts", "SavingsLine", "catalog_alternatives", "savings_lines", "total_saved"]

#: (tenant, model, input tokens, output tokens) -> the cost on each eligible route (None: unpriced)
AlternativeCosts = Callable[[str, str, int, int], list[Decimal | None]]
_MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class SavingsLine:
    """One tenant's month: actual cost against the median and the most expensive eligible route."""

    tenant: str
    period: str
    actual_usd: Decimal
    median_usd: Decimal
    max_usd: Decimal
    estimate: bool
    note: str = ""

    @property
    def saved_vs_max_usd(self) -> Decimal:
        return self.max_usd - self.actual_usd

    @property
    def saved_vs_median_usd(self) -> Decimal:
        return self.median_usd - self.actual_usd


def catalog_alternatives(policy: Policy) -> AlternativeCosts:
    """Price the catalog routes of a model that a tenant's residency and provider rules allow."""

    def costs(tenant: str, model: str, input_tokens: int, output_tokens: int) -> list[Decimal | None]:
        try:
            rules = policy.tenant(tenant)
            routes = policy.routes_for(policy.resolve_model(model))
        except BrokerError:
            return []
        out: list[Decimal | None] = []
        for route in routes:
            if not (rules.allows_jurisdiction(route.jurisdiction) and rules.allows_provider(route.provider)):
                continue
            if route.lifecycle.status == "retired":
                continue
            price = route.price
            out.append(None if price is None else
                       (price.input_per_mtok * input_tokens + price.output_per_mtok * output_tokens) / _MTOK)
        return out

    return costs


def savings_lines(
    ledger: Ledger, alternatives: AlternativeCosts, filters: ReportFilters | None = None, *, estimate: bool = True
) -> list[SavingsLine]:
    """Savings per tenant and month over the ledger's priced calls (`estimate`: the source is one)."""
    rows = ledger.aggregate(group_by=["month", "tenant", "model"], filters=filters or ReportFilters())
    sums: dict[tuple[str, str], list[Decimal]] = {}
    notes: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        key = (str(r["tenant"]), str(r["month"]))
        acc = sums.setdefault(key, [Decimal(0), Decimal(0), Decimal(0)])
        flagged = notes.setdefault(key, set())
        if r["unknown_cost_calls"]:
            flagged.add("unpriced calls left out")
        if r["cost_usd"] is None:
            continue
        tin = int(r["input_tokens"]) - int(r.get("unpriced_input_tokens") or 0)
        tout = int(r["output_tokens"]) - int(r.get("unpriced_output_tokens") or 0)
        options = alternatives(str(r["tenant"]), str(r["model"]), tin, tout)
        known = sorted(c for c in options if c is not None)
        if len(known) < len(options):
            flagged.add("routes without a price left out")
        actual = Decimal(r["cost_usd"])
        if not known:
            flagged.add(f"no priced alternative for {r['model']}")
            known = [actual]
        acc[0] += actual
        acc[1] += Decimal(statistics.median(known))
        acc[2] += max(max(known), actual)
    six = Decimal("0.000001")
    out = []
    for tenant, period in sorted(sums):
        actual, median, most = (v.quantize(six) for v in sums[(tenant, period)])
        flagged = notes[(tenant, period)]
        out.append(SavingsLine(tenant, period, actual, median, most, estimate=estimate or bool(flagged),
                               note="; ".join(sorted(flagged))))
    return out


def total_saved(lines: list[SavingsLine]) -> Decimal:
    """The sum of savings against the most expensive eligible route."""
    return sum((line.saved_vs_max_usd for line in lines), Decimal(0))
