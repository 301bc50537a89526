"""Live route health: observed latency and circuit breakers, both on an injectable clock."""

from .circuit import CircuitBoard, CircuitState
from .latency import LatencyEstimate, LatencyTracker

__all__ = ["CircuitBoard", "CircuitState", "LatencyEstimate", "LatencyTracker"]
