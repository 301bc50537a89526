"""Hard filters, in the fixed order the engine applies them.

Each filter is a callable `(route, ctx) -> Verdict`.  The first filter that says no removes
the route, and the decision records which one and why.  Order:

    lifecycle -> residency -> providers -> capabilities -> health
    -> price ceiling -> latency SLO -> budget

Lifecycle (by date), residency, providers and the price ceiling read only the route, the
tenant and the day: `static_keep` is their conjunction, which the compiled decision
(`broker/policy/engine.py`) evaluates once per tenant, model and day.  `class_keep` is the part
of the capability filter that depends on what kind of request it is (`Needs`), evaluated once
per kind; the rest (temperature, max_tokens, context window, health, SLO, budget) is per call.

The compiled explanation (`broker/policy/explanation.py`) gives the same verdicts and reasons
from the same parts: `static_verdict`, `kind_verdict` and `over_ceiling` once per tenant, day and
kind of request, and per call `temperature_reason`, `size_reason`, `circuit_verdict`,
`slo_verdict` and `budget_verdict`, which the filters below are made of.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from broker.health import CircuitState, LatencyEstimate
from broker.routes import Capabilities, Route
from broker.types import ChatRequest

from .decision import Verdict

if TYPE_CHECKING:
    from .schema import TenantPolicy

__all__ = [
    "FILTERS", "CallContext", "Needs", "budget_verdict", "circuit_verdict", "class_keep", "kind_verdict", "needs_of",
    "over_ceiling", "size_reason", "slo_verdict", "static_keep", "static_verdict", "stream_replayed",
    "stream_replayed_kind", "temperature_reason",
]


class LatencySource(Protocol):
    """What the filters read of route latency: a live tracker, or a snapshot of one."""

    def estimate(self, route: Route) -> LatencyEstimate: ...


class HealthSource(Protocol):
    """What the filters read of route health: the live circuit board, or a snapshot of it."""

    def allows(self, route_id: str) -> bool: ...
    def state(self, route_id: str) -> CircuitState: ...


@dataclass(frozen=True)
class CallContext:
    """Everything a filter or ranker may read about the call being decided."""

    request: ChatRequest
    tenant: TenantPolicy
    stream: bool
    today: dt.date
    estimated_input_tokens: int
    expected_output_tokens: Callable[[Route], int]
    latency: LatencySource
    circuits: HealthSource
    budget_remaining_usd: Decimal | None


class Needs(NamedTuple):
    """The kind of a request, as far as route capabilities care (its sizes aside)."""

    tools: bool
    vision: bool
    json: bool
    required_tool_choice: bool
    named_tool_choice: bool
    seed: bool
    stream: bool
    carries_tools: bool


def needs_of(request: ChatRequest, stream: bool) -> Needs:
    tools = request.needs_tools
    choice = request.tool_choice
    carries = stream and (tools or any(m.role == "tool" or m.tool_calls for m in request.messages))
    return Needs(
        tools,
        request.needs_vision,
        request.needs_json,
        tools and choice == "required",
        tools and isinstance(choice, dict),
        request.seed is not None,
        stream,
        carries,
    )


def _retired(route: Route, today: dt.date) -> Verdict:
    if route.lifecycle.is_retired(today):
        when = route.lifecycle.retires_on.isoformat() if route.lifecycle.retires_on else "earlier"
        return Verdict(False, "lifecycle", f"retired ({when})")
    return Verdict(True, "lifecycle")


def lifecycle(route: Route, ctx: CallContext) -> Verdict:
    return _retired(route, ctx.today)


def _residency(route: Route, tenant: TenantPolicy) -> Verdict:
    if tenant.allows_jurisdiction(route.jurisdiction):
        return Verdict(True, "residency")
    allowed = sorted(tenant.residency or ())
    return Verdict(False, "residency", f"jurisdiction {route.jurisdiction!r} not in {allowed}")


def residency(route: Route, ctx: CallContext) -> Verdict:
    return _residency(route, ctx.tenant)


def _providers(route: Route, tenant: TenantPolicy) -> Verdict:
    if tenant.allows_provider(route.provider):
        return Verdict(True, "providers")
    return Verdict(False, "providers", f"provider {route.provider!r} denied or not in the allow list")


def providers(route: Route, ctx: CallContext) -> Verdict:
    return _providers(route, ctx.tenant)


def _missing(caps: Capabilities, tools: bool, vision: bool, json: bool) -> str | None:
    """Why the route lacks a feature the request needs (None when it has them all)."""
    missing = [
        name
        for name, needed, has in (("tools", tools, caps.tools), ("vision", vision, caps.vision),
                                  ("json", json, caps.json_mode))
        if needed and not has
    ]
    return f"no {', '.join(missing)} support" if missing else None


def _no_stream(route: Route) -> str | None:
    """Why a stream the route would replay cannot be served (None when replaying is allowed)."""
    if route.options.get("stream_fallback", True):
        return None
    return "no streaming with tools" if route.capabilities.streaming else "no streaming"


def capabilities(route: Route, ctx: CallContext) -> Verdict:
    caps, req = route.capabilities, ctx.request
    missing = _missing(caps, req.needs_tools, req.needs_vision, req.needs_json)
    if missing:
        return Verdict(False, "capabilities", missing)
    unsupported = _unsupported_parameter(route, req)
    if unsupported:
        return Verdict(False, "capabilities", unsupported)
    no_stream = _no_stream(route) if stream_replayed(route, ctx) else None
    if no_stream:
        return Verdict(False, "capabilities", no_stream)
    wanted_out = req.max_tokens or 0
    oversized = size_reason(caps, wanted_out, ctx.estimated_input_tokens + wanted_out)
    if oversized:
        return Verdict(False, "capabilities", oversized)
    return Verdict(True, "capabilities")


def temperature_reason(caps: Capabilities, temperature: float | None) -> str | None:
    """Why the route cannot take the request's temperature (None when it can)."""
    if temperature is not None and temperature > caps.max_temperature:
        return f"temperature {temperature} > {caps.max_temperature}"
    return None


def size_reason(caps: Capabilities, wanted_out: int, needed: int) -> str | None:
    """Why the route cannot take `wanted_out` output tokens, or `needed` tokens in all (None when it can)."""
    if wanted_out > caps.max_output_tokens:
        return f"max_tokens {wanted_out} > {caps.max_output_tokens}"
    if needed > caps.context_window:
        return f"~{needed} tokens > context window {caps.context_window}"
    return None


def _unsupported_parameter(route: Route, req: ChatRequest) -> str | None:
    """Why the route cannot honour a parameter the request sets (None when it can)."""
    caps = route.capabilities
    too_warm = temperature_reason(caps, req.temperature)
    if too_warm:
        return too_warm
    tools = req.needs_tools
    return _unsupported_choice(
        caps, tools and req.tool_choice == "required", tools and isinstance(req.tool_choice, dict), req.seed is not None
    )


def _unsupported_choice(caps: Capabilities, required: bool, named: bool, seed: bool) -> str | None:
    """Why the route cannot honour the request's tool_choice or seed (None when it can)."""
    if required and not caps.required_tool_choice:
        return "no tool_choice required support"
    if named and not caps.named_tool_choice:
        return "no named tool_choice support"
    if seed and not caps.seed:
        return "no seed support"
    return None


def _replayed(route: Route, needs: Needs) -> bool:
    caps = route.capabilities
    return needs.stream and (not caps.streaming or (needs.carries_tools and not caps.streaming_tools))


def stream_replayed_kind(route: Route, needs: Needs) -> bool:
    """`stream_replayed` for any request of this kind."""
    return _replayed(route, needs)


def stream_replayed(route: Route, ctx: CallContext) -> bool:
    """Whether a stream on this route is served as one whole answer: the route does not stream, or
    cannot stream with tools and the call carries tools (offered, or in its tool-call history)."""
    caps, req = route.capabilities, ctx.request
    carries_tools = req.needs_tools or any(m.role == "tool" or m.tool_calls for m in req.messages)
    return ctx.stream and (not caps.streaming or (carries_tools and not caps.streaming_tools))


def class_keep(route: Route, needs: Needs) -> bool:
    """Whether the capability filter can keep the route for a request of this kind (sizes and
    temperature, which vary per call, are checked per call)."""
    caps = route.capabilities
    if (needs.tools and not caps.tools) or (needs.vision and not caps.vision) or (needs.json and not caps.json_mode):
        return False
    if (needs.required_tool_choice and not caps.required_tool_choice) or (
        needs.named_tool_choice and not caps.named_tool_choice
    ):
        return False
    if needs.seed and not caps.seed:
        return False
    return not (_replayed(route, needs) and not route.options.get("stream_fallback", True))


def kind_verdict(route: Route, needs: Needs) -> tuple[Verdict | None, bool]:
    """The capability filter's verdict on the route for requests of this kind (None: it keeps it, as
    far as the kind decides), and whether the filter checks the request's temperature before
    reaching that verdict (sizes and temperature, which vary per call, are checked per call)."""
    caps = route.capabilities
    missing = _missing(caps, needs.tools, needs.vision, needs.json)
    if missing:
        return Verdict(False, "capabilities", missing), False
    unsupported = _unsupported_choice(caps, needs.required_tool_choice, needs.named_tool_choice, needs.seed)
    if unsupported is None and _replayed(route, needs):
        unsupported = _no_stream(route)
    return (None if unsupported is None else Verdict(False, "capabilities", unsupported)), True


def health(route: Route, ctx: CallContext) -> Verdict:
    if ctx.circuits.allows(route.id):
        return Verdict(True, "health")
    return circuit_verdict(ctx.circuits, route.id)


def circuit_verdict(circuits: HealthSource, route_id: str) -> Verdict:
    """The health filter's verdict on a route whose circuit does not allow calls."""
    return Verdict(False, "health", f"circuit {circuits.state(route_id).value}")


def _over_ceiling(route: Route, tenant: TenantPolicy) -> Verdict:
    ceiling = tenant.max_price_per_mtok
    if ceiling is None:
        return Verdict(True, "price")
    if route.price is None:
        return Verdict(False, "price", "price unknown; the tenant has a price ceiling")
    for side, limit, price in (
        ("input", ceiling.input, route.price.input_per_mtok),
        ("output", ceiling.output, route.price.output_per_mtok),
    ):
        if limit is not None and price > limit:
            return Verdict(False, "price", f"{side} ${price}/Mtok > ceiling ${limit}")
    return Verdict(True, "price")


def price_ceiling(route: Route, ctx: CallContext) -> Verdict:
    return _over_ceiling(route, ctx.tenant)


def over_ceiling(route: Route, tenant: TenantPolicy) -> Verdict | None:
    """The price ceiling's verdict when it removes the route (None when it keeps it)."""
    verdict = _over_ceiling(route, tenant)
    return None if verdict.keep else verdict


def static_verdict(route: Route, tenant: TenantPolicy, today: dt.date) -> Verdict | None:
    """The first of lifecycle, residency and providers that removes the route (None: all keep it)."""
    for verdict in (_retired(route, today), _residency(route, tenant), _providers(route, tenant)):
        if not verdict.keep:
            return verdict
    return None


def static_keep(route: Route, tenant: TenantPolicy, today: dt.date) -> bool:
    """Whether lifecycle, residency, providers and the price ceiling all keep the route: what
    depends only on the route, the tenant and the day."""
    return (
        not route.lifecycle.is_retired(today)
        and tenant.allows_jurisdiction(route.jurisdiction)
        and tenant.allows_provider(route.provider)
        and _over_ceiling(route, tenant).keep
    )


def latency_slo(route: Route, ctx: CallContext) -> Verdict:
    slo = ctx.tenant.latency_slo_ms
    if slo is None:
        return Verdict(True, "latency")
    est = ctx.latency.estimate(route)
    out = ctx.expected_output_tokens(route)
    return slo_verdict(slo, est, out, est.predict_ms(out)) or Verdict(True, "latency")


def slo_verdict(slo: Any, est: LatencyEstimate, out: int, predicted: float) -> Verdict | None:
    """The latency SLO's verdict when it removes a route whose estimate is `est`, for `out` output
    tokens, `predicted` being `est.predict_ms(out)` (None when it keeps it)."""
    for name, limit, value in (("p50", slo.p50, predicted), ("p95", slo.p95, est.predict_p95_ms(out))):
        if limit is not None and value > limit:
            return Verdict(False, "latency", f"predicted {name} {value:.0f} ms > SLO {limit:.0f} ms")
    return None


def budget(route: Route, ctx: CallContext) -> Verdict:
    if ctx.budget_remaining_usd is None or route.price is None:
        return Verdict(True, "budget")
    cost = route.price.cost(ctx.estimated_input_tokens, ctx.expected_output_tokens(route))
    return budget_verdict(cost, ctx.budget_remaining_usd) or Verdict(True, "budget")


def budget_verdict(cost: Decimal, remaining: Decimal) -> Verdict | None:
    """The budget's verdict when a route's estimated cost exceeds what remains (None when it does not)."""
    if cost > remaining:
        return Verdict(False, "budget", f"estimated ${cost:.6f} > remaining ${remaining:.6f}")
    return None


FILTERS: tuple[Callable[[Route, CallContext], Verdict], ...] = (
    lifecycle,
    residency,
    providers,
    capabilities,
    health,
    price_ceiling,
    latency_slo,
    budget,
)
