"""What `llama-broker policy validate` warns about in a policy that loads.

A policy can be valid and still not work: a tenant whose residency, provider rules, price
ceiling or latency SLO leave it no route; a route an `extends:` disabled; a retired route; a
budget whose daily limit is above its monthly one; a model id that is another model's; a base
model id where the catalog lists only an inference profile; a credential variable that is not
set.  `lint_policy` finds these without a network call or a credential lookup and returns them as
typed `Finding`s, each located at the line it is about.

Reachability is judged by the engine itself (`Router.decide` with fresh health and latency
state, so circuits are closed and latency estimates are the catalog priors); provider-specific
observations come from each route's options model (`RouteOptions.notes` / `env_refs`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import BrokerError, NoEligibleRoute
from ..health import CircuitBoard, LatencyTracker
from ..routes import Route
from ..types import ChatRequest, Message
from .engine import Router
from .loaded import Policy
from .loader import LoadedPolicy
from .resolver import is_disabled
from .schema import TenantPolicy

__all__ = ["Finding", "FindingKind", "lint_policy"]

FindingKind = Literal["unreachable", "budget", "lifecycle", "route", "model_id", "credential"]

Where = tuple[str, int]


@dataclass(frozen=True)
class Finding:
    """One warning about a loaded policy, located as `FILE:LINE`."""

    file: str
    line: int
    kind: FindingKind
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: warning: {self.message}"


def lint_policy(
    loaded: LoadedPolicy,
    *,
    today: dt.date | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every warning about `loaded`, in file and line order.

    `today` dates the lifecycle checks (default: today, UTC); `env` replaces `os.environ`
    when checking that credential variables are set.
    """
    day = today or dt.datetime.now(dt.timezone.utc).date()
    lint = _Lint(loaded, day, os.environ if env is None else env)
    found = [*lint.reachability(), *lint.budgets(), *lint.routes()]
    return sorted(dict.fromkeys(found), key=lambda f: (f.file != loaded.policy.source, f.file, f.line))


class _Lint:
    def __init__(self, loaded: LoadedPolicy, today: dt.date, env: Mapping[str, str]) -> None:
        self.policy: Policy = loaded.policy
        self.data, self.index, self.today, self.env = loaded.data, loaded.index, today, env
        self.default: Where = (self.policy.source, 1 if self.policy.source != "<dict>" else 0)
        raw = self.data.get("routes")
        self.raw_routes: list[Any] = raw if isinstance(raw, list) else []

    def at(self, *path: Any) -> Where:
        return self.index.lookup(self.data, path, self.default)

    def finding(self, where: Where, kind: FindingKind, message: str) -> Finding:
        return Finding(where[0], where[1], kind, message)

    def route_at(self, route_id: str, *path: str) -> Where:
        for i, item in enumerate(self.raw_routes):
            if isinstance(item, dict) and item.get("id") == route_id:
                return self.at("routes", i, *path)
        return self.at("routes")

    # ------------------------------------------------------------------ tenants x models

    def disabled(self) -> dict[str, list[str]]:
        """Logical model -> routes of it that `enabled: false` removed, with where that was said."""
        out: dict[str, list[str]] = {}
        for i, item in enumerate(self.raw_routes):
            if not is_disabled(item):
                continue
            name = item.get("model")
            model = self.policy.catalog.model_for(name) if isinstance(name, str) else None
            if model is not None:
                file, line = self.at("routes", i, "enabled")
                out.setdefault(model, []).append(f"{item.get('id')} (disabled by enabled: false at {file}:{line})")
        return out

    def reachability(self) -> Iterator[Finding]:
        router = Router(self.policy, latency=LatencyTracker(), circuits=CircuitBoard(),
                        now=lambda: dt.datetime.combine(self.today, dt.time(12), dt.timezone.utc))
        disabled = self.disabled()
        for name, tenant in self.policy.tenants.items():
            for model in self._models_of(tenant):
                why = self._unreachable(router, name, model, disabled.get(model, []))
                if why is not None:
                    yield self.finding(self.at("tenants", name), "unreachable",
                                       f"tenant {name!r} can reach no route for {model}: {why}")

    def _models_of(self, tenant: TenantPolicy) -> tuple[str, ...]:
        if tenant.models is not None and tenant.models.allow is not None:
            return tuple(tenant.models.allow)
        return self.policy.models

    def _unreachable(self, router: Router, tenant: str, model: str, disabled: list[str]) -> str | None:
        request = ChatRequest(model=model, messages=[Message(role="user", content="ping")])
        try:
            router.decide(request, tenant)
        except NoEligibleRoute as exc:
            parts = [f"{rid} ({reason})" for rid, reason in exc.reasons.items()] + disabled
            return "; ".join(parts) if parts else "no route in the policy serves it"
        except BrokerError as exc:  # anything else the engine refuses with, said as it says it
            return str(exc)
        return None

    # ------------------------------------------------------------------ budgets

    def budgets(self) -> Iterator[Finding]:
        for name, tenant in self.policy.tenants.items():
            budget = tenant.budget
            if budget is None or budget.daily_usd is None or budget.monthly_usd is None:
                continue
            if budget.daily_usd > budget.monthly_usd:
                yield self.finding(self.at("tenants", name, "budget", "daily_usd"), "budget",
                                   f"tenant {name!r}: budget.daily_usd {budget.daily_usd} is above "
                                   f"budget.monthly_usd {budget.monthly_usd}; the daily limit never binds")

    # ------------------------------------------------------------------ routes

    def routes(self) -> Iterator[Finding]:
        for route in self.policy.routes:
            yield from self._lifecycle(route)
            yield from self._model_id(route)
            yield from self._profile(route)
            for note in route.options.notes(route):
                yield self.finding(self.route_at(route.id, *note.field.split(".")), "route",
                                   f"route {route.id!r}: {note.message}")
            for ref in route.options.env_refs(route):
                if not self.env.get(ref.name):
                    yield self.finding(self.route_at(route.id, *ref.field.split(".")), "credential",
                                       f"route {route.id!r}: environment variable {ref.name} ({ref.field}) "
                                       "is not set; calls on this route fail until it is")

    def _lifecycle(self, route: Route) -> Iterator[Finding]:
        life = route.lifecycle
        where = self.route_at(route.id)
        if life.is_retired(self.today):
            since = f" since {life.retires_on}" if life.retires_on else ""
            yield self.finding(where, "lifecycle", f"route {route.id!r} ({route.model_id}) is retired{since}; "
                                                   "it is never a candidate")
            return
        days = life.days_left(self.today)
        if days is not None and days <= self.policy.lifecycle_warning_days:  # as decisions flag it
            yield self.finding(where, "lifecycle", f"route {route.id!r} ({route.model_id}) retires on "
                                                   f"{life.retires_on}, in {days} days")

    def _profile(self, route: Route) -> Iterator[Finding]:
        profile = self.policy.catalog.profile_for(route.provider, route.region, route.model_id)
        if profile is not None:
            yield self.finding(self.route_at(route.id, "model_id"), "model_id",
                               f"route {route.id!r}: {route.model_id!r} is served in {route.region} only through "
                               f"the inference profile {profile.model_id!r}; the provider refuses the base id "
                               "on demand there (the route fails over on every call)")

    def _model_id(self, route: Route) -> Iterator[Finding]:
        owner = self.policy.catalog.model_for(route.model_id)
        if owner is not None and owner != route.model:
            yield self.finding(self.route_at(route.id, "model_id"), "model_id",
                               f"route {route.id!r}: model_id {route.model_id!r} is {owner} in the catalog, "
                               f"but the route serves model {route.model}")
