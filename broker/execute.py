"""Execution: try the decision's routes in rank order, retry, fail over, meter every attempt.

    for route in decision.routes:               ranked survivors of the hard filters only
        guard(route)                            residency, checked again right before the adapter
        build its adapter                       a route that cannot be used is recorded, then skipped
        claim it for the call's hooks           budgets, limits, quotas (broker/call_hooks.py) may pass it over
        retry on this route                     the retry rule of broker/retry.py
        admit the answer                        stream complete, usage in range (broker/attempts.py)
        on a failover-able error: next route
    meter one UsageEvent per attempt (broker/attempts.py); feed latency and circuit state

Streams fail over only before their first token reaches the caller; after it, the caller
gets the typed error.  When every route is unusable (no adapter, no SDK, no credential, a
bad option), the caller gets the first such error.  Sync and async share everything but
the awaits.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from contextlib import aclosing, closing
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .adapter import Adapter
from .attempts import UNUSABLE_ROUTE, Attempt, AttemptOutcomes, CallMeta
from .call_hooks import CallHook, CallScope, OutputFilter
from .errors import BrokerError, NoEligibleRoute, ProviderError, ResidencyViolation
from .health import CircuitBoard, LatencyTracker
from .metering.events import UsageEvent
from .policy.decision import Decision
from .retry import RetryRule, RouteRetries
from .routes import Route
from .streaming import StreamAccumulator
from .types import ChatRequest, ChatResponse, StreamEvent

if TYPE_CHECKING:  # asyncio loads with the first async call, the policy schema with the policy
    import asyncio

    from .policy.schema import RetrySettings

__all__ = ["CallMeta", "Executor"]

log = logging.getLogger("llama_broker.execute")


class _Meter(Protocol):
    durable: bool

    def record(self, event: UsageEvent) -> None: ...


class _AdapterSource(Protocol):
    def get(self, route: Route) -> Adapter: ...


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
        asleep: Callable[[float], Awaitable[Any]] | None = None,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        hooks: Sequence[CallHook] = (),
    ) -> None:
        self.adapters = adapters
        self.hooks = tuple(hooks)
        #: the tenant's output checks (guardrails), applied before the call's hooks close
        self.output: OutputFilter | None = None
        self.circuits = circuits
        self.meter = meter
        self.retry = RetryRule(retry, circuits=circuits, sleep=sleep, asleep=asleep)
        self.budget = self.retry.budget
        self.outcomes = AttemptOutcomes(latency=latency, circuits=circuits, budget=self.budget, clock=clock, wall=wall)
        self.clock = clock

    # ------------------------------------------------------------------ shared

    @staticmethod
    def guard(route: Route, decision: Decision) -> None:
        """The last check before an adapter is called: the route must be one the filters kept."""
        if route not in decision.routes or not decision.tenant_policy.allows_jurisdiction(route.jurisdiction):
            raise ResidencyViolation(
                f"route {route.id!r} ({route.jurisdiction}) is outside tenant {decision.tenant!r}'s residency"
            )

    def _claim(self, route: Route, decision: Decision) -> Adapter | None:
        """The route's adapter if the route may be called now, else None.

        None when its circuit is open, or when its adapter cannot be built (recorded in the decision).
        """
        self.guard(route, decision)
        if not self.circuits.begin(route.id):
            return None
        try:
            return self.adapters.get(route)
        except UNUSABLE_ROUTE as exc:
            self.circuits.release(route.id)
            decision.record_failure(route, exc)
            return None
        except BaseException:
            self.circuits.release(route.id)
            raise

    @staticmethod
    def _passed_over(exc: BrokerError, route: Route, decision: Decision, acc: StreamAccumulator | None) -> bool:
        """Whether the call may move on to the next route after `exc` ended this one."""
        if acc is not None and acc.delivered:
            return False
        if isinstance(exc, ProviderError):
            return exc.failover
        if isinstance(exc, UNUSABLE_ROUTE):
            decision.record_failure(route, exc)
            return True
        return False

    def _failed(self, watch: _Watch, attempt: Attempt, meta: CallMeta, request: ChatRequest, exc: BaseException,
                acc: StreamAccumulator | None = None) -> BaseException:
        """Meter a failed attempt; the error the retry rule judges (and the caller gets if it gives up)."""
        err, event = self.outcomes.failed(attempt, meta, request, exc, acc)
        self.meter.record(event)
        watch.attempted(attempt.route, event)
        return err

    async def _afailed(self, watch: _Watch, attempt: Attempt, meta: CallMeta, request: ChatRequest,
                       exc: BaseException, acc: StreamAccumulator | None = None) -> BaseException:
        err, event = self.outcomes.failed(attempt, meta, request, exc, acc)
        if isinstance(exc, Exception):
            await self._arecord(event)
            await watch.aattempted(attempt.route, event)
        else:  # closing or cancelled: no awaiting now
            self.meter.record(event)
            watch.attempted(attempt.route, event)
        return err

    async def _arecord(self, event: UsageEvent) -> None:
        """Meter from async code: a durable commit runs off the event loop's thread."""
        if self.meter.durable:
            import asyncio

            await asyncio.to_thread(self.meter.record, event)
        else:
            self.meter.record(event)

    @staticmethod
    def _give_up(decision: Decision, last: ProviderError | None) -> BrokerError:
        if last is not None:
            return last
        if decision.failures:  # no route could be used at all: the first reason why
            return decision.failures[0].error
        return NoEligibleRoute(
            f"every eligible route for tenant {decision.tenant!r} has an open circuit", decision=decision
        )

    def _observe(self, attempt: Attempt, acc: StreamAccumulator, event: StreamEvent) -> bool:
        """Add a streamed event; whether it carries content for the caller."""
        if attempt.first_token_at is None and (event.text or event.tool_calls):
            attempt.first_token_at = self.clock()
        acc.add(event)
        return bool(event.text or event.tool_calls or event.finish_reason)

    def _open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> _Watch:
        """Open the call's hook scopes; a hook that refuses the call closes those already opened."""
        if not self.hooks:
            return _NO_WATCH
        watch = _Watch(any(hook.blocking for hook in self.hooks))
        try:
            for hook in self.hooks:
                scope = hook.open(request, decision, meta)
                if scope is not None:
                    watch.scopes.append(scope)
        except BaseException as exc:
            watch.close(None, exc)
            raise
        return watch

    async def _aopen(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> _Watch:
        if not (self.hooks and any(hook.blocking for hook in self.hooks)):
            return self._open(request, decision, meta)
        import asyncio

        opening = asyncio.ensure_future(asyncio.to_thread(self._open, request, decision, meta))
        try:
            return await _finished(opening)
        except asyncio.CancelledError as exc:  # cancelled while the scopes opened: what they took is given back
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                opening.result().close(None, exc)
            raise

    # ------------------------------------------------------------------ sync

    def chat(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatResponse:
        watch = self._open(request, decision, meta)
        try:
            response = self._chat(decision, request, meta, watch)
            if self.output is not None:
                response = self.output.response(decision, request, meta, response)
        except BaseException as exc:
            watch.close(None, exc)
            raise
        watch.close(response, None)
        return response

    def _chat(self, decision: Decision, request: ChatRequest, meta: CallMeta, watch: _Watch) -> ChatResponse:
        number, last = 0, None
        for route in decision.routes:
            if not watch.claim(route, decision):
                continue
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            retries: RouteRetries | None = None  # made at the route's first failure
            try:
                while True:
                    number += 1
                    attempt = Attempt(route, number, self.clock())
                    try:
                        response = adapter.chat(request)
                        usage = self.outcomes.admit(attempt, request, response)
                    except BaseException as exc:
                        err = self._failed(watch, attempt, meta, request, exc)
                        retries = retries or self.retry.on_failure(route.id)
                        wait = retries.after(err)
                        if wait is None:
                            raise err from (exc if err is not exc else exc.__cause__)
                        self.retry.sleep(wait)
                        continue
                    response, event = self.outcomes.succeeded(attempt, meta, request, response, usage, decision)
                    self.meter.record(event)
                    watch.attempted(route, event)
                    return response
            except BrokerError as exc:
                if not self._passed_over(exc, route, decision, None):
                    raise
                last = exc if isinstance(exc, ProviderError) else last
        raise self._give_up(decision, last)

    def stream(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> Generator[StreamEvent, None, None]:
        watch = self._open(request, decision, meta)
        response: ChatResponse | None = None
        try:
            with closing(self._stream(decision, request, meta, watch)) as raw:
                events = raw if self.output is None else self.output.stream(decision, request, meta, raw)
                for event in events:
                    response = event.response or response
                    yield event
        except BaseException as exc:
            watch.close(None, exc)
            raise
        watch.close(response, None)

    def _stream(
        self, decision: Decision, request: ChatRequest, meta: CallMeta, watch: _Watch
    ) -> Generator[StreamEvent, None, None]:
        number, last = 0, None
        for route in decision.routes:
            if not watch.claim(route, decision):
                continue
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            acc = StreamAccumulator()
            retries: RouteRetries | None = None  # made at the route's first failure
            try:
                while True:
                    number += 1
                    attempt = Attempt(route, number, self.clock())
                    acc.reset()
                    try:
                        with closing(adapter.stream(request)) as events:  # type: ignore[type-var]  # a generator
                            for event in events:
                                if self._observe(attempt, acc, event):
                                    yield _content_only(event)
                        answer = acc.response(request)
                        usage = self.outcomes.admit(attempt, request, answer)
                    except BaseException as exc:
                        err = self._failed(watch, attempt, meta, request, exc, acc)
                        retries = retries or self.retry.on_failure(route.id, acc)
                        wait = retries.after(err)
                        if wait is None:
                            raise err from (exc if err is not exc else exc.__cause__)
                        self.retry.sleep(wait)
                        continue
                    final, done = self.outcomes.succeeded(attempt, meta, request, answer, usage, decision)
                    self.meter.record(done)
                    watch.attempted(route, done)
                    yield _final(final)
                    return
            except BrokerError as exc:
                if not self._passed_over(exc, route, decision, acc):
                    raise
                last = exc if isinstance(exc, ProviderError) else last
        raise self._give_up(decision, last)

    # ------------------------------------------------------------------ async

    async def achat(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatResponse:
        watch = await self._aopen(request, decision, meta)
        try:
            response = await self._achat(decision, request, meta, watch)
            if self.output is not None:
                response = await self.output.aresponse(decision, request, meta, response)
        except BaseException as exc:
            await watch.aclose(None, exc)
            raise
        await watch.aclose(response, None)
        return response

    async def _achat(self, decision: Decision, request: ChatRequest, meta: CallMeta, watch: _Watch) -> ChatResponse:
        number, last = 0, None
        for route in decision.routes:
            if not await watch.aclaim(route, decision):
                continue
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            retries: RouteRetries | None = None  # made at the route's first failure
            try:
                while True:
                    number += 1
                    attempt = Attempt(route, number, self.clock())
                    try:
                        response = await adapter.achat(request)
                        usage = self.outcomes.admit(attempt, request, response)
                    except BaseException as exc:
                        err = await self._afailed(watch, attempt, meta, request, exc)
                        retries = retries or self.retry.on_failure(route.id)
                        wait = retries.after(err)
                        if wait is None:
                            raise err from (exc if err is not exc else exc.__cause__)
                        await self.retry.asleep(wait)
                        continue
                    response, event = self.outcomes.succeeded(attempt, meta, request, response, usage, decision)
                    await self._arecord(event)
                    await watch.aattempted(route, event)
                    return response
            except BrokerError as exc:
                if not self._passed_over(exc, route, decision, None):
                    raise
                last = exc if isinstance(exc, ProviderError) else last
        raise self._give_up(decision, last)

    async def astream(
        self, decision: Decision, request: ChatRequest, meta: CallMeta
    ) -> AsyncGenerator[StreamEvent, None]:
        watch = await self._aopen(request, decision, meta)
        response: ChatResponse | None = None
        try:
            async with aclosing(self._astream(decision, request, meta, watch)) as raw:
                events = raw if self.output is None else self.output.astream(decision, request, meta, raw)
                async for event in events:
                    response = event.response or response
                    yield event
        except BaseException as exc:
            if isinstance(exc, Exception):
                await watch.aclose(None, exc)
            else:  # closing or cancelled: no awaiting now
                watch.close(None, exc)
            raise
        await watch.aclose(response, None)

    async def _astream(
        self, decision: Decision, request: ChatRequest, meta: CallMeta, watch: _Watch
    ) -> AsyncGenerator[StreamEvent, None]:
        number, last = 0, None
        for route in decision.routes:
            if not await watch.aclaim(route, decision):
                continue
            adapter = self._claim(route, decision)
            if adapter is None:
                continue
            acc = StreamAccumulator()
            retries: RouteRetries | None = None  # made at the route's first failure
            try:
                while True:
                    number += 1
                    attempt = Attempt(route, number, self.clock())
                    acc.reset()
                    try:
                        async with aclosing(adapter.astream(request)) as events:  # type: ignore[type-var]
                            async for event in events:
                                if self._observe(attempt, acc, event):
                                    yield _content_only(event)
                        answer = acc.response(request)
                        usage = self.outcomes.admit(attempt, request, answer)
                    except BaseException as exc:
                        err = await self._afailed(watch, attempt, meta, request, exc, acc)
                        retries = retries or self.retry.on_failure(route.id, acc)
                        wait = retries.after(err)
                        if wait is None:
                            raise err from (exc if err is not exc else exc.__cause__)
                        await self.retry.asleep(wait)
                        continue
                    final, done = self.outcomes.succeeded(attempt, meta, request, answer, usage, decision)
                    await self._arecord(done)
                    await watch.aattempted(route, done)
                    yield _final(final)
                    return
            except BrokerError as exc:
                if not self._passed_over(exc, route, decision, acc):
                    raise
                last = exc if isinstance(exc, ProviderError) else last
        raise self._give_up(decision, last)


class _Watch:
    """The hook scopes of one call.  A hook that fails while settling is logged, never the caller's error."""

    __slots__ = ("blocking", "scopes")

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.scopes: list[CallScope] = []

    def claim(self, route: Route, decision: Decision) -> bool:
        """Whether every hook lets `route` be tried; the first refusal is recorded in the decision."""
        for scope in self.scopes:
            refusal = scope.claim(route)
            if refusal is not None:
                decision.record_failure(route, refusal)
                return False
        return True

    def attempted(self, route: Route, event: UsageEvent) -> None:
        for scope in self.scopes:
            try:
                scope.attempted(route, event)
            except Exception:
                log.exception("a call hook failed to take an attempt's usage")

    def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
        for scope in self.scopes:
            try:
                scope.close(response, error)
            except Exception:
                log.exception("a call hook failed to close a call")

    async def aclaim(self, route: Route, decision: Decision) -> bool:
        if self.blocking:  # a cancelled caller still waits for the claim: its close then releases what it took
            import asyncio

            return await _finished(asyncio.ensure_future(asyncio.to_thread(self.claim, route, decision)))
        return self.claim(route, decision)

    async def aattempted(self, route: Route, event: UsageEvent) -> None:
        if self.blocking:
            import asyncio

            await asyncio.to_thread(self.attempted, route, event)
        else:
            self.attempted(route, event)

    async def aclose(self, response: ChatResponse | None, error: BaseException | None) -> None:
        if self.blocking:
            import asyncio

            await asyncio.to_thread(self.close, response, error)
        else:
            self.close(response, error)


_NO_WATCH = _Watch(False)


_T = TypeVar("_T")


async def _finished(step: asyncio.Future[_T]) -> _T:
    """The result of a hook step running in a worker thread, which a cancellation cannot stop.

    A cancelled caller waits for the step to end before `CancelledError` goes on, so whatever the
    step took (a reservation, a rate-limit request) is known to the call's scopes when they close.
    """
    import asyncio

    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(step)
        except asyncio.CancelledError as exc:
            if step.done():
                raise
            cancelled = exc
            continue
        except BaseException:
            if cancelled is not None:  # the step failed after the caller was cancelled: the cancellation wins
                raise cancelled from None
            raise
        if cancelled is not None:
            raise cancelled
        return result


def _final(response: ChatResponse) -> StreamEvent:
    return StreamEvent(usage=response.usage, response=response, provider_request_id=response.provider_request_id)


def _content_only(event: StreamEvent) -> StreamEvent:
    """Usage is reported once, on the broker's final event; strip the provider's copy."""
    if event.usage is None:
        return event
    return StreamEvent(text=event.text, tool_calls=event.tool_calls, finish_reason=event.finish_reason,
                       provider_request_id=event.provider_request_id)
