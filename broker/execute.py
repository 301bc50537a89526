"""Execution: try the decision's routes in rank order, retry, fail over, meter every attempt.

    for route in decision.routes:               ranked survivors of the hard filters only
        guard(route)                            residency, checked again right before the adapter
        retry transient errors on this route    tenacity; wait hint honoured; retry budget
        on a failover-able error: next route
    meter one UsageEvent per attempt; feed latency and circuit state

Streams fail over only before their first token reaches the caller; after it, the caller
gets the typed error.  Sync and async share everything but the awaits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from contextlib import aclosing, closing
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt

from .errors import AuthError, ModelNotAvailable, NoEligibleRoute, ProviderError, ResidencyViolation
from .health import CircuitBoard, LatencyTracker
from .metering.events import UsageEvent
from .policy.decision import Decision
from .policy.schema import RetrySettings
from .retry import RetryBudget, WaitForHint
from .routes import Route
from .streaming import StreamAccumulator
from .types import ChatRequest, ChatResponse, StreamEvent, Usage

__all__ = ["CallMeta", "Executor"]


class _Meter(Protocol):
    durable: bool

    def record(self, event: UsageEvent) -> None: ...


class _AdapterSource(Protocol):
    def get(self, route: Route) -> Any: ...


@dataclass(frozen=True)
class CallMeta:
    """Per-call facts the executor meters: who asked, with which tags, under which policy."""

    request_id: str
    tenant: str
    tags: Mapping[str, str]
    policy_version: str
    store_text: bool = False


@dataclass
class _Attempt:
    route: Route
    number: int
    started: float
    first_token_at: float | None = None


class Executor:
    """Runs decisions against adapters.  Clocks and sleeps are injectable for tests."""

    def __init__(
        self,
        *,
        adapters: _AdapterSource,
        latency: LatencyTracker,
        circuits: CircuitBoard,
        meter: _Meter,
        retry: RetrySettings,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Any] = asyncio.sleep,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.adapters = adapters
        self.latency = latency
        self.circuits = circuits
        self.meter = meter
        self.max_attempts = retry.max_attempts_per_route
        self.wait = WaitForHint(retry.base_delay_s, retry.max_delay_s)
        self.budget = RetryBudget(ratio=retry.budget_ratio, capacity=retry.budget_capacity)
        self.clock, self.sleep, self.asleep, self.wall = clock, sleep, asleep, wall

    # ------------------------------------------------------------------ shared bookkeeping

    @staticmethod
    def guard(route: Route, decision: Decision) -> None:
        """The last check before an adapter is called: the route must be one the filters kept."""
        if route not in decision.routes or not decision.tenant_policy.allows_jurisdiction(route.jurisdiction):
            raise ResidencyViolation(
                f"route {route.id!r} ({route.jurisdiction}) is outside tenant {decision.tenant!r}'s residency"
            )

    def _may_retry(self, route: Route, acc: StreamAccumulator | None) -> Callable[[BaseException], bool]:
        def check(exc: BaseException) -> bool:
            if not (isinstance(exc, ProviderError) and exc.retryable):
                return False
            if acc is not None and acc.delivered:
                return False
            if self.wait.hint_too_long(exc):
                return False
            return self.budget.withdraw(route.id)

        return check

    def _retrying(self, route: Route, acc: StreamAccumulator | None = None) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait,
            retry=retry_if_exception(self._may_retry(route, acc)),
            sleep=self.sleep,
            reraise=True,
        )

    def _aretrying(self, route: Route, acc: StreamAccumulator | None = None) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait,
            retry=retry_if_exception(self._may_retry(route, acc)),
            sleep=self.asleep,
            reraise=True,
        )

    def _event(
        self,
        attempt: _Attempt,
        meta: CallMeta,
        request: ChatRequest,
        usage: Usage,
        *,
        error: ProviderError | None,
        completion: str | None = None,
    ) -> UsageEvent:
        route = attempt.route
        elapsed = (self.clock() - attempt.started) * 1000
        cost = route.price.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) if route.price else None
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
            cost_usd=cost,
            price_version=route.price.version if route.price else None,
            latency_ms=elapsed,
            ttft_ms=(attempt.first_token_at - attempt.started) * 1000 if attempt.first_token_at else None,
            status="error" if error else "ok",
            error_kind=error.kind if error else None,
            timestamp=self.wall(),
            policy_version=meta.policy_version,
            prompt_text=_prompt_text(request) if meta.store_text else None,
            completion_text=completion if meta.store_text else None,
        )

    def _failed(self, attempt: _Attempt, meta: CallMeta, request: ChatRequest, exc: ProviderError,
                acc: StreamAccumulator | None = None) -> UsageEvent:
        """Bookkeeping of a failed attempt; returns the event to meter."""
        exc.route_id = exc.route_id or attempt.route.id
        exc.provider = exc.provider or attempt.route.provider
        if exc.retryable or isinstance(exc, (AuthError, ModelNotAvailable)):
            self.circuits.failure(attempt.route.id)
        else:  # the provider answered (it refused this request): the route itself is healthy
            self.circuits.success(attempt.route.id)
        # a failed attempt that streamed content was billed for it: meter an estimate, flagged
        usage = acc.estimated_usage(request) if acc is not None and acc.delivered else Usage()
        return self._event(attempt, meta, request, usage, error=exc)

    def _abandoned(self, attempt: _Attempt, meta: CallMeta, request: ChatRequest, acc: StreamAccumulator) -> None:
        """The caller stopped reading a stream: meter what it received so far, flagged estimated."""
        usage = acc.usage or (acc.estimated_usage(request) if acc.delivered else Usage())
        self.circuits.success(attempt.route.id)
        event = self._event(attempt, meta, request, usage, error=None)
        self.meter.record(replace(event, status="error", error_kind="Abandoned"))

    def _succeeded(self, attempt: _Attempt, meta: CallMeta, request: ChatRequest, response: ChatResponse,
                   decision: Decision) -> tuple[ChatResponse, UsageEvent]:
        """Bookkeeping of a successful attempt; returns the finished response and the event to meter."""
        route = attempt.route
        total_ms = (self.clock() - attempt.started) * 1000
        ttft_ms = (attempt.first_token_at - attempt.started) * 1000 if attempt.first_token_at else None
        timings = response.provider_timings or {}
        if ttft_ms is None and "completion_time" in timings:  # provider-reported generation time
            ttft_ms = max(0.0, total_ms - 1000 * float(timings["completion_time"]))
        self.circuits.success(route.id)
        self.budget.deposit(route.id)
        self.latency.observe(route, total_ms=total_ms, output_tokens=response.usage.output_tokens, ttft_ms=ttft_ms)
        event = self._event(attempt, meta, request, response.usage, error=None, completion=response.text)
        return replace(
            response,
            cost_usd=event.cost_usd,
            route=route.info,
            decision=decision,
            request_id=meta.request_id,
            attempts=attempt.number,
            latency_ms=total_ms,
            ttft_ms=ttft_ms,
        ), event

    async def _arecord(self, event: UsageEvent) -> None:
        """Meter from async code: a durable commit runs off the event loop's thread."""
        if self.meter.durable:
            await asyncio.to_thread(self.meter.record, event)
        else:
            self.meter.record(event)

    @staticmethod
    def _give_up(decision: Decision, last: ProviderError | None) -> ProviderError | NoEligibleRoute:
        if last is not None:
            return last
        return NoEligibleRoute(
            f"every eligible route for tenant {decision.tenant!r} has an open circuit", decision=decision
        )

    # ------------------------------------------------------------------ sync

    def chat(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatResponse:
        number, last = 0, None
        for route in decision.routes:
            self.guard(route, decision)
            if not self.circuits.begin(route.id):
                continue
            adapter = self.adapters.get(route)
            try:
                for retry_state in self._retrying(route):
                    with retry_state:
                        number += 1
                        attempt = _Attempt(route, number, self.clock())
                        try:
                            response = adapter.chat(request)
                        except ProviderError as exc:
                            self.meter.record(self._failed(attempt, meta, request, exc))
                            raise
                        response, event = self._succeeded(attempt, meta, request, response, decision)
                        self.meter.record(event)
                        return response
            except ProviderError as exc:
                if not exc.failover:
                    raise
                last = exc
        raise self._give_up(decision, last)

    def stream(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> Iterator[StreamEvent]:
        number, last = 0, None
        for route in decision.routes:
            self.guard(route, decision)
            if not self.circuits.begin(route.id):
                continue
            adapter = self.adapters.get(route)
            acc = StreamAccumulator()
            try:
                for retry_state in self._retrying(route, acc):
                    with retry_state:
                        number += 1
                        attempt = _Attempt(route, number, self.clock())
                        acc.reset()
                        try:
                            with closing(adapter.stream(request)) as events:
                                for event in events:
                                    if attempt.first_token_at is None and (event.text or event.tool_calls):
                                        attempt.first_token_at = self.clock()
                                    acc.add(event)
                                    if event.text or event.tool_calls or event.finish_reason:
                                        yield _content_only(event)
                        except ProviderError as exc:
                            self.meter.record(self._failed(attempt, meta, request, exc, acc))
                            raise
                        except GeneratorExit:
                            self._abandoned(attempt, meta, request, acc)
                            raise
                        final, event = self._succeeded(attempt, meta, request, acc.response(request), decision)
                        self.meter.record(event)
                        yield StreamEvent(usage=final.usage, response=final, provider_request_id=final.provider_request_id)
                        return
            except ProviderError as exc:
                if not exc.failover or acc.delivered:
                    raise
                last = exc
        raise self._give_up(decision, last)

    # ------------------------------------------------------------------ async

    async def achat(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatResponse:
        number, last = 0, None
        for route in decision.routes:
            self.guard(route, decision)
            if not self.circuits.begin(route.id):
                continue
            adapter = self.adapters.get(route)
            try:
                async for retry_state in self._aretrying(route):
                    with retry_state:
                        number += 1
                        attempt = _Attempt(route, number, self.clock())
                        try:
                            response = await adapter.achat(request)
                        except ProviderError as exc:
                            await self._arecord(self._failed(attempt, meta, request, exc))
                            raise
                        response, event = self._succeeded(attempt, meta, request, response, decision)
                        await self._arecord(event)
                        return response
            except ProviderError as exc:
                if not exc.failover:
                    raise
                last = exc
        raise self._give_up(decision, last)

    async def astream(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> AsyncIterator[StreamEvent]:
        number, last = 0, None
        for route in decision.routes:
            self.guard(route, decision)
            if not self.circuits.begin(route.id):
                continue
            adapter = self.adapters.get(route)
            acc = StreamAccumulator()
            try:
                async for retry_state in self._aretrying(route, acc):
                    with retry_state:
                        number += 1
                        attempt = _Attempt(route, number, self.clock())
                        acc.reset()
                        try:
                            async with aclosing(adapter.astream(request)) as events:
                                async for event in events:
                                    if attempt.first_token_at is None and (event.text or event.tool_calls):
                                        attempt.first_token_at = self.clock()
                                    acc.add(event)
                                    if event.text or event.tool_calls or event.finish_reason:
                                        yield _content_only(event)
                        except ProviderError as exc:
                            await self._arecord(self._failed(attempt, meta, request, exc, acc))
                            raise
                        except (GeneratorExit, asyncio.CancelledError):
                            self._abandoned(attempt, meta, request, acc)  # no awaiting while closing
                            raise
                        final, event = self._succeeded(attempt, meta, request, acc.response(request), decision)
                        await self._arecord(event)
                        yield StreamEvent(usage=final.usage, response=final, provider_request_id=final.provider_request_id)
                        return
            except ProviderError as exc:
                if not exc.failover or acc.delivered:
                    raise
                last = exc
        raise self._give_up(decision, last)


def _content_only(event: StreamEvent) -> StreamEvent:
    if event.usage is None:
        return event
    return replace(event, usage=None)


def _prompt_text(request: ChatRequest) -> str:
    return "\n".join(f"{m.role}: {m.text}" for m in request.messages)

