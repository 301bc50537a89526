"""Ranking of the routes that survived the hard filters, by the tenant's objective.

- `cost`: estimated cost of this request (unknown prices rank after known ones), ties by
  predicted latency.
- `latency`: predicted latency (TTFT + expected output x per-token time), ties by cost.
- `weighted`: `w_cost x cost / cheapest + w_latency x latency / fastest`, lower is better.

Route id breaks any remaining tie, so the same inputs always give the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .decision import Candidate

__all__ = ["rank"]

_UNKNOWN = float("inf")


def _cost(c: Candidate) -> float:
    return float(c.estimated_cost_usd) if c.estimated_cost_usd is not None else _UNKNOWN


def _latency(c: Candidate) -> float:
    return c.predicted_latency_ms if c.predicted_latency_ms is not None else _UNKNOWN


def _weighted_scores(cands: Sequence[Candidate], weights: Any) -> list[float]:
    known_costs = [_cost(c) for c in cands if _cost(c) != _UNKNOWN]
    cheapest = min((x for x in known_costs if x > 0), default=1e-12)
    fastest = min((_latency(c) for c in cands), default=1.0) or 1.0
    w_cost = float(getattr(weights, "cost", 0.5)) if weights is not None else 0.5
    w_lat = float(getattr(weights, "latency", 0.5)) if weights is not None else 0.5
    worst_cost = max(known_costs, default=cheapest) / cheapest * 2
    scores = []
    for c in cands:
        cost_ratio = _cost(c) / cheapest if _cost(c) != _UNKNOWN else worst_cost
        scores.append(w_cost * cost_ratio + w_lat * _latency(c) / fastest)
    return scores


def rank(candidates: Sequence[Candidate], objective: str, weights: Any = None) -> list[Candidate]:
    """Give each eligible candidate a score and a rank (1 = tried first)."""
    eligible = [c for c in candidates if c.eligible]
    if objective == "latency":
        scores = [_latency(c) for c in eligible]
        keys = [(s, _cost(c), c.route.id) for s, c in zip(scores, eligible, strict=True)]
    elif objective == "weighted":
        scores = _weighted_scores(eligible, weights)
        keys = [(s, c.route.id) for s, c in zip(scores, eligible, strict=True)]  # type: ignore[misc]
    else:
        scores = [_cost(c) for c in eligible]
        keys = [(s, _latency(c), c.route.id) for s, c in zip(scores, eligible, strict=True)]
    order = sorted(range(len(eligible)), key=lambda i: keys[i])
    ranked = {
        eligible[i].route.id: replace(eligible[i], score=scores[i], rank=pos + 1) for pos, i in enumerate(order)
    }
    return [ranked.get(c.route.id, c) for c in candidates]
