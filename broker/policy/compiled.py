"""The routing decision compiled ahead of the call: what depends only on the policy, the tenant,
the model and the day is worked out once; per call only what changes is looked at.

    PlanEntry (route)                      built when the policy is loaded
        its price as exact integers, its capability limits, its prior latency estimate, and
        for each kind of request (`Needs`: tools, vision, JSON, tool_choice, seed, stream)
        whether the capability filter can keep it, as each kind is first seen
    Plan (tenant's rules, model, day)      built on first use, kept until the day changes
        the entries that survive lifecycle (by date), residency, providers and the price
        ceiling; for each kind of request, those the capability filter keeps, and (`judged`,
        when a decision is first explained) what the explanation says of every route as far
        as the tenant, the day and the kind decide it: those filters' verdicts and reasons,
        and the warnings (end of life, a stream replayed)
    per call (`survivors`)
        temperature, max_tokens and the context window against each route's limits, the
        circuits (only while one is not closed), the latency SLO against live estimates, the
        budget; then each survivor's cost and predicted latency for ranking

The figures a call reads (latency estimates, circuit states) are captured as it is decided, so
the explanation built later from them (`broker/policy/explanation.py`) says exactly what was seen.

A cost for ranking is the float nearest the exact `Decimal` estimate (`Price.cost`): the
price is held as an integer count of 10^-d dollars per million tokens, so `tokens x price` is
an exact integer and one correctly rounded division gives that float; ties between routes
whose costs are equal in cents stay ties.  The explanation's `Decimal` estimate is built from
the same integer (`PlanEntry.decimal_cost`), with the exponent `Price.cost` gives it.  Metered
costs stay `Decimal` (`broker/attempts.py`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from broker.health import CircuitBoard, CircuitState, LatencyEstimate
from broker.health.latency import prior_estimate
from broker.routes import Route

from .decision import Verdict
from .filters import Needs, class_keep, kind_verdict, over_ceiling, static_keep, static_verdict, stream_replayed_kind
from .ranking import UNKNOWN

if TYPE_CHECKING:
    from .schema import TenantPolicy

__all__ = [
    "ALL_CLOSED", "HealthSnapshot", "Judged", "Kind", "Plan", "PlanEntry", "Survivor", "health_now", "survivors",
]

_EXACT_DIGITS = 10**28  # below this, Decimal's default context computes `Price.cost` exactly


class PlanEntry:
    """One route that passed the static filters, with what the per-call part reads of it."""

    __slots__ = (
        "_judged", "_keeps", "context_window", "decimal_exponent", "exact", "expected_out", "id", "in_units",
        "max_output", "max_temperature", "ordinal", "out_units", "price", "prior", "prior_ms", "route", "units",
    )

    def __init__(self, route: Route, ordinal: int = 0) -> None:
        self.ordinal = ordinal
        self._keeps: dict[Needs, bool] = {}
        self._judged: dict[Needs, tuple[Verdict | None, bool, bool]] = {}
        caps = route.capabilities
        self.route, self.id, self.price = route, route.id, route.price
        self.expected_out = route.expected_output_tokens
        self.max_temperature, self.max_output = caps.max_temperature, caps.max_output_tokens
        self.context_window = caps.context_window
        self.prior: LatencyEstimate = prior_estimate(route)
        self.prior_ms = self.prior.predict_ms(self.expected_out)  # unobserved, without max_tokens
        self.exact = False
        self.in_units = self.out_units = 0
        self.units = 1
        #: the exponent of `Price.cost`'s exact quotient before its trailing zeros are dropped (None: not built here)
        self.decimal_exponent: int | None = None
        price = route.price
        if price is not None and price.input_per_mtok.is_finite() and price.output_per_mtok.is_finite():
            exponents = (_exponent(price.input_per_mtok), _exponent(price.output_per_mtok))
            digits = max(0, *(-x for x in exponents))
            scale = 10**digits
            self.in_units = int(price.input_per_mtok * scale)
            self.out_units = int(price.output_per_mtok * scale)
            self.units = scale * 1_000_000
            self.exact = True
            if price.cached_input_per_mtok is None and max(exponents) <= 0:
                self.decimal_exponent = -digits - 6

    def keeps(self, needs: Needs) -> bool:
        """Whether the capability filter can keep this route for requests of this kind."""
        found = self._keeps.get(needs)
        if found is None:
            found = self._keeps[needs] = class_keep(self.route, needs)
        return found

    def judged(self, needs: Needs) -> tuple[Verdict | None, bool, bool]:
        """The capability filter's verdict for requests of this kind, whether it checks the temperature
        first (`kind_verdict`), and whether a stream is replayed from one whole answer."""
        found = self._judged.get(needs)
        if found is None:
            verdict, temperature_first = kind_verdict(self.route, needs)
            found = self._judged[needs] = (verdict, temperature_first, stream_replayed_kind(self.route, needs))
        return found

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The float nearest `Price.cost(input_tokens, output_tokens)`; `inf` when the price is unknown."""
        if self.exact:
            numerator = input_tokens * self.in_units + output_tokens * self.out_units
            if numerator < _EXACT_DIGITS:
                return numerator / self.units
        if self.price is None:
            return UNKNOWN
        return float(self.price.cost(input_tokens, output_tokens))

    def decimal_cost(self, input_tokens: int, output_tokens: int) -> Decimal | None:
        """`Price.cost(input_tokens, output_tokens)`, the same value with the same exponent (None: no price).

        `Price.cost` divides `tokens x price` (exact, at the prices' smaller exponent) by 10^6:
        the exact quotient, its trailing zeros dropped down to that exponent at most."""
        exponent = self.decimal_exponent
        if exponent is not None and input_tokens >= 0 and output_tokens >= 0:
            numerator = input_tokens * self.in_units + output_tokens * self.out_units
            if numerator < _EXACT_DIGITS:
                dropped = 0
                while dropped < 6 and not numerator % 10:
                    numerator //= 10
                    dropped += 1
                return Decimal(numerator).scaleb(exponent + dropped)
        return None if self.price is None else self.price.cost(input_tokens, output_tokens)


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


class Plan:
    """The routes of one model for one tenant's rules on one day, after the static filters."""

    __slots__ = ("_all", "_by_needs", "_judged", "_static", "entries", "routes", "tenant", "today", "warning_days")

    def __init__(
        self, entries: tuple[PlanEntry, ...], tenant: TenantPolicy, today: dt.date, *, warning_days: int = 90
    ) -> None:
        self.routes = tuple(e.route for e in entries)
        self.entries = tuple(e for e in entries if static_keep(e.route, tenant, today))
        self._all, self.tenant, self.today, self.warning_days = entries, tenant, today, warning_days
        self._by_needs: dict[Needs, Kind] = {}
        self._judged: dict[Needs, tuple[Judged, ...]] = {}
        self._static: tuple[tuple[Verdict | None, Verdict | None, str | None], ...] | None = None

    def for_needs(self, needs: Needs) -> Kind:
        """The statically kept routes the capability filter keeps for requests of this kind."""
        found = self._by_needs.get(needs)
        if found is None:
            found = self._by_needs[needs] = Kind(tuple(e for e in self.entries if e.keeps(needs)))
        return found

    def judged(self, needs: Needs) -> tuple[Judged, ...]:
        """Every route of the model, in policy order, as far as the tenant, the day and this kind of
        request decide its explanation."""
        found = self._judged.get(needs)
        if found is None:
            static = self._static
            if static is None:
                static = self._static = tuple(
                    (static_verdict(e.route, self.tenant, self.today), over_ceiling(e.route, self.tenant),
                     _end_of_life(e.route, self.today, self.warning_days))
                    for e in self._all
                )
            found = self._judged[needs] = tuple(
                Judged(e, needs, *parts) for e, parts in zip(self._all, static, strict=True)
            )
        return found


def _end_of_life(route: Route, today: dt.date, warning_days: int) -> str | None:
    """The end-of-life warning a decision gives for the route on this day (None: none)."""
    lifecycle = route.lifecycle
    days = lifecycle.days_left(today)
    if lifecycle.status == "deprecated" or (days is not None and 0 <= days <= warning_days):
        return f"end of life {lifecycle.retires_on.isoformat() if lifecycle.retires_on else 'a date not announced'}"
    return None


class Judged:
    """What the explanation says of one route for one plan and kind of request, before the call's
    own figures are looked at.

    `removed`: the verdict of lifecycle, residency or providers, else the capability filter's for
    this kind of request, when one removes the route; `temperature_first`: the capability filter
    checks the request's temperature before reaching that verdict; `ceiling`: the price ceiling's
    verdict when it removes the route (it comes after health); `warnings`: the route's warnings."""

    __slots__ = ("ceiling", "entry", "removed", "route", "temperature_first", "warnings")

    def __init__(
        self, entry: PlanEntry, needs: Needs, static: Verdict | None, ceiling: Verdict | None, end_of_life: str | None
    ) -> None:
        self.entry, self.route, self.ceiling = entry, entry.route, ceiling
        verdict, temperature_first, replayed = entry.judged(needs)
        self.removed, self.temperature_first = (static, False) if static is not None else (verdict, temperature_first)
        warnings = (end_of_life, _REPLAYED if replayed else None)
        self.warnings = tuple(w for w in warnings if w is not None)


_REPLAYED = "stream replayed from one whole answer"


class Kind:
    """A plan's routes for one kind of request, with the smallest of their size limits (a request
    within all of them needs no per-route size check)."""

    __slots__ = ("entries", "min_context", "min_output", "min_temperature")

    def __init__(self, entries: tuple[PlanEntry, ...]) -> None:
        self.entries = entries
        self.min_context = min((e.context_window for e in entries), default=0)
        self.min_output = min((e.max_output for e in entries), default=0)
        self.min_temperature = min((e.max_temperature for e in entries), default=0.0)


class HealthSnapshot:
    """The circuits of the routes that were not closed when a call was decided (others: closed)."""

    __slots__ = ("_seen",)

    def __init__(self, seen: Mapping[str, tuple[bool, CircuitState]]) -> None:
        self._seen = seen

    def allows(self, route_id: str) -> bool:
        found = self._seen.get(route_id)
        return True if found is None else found[0]

    def state(self, route_id: str) -> CircuitState:
        found = self._seen.get(route_id)
        return CircuitState.CLOSED if found is None else found[1]


ALL_CLOSED = HealthSnapshot({})


def health_now(circuits: CircuitBoard) -> HealthSnapshot:
    """The circuit states a decision reads, captured once (nothing to capture while all are closed)."""
    if not circuits.troubled:
        return ALL_CLOSED
    return HealthSnapshot({rid: (circuits.allows(rid), circuits.state(rid)) for rid in circuits.not_closed()})


Survivor = tuple[float, float, str, int, Route]
"""A route a call may use: (cost, predicted latency ms, route id, ordinal, route), with the latency
first and the cost second when the tenant ranks by latency, so that the tuples' own order is the
ranking rule's (`broker/policy/ranking.py`); the ordinal keeps routes from being compared."""


def survivors(
    kind: Kind,
    *,
    max_tokens: int | None,
    temperature: float | None,
    input_tokens: int,
    health: HealthSnapshot,
    latency: Mapping[str, LatencyEstimate],
    tenant: TenantPolicy,
    budget_remaining_usd: Decimal | None,
    latency_first: bool = False,
) -> list[Survivor]:
    """Apply the per-call filters to a plan's routes for one request: what is left, in policy order."""
    out: list[Survivor] = []
    wanted_out = max_tokens or 0
    needed = input_tokens + wanted_out
    seen = health._seen if health is not ALL_CLOSED else None
    slo: Any = tenant.latency_slo_ms
    p50 = slo.p50 if slo is not None else None
    p95 = slo.p95 if slo is not None else None
    remaining = budget_remaining_usd
    add = out.append
    estimates = latency.get
    exact_below = _EXACT_DIGITS
    sized = (temperature is not None and temperature > kind.min_temperature) or wanted_out > kind.min_output \
        or needed > kind.min_context
    early = sized or seen is not None  # any check before the latency estimate
    late = slo is not None or remaining is not None  # any check after it
    for e in kind.entries:
        if early and (
            (sized and ((temperature is not None and temperature > e.max_temperature) or wanted_out > e.max_output
                        or needed > e.context_window))
            or (seen is not None and not health.allows(e.id))
        ):
            continue
        tokens = max_tokens or e.expected_out
        est = estimates(e.id)
        if est is None:
            est = e.prior
            predicted = e.prior_ms if max_tokens is None else est.ttft_ms + tokens * est.per_token_ms
        else:
            predicted = est.ttft_ms + tokens * est.per_token_ms  # LatencyEstimate.predict_ms
        if late and (
            (p50 is not None and predicted > p50)
            or (p95 is not None and est.predict_p95_ms(tokens) > p95)
            or (remaining is not None and e.price is not None and e.price.cost(input_tokens, tokens) > remaining)
        ):
            continue
        if e.exact:
            numerator = input_tokens * e.in_units + tokens * e.out_units
            cost = numerator / e.units if numerator < exact_below else e.cost(input_tokens, tokens)
        else:
            cost = e.cost(input_tokens, tokens)
        if latency_first:
            add((predicted, cost, e.id, e.ordinal, e.route))
        else:
            add((cost, predicted, e.id, e.ordinal, e.route))
    return out
