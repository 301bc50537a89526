"""Spreading: share a tenant's calls among the routes that score nearly as well as the best.

Opt-in per tenant (`spread: {tolerance: 0.1}`).  After ranking, the routes whose score is
within `tolerance` of the best one (`score <= best + tolerance x |best|`; lower is better)
form the near-best group.  One of them is moved to the front, picked by weighted rendezvous
hashing: each route draws `-ln(u) / weight` with `u` from SHA-256 of the request's seed and
the route id, and the smallest draw wins.  The weight is the route's `rpm` quota (a route
without one counts as the largest quota in the group; with none known, all weigh the same), so
routes take shares of the traffic in proportion to their quota; the seed is the
request's content (model, messages, parameters) and tenant.  The pick therefore depends on
nothing but the request and the policy: `route --explain`, the decision's explanation and a
replay of the same requests all pick the same route.  The rest keep their rank order behind it
(failover is unchanged), and the decision records why the route was picked.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..policy.decision import Candidate
    from ..policy.schema import TenantPolicy
    from ..types import ChatRequest

__all__ = ["near_best", "pick", "request_seed", "spread"]


def request_seed(request: ChatRequest, tenant: str) -> bytes:
    """The bytes a request's pick is drawn from: its tenant and its content."""
    body = request.model_dump_json(exclude_none=True, exclude_defaults=True)
    return hashlib.sha256(f"{tenant}\n{body}".encode()).digest()


def near_best(scores: Sequence[float], tolerance: float) -> list[int]:
    """Indices of the scores within `tolerance` of the lowest one (none when the best is unknown)."""
    if not scores:
        return []
    best = min(scores)
    if not math.isfinite(best):
        return []
    bound = best + tolerance * abs(best)
    return [i for i, s in enumerate(scores) if s <= bound]


def pick(seed: bytes, ids: Sequence[str], weights: Sequence[float]) -> int:
    """Weighted rendezvous hashing: the index whose draw `-ln(u) / weight` is smallest."""
    best_i, best_draw = 0, math.inf
    for i, (rid, weight) in enumerate(zip(ids, weights, strict=True)):
        digest = hashlib.sha256(seed + rid.encode()).digest()
        u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)  # in (0, 1)
        draw = -math.log(u) / max(weight, 1e-9)
        if draw < best_draw:
            best_i, best_draw = i, draw
    return best_i


def spread(
    candidates: Sequence[Candidate], tenant: TenantPolicy, request: ChatRequest
) -> tuple[list[Candidate], str | None]:
    """The ranked candidates with the spread pick at rank 1, and why it was picked (None: no spreading)."""
    rule = tenant.spread
    ranked = sorted((c for c in candidates if c.eligible and c.rank is not None), key=lambda c: c.rank or 0)
    if rule is None or len(ranked) < 2:
        return list(candidates), None
    group = [ranked[i] for i in near_best([c.score if c.score is not None else math.inf for c in ranked],
                                          rule.tolerance)]
    if len(group) < 2:
        return list(candidates), None
    ids = [c.route.id for c in group]
    known = [c.route.rpm for c in group if c.route.rpm]
    weights = [float(c.route.rpm or max(known, default=1)) for c in group]
    chosen = group[pick(request_seed(request, tenant.name), ids, weights)]
    order = [chosen] + [c for c in ranked if c is not chosen]
    reranked = {c.route.id: replace(c, rank=pos + 1) for pos, c in enumerate(order)}
    shares = ", ".join(f"{rid} {w:g}" for rid, w in zip(ids, weights, strict=True))
    note = (f"spread: {chosen.route.id} picked from {len(group)} routes within {rule.tolerance:g} of the best score "
            f"(weights by rpm quota: {shares}; drawn from the request's content)")
    return [reranked.get(c.route.id, c) for c in candidates], note
