"""How one attempt ends: what the caller gets, the usage event it meters, what route health learns.

Two parts, each named for what it does:

    UsageEvents      builds the one `UsageEvent` an attempt meters (tokens, cost at the price in
                     force, timings, status); no side effects
    AttemptOutcomes  settles an attempt: admits the adapter's answer (the usage rule of
                     `broker/usage.py`), decides the error the caller sees, and feeds the route's
                     circuit, retry-budget earnings and latency tracker

Every attempt ends in exactly one of these ways, and each way meters exactly one event:

    succeeded      usage as the provider reported it, or an estimate (flagged) if it reported none
    provider fault a typed `ProviderError`: counted against the circuit when the route is at fault;
                   tokens only if the provider answered (absurd usage: an estimate) or content had
                   already streamed (an estimate)
    route unusable the adapter could not be built or configured at call time (`UNUSABLE_ROUTE`):
                   the circuit is not touched and the executor moves on to the next route
    adapter bug    any exception no adapter mapped becomes `AdapterBug` (the original as its
                   cause): raised at once, never retried, failed over or counted against a circuit
    interrupted    the caller cancelled or stopped reading: what it received, estimated
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .errors import (
    AdapterBug,
    AdapterNotFound,
    AuthError,
    BrokerError,
    CredentialsError,
    MissingDependency,
    ModelNotAvailable,
    PolicyError,
    ProtocolError,
    ProviderError,
)
from .health import CircuitBoard, LatencyTracker
from .metering.events import UsageEvent
from .policy.decision import Decision
from .retry import RetryBudget
from .routes import Route
from .streaming import StreamAccumulator
from .types import ChatRequest, ChatResponse, Usage
from .usage import completion_chars, estimated_usage, usage_problem

__all__ = ["UNUSABLE_ROUTE", "Attempt", "AttemptOutcomes", "CallMeta", "UsageEvents", "request_needs"]

#: What an adapter raises when its route cannot be used at all (not built, not configured, no
#: credential): the call moves on to the next route, and the route's circuit is not touched.
UNUSABLE_ROUTE: tuple[type[BrokerError], ...] = (AdapterNotFound, MissingDependency, CredentialsError, PolicyError)

_NOTHING = Usage()


@dataclass(frozen=True)
class CallMeta:
    """Per-call facts the executor meters: who asked, with which tags, under which policy."""

    request_id: str
    tenant: str
    tags: Mapping[str, str]
    policy_version: str
    store_text: bool = False
    stream: bool = False
    decision_id: str | None = None


@dataclass
class Attempt:
    """One try of one route.  `billed` is the usage to meter if it fails after its answer arrived."""

    route: Route
    number: int
    started: float
    first_token_at: float | None = None
    billed: Usage | None = None


class UsageEvents:
    """Builds the usage event of an attempt, on the executor's clocks."""

    def __init__(self, *, clock: Callable[[], float], wall: Callable[[], dt.datetime]) -> None:
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
        retry_after_s: float | None = None,
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
            needs=request_needs(request, meta.stream),
            decision_id=meta.decision_id,
            retry_after_s=retry_after_s,
        )


class AttemptOutcomes:
    """Settles each attempt: the answer or error, the event to meter, and the route-health feedback."""

    def __init__(
        self,
        *,
        latency: LatencyTracker,
        circuits: CircuitBoard,
        budget: RetryBudget,
        clock: Callable[[], float],
        wall: Callable[[], dt.datetime],
    ) -> None:
        self.latency, self.circuits, self.budget, self.clock = latency, circuits, budget, clock
        self.events = UsageEvents(clock=clock, wall=wall)
        #: signs the finished answer's provenance record (`broker.provenance`) when the policy turns it on
        self.stamp: Callable[[ChatResponse, CallMeta, Route], ChatResponse] | None = None

    @staticmethod
    def admit(attempt: Attempt, request: ChatRequest, answer: ChatResponse) -> Usage:
        """The usage to meter for an adapter's answer, checked where it enters the core.

        None reported: an estimate from the prompt and completion text.  Out of range: the
        answer is a `ProtocolError`, and the attempt is billed an estimate.
        """
        usage = answer.usage
        problem = usage_problem(usage)
        if problem is None:
            if usage.estimated and not (usage.input_tokens or usage.output_tokens):
                return estimated_usage(request, completion_chars(answer))
            return usage
        attempt.billed = estimated_usage(request, completion_chars(answer))
        raise ProtocolError(problem, request_id=answer.provider_request_id)

    def succeeded(
        self,
        attempt: Attempt,
        meta: CallMeta,
        request: ChatRequest,
        response: ChatResponse,
        usage: Usage,
        decision: Decision,
    ) -> tuple[ChatResponse, UsageEvent]:
        """The finished response (usage, cost, route, decision filled in) and the event to meter."""
        route = attempt.route
        total_ms = (self.clock() - attempt.started) * 1000
        ttft_ms = (attempt.first_token_at - attempt.started) * 1000 if attempt.first_token_at else None
        timings = response.provider_timings or {}
        if ttft_ms is None and "completion_time" in timings:  # provider-reported generation time
            ttft_ms = max(0.0, total_ms - 1000 * float(timings["completion_time"]))
        self.circuits.success(route.id)
        self.budget.deposit(route.id)
        self.latency.observe(route, total_ms=total_ms, output_tokens=usage.output_tokens, ttft_ms=ttft_ms)
        event = self.events.event(attempt, meta, request, usage, completion=response.text)
        finished = replace(
            response,
            usage=usage,
            cost_usd=event.cost_usd,
            route=route.info,
            decision=decision,
            request_id=meta.request_id,
            attempts=attempt.number,
            latency_ms=total_ms,
            ttft_ms=ttft_ms,
        )
        if self.stamp is not None:
            finished = self.stamp(finished, meta, route)
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
        if isinstance(exc, Exception):
            # content that had already streamed was billed: meter an estimate, flagged as such
            usage = attempt.billed or (acc.estimated_usage(request) if acc is not None and delivered else _NOTHING)
            if isinstance(exc, ProviderError):
                exc.route_id = exc.route_id or route.id
                exc.provider = exc.provider or route.provider
                if exc.retryable or isinstance(exc, (AuthError, ModelNotAvailable)):
                    self.circuits.failure(route.id)
                else:  # the provider answered (it refused this request): the route itself is healthy
                    self.circuits.success(route.id)
                return exc, self.events.event(attempt, meta, request, usage, error_kind=exc.kind,
                                              retry_after_s=exc.retry_after)
            # an unusable route found at call time, or an adapter bug: neither is the route's health
            self.circuits.release(route.id)
            err = exc if isinstance(exc, BrokerError) else _bug(exc, route)
            return err, self.events.event(attempt, meta, request, usage, error_kind=type(err).__name__)
        # cancelled, interrupted, or a stream the caller stopped reading: the request was sent
        if delivered:
            self.circuits.success(route.id)
        else:
            self.circuits.release(route.id)
        if acc is not None and acc.usage is not None and usage_problem(acc.usage) is None:
            usage = acc.usage
        elif acc is not None and delivered:
            usage = acc.estimated_usage(request)
        else:
            usage = Usage(input_tokens=request.estimated_input_tokens(), estimated=True)
        kind = "Abandoned" if isinstance(exc, GeneratorExit) else "Cancelled"
        return exc, self.events.event(attempt, meta, request, usage, error_kind=kind)


def request_needs(request: ChatRequest, stream: bool) -> str:
    """What a request asked of a route, as compact JSON for the ledger (never its text)."""
    return json.dumps(
        {
            "json": request.needs_json,
            "max_tokens": request.max_tokens,
            "stream": stream,
            "tools": request.needs_tools,
            "vision": request.needs_vision,
        },
        separators=(",", ":"),
    )


def _bug(exc: Exception, route: Route) -> AdapterBug:
    # the message names the type only: an unmapped exception's text could carry request details
    err = AdapterBug(
        f"the {route.provider} adapter of route {route.id!r} raised {type(exc).__name__}, "
        "which no adapter maps (a bug: see __cause__)",
        provider=route.provider,
        route_id=route.id,
    )
    err.__cause__ = exc
    return err
