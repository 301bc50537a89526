"""Ranking of the routes that survived the hard filters, by the tenant's objective.

- `cost`: estimated cost of this request (unknown prices rank after known ones), ties by
  predicted latency.
- `latency`: predicted latency (TTFT + expected output x per-token time), ties by cost.
- `weighted`: `w_cost x cost / cheapest + w_latency x latency / fastest`, lower is better.

Route id breaks any remaining tie, so the same inputs always give the same order.

`order` is the rule itself, on plain floats (a cost is the float nearest the exact `Decimal`
estimate, `inf` when unknown), and `rank` applies it to explained candidates; `order_rows` is
the same rule on the compiled decision's rows (the tests hold the two to the same order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .decision import Candidate

__all__ = ["UNKNOWN", "order", "order_rows", "rank"]

UNKNOWN = float("inf")
_Row = tuple[Any, ...]


def _cost(c: Candidate) -> float:
    return float(c.estimated_cost_usd) if c.estimated_cost_usd is not None else UNKNOWN


def _latency(c: Candidate) -> float:
    return c.predicted_latency_ms if c.predicted_latency_ms is not None else UNKNOWN


def _weighted_scores(costs: Sequence[float], latencies: Sequence[float], weights: Any) -> list[float]:
    known_costs = [x for x in costs if x != UNKNOWN]
    cheapest = min((x for x in known_costs if x > 0), default=1e-12)
    fastest = min(latencies, default=1.0) or 1.0
    w_cost = float(getattr(weights, "cost", 0.5)) if weights is not None else 0.5
    w_lat = float(getattr(weights, "latency", 0.5)) if weights is not None else 0.5
    worst_cost = max(known_costs, default=cheapest) / cheapest * 2
    scores = []
    for cost, latency in zip(costs, latencies, strict=True):
        cost_ratio = cost / cheapest if cost != UNKNOWN else worst_cost
        scores.append(w_cost * cost_ratio + w_lat * latency / fastest)
    return scores


def order(
    costs: Sequence[float], latencies: Sequence[float], ids: Sequence[str], objective: str, weights: Any = None
) -> tuple[list[int], Sequence[float]]:
    """The indices of eligible routes, best first, and each route's score (by index)."""
    scores: Sequence[float]
    if objective == "latency":
        scores = latencies
        keys: list[tuple[Any, ...]] = list(zip(latencies, costs, ids, strict=True))
    elif objective == "weighted":
        scores = _weighted_scores(costs, latencies, weights)
        keys = list(zip(scores, ids, strict=True))
    else:
        scores = costs
        keys = list(zip(costs, latencies, ids, strict=True))
    return sorted(range(len(ids)), key=keys.__getitem__), scores


def order_rows(rows: Sequence[_Row], objective: str, weights: Any = None) -> tuple[list[_Row], list[float]]:
    """`order` for the compiled decision's rows: `(cost, latency, id, ordinal, ...)`, or for the
    `latency` objective `(latency, cost, id, ordinal, ...)`, whose own order is then the rule's.
    The rows best first, and their scores in that order."""
    if objective == "weighted":
        scores = _weighted_scores([r[0] for r in rows], [r[1] for r in rows], weights)
        best = sorted(range(len(rows)), key=lambda i: (scores[i], rows[i][2]))
        return [rows[i] for i in best], [scores[i] for i in best]
    ranked = sorted(rows)
    return ranked, [r[0] for r in ranked]


def rank(candidates: Sequence[Candidate], objective: str, weights: Any = None) -> list[Candidate]:
    """Give each eligible candidate a score and a rank (1 = tried first)."""
    eligible = [c for c in candidates if c.eligible]
    best, scores = order(
        [_cost(c) for c in eligible], [_latency(c) for c in eligible], [c.route.id for c in eligible],
        objective, weights,
    )
    ranked = {}
    for pos, i in enumerate(best, 1):
        c = eligible[i]
        ranked[c.route.id] = Candidate(c.route, None, c.reason, c.estimated_cost_usd, c.predicted_latency_ms,
                                       scores[i], pos, c.warnings)
    return [ranked.get(c.route.id, c) for c in candidates]
