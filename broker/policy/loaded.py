"""The loaded policy: resolved routes and tenants, the settings, and the catalog in force."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NoEligibleRoute, UnknownTenant
from ..routes import Route

if TYPE_CHECKING:  # the schema loads with the policy loader, not with the broker's import
    from .catalog import Catalog
    from .schema import (
        AuditSettings,
        BudgetSettings,
        CircuitSettings,
        EnergySettings,
        LimitsSettings,
        MeteringSettings,
        ProvenanceSettings,
        RetrySettings,
        TelemetrySettings,
        TenantGroup,
        TenantPolicy,
    )


__all__ = ["Policy"]


def _default(name: str) -> Callable[[], Any]:
    """A default factory for a settings model of `broker.policy.schema`, imported when a policy is built."""

    def make() -> Any:
        from . import schema

        return getattr(schema, name)()

    return make


@dataclass(frozen=True, eq=False)
class Policy:
    """A loaded policy: resolved routes, tenants and settings, and the catalog in force."""

    routes: tuple[Route, ...]
    tenants: dict[str, TenantPolicy]
    catalog: Catalog
    source: str = "<dict>"
    ledger: str | None = None
    description: str | None = None
    metering: MeteringSettings = field(default_factory=_default("MeteringSettings"))
    retry: RetrySettings = field(default_factory=_default("RetrySettings"))
    circuit: CircuitSettings = field(default_factory=_default("CircuitSettings"))
    #: spans and metrics, and which routes' runners are measured for energy: neither changes routing
    telemetry: TelemetrySettings = field(default_factory=_default("TelemetrySettings"))
    energy: EnergySettings = field(default_factory=_default("EnergySettings"))
    #: the signed provenance record on answers (off by default): never changes routing
    provenance: ProvenanceSettings = field(default_factory=_default("ProvenanceSettings"))
    #: the decision audit trail (on by default): never changes routing
    audit: AuditSettings = field(default_factory=_default("AuditSettings"))
    #: `refuse`: a call naming a tenant not in `tenants` is `UnknownTenant`; `default`: it is
    #: served under the `default` tenant's rules (and metered under the name it gave)
    unknown_tenants: str = "refuse"
    #: where rate windows (tenant limits, route quotas, saturation marks) live: `broker/limits`
    limits: LimitsSettings = field(default_factory=_default("LimitsSettings"))
    #: groups of tenants sharing limits (`groups:`), by name
    groups: dict[str, TenantGroup] = field(default_factory=dict)
    #: how budget reservations are leased in the shared store
    budgets: BudgetSettings = field(default_factory=_default("BudgetSettings"))
    #: how many days ahead of a route's end of life decisions, reports and `policy validate` warn
    lifecycle_warning_days: int = 90
    version: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", self._content_hash())

    def _content_hash(self) -> str:
        content = {
            "routes": [r.model_dump(mode="json") for r in self.routes],
            "tenants": {k: t.model_dump(mode="json") for k, t in sorted(self.tenants.items())},
            "ledger": self.ledger,
            "metering": self.metering.model_dump(mode="json"),
            "retry": self.retry.model_dump(mode="json"),
            "circuit": self.circuit.model_dump(mode="json"),
            "unknown_tenants": self.unknown_tenants,
            "groups": {k: g.model_dump(mode="json") for k, g in sorted(self.groups.items())},
            "budgets": self.budgets.model_dump(mode="json"),
        }
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def tenant(self, name: str) -> TenantPolicy:
        """The rules a call naming tenant `name` is served under.

        A tenant the policy names gets its own.  Any other name is `UnknownTenant` (with the
        closest tenant names as a hint), unless the policy says `unknown_tenants: default`:
        then it gets the `default` tenant's rules (the returned policy's `name` is `default`).
        """
        found = self.tenants.get(name)
        if found is not None:
            return found
        fallback = self.tenants.get("default") if self.unknown_tenants == "default" else None
        if fallback is not None:
            return fallback
        import difflib  # only an unknown tenant's error needs it

        close = difflib.get_close_matches(name, list(self.tenants), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        names = sorted(self.tenants)
        known = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "") or "none"
        raise UnknownTenant(
            f"tenant {name!r} is not in policy {self.source}{hint} (tenants: {known}; "
            "`unknown_tenants: default` serves unknown names under the `default` tenant's rules)"
        )

    def groups_of(self, tenant: str) -> tuple[TenantGroup, ...]:
        """The groups whose members include the tenant named `tenant` (a rules tenant's name), in policy order."""
        return tuple(g for g in self.groups.values() if tenant in g.tenants)

    def route(self, route_id: str) -> Route:
        for r in self.routes:
            if r.id == route_id:
                return r
        raise KeyError(route_id)

    @property
    def models(self) -> tuple[str, ...]:
        """The logical models the policy's routes serve, in first-seen order."""
        return tuple(dict.fromkeys(r.model for r in self.routes))

    def routes_for(self, model: str) -> tuple[Route, ...]:
        """Routes serving a model (alias or logical id), in policy order."""
        logical = self.resolve_model(model)
        return tuple(r for r in self.routes if r.model == logical)

    def resolve_model(self, name: str) -> str:
        """Alias or provider id -> logical model id; unknown names raise `NoEligibleRoute`."""
        logical = self.catalog.model_for(name)
        if logical is None:
            served = ", ".join(self.models) or "none"
            raise NoEligibleRoute(
                f"unknown model {name!r}: not a Llama model or alias in the catalog; this policy serves: {served}",
                reasons={},
            )
        return logical
