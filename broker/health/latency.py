"""Per-route latency: time to first token and per-token time.

Each route keeps an EWMA of time to first token (TTFT) and of per-token time, seeded from
priors (the route's `options.latency_prior` or the provider's typical figures below), plus a
window of recent whole-call latencies for p50/p95.  Predicted latency of a request is
`TTFT + expected output tokens x per-token time`; the p95 prediction scales it by the
window's p95/p50 ratio once the window has enough samples.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from broker.routes import Route

__all__ = ["PROVIDER_PRIORS", "LatencyEstimate", "LatencyTracker"]

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


class _RouteLatency:
    __slots__ = ("per_token", "samples", "ttft", "window")

    def __init__(self, prior: tuple[float, float], window: int) -> None:
        self.ttft, self.per_token = prior
        self.window: deque[float] = deque(maxlen=window)
        self.samples = 0


class LatencyTracker:
    """Thread-safe per-route latency state; `alpha` weighs the newest observation."""

    def __init__(self, *, alpha: float = 0.3, window: int = 100) -> None:
        self.alpha = alpha
        self.window = window
        self._routes: dict[str, _RouteLatency] = {}
        self._lock = threading.Lock()

    def _state(self, route: Route) -> _RouteLatency:
        state = self._routes.get(route.id)
        if state is None:
            prior = route.options.get("latency_prior")
            if isinstance(prior, dict):
                seed = (
                    float(prior.get("ttft_ms", _DEFAULT_PRIOR[0])),
                    float(prior.get("per_token_ms", _DEFAULT_PRIOR[1])),
                )
            else:
                seed = PROVIDER_PRIORS.get(route.provider, _DEFAULT_PRIOR)
            state = self._routes.setdefault(route.id, _RouteLatency(seed, self.window))
        return state

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
            s = self._state(route)
            a = self.alpha
            if ttft_ms is not None and output_tokens > 1:
                per_token = max(0.0, (total_ms - ttft_ms) / (output_tokens - 1))
                s.per_token += a * (per_token - s.per_token)
            if ttft_ms is None:
                ttft_ms = max(0.0, total_ms - output_tokens * s.per_token)
            s.ttft += a * (ttft_ms - s.ttft)
            s.window.append(total_ms)
            s.samples += 1

    def estimate(self, route: Route) -> LatencyEstimate:
        with self._lock:
            s = self._state(route)
            window = sorted(s.window)
        p50 = p95 = None
        if window:
            p50 = window[len(window) // 2]
            p95 = window[min(len(window) - 1, round(0.95 * (len(window) - 1)))]
        return LatencyEstimate(s.ttft, s.per_token, p50, p95, s.samples)
