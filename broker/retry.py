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

The retry budget per route keeps a failing provider from multiplying load, in the spirit of
the AWS SDK's retry quota: each retry spends a token, each success earns back `ratio` of one,
and with the bucket empty the executor fails over instead of retrying.  Two calls may both
see the last token and both retry; the bucket then stays at zero (the overdraft is at most
one retry per concurrent call).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    BaseRetrying,
    RetryCallState,
    Retrying,
    retry_base,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from .errors import ProviderError
from .health import CircuitBoard
from .policy.schema import RetrySettings

__all__ = ["RetryBudget", "RetryRule", "RouteRetries", "WaitForHint"]


class _Delivers(Protocol):
    @property
    def delivered(self) -> bool: ...


class WaitForHint:
    """tenacity wait strategy: the provider's `retry_after` if given, else jittered exponential."""

    def __init__(self, base_delay_s: float, max_delay_s: float) -> None:
        self.max_delay_s = max_delay_s
        self._backoff = wait_random_exponential(multiplier=base_delay_s, max=max_delay_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            return min(float(hint), self.max_delay_s)
        return float(self._backoff(state))

    def hint_within_max(self, exc: BaseException) -> bool:
        """Whether the error's wait hint, if any, is short enough to wait out on this route."""
        hint = getattr(exc, "retry_after", None)
        return hint is None or float(hint) <= self.max_delay_s


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


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class retry_if_nothing_delivered(retry_base):  # named like tenacity's own strategies
    """Retry only while no content of the stream has reached the caller."""

    def __init__(self, stream: _Delivers) -> None:
        self.stream = stream

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.stream.delivered


class retry_if_circuit_allows(retry_base):
    """Retry only while the route's circuit lets calls through."""

    def __init__(self, circuits: CircuitBoard, route_id: str) -> None:
        self.circuits, self.route_id = circuits, route_id

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.circuits.allows(self.route_id)


class retry_if_budget_left(retry_base):
    """Retry only while the route's retry budget holds a token (it is spent in `before_sleep`)."""

    def __init__(self, budget: RetryBudget, route_id: str) -> None:
        self.budget, self.route_id = budget, route_id

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.budget.has_token(self.route_id)


class _SpendToken:
    """tenacity `before_sleep`: a retry is about to happen, so it spends one of the route's tokens."""

    def __init__(self, budget: RetryBudget, route_id: str) -> None:
        self.budget, self.route_id = budget, route_id

    def __call__(self, retry_state: RetryCallState) -> None:
        self.budget.spend(self.route_id)


class RetryRule:
    """The retry rule of one broker: `retrying(route)` gives the tenacity loop for one route of a call.

    The parts that depend only on the policy and the route are built once per route and kept;
    a call adds only its own tenacity loop (and, for a stream, the not-delivered check).
    """

    def __init__(
        self,
        settings: RetrySettings,
        *,
        circuits: CircuitBoard,
        sleep: Callable[[float], None],
        asleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.circuits = circuits
        self.sleep, self.asleep = sleep, asleep
        self.wait = WaitForHint(settings.base_delay_s, settings.max_delay_s)
        self.budget = RetryBudget(ratio=settings.budget_ratio, capacity=settings.budget_capacity)
        self.stop = stop_after_attempt(settings.max_attempts_per_route)
        self._failure = retry_if_exception(_transient) & retry_if_exception(self.wait.hint_within_max)
        self._routes: dict[str, tuple[retry_base, _SpendToken]] = {}

    def _on_route(self, route_id: str) -> tuple[retry_base, _SpendToken]:
        found = self._routes.get(route_id)
        if found is None:
            rule = (self._failure & retry_if_circuit_allows(self.circuits, route_id)
                    & retry_if_budget_left(self.budget, route_id))
            found = self._routes.setdefault(route_id, (rule, _SpendToken(self.budget, route_id)))
        return found

    def _rule(self, route_id: str, stream: _Delivers | None) -> tuple[retry_base, _SpendToken]:
        rule, spend = self._on_route(route_id)
        if stream is not None:
            rule = retry_if_nothing_delivered(stream) & rule
        return rule, spend

    def on_failure(self, route_id: str, stream: _Delivers | None = None) -> RouteRetries:
        """The retry state of a route whose first attempt in a call has just failed."""
        return RouteRetries(self.retrying(route_id, stream))

    def retrying(self, route_id: str, stream: _Delivers | None = None) -> Retrying:
        rule, spend = self._rule(route_id, stream)
        return Retrying(stop=self.stop, wait=self.wait, retry=rule, before_sleep=spend, sleep=self.sleep, reraise=True)

    def aretrying(self, route_id: str, stream: _Delivers | None = None) -> AsyncRetrying:
        rule, spend = self._rule(route_id, stream)
        return AsyncRetrying(stop=self.stop, wait=self.wait, retry=rule, before_sleep=spend, sleep=self.asleep,
                             reraise=True)


class RouteRetries:
    """The retry state of one route of one call, made when an attempt on it first fails."""

    __slots__ = ("retrying", "state")

    def __init__(self, retrying: BaseRetrying) -> None:
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
