"""Execution: try the decision's routes in rank order, retry, fail over, meter every attempt.

    for route in decision.routes:               ranked survivors of the hard filters only
        guard(route)                            residency, checked again right before the adapter
        retry transient errors on this route    tenacity; wait hint honoured; retry budget
        on a failover-able error: next route
    meter one UsageEvent per attempt (broker/attempts.py); feed latency and circuit state

Streams fail over only before their first token reaches the caller; after it, the caller
gets the typed error.  Sync and async share everything but the awaits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, closing
from typing import Any, NoReturn, Protocol

from tenacity import AsyncRetrying, RetryCallState, Retrying, stop_after_attempt

from .attempts import Attempt, Bookkeeper, CallMeta
from .errors import NoEligibleRoute, ProviderError, ResidencyViolation
from .health import CircuitBoard, LatencyTracker
from .metering.events import UsageEvent
from .policy.decision import Decision
from .policy.schema import RetrySettings
from .retry import RetryBudget, WaitForHint
from .routes import Route
from .streaming import StreamAccumulator
from .types import ChatRequest, ChatResponse, StreamEvent

__all__ = ["CallMeta", "Executor"]


class _Meter(Protocol):
    durable: bool

    def record(self, event: UsageEvent) -> None: ...


class _AdapterSource(Protocol):
    def get(self, route: Route) -> Any: ...


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
        self.circuits = circuits
        self.meter = meter
        self.max_attempts = retry.max_attempts_per_route
        self.wait = WaitForHint(retry.base_delay_s, retry.max_delay_s)
        self.budget = RetryBudget(ratio=retry.budget_ratio, capacity=retry.budget_capacity)
        self.books = Bookkeeper(latency=latency, circuits=circuits, budget=self.budget, clock=clock, wall=wall)
        self.clock, self.sleep, self.asleep = clock, sleep, asleep

    # ------------------------------------------------------------------ shared

    @staticmethod
    def guard(route: Route, decision: Decision) -> None:
        """The last check before an adapter is called: the route must be one the filters kept."""
        if route not in decision.routes or not decision.tenant_policy.allows_jurisdiction(route.jurisdiction):
            raise ResidencyViolation(
                f"route {route.id!r} ({route.jurisdiction}) is outside tenant {decision.tenant!r}'s residency"
            )

    def _claim(self, route: Route, decision: Decision) -> Any:
        """The route's adapter if the route may be called now, else None (its circuit is open)."""
        self.guard(route, decision)
        if not self.circuits.begin(route.id):
            return None
        try:
            return self.adapters.get(route)
        except BaseException:
            self.circuits.release(route.id)
            raise

    def _retry_if(self, route: Route, acc: StreamAccumulator | None) -> Callable[[RetryCallState], bool]:
        def check(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            return (
                isinstance(exc, ProviderError)
                and exc.retryable
                and state.attempt_number < self.max_attempts
                and not (acc is not None and acc.delivered)
                and not self.wait.hint_too_long(exc)
                and self.circuits.allows(route.id)  # this failure may just have opened the circuit
                and self.budget.withdraw(route.id)  # last: a token is spent only on a retry that happens
            )

        return check

    def _retrying(self, route: Route, acc: StreamAccumulator | None = None) -> Retrying:
        return Retrying(stop=stop_after_attempt(self.max_attempts), wait=self.wait,
                        retry=self._retry_if(route, acc), sleep=self.sleep, reraise=True)

    def _aretrying(self, route: Route, acc: StreamAccumulator | None = None) -> AsyncRetrying:
        return AsyncRetrying(stop=stop_after_attempt(self.max_attempts), wait=self.wait,
                             retry=self._retry_if(route, acc), sleep=self.asleep, reraise=True)

    def _fail(self, attempt: Attempt, meta: CallMeta, request: ChatRequest, exc: BaseException,
              acc: StreamAccumulator | None = None) -> NoReturn:
        err, event = self.books.failed(attempt, meta, request, exc, acc)
        self.meter.record(event)
        raise err from (exc if err is not exc else exc.__cause__)

    async def _afail(self, attempt: Attempt, meta: CallMeta, request: ChatRequest, exc: BaseException,
                     acc: StreamAccumulator | None = None) -> NoReturn:
        err, event = self.books.failed(attempt, meta, request, exc, acc)
        if isinstance(exc, Exception):
            await self._arecord(event)
        else:  # closing or cancelled: no awaiting now
            self.meter.record(event)
        raise err from (exc if err is not exc else exc.__cause__)

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

    def _observe(self, attempt: Attempt, acc: StreamAccumulator, event: StreamEvent) -> bool:
        """Add a streamed event; whether it carries content for the caller."""
        if attempt.first_token_at is None and (event.text or event.tool_calls):
            attempt.first_token_at = self.clock()
        acc.add(event)
        return bool(event.text or event.tool_calls or event.finish_reason)

    # ------------------------------------------------------------------ sync

    def chat(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatResponse:
        number, last = 0, None
        for route in decision.routes:
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            try:
                for retry_state in self._retrying(route):
                    with retry_state:
                        number += 1
                        attempt = Attempt(route, number, self.clock())
                        try:
                            response = adapter.chat(request)
                        except BaseException as exc:
                            self._fail(attempt, meta, request, exc)
                        response, event = self.books.succeeded(attempt, meta, request, response, decision)
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
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            acc = StreamAccumulator()
            try:
                for retry_state in self._retrying(route, acc):
                    with retry_state:
                        number += 1
                        attempt = Attempt(route, number, self.clock())
                        acc.reset()
                        try:
                            with closing(adapter.stream(request)) as events:
                                for event in events:
                                    if self._observe(attempt, acc, event):
                                        yield _content_only(event)
                        except BaseException as exc:
                            self._fail(attempt, meta, request, exc, acc)
                        final, done = self.books.succeeded(attempt, meta, request, acc.response(request), decision)
                        self.meter.record(done)
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
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            try:
                async for retry_state in self._aretrying(route):
                    with retry_state:
                        number += 1
                        attempt = Attempt(route, number, self.clock())
                        try:
                            response = await adapter.achat(request)
                        except BaseException as exc:
                            await self._afail(attempt, meta, request, exc)
                        response, event = self.books.succeeded(attempt, meta, request, response, decision)
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
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            acc = StreamAccumulator()
            try:
                async for retry_state in self._aretrying(route, acc):
                    with retry_state:
                        number += 1
                        attempt = Attempt(route, number, self.clock())
                        acc.reset()
                        try:
                            async with aclosing(adapter.astream(request)) as events:
                                async for event in events:
                                    if self._observe(attempt, acc, event):
                                        yield _content_only(event)
                        except BaseException as exc:
                            await self._afail(attempt, meta, request, exc, acc)
                        final, done = self.books.succeeded(attempt, meta, request, acc.response(request), decision)
                        await self._arecord(done)
                        yield StreamEvent(usage=final.usage, response=final, provider_request_id=final.provider_request_id)
                        return
            except ProviderError as exc:
                if not exc.failover or acc.delivered:
                    raise
                last = exc
        raise self._give_up(decision, last)


def _content_only(event: StreamEvent) -> StreamEvent:
    """Usage is reported once, on the broker's final event; strip the provider's copy."""
    if event.usage is None:
        return event
    return StreamEvent(text=event.text, tool_calls=event.tool_calls, finish_reason=event.finish_reason,
                       provider_request_id=event.provider_request_id)
