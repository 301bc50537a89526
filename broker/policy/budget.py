"""The budget rule: what a tenant's spend allows before any route is considered.

    for each period the budget limits (month, day): remaining = limit - spend to date
    the tighter limit speaks
    money left          -> the call goes ahead; `block` also removes routes whose estimate
                           would overspend (the `budget` filter reads `remaining`)
    nothing left, block     -> `BudgetExceeded`, naming the spend, the limit and the period
    nothing left, downgrade -> the tenant's cheaper model (`downgrade_to`), or refused without one
    nothing left, alert     -> the call goes ahead with a warning

The spend is counted on the name the call gave (a tenant served under another tenant's rules
has its own spend).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from broker.errors import BudgetExceeded

from .schema import TenantPolicy

__all__ = ["BudgetState", "SpendSource", "check_budget"]

log = logging.getLogger("llama_broker.policy")


class SpendSource(Protocol):
    """Month- and day-to-date spend of a tenant (the meter implements it without a query per call)."""

    def month_to_date(self, tenant: str, now: dt.datetime) -> Decimal: ...
    def day_to_date(self, tenant: str, now: dt.datetime) -> Decimal: ...


@dataclass(frozen=True)
class BudgetState:
    """What the budget leaves of a call: the model to serve, the money left (for `block`), notes."""

    model: str
    remaining: Decimal | None
    downgraded_from: str | None
    warnings: tuple[str, ...]


def check_budget(
    tenant: TenantPolicy,
    model: str,
    now: dt.datetime,
    name: str,
    spend: SpendSource | None,
    resolve_model: Callable[[str], str],
) -> BudgetState:
    """The budget of `tenant`'s rules for one call, counted on the spend of `name` (the tenant metered)."""
    budget = tenant.budget
    if budget is None or spend is None:
        return BudgetState(model, None, None, ())
    remaining: Decimal | None = None
    spent_usd = limit_usd = None
    spent_label = ""
    for limit, spend_of, period in (
        (budget.monthly_usd, spend.month_to_date, "month"),
        (budget.daily_usd, spend.day_to_date, "day"),
    ):
        if limit is None:
            continue
        spent_now = spend_of(name, now)
        left = Decimal(limit) - spent_now
        if remaining is None or left < remaining:  # the tighter limit speaks
            remaining, spent_usd, limit_usd = left, spent_now, Decimal(limit)
            spent_label = f"${spent_now:.2f} of ${limit} this {period}"
    if remaining is None or remaining > 0:
        # only `block` removes routes that would overspend; alert and downgrade act once it is spent
        return BudgetState(model, remaining if budget.on_exceed == "block" else None, None, ())
    if budget.on_exceed == "block":
        raise BudgetExceeded(
            f"tenant {name!r} has spent {spent_label}; its budget blocks further calls",
            tenant=name,
            spent_usd=spent_usd,
            limit_usd=limit_usd,
        )
    target = budget.downgrade_to
    if budget.on_exceed == "downgrade" and target != model:
        if not (target and tenant.allows_model(target)):  # nothing to fall back to: refuse
            raise BudgetExceeded(f"tenant {name!r} has spent {spent_label} and has no model to "
                                 "downgrade to", tenant=name, spent_usd=spent_usd, limit_usd=limit_usd)
        note = f"budget exceeded ({spent_label}): downgraded {model} -> {target}"
        log.warning("tenant %s: %s", name, note)
        return BudgetState(resolve_model(target), None, model, (note,))
    note = f"budget exceeded ({spent_label}); on_exceed={budget.on_exceed}"
    log.warning("tenant %s: %s", name, note)
    return BudgetState(model, None, None, (note,))
