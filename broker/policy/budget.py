"""The budget rule: one comparison for every limit, every mode and every scope.

    exceeded  <=>  settled + open reservations + this call's reservation  >  limit

Limits (`BudgetLimit`) come from three scopes, each per UTC month and/or day:

    tenant:<name>                   the tenant's `budget` (counted on the name the call gave)
    group:<name>                    a `groups:` entry's budget, over all its member tenants
    tenant:<name>/provider:<p>      `budget.providers.<p>` within a tenant (or group:<g>/provider:<p>)

This call's reservation is an upper bound of its cost on the route about to be tried
(`upper_bound_cost`): input tokens at most the prompt's UTF-8 bytes (a token is at least one
byte) plus a fixed allowance per message and image, capped by the route's context window;
output tokens `max_tokens`, else the route's maximum output.

What an exceeded limit does, by its `on_exceed`:

    block      the route is not reserved (passed over); when every route is refused the caller
               gets `BudgetExceeded` with spent, reserved, limit, period and scope
    downgrade  decided before any route: the call moves to `downgrade_to`, reserved without the
               condition (a downgraded call is not refused by that limit); a call that was not
               downgraded but loses the race for the last money is refused like `block`
    alert      the call goes ahead, reserved without the condition, with a warning

Every limit of a call is held at once (all or none); among the limits that act, the tightest
(the least money left after this call) speaks and is named in the error or warning.  The
router applies the rule once before any route (`check_budget`, for downgrade, alert warnings
and an early refusal when even the cheapest route cannot fit); the budget hook
(`broker/budgets/hook.py`) applies it again, atomically in the shared store, when it reserves
each route.

Consistency between reservation, event write and settlement (every store):

* a reservation commits before the provider is called, with a lease (`budgets.lease_s`),
  renewed while the call is open; an expired reservation no longer counts;
* each attempt's `UsageEvent` goes to the meter (the ledger, batched) as before;
* when the call ends, one transaction in the store turns its reservations into settled spend:
  the sum of the costs of that call's own attempt events, released reservation and added
  spend together, once;
* the store's settled spend per scope and period is the budget's truth; a period's row is seeded
  from the ledger's spend when first created (spend made before budgets were on counts);
* a process killed mid-call leaves reservations that expire after the lease: that call's spend
  is then not in the store's total (the ledger may still hold its events).  A call counts in
  the period its reservation was taken in.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from broker.errors import BudgetExceeded

if TYPE_CHECKING:
    from broker.routes import Route
    from broker.types import ChatRequest

    from .schema import Budget, TenantGroup, TenantPolicy

__all__ = [
    "BudgetLimit",
    "BudgetSource",
    "BudgetState",
    "SpendSource",
    "Standing",
    "call_limits",
    "check_budget",
    "exceeded",
    "refusal",
    "tightest",
    "upper_bound_cost",
    "upper_bound_input_tokens",
]

log = logging.getLogger("llama_broker.policy")

Period = Literal["month", "day"]
#: tokens allowed for a message's role header and separators, for each image, and once per call
MESSAGE_TOKENS, IMAGE_TOKENS, CALL_TOKENS = 8, 6_500, 16


@dataclass(frozen=True)
class BudgetLimit:
    """One limit of one scope in one period: what a call is held against."""

    scope: str
    """``tenant:<name>``, ``group:<name>``, or either followed by ``/provider:<p>``."""
    period: Period
    label: str
    """The period's UTC name (``2026-11`` or ``2026-11-23``)."""
    start: dt.datetime
    end: dt.datetime
    limit_usd: Decimal
    on_exceed: Literal["block", "downgrade", "alert"]
    tenants: tuple[str, ...]
    """Whose calls it covers (the ledger spend a new period row is seeded with)."""
    provider: str | None = None
    downgrade_to: str | None = None

    @property
    def key(self) -> str:
        """The store's name of this limit's running totals."""
        return f"{self.scope}@{self.label}"

    def covers(self, provider: str) -> bool:
        return self.provider is None or self.provider == provider


@dataclass(frozen=True)
class Standing:
    """What a limit holds now: settled spend and live (unexpired) reservations, in USD."""

    settled: Decimal
    reserved: Decimal


@dataclass(frozen=True)
class BudgetState:
    """What the budget leaves of a call: the model to serve, the money left (for `block`), notes."""

    model: str
    remaining: Decimal | None
    downgraded_from: str | None
    warnings: tuple[str, ...]


class SpendSource(Protocol):
    """Month- and day-to-date settled spend of a tenant (a fixed figure in `policy test` probes)."""

    def month_to_date(self, tenant: str, now: dt.datetime) -> Decimal: ...
    def day_to_date(self, tenant: str, now: dt.datetime) -> Decimal: ...


@runtime_checkable
class BudgetSource(Protocol):
    """The limits of a call and what each holds now (the budget hook reads its shared store)."""

    def limits(self, tenant: TenantPolicy, name: str, now: dt.datetime) -> tuple[BudgetLimit, ...]: ...
    def standing(self, limits: Sequence[BudgetLimit]) -> list[Standing]: ...


# --------------------------------------------------------------------------- limits


def _periods(now: dt.datetime) -> dict[Period, tuple[str, dt.datetime, dt.datetime]]:
    now = now.astimezone(dt.timezone.utc) if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "month": (month.strftime("%Y-%m"), month, next_month),
        "day": (day.strftime("%Y-%m-%d"), day, day + dt.timedelta(days=1)),
    }


def _budget_limits(budget: Budget, scope: str, tenants: tuple[str, ...], now: dt.datetime) -> list[BudgetLimit]:
    periods = _periods(now)
    out: list[BudgetLimit] = []
    for period, amount in (("month", budget.monthly_usd), ("day", budget.daily_usd)):
        if amount is not None:
            label, start, end = periods[period]  # type: ignore[index]
            out.append(BudgetLimit(scope, period, label, start, end, Decimal(amount), budget.on_exceed,  # type: ignore[arg-type]
                                   tenants, downgrade_to=budget.downgrade_to))
    for provider, rule in budget.providers.items():
        for period, amount in (("month", rule.monthly_usd), ("day", rule.daily_usd)):
            if amount is not None:
                label, start, end = periods[period]  # type: ignore[index]
                out.append(BudgetLimit(f"{scope}/provider:{provider}", period, label, start, end,  # type: ignore[arg-type]
                                       Decimal(amount), rule.on_exceed, tenants, provider=provider))
    return out


def call_limits(
    tenant: TenantPolicy, name: str, groups: Sequence[TenantGroup], now: dt.datetime
) -> tuple[BudgetLimit, ...]:
    """Every limit covering a call metered as `name` under `tenant`'s rules, members of `groups`."""
    out: list[BudgetLimit] = []
    if tenant.budget is not None:
        out += _budget_limits(tenant.budget, f"tenant:{name}", (name,), now)
    for group in groups:
        if group.budget is not None:
            out += _budget_limits(group.budget, f"group:{group.name}", group.tenants, now)
    return tuple(out)


# --------------------------------------------------------------------------- the estimate


def upper_bound_input_tokens(request: ChatRequest) -> int:
    """At most this many prompt tokens: UTF-8 bytes of every text part, tool call and tool schema,
    plus `MESSAGE_TOKENS` a message, `IMAGE_TOKENS` an image and `CALL_TOKENS` once."""
    total = CALL_TOKENS
    for message in request.messages:
        total += MESSAGE_TOKENS + len(message.text.encode("utf-8")) + IMAGE_TOKENS * len(message.images)
        for call in message.tool_calls or ():
            total += len(call.model_dump_json().encode("utf-8"))
    for tool in request.tools or ():
        total += len(tool.function.model_dump_json().encode("utf-8"))
    return total


def upper_bound_cost(route: Route, request: ChatRequest) -> Decimal:
    """The most the call can cost on `route` (0 when the route has no price: it meters no cost)."""
    if route.price is None:
        return Decimal(0)
    caps = route.capabilities
    tokens_in = min(upper_bound_input_tokens(request), caps.context_window)
    tokens_out = request.max_tokens if request.max_tokens is not None else caps.max_output_tokens
    return route.price.cost(tokens_in, tokens_out)


# --------------------------------------------------------------------------- the rule


def headroom(limit: BudgetLimit, standing: Standing, estimate: Decimal) -> Decimal:
    """Money left under `limit` after this call's reservation (negative: exceeded)."""
    return limit.limit_usd - standing.settled - standing.reserved - estimate


def exceeded(limit: BudgetLimit, standing: Standing, estimate: Decimal) -> bool:
    """The one rule: settled + open reservations + this call's reservation > limit."""
    return headroom(limit, standing, estimate) < 0


def tightest(
    held: Sequence[tuple[BudgetLimit, Standing]], estimate: Decimal
) -> tuple[BudgetLimit, Standing]:
    """The limit that leaves the least money after this call (the one that speaks)."""
    return min(held, key=lambda pair: (headroom(pair[0], pair[1], estimate), pair[0].scope, pair[0].period))


def describe(limit: BudgetLimit, standing: Standing, estimate: Decimal) -> str:
    return (f"budget {limit.scope} this {limit.period} ({limit.label}): ${standing.settled:.6f} spent + "
            f"${standing.reserved:.6f} reserved + ${estimate:.6f} for this call > ${limit.limit_usd} limit")


def refusal(name: str, limit: BudgetLimit, standing: Standing, estimate: Decimal, why: str = "") -> BudgetExceeded:
    """The `BudgetExceeded` for a call that `limit` refuses."""
    return BudgetExceeded(
        f"tenant {name!r}: {describe(limit, standing, estimate)}{why}",
        tenant=name, spent_usd=standing.settled, reserved_usd=standing.reserved, limit_usd=limit.limit_usd,
        period=limit.period, scope=limit.scope, estimate_usd=estimate,
    )


class _FromSpend:
    """A `SpendSource` read as a `BudgetSource`: the tenant's own limits, settled spend only."""

    def __init__(self, spend: SpendSource) -> None:
        self.spend = spend

    def limits(self, tenant: TenantPolicy, name: str, now: dt.datetime) -> tuple[BudgetLimit, ...]:
        return call_limits(tenant, name, (), now)

    def standing(self, limits: Sequence[BudgetLimit]) -> list[Standing]:
        read = {"month": self.spend.month_to_date, "day": self.spend.day_to_date}
        return [Standing(read[lim.period](lim.tenants[0], lim.start), Decimal(0)) for lim in limits]


def check_budget(
    tenant: TenantPolicy,
    model: str,
    now: dt.datetime,
    name: str,
    spend: BudgetSource | SpendSource | None,
    resolve_model: Callable[[str], str],
    request: ChatRequest | None = None,
    routes_of: Callable[[str], Sequence[Route] | None] | None = None,
) -> BudgetState:
    """The rule before any route, with the cheapest route's upper bound as this call's reservation.

    Refuses (`BudgetExceeded`) when a `block` limit cannot fit even the cheapest route, moves the
    call to `downgrade_to` when a `downgrade` limit cannot, and warns for `alert`.  Provider limits
    act per route, in the hook.  `remaining` is always None: the reservation, not a filter, holds.
    When every limit is `block` and `spend` is a shared store, the store is not read here: the
    reservation gives the same answer, with the same figures, one round trip later.
    """
    if spend is None:
        return BudgetState(model, None, None, ())
    source = spend if isinstance(spend, BudgetSource) else _FromSpend(spend)
    limits = [lim for lim in source.limits(tenant, name, now) if lim.provider is None]
    if not limits or (source is spend and all(lim.on_exceed == "block" for lim in limits)):
        return BudgetState(model, None, None, ())  # a shared store's `block` acts at the reservation alone
    routes = (routes_of(model) if routes_of is not None else None) or ()
    estimate = min((upper_bound_cost(r, request) for r in routes), default=Decimal(0)) if request else Decimal(0)
    over = [(lim, st) for lim, st in zip(limits, source.standing(limits), strict=True) if exceeded(lim, st, estimate)]
    if not over:
        return BudgetState(model, None, None, ())
    for mode in ("block", "downgrade"):
        acting = [pair for pair in over if pair[0].on_exceed == mode]
        if not acting:
            continue
        limit, standing = tightest(acting, estimate)
        if mode == "block":
            raise refusal(name, limit, standing, estimate, "; its budget blocks further calls")
        target = limit.downgrade_to
        if target == model:
            continue  # already on the cheaper model: it goes ahead, with a warning
        if not (target and tenant.allows_model(target)):
            raise refusal(name, limit, standing, estimate, "; no model to downgrade to")
        note = f"budget exceeded ({describe(limit, standing, estimate)}): downgraded {model} -> {target}"
        log.warning("tenant %s: %s", name, note)
        return BudgetState(resolve_model(target), None, model, (note,))
    limit, standing = tightest(over, estimate)
    note = f"budget exceeded ({describe(limit, standing, estimate)}); on_exceed={limit.on_exceed}"
    log.warning("tenant %s: %s", name, note)
    return BudgetState(model, None, None, (note,))
