"""The routing rule: candidates -> hard filters -> ranking -> an explained `Decision`.

    candidates = the policy's routes serving the requested logical model
    hard filters (broker/policy/filters.py), each recorded with its reason
    rank the survivors by the tenant's objective (broker/policy/ranking.py)

A tenant the policy does not name is refused (`UnknownTenant`), or, with `unknown_tenants:
default`, served under the `default` tenant's rules: the decision keeps the name the call gave
(it is metered under it, and its budget is counted on its own spend) and records whose rules
applied; the first call under each such name logs a warning.

Budgets act before any route is considered (the rule is `broker/policy/budget.py`).

The decision is compiled (`broker/policy/compiled.py`): what depends only on the tenant, the
model and the day is worked out once, and a call looks only at what changes.  The explanation
(`Decision.candidates`, `explain()`, `to_dict()`) is built when first read, on the figures the
call was decided with (`broker/policy/explanation.py`): the verdicts the tenant, the day and the
kind of request decide come from the plan, the ranked routes' figures from the decision itself,
and it says what the filters of `filters.py`, run in order on every route, would have said.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING

from broker.errors import BudgetExceeded, NoEligibleRoute
from broker.health import CircuitBoard, LatencyTracker
from broker.limits.spreading import spread
from broker.routes import Route
from broker.types import ChatRequest

from .budget import BudgetSource, SpendSource, check_budget
from .compiled import Plan, PlanEntry, Survivor, health_now, survivors
from .decision import Candidate, Decision
from .explanation import Explanation
from .filters import needs_of
from .ranking import order_rows

if TYPE_CHECKING:
    from .loaded import Policy
    from .schema import TenantPolicy

__all__ = ["Router"]

log = logging.getLogger("llama_broker.policy")
_MAX_WARNED_NAMES = 10_000  # names warned about once each; past this many, no more are remembered
_ROUTE = itemgetter(4)  # the route of a compiled survivor row


class Router:
    """Decides where each call may go.  Stateless apart from the live health it reads."""

    def __init__(
        self,
        policy: Policy,
        *,
        latency: LatencyTracker,
        circuits: CircuitBoard,
        spend: BudgetSource | SpendSource | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.policy = policy
        self.latency = latency
        self.circuits = circuits
        self.spend = spend
        self.now = now
        self._by_model: dict[str, tuple[Route, ...]] = {}
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()
        self._plans: dict[tuple[str, str], Plan] = {}  # (rules tenant, model) -> plan, for `_plans_day`
        self._plans_day: dt.date | None = None
        for route in policy.routes:
            self._by_model.setdefault(route.model, ())
            self._by_model[route.model] += (route,)
        self._entries = {
            model: tuple(PlanEntry(r, i) for i, r in enumerate(routes)) for model, routes in self._by_model.items()
        }

    # ------------------------------------------------------------------ decide

    def decide(self, request: ChatRequest, tenant_name: str, *, stream: bool = False) -> Decision:
        """The explained decision for one call.  Raises `NoEligibleRoute` when nothing survives."""
        tenant = self.policy.tenant(tenant_name)
        if tenant.name != tenant_name:
            self._warn_unknown(tenant_name, tenant.name)
        model = self.policy.resolve_model(request.model)
        if not tenant.allows_model(model):
            raise NoEligibleRoute(f"tenant {tenant_name!r} may not use model {model!r}")
        now = self.now()
        budget = check_budget(tenant, model, now, tenant_name, self.spend, self.policy.resolve_model,
                              request, self._by_model.get)
        model = budget.model
        routes = self._by_model.get(model, ())
        if not routes:
            raise NoEligibleRoute(f"the policy has no route serving model {model!r}")

        today = now.date()
        plan = self._plan(tenant, model, today)
        health = health_now(self.circuits)
        latency = self.latency.snapshot()
        estimated_in = request.estimated_input_tokens()
        needs = needs_of(request, stream)
        kept = survivors(
            plan.for_needs(needs),
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            input_tokens=estimated_in,
            health=health,
            latency=latency.published,
            tenant=tenant,
            budget_remaining_usd=budget.remaining,
            latency_first=tenant.objective == "latency",
        )
        best, scores = order_rows(kept, tenant.objective, tenant.weights)
        # after ranking: spreading may move a near-best route to the front
        ranked, spread_note = self._spread(best, scores, tenant, request)
        decision = Decision(
            tenant=tenant_name,
            rules_tenant=tenant.name,
            model=model,
            objective=tenant.objective,
            tenant_policy=tenant,
            warnings=budget.warnings,
            downgraded_from=budget.downgraded_from,
            spread=spread_note,
            routes=ranked,
            explain=Explanation(
                plan, needs, request, tenant, stream, estimated_in, latency, health, budget.remaining, best, scores
            ),
        )
        if not ranked:
            self._refuse(decision, tenant)
        return decision

    def _plan(self, tenant: TenantPolicy, model: str, today: dt.date) -> Plan:
        """The compiled routes of `model` for `tenant`'s rules today (recompiled when the day changes)."""
        if today != self._plans_day:
            self._plans, self._plans_day = {}, today
        key = (tenant.name, model)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan(
                self._entries[model], tenant, today, warning_days=self.policy.lifecycle_warning_days
            )
        return plan

    @staticmethod
    def _spread(
        best: list[Survivor], scores: list[float], tenant: TenantPolicy, request: ChatRequest
    ) -> tuple[tuple[Route, ...], str | None]:
        """The routes in the order they are tried, and the spread note (None: not spread)."""
        if tenant.spread is None or len(best) < 2:
            return tuple(map(_ROUTE, best)), None
        latency_first = tenant.objective == "latency"
        ranked = [
            Candidate(row[4], predicted_latency_ms=row[0] if latency_first else row[1], score=score,
                      rank=pos + 1)
            for pos, (row, score) in enumerate(zip(best, scores, strict=True))
        ]
        spread_out, note = spread(ranked, tenant, request)
        return tuple(c.route for c in sorted(spread_out, key=lambda c: c.rank or 0)), note

    def _warn_unknown(self, name: str, rules: str) -> None:
        with self._warned_lock:
            if name in self._warned:
                return
            if len(self._warned) < _MAX_WARNED_NAMES:
                self._warned.add(name)
        log.warning("tenant %r is not in the policy; serving it under the %r tenant's rules "
                    "(unknown_tenants: default) and metering it as %r", name, rules, name)

    def _refuse(self, decision: Decision, tenant: TenantPolicy) -> None:
        removed_by = {c.removed_by for c in decision.candidates}
        budget = tenant.budget
        if removed_by == {"budget"} and budget is not None and budget.on_exceed == "block":
            raise BudgetExceeded(
                f"tenant {decision.tenant!r}: every route would exceed the remaining budget",
                tenant=decision.tenant,
            )
        summary = "; ".join(f"{rid} ({why})" for rid, why in decision.removed.items())
        raise NoEligibleRoute(
            f"no eligible route for tenant {decision.tenant!r} and model {decision.model!r}: {summary}",
            reasons=decision.removed,
            decision=decision,
        )
