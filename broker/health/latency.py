"""Per-route latency: time to first token and per-token time.

Each route keeps an EWMA of time to first token (TTFT) and of per-token time, seeded from
priors (the route's `options.latency_prior` or the provider's typical figures below), plus a
window of recent whole-call latencies for p50/p95.  Predicted latency of a request is
`TTFT + expected output tokens x per-token time`; the p95 prediction scales it by the
window's p95/p50 ratio once the window has enough samples.

The window is kept sorted as calls are observed (a bisect insert and a bisect removal of the
sample that leaves), and each observation publishes the route's new `LatencyEstimate`, so an
estimate is a dictionary read: no lock and no sort.  `snapshot()` is the published mapping of
every observed route, itself replaced (never changed) by each observation, so a decision can
hold the figures it ranked by and explain itself later with exactly those.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from broker.routes import Route

__all__ = ["PROVIDER_PRIORS", "LatencyEstimate", "LatencySnapshot", "LatencyTracker"]

#: (TTFT ms, per-token ms): typical figures for Llama 70B-class models, used until a route is observed.
PROVIDER_PRIORS: dict[str, tuple[float, float]] = {
    "bedrock": (600.0, 18.0),
    "vertex": (700.0, 20.0),
    "azure": (650.0, 20.0),
    "groq": (250.0, 3.0),
    "local": (150.0, 15.0),
}
_DEFAULT_PRIOR = (800.0, 25.0)
_MIN_WINDOW_FOR_PERCENTILES = 5


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    """What the tracker believes about a route now."""

    ttft_ms: float
    per_token_ms: float
    p50_ms: float | None
    p95_ms: float | None
    samples: int

    def predict_ms(self, output_tokens: int) -> float:
        return self.ttft_ms + output_tokens * self.per_token_ms

    def predict_p95_ms(self, output_tokens: int) -> float:
        base = self.predict_ms(output_tokens)
        if self.p50_ms and self.p95_ms and self.samples >= _MIN_WINDOW_FOR_PERCENTILES:
            return base * max(1.0, self.p95_ms / self.p50_ms)
        return base


def prior_of(route: Route) -> tuple[float, float]:
    """(TTFT ms, per-token ms) a route is believed to have before it is observed."""
    prior = route.options.get("latency_prior")
    if isinstance(prior, dict):
        return (
            float(prior.get("ttft_ms", _DEFAULT_PRIOR[0])),
            float(prior.get("per_token_ms", _DEFAULT_PRIOR[1])),
        )
    return PROVIDER_PRIORS.get(route.provider, _DEFAULT_PRIOR)


def prior_estimate(route: Route) -> LatencyEstimate:
    """The estimate of a route no call has been observed on."""
    ttft, per_token = prior_of(route)
    return LatencyEstimate(ttft, per_token, None, None, 0)


class _RouteLatency:
    __slots__ = ("arrivals", "per_token", "samples", "sorted", "ttft")

    def __init__(self, prior: tuple[float, float], window: int) -> None:
        self.ttft, self.per_token = prior
        self.arrivals: deque[float] = deque()  # oldest first, at most `window`
        self.sorted: list[float] = []  # the same samples, ascending
        self.samples = 0

    def add(self, total_ms: float, window: int) -> None:
        if len(self.arrivals) >= window:
            leaving = self.arrivals.popleft()
            del self.sorted[bisect_left(self.sorted, leaving)]
        self.arrivals.append(total_ms)
        insort(self.sorted, total_ms)

    def estimate(self) -> LatencyEstimate:
        window = self.sorted
        p50 = p95 = None
        if window:
            n = len(window)
            p50 = window[n // 2]
            p95 = window[min(n - 1, round(0.95 * (n - 1)))]
        return LatencyEstimate(self.ttft, self.per_token, p50, p95, self.samples)


class _Priors:
    """Each route's prior estimate, worked out once (reading a route's options is not free)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[str, LatencyEstimate] = {}

    def of(self, route: Route) -> LatencyEstimate:
        found = self._known.get(route.id)
        if found is None:
            found = self._known[route.id] = prior_estimate(route)
        return found


class LatencySnapshot:
    """The estimates of every route at one moment (unobserved routes read as their priors)."""

    __slots__ = ("_estimates", "_priors")

    def __init__(self, estimates: Mapping[str, LatencyEstimate], priors: _Priors | None = None) -> None:
        self._estimates = estimates
        self._priors = priors if priors is not None else _Priors()

    @property
    def published(self) -> Mapping[str, LatencyEstimate]:
        """The observed routes' estimates (routes absent from it have not been observed)."""
        return self._estimates

    def estimate(self, route: Route) -> LatencyEstimate:
        found = self._estimates.get(route.id)
        return found if found is not None else self._priors.of(route)


class LatencyTracker:
    """Thread-safe per-route latency state; `alpha` weighs the newest observation."""

    def __init__(self, *, alpha: float = 0.3, window: int = 100) -> None:
        self.alpha = alpha
        self.window = window
        self._routes: dict[str, _RouteLatency] = {}
        self._published: dict[str, LatencyEstimate] = {}  # replaced on each observation, never changed
        self._priors = _Priors()
        self._lock = threading.Lock()

    def observe(
        self,
        route: Route,
        *,
        total_ms: float,
        output_tokens: int,
        ttft_ms: float | None = None,
    ) -> None:
        """Record one finished call.  Without a measured TTFT (non-streaming calls), TTFT is
        inferred as total minus output tokens x the current per-token estimate."""
        with self._lock:
            s = self._routes.get(route.id)
            if s is None:
                s = self._routes[route.id] = _RouteLatency(prior_of(route), self.window)
            a = self.alpha
            if ttft_ms is not None and output_tokens > 1:
                per_token = max(0.0, (total_ms - ttft_ms) / (output_tokens - 1))
                s.per_token += a * (per_token - s.per_token)
            if ttft_ms is None:
                ttft_ms = max(0.0, total_ms - output_tokens * s.per_token)
            s.ttft += a * (ttft_ms - s.ttft)
            s.add(total_ms, self.window)
            s.samples += 1
            published = dict(self._published)
            published[route.id] = s.estimate()
            self._published = published

    def estimate(self, route: Route) -> LatencyEstimate:
        found = self._published.get(route.id)
        return found if found is not None else self._priors.of(route)

    def snapshot(self) -> LatencySnapshot:
        """Every route's estimate now, unchanged by later observations."""
        return LatencySnapshot(self._published, self._priors)

