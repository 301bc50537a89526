"""Budgets against actuals: limit, spent, reserved, remaining and a forecast to the period's end.

One line per limit the policy sets (`broker.policy.budget.call_limits`): each tenant's and each
group's monthly and daily limits, and their per-provider limits.  *Spent* is read from the
ledger (one ``GROUP BY tenant, provider`` per period); *reserved* from the shared reservation
store beside the ledger (money held by calls in flight), or `None` where no shared store can
be read.  The forecast extends the period's run rate to its end:
``spent x period length / time elapsed``; a closed period's forecast is what was spent.

Status: ``over`` when spent plus reserved passes the limit, ``near`` when it reaches
`NEAR_SHARE` of it or the forecast passes it, else ``ok``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from broker.metering.query import ReportFilters
from broker.policy.budget import BudgetLimit, call_limits

if TYPE_CHECKING:
    from broker.metering.ledger import Ledger
    from broker.policy.loaded import Policy

__all__ = ["NEAR_SHARE", "BudgetLine", "budget_limits", "budget_lines", "read_reserved"]

NEAR_SHARE = Decimal("0.8")
Status = Literal["ok", "near", "over"]


@dataclass(frozen=True)
class BudgetLine:
    """One limit against its actuals (USD)."""

    scope: str
    period: str
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal | None
    forecast_usd: Decimal
    status: Status
    tenants: tuple[str, ...] = ()

    @property
    def remaining_usd(self) -> Decimal:
        return self.limit_usd - self.spent_usd - (self.reserved_usd or Decimal(0))

    @property
    def name(self) -> str:
        """The scope for people: ``acme``, ``group team-x``, ``acme / groq``."""
        text = self.scope.replace("tenant:", "").replace("group:", "group ")
        return text.replace("/provider:", " / ")


def budget_limits(policy: Policy, when: dt.datetime) -> list[BudgetLimit]:
    """Every distinct limit of the policy's tenants and groups in the periods holding `when`."""
    seen: dict[str, BudgetLimit] = {}
    groups = list(policy.groups.values())
    for name, tenant in sorted(policy.tenants.items()):
        member_of = [g for g in groups if name in g.tenants]
        for limit in call_limits(tenant, name, member_of, when):
            seen.setdefault(limit.key, limit)
    return [seen[k] for k in sorted(seen)]


def read_reserved(ledger_url: str | None, keys: Sequence[str]) -> dict[str, Decimal] | None:
    """Live reservations per limit key from the store beside the ledger; None when none is shared."""
    if not keys or not ledger_url or ":memory:" in ledger_url:
        return None
    from broker.budgets import open_reservations
    from broker.budgets.memory import MemoryReservations
    from broker.errors import BrokerError

    try:
        store = open_reservations(ledger_url)
    except BrokerError:
        return None
    try:
        if isinstance(store, MemoryReservations):
            return None
        return {key: standing.reserved for key, standing in store.standing(list(keys)).items()}
    except BrokerError:
        return None
    finally:
        store.close()


def _forecast(spent: Decimal, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> Decimal:
    if now >= end or now <= start:
        return spent
    share = Decimal((end - start).total_seconds()) / Decimal((now - start).total_seconds())
    return (spent * share).quantize(Decimal("0.000001"))


def _status(limit: Decimal, spent: Decimal, reserved: Decimal, forecast: Decimal) -> Status:
    if spent + reserved > limit:
        return "over"
    if spent + reserved >= limit * NEAR_SHARE or forecast > limit:
        return "near"
    return "ok"


def budget_lines(
    policy: Policy, ledger: Ledger, *, now: dt.datetime, when: dt.datetime | None = None,
    reserved: dict[str, Decimal] | None = None,
) -> list[BudgetLine]:
    """The policy's limits for the periods holding `when` (default `now`) against the ledger."""
    limits = budget_limits(policy, when or now)
    spend: dict[tuple[dt.datetime, dt.datetime], list[dict[str, Any]]] = {}
    lines = []
    for limit in limits:
        period = (limit.start, limit.end)
        if period not in spend:
            spend[period] = ledger.aggregate(
                group_by=["tenant", "provider"], filters=ReportFilters(since=limit.start, until=limit.end)
            )
        spent = sum(
            (Decimal(r["cost_usd"]) for r in spend[period]
             if r["tenant"] in limit.tenants and limit.covers(r["provider"]) and r["cost_usd"] is not None),
            Decimal(0),
        )
        held = None if reserved is None else reserved.get(limit.key, Decimal(0))
        forecast = _forecast(spent, limit.start, limit.end, now)
        lines.append(BudgetLine(
            scope=limit.scope, period=limit.label, limit_usd=limit.limit_usd, spent_usd=spent,
            reserved_usd=held, forecast_usd=forecast,
            status=_status(limit.limit_usd, spent, held or Decimal(0), forecast), tenants=limit.tenants,
        ))
    return lines
