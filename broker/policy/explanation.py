"""The explanation of a compiled decision: every route in policy order, the filter that removed it
and why, or its score and rank, on the figures the call was decided with.

    once per plan and kind of request (`Plan.judged`, broker/policy/compiled.py)
        lifecycle, residency, providers, the capability filter's verdict for the kind, the price
        ceiling, the warnings
    per explanation
        a ranked route: the cost, predicted latency and score the decision ranked it by (the cost
        as the exact `Decimal` estimate), its place in the order tried
        any other: the first per-call check that removes it, in the filters' order (temperature,
        max_tokens, context window, health, price ceiling, latency SLO, budget)

`explain_eagerly` is the rule itself, kept as the reference: every filter of `filters.py` run in
order on every route, then `ranking.rank`.  The two give equal candidates; should a route the
compiled decision left out pass every per-call check (they disagree), the eager explanation is
given instead, so that the explanation is always what the filters say.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from broker.health import LatencyEstimate
from broker.health.latency import LatencySnapshot
from broker.routes import Route
from broker.types import ChatRequest

from .compiled import HealthSnapshot, Judged, Plan, Survivor
from .decision import Candidate, Decision, Verdict
from .filters import (
    FILTERS,
    CallContext,
    Needs,
    budget_verdict,
    circuit_verdict,
    size_reason,
    slo_verdict,
    stream_replayed,
    temperature_reason,
)
from .ranking import rank

if TYPE_CHECKING:
    from .schema import TenantPolicy

__all__ = ["Explanation", "explain_eagerly"]


class Explanation:
    """What a decision was made with, and the explanation built from it (`Decision`'s `explain`)."""

    __slots__ = ("_figures",)

    def __init__(
        self,
        plan: Plan,
        needs: Needs,
        request: ChatRequest,
        tenant: TenantPolicy,
        stream: bool,
        estimated_in: int,
        latency: LatencySnapshot,
        health: HealthSnapshot,
        remaining: Decimal | None,
        best: Sequence[Survivor],
        scores: Sequence[float],
    ) -> None:
        # one tuple: made on every call, read only when the decision is explained
        self._figures = (plan, needs, request, tenant, stream, estimated_in, latency, health, remaining, best, scores)

    def __call__(self, decision: Decision) -> tuple[Candidate, ...]:
        """Every route, in policy order: why it was removed, or its score and rank."""
        plan, needs, request, tenant, _, estimated_in, latency, _, _, best, scores = self._figures
        latency_first = tenant.objective == "latency"
        max_tokens = request.max_tokens
        ranked = {row[3]: (row, score) for row, score in zip(best, scores, strict=True)}
        position = {r.id: pos for pos, r in enumerate(decision.routes, 1)}  # the order tried, spreading included
        published = latency.published
        out: list[Candidate] = []
        add = out.append
        for judged in plan.judged(needs):
            e = judged.entry
            tokens = max_tokens or e.expected_out
            cost = e.decimal_cost(estimated_in, tokens)
            found = ranked.get(e.ordinal)
            if found is not None:
                row, score = found
                add(Candidate(e.route, None, "", cost, row[0] if latency_first else row[1], score,
                              position.get(e.id), judged.warnings))
                continue
            est = published.get(e.id)
            if est is None:
                est = e.prior
                predicted = e.prior_ms if max_tokens is None else est.ttft_ms + tokens * est.per_token_ms
            else:
                predicted = est.ttft_ms + tokens * est.per_token_ms  # LatencyEstimate.predict_ms
            verdict = judged.removed
            if verdict is None or judged.temperature_first:
                verdict = self._removal(judged, est, tokens, predicted, cost)
            if verdict is None:  # every filter keeps a route the decision did not rank: say what the filters say
                return self.eager(decision)
            add(Candidate(e.route, verdict.filter, verdict.reason, cost, predicted, warnings=judged.warnings))
        return tuple(out)

    def _removal(
        self, judged: Judged, est: LatencyEstimate, tokens: int, predicted: float, cost: Decimal | None
    ) -> Verdict | None:
        """The verdict of the first filter that removes a route the decision did not rank, when the plan's
        verdict for it (if any) comes after the temperature check."""
        _, _, request, tenant, _, estimated_in, _, health, remaining, _, _ = self._figures
        removed = judged.removed
        caps = judged.route.capabilities
        reason = temperature_reason(caps, request.temperature)
        if reason:
            return Verdict(False, "capabilities", reason)
        if removed is not None:
            return removed
        wanted_out = request.max_tokens or 0
        reason = size_reason(caps, wanted_out, estimated_in + wanted_out)
        if reason:
            return Verdict(False, "capabilities", reason)
        route_id = judged.entry.id
        if not health.allows(route_id):
            return circuit_verdict(health, route_id)
        if judged.ceiling is not None:
            return judged.ceiling
        slo = tenant.latency_slo_ms
        if slo is not None:
            verdict = slo_verdict(slo, est, tokens, predicted)
            if verdict is not None:
                return verdict
        if remaining is not None and cost is not None:
            return budget_verdict(cost, remaining)
        return None

    def eager(self, decision: Decision) -> tuple[Candidate, ...]:
        """The explanation by the rule itself: every filter in order on every route, then `rank`."""
        plan, _, request, tenant, stream, estimated_in, latency, health, remaining, _, _ = self._figures
        expected_out = request.max_tokens
        ctx = CallContext(
            request=request,
            tenant=tenant,
            stream=stream,
            today=plan.today,
            estimated_input_tokens=estimated_in,
            expected_output_tokens=lambda r: expected_out or r.expected_output_tokens,
            latency=latency,
            circuits=health,
            budget_remaining_usd=remaining,
        )
        judged = [_judge(route, ctx, plan.warning_days) for route in plan.routes]
        candidates = rank(judged, tenant.objective, tenant.weights)
        position = {r.id: pos + 1 for pos, r in enumerate(decision.routes)}  # the order tried, spreading included
        return tuple(
            Candidate(c.route, None, "", c.estimated_cost_usd, c.predicted_latency_ms, c.score,
                      position.get(c.route.id), c.warnings)
            if c.eligible and c.rank != position.get(c.route.id) else c
            for c in candidates
        )


def _judge(route: Route, ctx: CallContext, warning_days: int) -> Candidate:
    warnings: list[str] = []
    days = route.lifecycle.days_left(ctx.today)
    soon = days is not None and 0 <= days <= warning_days
    if route.lifecycle.status == "deprecated" or soon:
        when = route.lifecycle.retires_on.isoformat() if route.lifecycle.retires_on else "a date not announced"
        warnings.append(f"end of life {when}")
    if stream_replayed(route, ctx):
        warnings.append("stream replayed from one whole answer")
    out = ctx.expected_output_tokens(route)
    cost = route.price.cost(ctx.estimated_input_tokens, out) if route.price is not None else None
    latency = ctx.latency.estimate(route).predict_ms(out)
    for check in FILTERS:
        verdict = check(route, ctx)
        if not verdict.keep:
            return Candidate(route, verdict.filter, verdict.reason, cost, latency, warnings=tuple(warnings))
    return Candidate(route, None, "", cost, latency, warnings=tuple(warnings))


def explain_eagerly(decision: Decision) -> tuple[Candidate, ...]:
    """The explanation of a decision the router made, by the rule itself: every filter of
    `broker/policy/filters.py` run in order on every route, then `ranking.rank` (what the
    compiled explanation, `Decision.candidates`, is held to)."""
    explanation = decision._explain
    if not isinstance(explanation, Explanation):
        raise TypeError("explain_eagerly needs a decision made by the router")
    return explanation.eager(decision)

