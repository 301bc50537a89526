"""Retry policy for one route: tenacity strategies plus a retry budget.

The broker has one retry loop (every SDK's own retries are off).  On one route it retries
transient errors (`ProviderError.retryable`) with exponential backoff and full jitter, or
waits the provider's own hint (`retry_after`) when it sent one.  A hint longer than
`max_delay_s` is not waited out: the call fails over to the next route instead.

A retry budget per route keeps a failing provider from multiplying load, in the spirit of
the AWS SDK's retry quota: each retry spends a token, each success earns back `ratio` of one,
and with the bucket empty the executor fails over instead of retrying.
"""

from __future__ import annotations

import threading

from tenacity import RetryCallState, wait_random_exponential

__all__ = ["RetryBudget", "WaitForHint"]


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

    def hint_too_long(self, exc: BaseException) -> bool:
        hint = getattr(exc, "retry_after", None)
        return hint is not None and float(hint) > self.max_delay_s


class RetryBudget:
    """Token bucket per route: retries spend a token, successes earn `ratio` of one back."""

    def __init__(self, *, ratio: float = 0.2, capacity: float = 10.0) -> None:
        self.ratio = ratio
        self.capacity = capacity
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def withdraw(self, route_id: str) -> bool:
        with self._lock:
            tokens = self._tokens.get(route_id, self.capacity)
            if tokens < 1.0:
                return False
            self._tokens[route_id] = tokens - 1.0
            return True

    def deposit(self, route_id: str) -> None:
        with self._lock:
            tokens = self._tokens.get(route_id, self.capacity)
            self._tokens[route_id] = min(self.capacity, tokens + self.ratio)

    def tokens(self, route_id: str) -> float:
        with self._lock:
            return self._tokens.get(route_id, self.capacity)

