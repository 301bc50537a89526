"""The tenacity strategies of the retry rule (`broker/retry.py`), imported at a route's first failure.

They are tenacity objects, so this module imports tenacity; a broker whose calls all succeed never
loads either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tenacity import RetryCallState, retry_base, retry_if_exception, stop_after_attempt, wait_random_exponential

from .errors import ProviderError

if TYPE_CHECKING:
    from .health import CircuitBoard
    from .retry import RetryBudget

__all__ = [
    "RouteStrategies",
    "WaitForHint",
    "retry_if_budget_left",
    "retry_if_circuit_allows",
    "retry_if_nothing_delivered",
]


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


class RouteStrategies:
    """The strategies of one broker's retry rule, built once; `on_route` adds a route's own checks."""

    def __init__(
        self, *, base_delay_s: float, max_delay_s: float, max_attempts: int, circuits: CircuitBoard,
        budget: RetryBudget,
    ) -> None:
        self.circuits, self.budget = circuits, budget
        self.wait = WaitForHint(base_delay_s, max_delay_s)
        self.stop = stop_after_attempt(max_attempts)
        self._failure = retry_if_exception(_transient) & retry_if_exception(self.wait.hint_within_max)
        self._routes: dict[str, tuple[retry_base, _SpendToken]] = {}

    def _on_route(self, route_id: str) -> tuple[retry_base, _SpendToken]:
        found = self._routes.get(route_id)
        if found is None:
            rule = (self._failure & retry_if_circuit_allows(self.circuits, route_id)
                    & retry_if_budget_left(self.budget, route_id))
            found = self._routes.setdefault(route_id, (rule, _SpendToken(self.budget, route_id)))
        return found

    def on_route(self, route_id: str, stream: _Delivers | None) -> tuple[retry_base, _SpendToken]:
        """The retry predicate and the token-spending `before_sleep` of a route (and stream) in a call."""
        rule, spend = self._on_route(route_id)
        if stream is not None:
            rule = retry_if_nothing_delivered(stream) & rule
        return rule, spend
