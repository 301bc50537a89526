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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple, Protocol

from broker.health import CircuitState, LatencyEstimate
from broker.routes import Route
from broker.types import ChatRequest

from .decision import Verdict

if TYPE_CHECKING:
    from .schema import TenantPolicy

__all__ = ["FILTERS", "CallContext", "Needs", "class_keep", "needs_of", "static_keep", "stream_replayed"]


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


def residency(route: Route, ctx: CallContext) -> Verdict:
    if ctx.tenant.allows_jurisdiction(route.jurisdiction):
        return Verdict(True, "residency")
    allowed = sorted(ctx.tenant.residency or ())
    return Verdict(False, "residency", f"jurisdiction {route.jurisdiction!r} not in {allowed}")


def providers(route: Route, ctx: CallContext) -> Verdict:
    if ctx.tenant.allows_provider(route.provider):
        return Verdict(True, "providers")
    return Verdict(False, "providers", f"provider {route.provider!r} denied or not in the allow list")


def capabilities(route: Route, ctx: CallContext) -> Verdict:
    caps, req = route.capabilities, ctx.request
    missing = [
        name
        for name, needed, has in (
            ("tools", req.needs_tools, caps.tools),
            ("vision", req.needs_vision, caps.vision),
            ("json", req.needs_json, caps.json_mode),
        )
        if needed and not has
    ]
    if missing:
        return Verdict(False, "capabilities", f"no {', '.join(missing)} support")
    unsupported = _unsupported_parameter(route, req)
    if unsupported:
        return Verdict(False, "capabilities", unsupported)
    if stream_replayed(route, ctx) and not route.options.get("stream_fallback", True):
        return Verdict(False, "capabilities", "no streaming with tools" if caps.streaming else "no streaming")
    wanted_out = req.max_tokens or 0
    if wanted_out > caps.max_output_tokens:
        return Verdict(False, "capabilities", f"max_tokens {wanted_out} > {caps.max_output_tokens}")
    needed = ctx.estimated_input_tokens + wanted_out
    if needed > caps.context_window:
        return Verdict(False, "capabilities", f"~{needed} tokens > context window {caps.context_window}")
    return Verdict(True, "capabilities")


def _unsupported_parameter(route: Route, req: ChatRequest) -> str | None:
    """Why the route cannot honour a parameter the request sets (None when it can)."""
    caps = route.capabilities
    if req.temperature is not None and req.temperature > caps.max_temperature:
        return f"temperature {req.temperature} > {caps.max_temperature}"
    if req.needs_tools and req.tool_choice == "required" and not caps.required_tool_choice:
        return "no tool_choice required support"
    if req.needs_tools and isinstance(req.tool_choice, dict) and not caps.named_tool_choice:
        return "no named tool_choice support"
    if req.seed is not None and not caps.seed:
        return "no seed support"
    return None


def _replayed(route: Route, needs: Needs) -> bool:
    caps = route.capabilities
    return needs.stream and (not caps.streaming or (needs.carries_tools and not caps.streaming_tools))


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


def health(route: Route, ctx: CallContext) -> Verdict:
    if ctx.circuits.allows(route.id):
        return Verdict(True, "health")
    return Verdict(False, "health", f"circuit {ctx.circuits.state(route.id).value}")


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
    for name, limit, predicted in (
        ("p50", slo.p50, est.predict_ms(out)),
        ("p95", slo.p95, est.predict_p95_ms(out)),
    ):
        if limit is not None and predicted > limit:
            return Verdict(False, "latency", f"predicted {name} {predicted:.0f} ms > SLO {limit:.0f} ms")
    return Verdict(True, "latency")


def budget(route: Route, ctx: CallContext) -> Verdict:
    if ctx.budget_remaining_usd is None or route.price is None:
        return Verdict(True, "budget")
    cost = route.price.cost(ctx.estimated_input_tokens, ctx.expected_output_tokens(route))
    if cost > ctx.budget_remaining_usd:
        return Verdict(False, "budget", f"estimated ${cost:.6f} > remaining ${ctx.budget_remaining_usd:.6f}")
    return Verdict(True, "budget")


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
