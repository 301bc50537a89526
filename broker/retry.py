"""The retry rule: when a failed attempt is tried again on the same route, and how long it waits.

The broker has one retry loop (every SDK's own retries are off), built here from tenacity's
strategy objects.  A failed attempt is retried on its route when all of these hold::

    retry_if_exception(transient)          ProviderError.retryable (429, 5xx, timeouts, unreadable answers)
    & retry_if_exception(hint_within_max)  a wait hint (`retry_after`) longer than max_delay_s fails over
    & retry_if_nothing_delivered(stream)   a stream whose content reached the caller is never retried
    & retry_if_circuit_allows(route)       this very failure may just have opened the route's circuit
    & retry_if_budget_left(route)          the route's retry budget holds a token (consulted, not spent)
    stop_after_attempt(max_attempts_per_route)

The wait (`WaitForHint`) is the provider's own hint when it sent one, else exponential backoff
with full jitter.  Predicates only read; the one side effect, spending a budget token, is
tenacity's `before_sleep`, which runs only once a retry is certain.

A call that succeeds at once pays for none of this: the executor makes a route's
`RouteRetries` at its first failure, and that drives the same tenacity strategies, in
tenacity's own order (retry?, wait, stop?, before_sleep), for the rest of the route's attempts.
tenacity itself, and the strategies (`broker/retry_strategies.py`), are imported then too.

The retry budget per route keeps a failing provider from multiplying load, in the spirit of
the AWS SDK's retry quota: each retry spends a token, each success earns back `ratio` of one,
and with the bucket empty the executor fails over instead of retrying.  Two calls may both
see the last token and both retry; the bucket then stays at zero (the overdraft is at most
one retry per concurrent call).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # tenacity and the policy schema load at a route's first failure, not with the executor
    from tenacity import AsyncRetrying, BaseRetrying, Retrying, retry_base

    from .health import CircuitBoard
    from .policy.schema import RetrySettings
    from .retry_strategies import RouteStrategies, WaitForHint, _SpendToken

__all__ = ["RetryBudget", "RetryRule", "RouteRetries", "WaitForHint"]


def __getattr__(name: str) -> Any:
    if name == "WaitForHint":
        from .retry_strategies import WaitForHint

        return WaitForHint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Delivers(Protocol):
    @property
    def delivered(self) -> bool: ...


class RetryBudget:
    """Token bucket per route: retries spend a token, successes earn `ratio` of one back."""

    def __init__(self, *, ratio: float = 0.2, capacity: float = 10.0) -> None:
        self.ratio = ratio
        self.capacity = capacity
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def has_token(self, route_id: str) -> bool:
        with self._lock:
            return self._tokens.get(route_id, self.capacity) >= 1.0

    def spend(self, route_id: str) -> None:
        with self._lock:
            self._tokens[route_id] = max(0.0, self._tokens.get(route_id, self.capacity) - 1.0)

    def deposit(self, route_id: str) -> None:
        if self._tokens.get(route_id, self.capacity) >= self.capacity:
            return  # already full
        with self._lock:
            tokens = self._tokens.get(route_id, self.capacity)
            self._tokens[route_id] = min(self.capacity, tokens + self.ratio)

    def tokens(self, route_id: str) -> float:
        with self._lock:
            return self._tokens.get(route_id, self.capacity)


class RetryRule:
    """The retry rule of one broker: `retrying(route)` gives the tenacity loop for one route of a call.

    The parts that depend only on the policy and the route are built once per route, at its first
    failure, and kept; a call adds only its own tenacity loop (and, for a stream, the not-delivered check).
    """

    def __init__(
        self,
        settings: RetrySettings,
        *,
        circuits: CircuitBoard,
        sleep: Callable[[float], None],
        asleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        self.circuits = circuits
        self.sleep, self._asleep = sleep, asleep
        self.settings = settings
        self.budget = RetryBudget(ratio=settings.budget_ratio, capacity=settings.budget_capacity)
        self._strategies: RouteStrategies | None = None

    @property
    def strategies(self) -> RouteStrategies:
        """The tenacity strategies of this rule, built (and tenacity imported) on first use."""
        built = self._strategies
        if built is None:
            from .retry_strategies import RouteStrategies

            settings = self.settings
            built = self._strategies = RouteStrategies(
                base_delay_s=settings.base_delay_s, max_delay_s=settings.max_delay_s,
                max_attempts=settings.max_attempts_per_route, circuits=self.circuits, budget=self.budget,
            )
        return built

    @property
    def asleep(self) -> Callable[[float], Awaitable[Any]]:
        """The async sleep between retries: the one given, else `asyncio.sleep` (imported on first use)."""
        if self._asleep is None:
            import asyncio

            self._asleep = asyncio.sleep
        return self._asleep

    @property
    def wait(self) -> WaitForHint:
        return self.strategies.wait

    def _rule(self, route_id: str, stream: _Delivers | None) -> tuple[retry_base, _SpendToken]:
        return self.strategies.on_route(route_id, stream)

    def on_failure(self, route_id: str, stream: _Delivers | None = None) -> RouteRetries:
        """The retry state of a route whose first attempt in a call has just failed."""
        return RouteRetries(self.retrying(route_id, stream))

    def retrying(self, route_id: str, stream: _Delivers | None = None) -> Retrying:
        from tenacity import Retrying

        rule, spend = self._rule(route_id, stream)
        return Retrying(stop=self.strategies.stop, wait=self.wait, retry=rule, before_sleep=spend, sleep=self.sleep,
                        reraise=True)

    def aretrying(self, route_id: str, stream: _Delivers | None = None) -> AsyncRetrying:
        from tenacity import AsyncRetrying

        rule, spend = self._rule(route_id, stream)
        return AsyncRetrying(stop=self.strategies.stop, wait=self.wait, retry=rule, before_sleep=spend,
                             sleep=self.asleep, reraise=True)


class RouteRetries:
    """The retry state of one route of one call, made when an attempt on it first fails."""

    __slots__ = ("retrying", "state")

    def __init__(self, retrying: BaseRetrying) -> None:
        from tenacity import RetryCallState

        self.retrying = retrying
        self.state = RetryCallState(retrying, fn=None, args=(), kwargs={})

    def after(self, exc: BaseException) -> float | None:
        """The wait before trying the route again after `exc`, or None when the rule says give up
        (the caller then raises `exc`).  Spends the route's retry token when it says retry."""
        state, retrying = self.state, self.retrying
        state.set_exception((type(exc), exc, exc.__traceback__))
        if not retrying.retry(state):
            return None
        state.upcoming_sleep = wait = float(retrying.wait(state)) if retrying.wait else 0.0
        if retrying.stop(state):
            return None
        state.idle_for += wait
        if retrying.before_sleep is not None:
            retrying.before_sleep(state)
        state.prepare_for_next_attempt()
        return wait
