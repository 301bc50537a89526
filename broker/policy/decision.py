"""The explained decision: every candidate, the filter that removed it or its score and rank."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Decision:
    """Where a call may go, in order, and why.  `routes` is the ranked list the executor tries.

    `tenant` is the name the call gave (the one metered); `rules_tenant` the tenant whose
    rules applied: the same name, or `default` for a name the policy does not have when the
    policy says `unknown_tenants: default`.
    """

    tenant: str
    model: str
    objective: str
    candidates: tuple[Candidate, ...]
    tenant_policy: TenantPolicy = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()
    downgraded_from: str | None = None
    rules_tenant: str = ""
    failures: tuple[RouteFailure, ...] = field(default=(), compare=False)
    routes: tuple[Route, ...] = field(init=False)

    def __post_init__(self) -> None:
        ranked = sorted((c for c in self.candidates if c.eligible), key=lambda c: c.rank or 0)
        object.__setattr__(self, "routes", tuple(c.route for c in ranked))
        if not self.rules_tenant:
            object.__setattr__(self, "rules_tenant", self.tenant)

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
            "failures": [{"route": f.route_id, "reason": f.reason} for f in self.failures],
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
        for w in self.warnings:
            lines.append(f"  ! {w}")
        return "\n".join(lines)
