"""Bookkeeping of one attempt: the usage event it meters, and what it teaches route health.

Every attempt ends in exactly one of three ways, and each way meters exactly one event:

    succeeded    usage as the provider reported it (or an estimate, flagged, if it never did)
    failed       a typed provider error; tokens only if content had already streamed (estimated)
    interrupted  the caller cancelled or stopped reading; what it received, estimated

Anything else an adapter raises (an unmapped SDK error, a bug) is turned into a
`ProtocolError` here, so the caller only ever sees the broker's error types.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .errors import AuthError, BrokerError, ModelNotAvailable, ProtocolError, ProviderError
from .health import CircuitBoard, LatencyTracker
from .metering.events import UsageEvent
from .policy.decision import Decision
from .retry import RetryBudget
from .routes import Route
from .streaming import StreamAccumulator
from .types import ChatRequest, ChatResponse, Usage

__all__ = ["Attempt", "Bookkeeper", "CallMeta"]


@dataclass(frozen=True)
class CallMeta:
    """Per-call facts the executor meters: who asked, with which tags, under which policy."""

    request_id: str
    tenant: str
    tags: Mapping[str, str]
    policy_version: str
    store_text: bool = False


@dataclass
class Attempt:
    """One try of one route."""

    route: Route
    number: int
    started: float
    first_token_at: float | None = None


class Bookkeeper:
    """Builds the usage event of each attempt and updates circuits, retry budget and latency."""

    def __init__(
        self,
        *,
        latency: LatencyTracker,
        circuits: CircuitBoard,
        budget: RetryBudget,
        clock: Callable[[], float],
        wall: Callable[[], dt.datetime],
    ) -> None:
        self.latency, self.circuits, self.budget = latency, circuits, budget
        self.clock, self.wall = clock, wall

    def event(
        self,
        attempt: Attempt,
        meta: CallMeta,
        request: ChatRequest,
        usage: Usage,
        *,
        error_kind: str | None = None,
        completion: str | None = None,
    ) -> UsageEvent:
        route = attempt.route
        price = route.price
        return UsageEvent(
            event_id=uuid.uuid4().hex,
            request_id=meta.request_id,
            attempt=attempt.number,
            tenant=meta.tenant,
            tags=dict(meta.tags),
            model=route.model,
            provider=route.provider,
            region=route.region,
            jurisdiction=route.jurisdiction,
            model_id=route.model_id,
            route_id=route.id,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            usage_estimated=usage.estimated,
            cost_usd=price.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) if price else None,
            price_version=price.version if price else None,
            latency_ms=(self.clock() - attempt.started) * 1000,
            ttft_ms=(attempt.first_token_at - attempt.started) * 1000 if attempt.first_token_at else None,
            status="error" if error_kind else "ok",
            error_kind=error_kind,
            timestamp=self.wall(),
            policy_version=meta.policy_version,
            prompt_text="\n".join(f"{m.role}: {m.text}" for m in request.messages) if meta.store_text else None,
            completion_text=completion if meta.store_text else None,
        )

    def succeeded(
        self, attempt: Attempt, meta: CallMeta, request: ChatRequest, response: ChatResponse, decision: Decision
    ) -> tuple[ChatResponse, UsageEvent]:
        """The finished response (cost, route, decision filled in) and the event to meter."""
        route = attempt.route
        total_ms = (self.clock() - attempt.started) * 1000
        ttft_ms = (attempt.first_token_at - attempt.started) * 1000 if attempt.first_token_at else None
        timings = response.provider_timings or {}
        if ttft_ms is None and "completion_time" in timings:  # provider-reported generation time
            ttft_ms = max(0.0, total_ms - 1000 * float(timings["completion_time"]))
        self.circuits.success(route.id)
        self.budget.deposit(route.id)
        self.latency.observe(route, total_ms=total_ms, output_tokens=response.usage.output_tokens, ttft_ms=ttft_ms)
        event = self.event(attempt, meta, request, response.usage, completion=response.text)
        finished = replace(
            response,
            cost_usd=event.cost_usd,
            route=route.info,
            decision=decision,
            request_id=meta.request_id,
            attempts=attempt.number,
            latency_ms=total_ms,
            ttft_ms=ttft_ms,
        )
        return finished, event

    def failed(
        self,
        attempt: Attempt,
        meta: CallMeta,
        request: ChatRequest,
        exc: BaseException,
        acc: StreamAccumulator | None = None,
    ) -> tuple[BaseException, UsageEvent]:
        """What the caller sees for whatever an attempt raised, and the event to meter."""
        route = attempt.route
        delivered = acc is not None and acc.delivered
        # content that had already streamed was billed: meter an estimate, flagged as such
        usage = acc.estimated_usage(request) if acc is not None and delivered else Usage()
        if isinstance(exc, BrokerError) and not isinstance(exc, ProviderError):
            self.circuits.release(route.id)  # configuration found wanting at call time, not the route's health
            return exc, self.event(attempt, meta, request, usage, error_kind=type(exc).__name__)
        if isinstance(exc, Exception):
            err = exc if isinstance(exc, ProviderError) else _unmapped(exc, route)
            err.route_id = err.route_id or route.id
            err.provider = err.provider or route.provider
            if err.retryable or isinstance(err, (AuthError, ModelNotAvailable)):
                self.circuits.failure(route.id)
            else:  # the provider answered (it refused this request): the route itself is healthy
                self.circuits.success(route.id)
            return err, self.event(attempt, meta, request, usage, error_kind=err.kind)
        # cancelled, interrupted, or a stream the caller stopped reading: the request was sent
        if delivered:
            self.circuits.success(route.id)
        else:
            self.circuits.release(route.id)
        if acc is not None and acc.usage is not None:
            usage = acc.usage
        elif not delivered:
            usage = Usage(input_tokens=request.estimated_input_tokens(), estimated=True)
        kind = "Abandoned" if isinstance(exc, GeneratorExit) else "Cancelled"
        return exc, self.event(attempt, meta, request, usage, error_kind=kind)


def _unmapped(exc: Exception, route: Route) -> ProtocolError:
    # the message names the type only: an unmapped SDK error's text could carry request details
    err = ProtocolError(
        f"unmapped {type(exc).__name__} from the {route.provider} adapter (see __cause__)",
        provider=route.provider,
        route_id=route.id,
    )
    err.__cause__ = exc
    return err
