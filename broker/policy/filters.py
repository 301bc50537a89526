"""Hard filters, in the fixed order the engine applies them.

Each filter is a callable `(route, ctx) -> Verdict`.  The first filter that says no removes
the route, and the decision records which one and why.  Order:

    lifecycle -> residency -> providers -> capabilities -> health
    -> price ceiling -> latency SLO -> budget
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from broker.health import CircuitBoard, LatencyTracker
from broker.routes import Route
from broker.types import ChatRequest

from .decision import Verdict
from .schema import TenantPolicy

__all__ = ["FILTERS", "CallContext", "stream_replayed"]


@dataclass(frozen=True)
class CallContext:
    """Everything a filter or ranker may read about the call being decided."""

    request: ChatRequest
    tenant: TenantPolicy
    stream: bool
    today: dt.date
    estimated_input_tokens: int
    expected_output_tokens: Callable[[Route], int]
    latency: LatencyTracker
    circuits: CircuitBoard
    budget_remaining_usd: Decimal | None


def lifecycle(route: Route, ctx: CallContext) -> Verdict:
    if route.lifecycle.is_retired(ctx.today):
        when = route.lifecycle.retires_on.isoformat() if route.lifecycle.retires_on else "earlier"
        return Verdict(False, "lifecycle", f"retired ({when})")
    return Verdict(True, "lifecycle")


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


def stream_replayed(route: Route, ctx: CallContext) -> bool:
    """Whether a stream on this route is served as one whole answer: the route does not stream, or
    cannot stream with tools and the call carries tools (offered, or in its tool-call history)."""
    caps, req = route.capabilities, ctx.request
    carries_tools = req.needs_tools or any(m.role == "tool" or m.tool_calls for m in req.messages)
    return ctx.stream and (not caps.streaming or (carries_tools and not caps.streaming_tools))


def health(route: Route, ctx: CallContext) -> Verdict:
    if ctx.circuits.allows(route.id):
        return Verdict(True, "health")
    return Verdict(False, "health", f"circuit {ctx.circuits.state(route.id).value}")


def price_ceiling(route: Route, ctx: CallContext) -> Verdict:
    ceiling = ctx.tenant.max_price_per_mtok
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
