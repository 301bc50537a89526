"""The routing rule: candidates -> hard filters -> ranking -> an explained `Decision`.

    candidates = the policy's routes serving the requested logical model
    hard filters (broker/policy/filters.py), each recorded with its reason
    rank the survivors by the tenant's objective (broker/policy/ranking.py)

A tenant the policy does not name is refused (`UnknownTenant`), or, with `unknown_tenants:
default`, served under the `default` tenant's rules: the decision keeps the name the call gave
(it is metered under it, and its budget is counted on its own spend) and records whose rules
applied; the first call under each such name logs a warning.

Budgets act before any route is considered (the rule is `broker/policy/budget.py`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.errors import BudgetExceeded, NoEligibleRoute
from broker.health import CircuitBoard, LatencyTracker
from broker.routes import Route
from broker.types import ChatRequest

from .budget import SpendSource, check_budget
from .decision import Candidate, Decision
from .filters import FILTERS, CallContext, stream_replayed
from .ranking import rank
from .schema import TenantPolicy

if TYPE_CHECKING:
    from .loaded import Policy

__all__ = ["Router"]

log = logging.getLogger("llama_broker.policy")
_EOL_WARNING_DAYS = 90
_MAX_WARNED_NAMES = 10_000  # names warned about once each; past this many, no more are remembered


class Router:
    """Decides where each call may go.  Stateless apart from the live health it reads."""

    def __init__(
        self,
        policy: Policy,
        *,
        latency: LatencyTracker,
        circuits: CircuitBoard,
        spend: SpendSource | None = None,
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
        for route in policy.routes:
            self._by_model.setdefault(route.model, ())
            self._by_model[route.model] += (route,)

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
        budget = check_budget(tenant, model, now, tenant_name, self.spend, self.policy.resolve_model)
        model = budget.model
        routes = self._by_model.get(model, ())
        if not routes:
            raise NoEligibleRoute(f"the policy has no route serving model {model!r}")

        expected_out = request.max_tokens
        ctx = CallContext(
            request=request,
            tenant=tenant,
            stream=stream,
            today=now.date(),
            estimated_input_tokens=request.estimated_input_tokens(),
            expected_output_tokens=lambda r: expected_out or r.expected_output_tokens,
            latency=self.latency,
            circuits=self.circuits,
            budget_remaining_usd=budget.remaining,
        )
        candidates = [self._judge(route, ctx) for route in routes]
        candidates = rank(candidates, tenant.objective, tenant.weights)
        decision = Decision(
            tenant=tenant_name,
            rules_tenant=tenant.name,
            model=model,
            objective=tenant.objective,
            candidates=tuple(candidates),
            tenant_policy=tenant,
            warnings=budget.warnings,
            downgraded_from=budget.downgraded_from,
        )
        if not decision.routes:
            self._refuse(decision, tenant)
        return decision

    def _warn_unknown(self, name: str, rules: str) -> None:
        with self._warned_lock:
            if name in self._warned:
                return
            if len(self._warned) < _MAX_WARNED_NAMES:
                self._warned.add(name)
        log.warning("tenant %r is not in the policy; serving it under the %r tenant's rules "
                    "(unknown_tenants: default) and metering it as %r", name, rules, name)

    def _judge(self, route: Route, ctx: CallContext) -> Candidate:
        warnings: list[str] = []
        days = route.lifecycle.days_left(ctx.today)
        if route.lifecycle.status == "deprecated" or (days is not None and 0 <= days <= _EOL_WARNING_DAYS):
            when = route.lifecycle.retires_on.isoformat() if route.lifecycle.retires_on else "a date not announced"
            warnings.append(f"end of life {when}")
        if stream_replayed(route, ctx):
            warnings.append("stream replayed from one whole answer")
        out = ctx.expected_output_tokens(route)
        cost = route.price.cost(ctx.estimated_input_tokens, out) if route.price is not None else None
        latency = self.latency.estimate(route).predict_ms(out)
        for check in FILTERS:
            verdict = check(route, ctx)
            if not verdict.keep:
                return Candidate(route, verdict.filter, verdict.reason, cost, latency, warnings=tuple(warnings))
        return Candidate(route, None, "", cost, latency, warnings=tuple(warnings))

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
