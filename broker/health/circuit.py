"""Circuit breakers per route.

Closed: calls flow; failures inside `window_s` are counted.  At `failure_threshold` the
circuit opens: the route is removed by the health filter.  After `cooldown_s` it goes
half-open: one probe call is let through; success closes it, failure opens it again.

The board keeps the set of routes whose circuit is not closed (`troubled`): while it is empty,
as it is almost always, every route is healthy and a decision asks nothing per route.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

__all__ = ["CircuitBoard", "CircuitState"]


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class _Circuit:
    failures: deque[float]
    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    probing: bool = False


class CircuitBoard:
    """All circuits of one broker, keyed by route id, on an injectable monotonic clock."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        window_s: float = 30.0,
        cooldown_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}
        self._not_closed: set[str] = set()
        self._lock = threading.Lock()

    @property
    def troubled(self) -> bool:
        """Whether any circuit is open or half-open (else every route is allowed)."""
        return bool(self._not_closed)

    def not_closed(self) -> frozenset[str]:
        """The route ids whose circuit is open or half-open now."""
        with self._lock:
            return frozenset(self._not_closed)

    def _get(self, route_id: str) -> _Circuit:
        c = self._circuits.get(route_id)
        if c is None:
            c = self._circuits.setdefault(route_id, _Circuit(deque()))
        return c

    def state(self, route_id: str) -> CircuitState:
        """The state now (an open circuit past its cooldown reads as half-open)."""
        with self._lock:
            c = self._get(route_id)
            if c.state is CircuitState.OPEN and self.clock() - c.opened_at >= self.cooldown_s:
                c.state, c.probing = CircuitState.HALF_OPEN, False
            return c.state

    def allows(self, route_id: str) -> bool:
        """Whether a call may go to the route now; a half-open circuit admits one probe at a time."""
        if route_id not in self._not_closed:
            return True
        state = self.state(route_id)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        with self._lock:
            return not self._get(route_id).probing

    def begin(self, route_id: str) -> bool:
        """Claim the right to call; for a half-open circuit only the first caller gets the probe."""
        if route_id not in self._not_closed:
            return True
        state = self.state(route_id)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        with self._lock:
            c = self._get(route_id)
            if c.probing:
                return False
            c.probing = True
            return True

    def release(self, route_id: str) -> None:
        """Give back a half-open probe that ended without a verdict (cancelled, misconfigured)."""
        if route_id not in self._not_closed:
            return
        with self._lock:
            self._get(route_id).probing = False

    def success(self, route_id: str) -> None:
        c = self._circuits.get(route_id)
        if c is None or (c.state is CircuitState.CLOSED and not c.failures):
            return  # closed with no failure counted: nothing to reset
        with self._lock:
            c.state, c.probing = CircuitState.CLOSED, False
            c.failures.clear()
            self._not_closed.discard(route_id)

    def failure(self, route_id: str) -> None:
        now = self.clock()
        with self._lock:
            c = self._get(route_id)
            if c.state is CircuitState.HALF_OPEN:
                c.state, c.opened_at, c.probing = CircuitState.OPEN, now, False
                self._not_closed.add(route_id)
                return
            c.failures.append(now)
            while c.failures and now - c.failures[0] > self.window_s:
                c.failures.popleft()
            if len(c.failures) >= self.failure_threshold:
                c.state, c.opened_at = CircuitState.OPEN, now
                c.failures.clear()
                self._not_closed.add(route_id)
