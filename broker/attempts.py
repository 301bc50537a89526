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
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal

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
from .types import ChatRequest, ChatResponse, RouteInfo, Usage
from .usage import completion_chars, estimated_usage, usage_problem

__all__ = ["UNUSABLE_ROUTE", "Attempt", "AttemptOutcomes", "CallMeta", "UsageEvents", "new_call_id", "request_needs"]

#: What an adapter raises when its route cannot be used at all (not built, not configured, no
#: credential): the call moves on to the next route, and the route's circuit is not touched.
UNUSABLE_ROUTE: tuple[type[BrokerError], ...] = (AdapterNotFound, MissingDependency, CredentialsError, PolicyError)

_NOTHING = Usage()

#: every field of `ChatResponse` as this module knows it: while that holds, a finished answer is
#: built by one constructor call naming them all (else, by `dataclasses.replace`)
_RESPONSE_FIELDS = (
    "text", "tool_calls", "finish_reason", "usage", "provider_request_id", "provider_latency_ms", "provider_timings",
    "cost_usd", "route", "decision", "request_id", "attempts", "latency_ms", "ttft_ms", "provenance",
)
_DIRECT = tuple(f.name for f in fields(ChatResponse)) == _RESPONSE_FIELDS


def new_call_id() -> str:
    """A fresh call id: 128 random bits from the OS (`os.urandom`) as 32 hex digits.

    The bits are drawn 256 ids at a time: each `os.urandom` call lets go of the GIL, and a call
    that did so twice per request handed the interpreter to the background flushes each time.
    Ids drawn ahead are dropped in a forked child, so two processes never share one.
    """
    try:
        return _IDS.pop()
    except IndexError:
        raw = os.urandom(16 * _IDS_DRAWN).hex()
        _IDS.extend([raw[i:i + 32] for i in range(32, len(raw), 32)])  # list.pop/extend: safe across threads
        return raw[:32]


_IDS_DRAWN = 256
_IDS: list[str] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.clear)


def event_id(request_id: str, attempt: int) -> str:
    """The id of attempt `attempt`'s usage event: the call's random id with the attempt number mixed
    into its low bits, so one random draw serves the call and all its attempts (ids stay 32 hex
    digits, distinct per attempt, and collide only as often as random 128-bit ids would).  A call id
    that is not 32 hex digits gets a random event id of its own."""
    if len(request_id) == 32:
        try:
            return f"{int(request_id, 16) ^ attempt:032x}"
        except ValueError:
            pass
    return new_call_id()


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
        self._price_versions: dict[str, tuple[Route, str | None]] = {}  # route id -> (route, its price label)

    def price_version(self, route: Route) -> str | None:
        """The route's price label, worked out once per route."""
        found = self._price_versions.get(route.id)
        if found is None or found[0] is not route:
            found = self._price_versions[route.id] = (route, route.price.version if route.price else None)
        return found[1]

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
            event_id=event_id(meta.request_id, attempt.number),
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
            price_version=self.price_version(route),
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
        self._route_infos: dict[str, tuple[Route, RouteInfo]] = {}
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
        finished = _finished(response, usage, event.cost_usd, self.route_info(route), decision, meta.request_id,
                             attempt.number, total_ms, ttft_ms)
        if self.stamp is not None:
            finished = self.stamp(finished, meta, route)
        return finished, event

    def route_info(self, route: Route) -> RouteInfo:
        """Where a call went, built once per route."""
        found = self._route_infos.get(route.id)
        if found is None or found[0] is not route:
            found = self._route_infos[route.id] = (route, route.info)
        return found[1]

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
    key = (request.needs_json, request.max_tokens, stream, request.needs_tools, request.needs_vision)
    found = _NEEDS_JSON.get(key)
    if found is None:
        found = json.dumps(
            {"json": key[0], "max_tokens": key[1], "stream": key[2], "tools": key[3], "vision": key[4]},
            separators=(",", ":"),
        )
        if len(_NEEDS_JSON) < _NEEDS_JSON_KEPT:
            _NEEDS_JSON[key] = found
    return found


_NEEDS_JSON: dict[tuple[bool, int | None, bool, bool, bool], str] = {}
_NEEDS_JSON_KEPT = 4096  # kinds of request remembered (max_tokens varies); past this, each is encoded anew


def _finished(
    response: ChatResponse, usage: Usage, cost: Decimal | None, route: RouteInfo, decision: Decision, request_id: str,
    attempts: int, latency_ms: float, ttft_ms: float | None,
) -> ChatResponse:
    """The answer the caller gets: the adapter's answer (left as it is: adapters may share theirs)
    with what the broker adds, in one constructor call."""
    if not _DIRECT:
        return replace(response, usage=usage, cost_usd=cost, route=route, decision=decision, request_id=request_id,
                       attempts=attempts, latency_ms=latency_ms, ttft_ms=ttft_ms)
    return ChatResponse(
        text=response.text,
        tool_calls=response.tool_calls,
        finish_reason=response.finish_reason,
        usage=usage,
        provider_request_id=response.provider_request_id,
        provider_latency_ms=response.provider_latency_ms,
        provider_timings=response.provider_timings,
        cost_usd=cost,
        route=route,
        decision=decision,
        request_id=request_id,
        attempts=attempts,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        provenance=response.provenance,
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
