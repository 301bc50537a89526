"""The explained decision: every candidate, the filter that removed it or its score and rank."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from broker.errors import BrokerError
from broker.routes import Route

if TYPE_CHECKING:
    from .schema import TenantPolicy

__all__ = ["Candidate", "Decision", "RouteFailure", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One filter's judgement of one route."""

    keep: bool
    filter: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A route considered for the call, with why it was removed or how it scored."""

    route: Route
    removed_by: str | None = None
    reason: str = ""
    estimated_cost_usd: Decimal | None = None
    predicted_latency_ms: float | None = None
    score: float | None = None
    rank: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def eligible(self) -> bool:
        return self.removed_by is None


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """A ranked route the call could not use (its adapter could not be built or configured)."""

    route_id: str
    error: BrokerError = field(repr=False, compare=False)

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


class Decision:
    """Where a call may go, in order, and why.  `routes` is the ranked list the executor tries.

    `tenant` is the name the call gave (the one metered); `rules_tenant` the tenant whose
    rules applied: the same name, or `default` for a name the policy does not have when the
    policy says `unknown_tenants: default`.

    `candidates`, the explanation (every route considered, the filter that removed it or its
    score and rank), is built in full the first time it is read, from the figures the decision
    was made with; the router gives `explain` for that and `routes` ready-made.  Given
    `candidates` instead, `routes` is their ranked eligible routes.
    """

    __slots__ = (
        "_candidates", "_explain", "downgraded_from", "failures", "guardrails", "model", "objective", "routes",
        "rules_tenant", "spread", "tenant", "tenant_policy", "warnings",
    )

    tenant: str
    model: str
    objective: str
    tenant_policy: TenantPolicy
    warnings: tuple[str, ...]
    downgraded_from: str | None
    rules_tenant: str
    #: why the first route was picked when the tenant spreads its calls (`broker/limits/spreading.py`)
    spread: str | None
    failures: tuple[RouteFailure, ...]
    #: what the tenant's guardrails did to the call (`broker/guardrails`): every outcome but a plain pass
    guardrails: tuple[Any, ...]
    routes: tuple[Route, ...]

    def __init__(
        self,
        tenant: str,
        model: str,
        objective: str,
        candidates: tuple[Candidate, ...] | None = None,
        tenant_policy: TenantPolicy | None = None,
        warnings: tuple[str, ...] = (),
        downgraded_from: str | None = None,
        rules_tenant: str = "",
        spread: str | None = None,
        failures: tuple[RouteFailure, ...] = (),
        *,
        routes: tuple[Route, ...] | None = None,
        explain: Callable[[Decision], tuple[Candidate, ...]] | None = None,
    ) -> None:
        if tenant_policy is None:
            raise TypeError("Decision needs the tenant_policy it was decided under")
        self.tenant, self.model, self.objective, self.tenant_policy = tenant, model, objective, tenant_policy
        self.warnings, self.downgraded_from, self.spread, self.failures = warnings, downgraded_from, spread, failures
        self.rules_tenant = rules_tenant or tenant
        self.guardrails = ()
        self._candidates = candidates
        self._explain = explain
        if candidates is not None:
            ranked = sorted((c for c in candidates if c.eligible), key=lambda c: c.rank or 0)
            self.routes = tuple(c.route for c in ranked)
        elif routes is not None and explain is not None:
            self.routes = routes
        else:
            raise TypeError("Decision needs candidates, or routes and explain")

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """Every route considered, in policy order: why it was removed, or its score and rank."""
        found = self._candidates
        if found is None:
            assert self._explain is not None
            found = self._candidates = tuple(self._explain(self))
        return found

    def __repr__(self) -> str:
        return (f"Decision(tenant={self.tenant!r}, model={self.model!r}, objective={self.objective!r}, "
                f"routes={[r.id for r in self.routes]!r})")

    def record_guardrail(self, outcome: Any) -> None:
        """Note what a guardrail did (a `broker.guardrails.GuardOutcome`)."""
        self.guardrails = (*self.guardrails, outcome)

    def add_warning(self, note: str) -> None:
        """Note something the call should know that does not stop it (a licence term on `warn`)."""
        object.__setattr__(self, "warnings", (*self.warnings, note))

    def record_failure(self, route: Route, error: BrokerError) -> None:
        """Note a ranked route the executor had to pass over because it could not be used."""
        object.__setattr__(self, "failures", (*self.failures, RouteFailure(route.id, error)))

    @property
    def allowed_jurisdictions(self) -> list[str] | None:
        residency = self.tenant_policy.residency
        return None if residency is None else sorted(residency)

    @property
    def removed(self) -> dict[str, str]:
        return {c.route.id: f"{c.removed_by}: {c.reason}" for c in self.candidates if not c.eligible}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "rules_tenant": self.rules_tenant,
            "model": self.model,
            "objective": self.objective,
            "downgraded_from": self.downgraded_from,
            "allowed_jurisdictions": self.allowed_jurisdictions,
            "warnings": list(self.warnings),
            "spread": self.spread,
            "failures": [{"route": f.route_id, "reason": f.reason} for f in self.failures],
            "guardrails": [{"check": g.check, "stage": g.stage, "action": g.action, "reason": g.reason,
                            "categories": list(g.categories)} for g in self.guardrails],
            "candidates": [
                {
                    "route": c.route.id,
                    "provider": c.route.provider,
                    "region": c.route.region,
                    "jurisdiction": c.route.jurisdiction,
                    "eligible": c.eligible,
                    "removed_by": c.removed_by,
                    "reason": c.reason,
                    "rank": c.rank,
                    "score": c.score,
                    "estimated_cost_usd": str(c.estimated_cost_usd) if c.estimated_cost_usd is not None else None,
                    "predicted_latency_ms": round(c.predicted_latency_ms, 1) if c.predicted_latency_ms else None,
                    "warnings": list(c.warnings),
                }
                for c in self.candidates
            ],
        }

    def explain(self) -> str:
        """A human-readable account of the decision, one line per candidate."""
        head = f"tenant={self.tenant} model={self.model} objective={self.objective}"
        if self.rules_tenant != self.tenant:
            head += f" (not in the policy: served under tenant {self.rules_tenant!r}'s rules)"
        if self.downgraded_from:
            head += f" (downgraded from {self.downgraded_from} by budget)"
        lines = [head]
        order = sorted(self.candidates, key=lambda c: (not c.eligible, c.rank or 0, c.route.id))
        for c in order:
            r = c.route
            where = f"{r.provider}/{r.region or '-'} [{r.jurisdiction}]"
            if c.eligible:
                cost = f"${c.estimated_cost_usd:.6f}" if c.estimated_cost_usd is not None else "cost unknown"
                lat = f"{c.predicted_latency_ms:.0f} ms" if c.predicted_latency_ms is not None else "latency unknown"
                lines.append(f"  #{c.rank} {r.id:<24} {where:<36} est {cost}, {lat}, score {c.score:.4g}")
            else:
                lines.append(f"  -- {r.id:<24} {where:<36} removed by {c.removed_by}: {c.reason}")
            for w in c.warnings:
                lines.append(f"       ! {w}")
        for f in self.failures:
            lines.append(f"  x {f.route_id} could not be used: {f.reason}")
        if self.spread:
            lines.append(f"  = {self.spread}")
        for w in self.warnings:
            lines.append(f"  ! {w}")
        return "\n".join(lines)
