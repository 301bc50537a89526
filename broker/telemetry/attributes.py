"""The attributes of the call span, the attempt spans and the metrics, as plain dicts.

Pure functions over broker types (no `opentelemetry` import): the hook passes their results
to the tracer and meter.  Names are those of `broker.telemetry.names`.  Prompt and completion
text appear only through `input_messages` / `output_messages`, which the hook calls only when
the policy opts in.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import names as n

if TYPE_CHECKING:
    from ..attempts import CallMeta
    from ..metering.events import UsageEvent
    from ..routes import Route
    from ..types import ChatRequest, ChatResponse

__all__ = [
    "Attributes",
    "event_attributes",
    "input_messages",
    "metric_attributes",
    "output_messages",
    "request_attributes",
    "route_attributes",
]

Attributes = dict[str, str | bool | int | float]


def server_of(endpoint: str | None) -> tuple[str, int] | None:
    """`(host, port)` of a route endpoint URL; None without one (the SDK's own host is not guessed)."""
    if not endpoint:
        return None
    try:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def request_attributes(request: ChatRequest, meta: CallMeta) -> Attributes:
    """What is known when a call starts: the operation, the model asked for, who asked."""
    attrs: Attributes = {n.OPERATION: "chat", n.REQUEST_MODEL: request.model, n.TENANT: meta.tenant,
                         n.REQUEST_ID: meta.request_id}
    if meta.decision_id:
        attrs[n.DECISION_ID] = meta.decision_id
    if request.max_tokens is not None:
        attrs[n.REQUEST_MAX_TOKENS] = request.max_tokens
    if request.temperature is not None:
        attrs[n.REQUEST_TEMPERATURE] = request.temperature
    if request.top_p is not None:
        attrs[n.REQUEST_TOP_P] = request.top_p
    return attrs


def route_attributes(route: Route) -> Attributes:
    """Where an attempt went: provider, model id, server, route, region, jurisdiction."""
    attrs: Attributes = {
        n.PROVIDER: n.otel_provider_name(route.provider),
        n.RESPONSE_MODEL: route.model_id,
        n.ROUTE: route.id,
        n.JURISDICTION: route.jurisdiction,
    }
    if route.region:
        attrs[n.REGION] = route.region
    server = server_of(route.endpoint)
    if server is not None:
        attrs[n.SERVER_ADDRESS], attrs[n.SERVER_PORT] = server
    return attrs


def event_attributes(event: UsageEvent) -> Attributes:
    """What one metered attempt reported: usage, cost, its number, its error, its energy."""
    attrs: Attributes = {
        n.INPUT_TOKENS: event.input_tokens,
        n.OUTPUT_TOKENS: event.output_tokens,
        n.ATTEMPT: event.attempt,
        n.USAGE_ESTIMATED: event.usage_estimated,
    }
    if event.cost_usd is not None:
        attrs[n.COST_USD] = float(event.cost_usd)
    if event.error_kind:
        attrs[n.ERROR_TYPE] = event.error_kind
    if event.energy_j is not None:
        attrs[n.ENERGY_J] = event.energy_j
        attrs[n.ENERGY_ATTRIBUTED] = bool(event.energy_attributed)
    return attrs


#: the low-cardinality attributes metrics carry (never ids, costs or token counts)
_METRIC_KEYS = (
    n.OPERATION, n.PROVIDER, n.REQUEST_MODEL, n.RESPONSE_MODEL, n.SERVER_ADDRESS, n.SERVER_PORT, n.ERROR_TYPE,
    n.TENANT, n.ROUTE, n.REGION, n.JURISDICTION,
)


def metric_attributes(*sources: Attributes) -> Attributes:
    """The metric attributes among span attributes (later sources win)."""
    merged: Attributes = {}
    for source in sources:
        merged.update(source)
    return {k: merged[k] for k in _METRIC_KEYS if k in merged}


def input_messages(request: ChatRequest) -> str:
    """The prompt as the conventions' `gen_ai.input.messages` JSON (text parts only)."""
    return json.dumps(
        [{"role": m.role, "parts": [{"type": "text", "content": m.text}]} for m in request.messages],
        ensure_ascii=False,
    )


def output_messages(response: ChatResponse) -> str:
    """The answer as `gen_ai.output.messages` JSON: its text and tool calls."""
    parts: list[dict[str, object]] = []
    if response.text:
        parts.append({"type": "text", "content": response.text})
    for call in response.tool_calls:
        parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
    message = {"role": "assistant", "parts": parts, "finish_reason": response.finish_reason or "stop"}
    return json.dumps([message], ensure_ascii=False)
