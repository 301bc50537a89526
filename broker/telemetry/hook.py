"""The telemetry call hook: one GenAI span per call, a child span per attempt, two metrics.

    call span     `chat {model}`, kind CLIENT, from the call's start to its end (all retries
                  and failovers); the answering route's attributes, the answer's usage, the
                  summed cost of every attempt, `error.type` when the call failed
    attempt span  `chat {model_id}`, kind INTERNAL, a child of the call span, timed from its
                  usage event (start = end - latency); the route's and the event's attributes
    metrics       `gen_ai.client.token.usage` ({token}): input and output per metered attempt,
                  so sums equal the ledger's; `gen_ai.client.operation.duration` (s) per call

This module imports `opentelemetry`; the broker imports it only when telemetry is on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import names as n
from .attributes import (
    Attributes,
    event_attributes,
    input_messages,
    metric_attributes,
    output_messages,
    request_attributes,
    route_attributes,
)

if TYPE_CHECKING:
    from ..attempts import CallMeta
    from ..errors import BrokerError
    from ..metering.events import UsageEvent
    from ..policy.decision import Decision
    from ..routes import Route
    from ..types import ChatRequest, ChatResponse

__all__ = ["TelemetryHook"]

_SCOPE = "llama_broker"


class TelemetryHook:
    """Makes the spans and metrics of every call.  Providers default to the process's global ones."""

    blocking = False

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None, capture_content: bool = False,
                 version: str | None = None) -> None:
        tracer_source = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        meter_source = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self.tracer = tracer_source.get_tracer(_SCOPE, version)
        meter = meter_source.get_meter(_SCOPE, version)
        self.capture_content = capture_content
        self.tokens = meter.create_histogram(
            n.TOKEN_USAGE_METRIC, unit="{token}", description="Input and output tokens per metered attempt",
            explicit_bucket_boundaries_advisory=n.TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            n.DURATION_METRIC, unit="s", description="Duration of a chat call, retries and failovers included",
            explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS_S,
        )

    def open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> CallSpan:
        return CallSpan(self, request, meta)


class CallSpan:
    """The telemetry of one call (a `CallScope`)."""

    __slots__ = ("attempts", "attrs", "cost", "hook", "request", "route", "span", "started")

    def __init__(self, hook: TelemetryHook, request: ChatRequest, meta: CallMeta) -> None:
        self.hook, self.request = hook, request
        self.attrs = request_attributes(request, meta)
        self.span = hook.tracer.start_span(f"chat {request.model}", kind=SpanKind.CLIENT, attributes=self.attrs)
        self.started = time.perf_counter()
        self.route: Attributes = {}
        self.cost: float | None = None
        self.attempts = 0

    def claim(self, route: Route) -> BrokerError | None:
        return None

    def attempted(self, route: Route, event: UsageEvent) -> None:
        self.attempts += 1
        self.route = route_attributes(route)
        attrs = {**self.attrs, **self.route, **event_attributes(event)}
        if event.cost_usd is not None:
            self.cost = (self.cost or 0.0) + float(event.cost_usd)
        end_ns = int(event.timestamp.timestamp() * 1e9)
        start_ns = end_ns - int((event.latency_ms or 0.0) * 1e6)
        span = self.hook.tracer.start_span(
            f"chat {route.model_id}", context=trace.set_span_in_context(self.span), kind=SpanKind.INTERNAL,
            attributes=attrs, start_time=start_ns,
        )
        if event.status == "error":
            span.set_status(Status(StatusCode.ERROR, event.error_kind))
        span.end(end_time=end_ns)
        if event.input_tokens or event.output_tokens or event.status == "ok":
            labels = metric_attributes(attrs)
            self.hook.tokens.record(event.input_tokens, {**labels, n.TOKEN_TYPE: "input"})
            self.hook.tokens.record(event.output_tokens, {**labels, n.TOKEN_TYPE: "output"})

    def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
        span = self.span
        final: Attributes = {**self.route, n.ATTEMPTS: self.attempts}
        if self.cost is not None:
            final[n.COST_USD] = self.cost
        if response is not None:
            final[n.INPUT_TOKENS] = response.usage.input_tokens
            final[n.OUTPUT_TOKENS] = response.usage.output_tokens
            if response.provider_request_id:
                final[n.RESPONSE_ID] = response.provider_request_id
            if self.hook.capture_content:
                final[n.OUTPUT_MESSAGES] = output_messages(response)
        if self.hook.capture_content:
            final[n.INPUT_MESSAGES] = input_messages(self.request)
        if error is not None:
            final[n.ERROR_TYPE] = error_type(error)
        span.set_attributes(final)
        if response is not None and response.finish_reason:
            span.set_attribute(n.RESPONSE_FINISH_REASONS, [response.finish_reason])
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error_type(error)))
        span.end()
        self.hook.duration.record(time.perf_counter() - self.started, metric_attributes(self.attrs, final))


def error_type(error: BaseException) -> str:
    """`error.type` of a call's error: the class name, as the ledger meters it (never its message)."""
    if isinstance(error, GeneratorExit):
        return "Abandoned"
    if type(error).__name__ == "CancelledError":
        return "Cancelled"
    return type(error).__name__
