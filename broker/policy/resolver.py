"""Turn a merged policy document into a `Policy`: validate each part, fill routes from the
catalog, derive jurisdictions, check every cross-reference, and collect every problem."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..errors import PolicyIssue
from ..routes import Lifecycle, Route, RouteOptions
from .catalog import Catalog, apply_catalog_doc, builtin_catalog
from .loaded import Policy
from .schema import GroupSpec, PolicyDoc, RouteSpec, TenantGroup, TenantPolicy, TenantSpec, schema_keys
from .yaml_source import LineIndex, issues_from_validation

if TYPE_CHECKING:
    from ..adapter import AdapterRegistry

__all__ = ["build_policy", "is_disabled"]

Where = tuple[str, int]


class _Context:
    """The document, its line index and the issue list, shared by the resolution steps."""

    def __init__(self, data: dict[str, Any], index: LineIndex, issues: list[PolicyIssue], default: Where) -> None:
        self.data, self.index, self.issues = data, index, issues
        self.default: Where = default
        self.keys = schema_keys()

    def at(self, *path: Any) -> Where:
        return self.index.lookup(self.data, path, self.default)

    def add(self, where: Where, message: str) -> None:
        self.issues.append(PolicyIssue(where[0], where[1], message))

    def validate(self, model: type[BaseModel], value: Any, *path: Any, keys: set[str] | None = None) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            self.issues.extend(issues_from_validation(
                exc, root=self.data, prefix=path, index=self.index, default=self.default,
                known_keys=self.keys if keys is None else keys))
            return None


def build_policy(
    data: dict[str, Any], index: LineIndex, issues: list[PolicyIssue], *, source: str, catalog: Catalog | None = None,
    default: Where | None = None,
) -> Policy | None:
    """The policy of a merged document, or None with every problem in `issues`.

    `default` is where a problem no value can be pinned to is reported (the file's first line).
    """
    ctx = _Context(data, index, issues, default or (source, 0))
    try:
        doc = PolicyDoc.model_validate(data)
    except ValidationError as exc:  # report, then go on with the sound part of the top level
        issues.extend(issues_from_validation(
            exc, root=data, prefix=(), index=index, default=ctx.default, known_keys=ctx.keys))
        bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
        try:
            doc = PolicyDoc.model_validate({k: v for k, v in data.items() if k not in bad})
        except ValidationError:
            return None
    base = catalog or builtin_catalog()
    if data.get("catalog") is not None:
        base = apply_catalog_doc(base, data, index=index, issues=issues, path=("catalog",), default=ctx.default)
    registry = _registry()
    routes = _routes(ctx, doc, base, registry)
    tenants = _tenants(ctx, doc, base, routes, registry.__contains__)
    groups = _groups(ctx, doc, base, routes, tenants)
    route_ids = {r.id for r in routes}
    for rid in doc.energy.routes:  # an energy counter for a route the policy does not have is a typo
        if rid not in route_ids:
            ctx.add(ctx.at("energy", "routes", rid), f"energy.routes: no route {rid!r} in this policy")
    if not routes and not issues:
        ctx.add(ctx.at("routes"), "the policy has no routes")
    if issues:
        return None
    return Policy(
        routes=tuple(routes), tenants=tenants, catalog=base, source=source, ledger=doc.ledger or None,
        description=doc.description, metering=doc.metering, retry=doc.retry, circuit=doc.circuit,
        unknown_tenants=doc.unknown_tenants, limits=doc.limits, groups=groups, telemetry=doc.telemetry,
        budgets=doc.budgets,
        energy=doc.energy, lifecycle_warning_days=doc.lifecycle_warning_days,
        provenance=doc.provenance, audit=doc.audit,
    )


def _registry() -> AdapterRegistry:
    from ..adapter import AdapterRegistry

    return AdapterRegistry()


# --------------------------------------------------------------------------- routes


_BOOL = TypeAdapter(bool, config=ConfigDict(defer_build=True))  # built on first use, not at import


def is_disabled(item: Any) -> bool:
    """`enabled: false`, however written (`"false"`, `no`, `0`, or `${VAR:-false}` expanded)."""
    if not isinstance(item, dict) or "enabled" not in item:
        return False
    try:
        return not _BOOL.validate_python(item["enabled"])
    except ValidationError:
        return False  # not a boolean at all: the route's own validation reports it


def _check_names(
    ctx: _Context, item: Any, loc: tuple[Any, ...], catalog: Catalog, known: Callable[[str], bool]
) -> None:
    """Provider and region checks on a route whose other fields failed validation."""
    if not isinstance(item, dict):
        return
    name = f"route {item.get('id')!r}"
    provider, region = item.get("provider"), item.get("region")
    if isinstance(provider, str) and not known(provider):
        ctx.add(ctx.at(*loc, "provider"), f"{name}: unknown provider {provider!r} (no built-in or entry-point adapter)")
    elif (isinstance(provider, str) and isinstance(region, str) and item.get("jurisdiction") is None
          and catalog.jurisdictions.of_region(provider, region) is None):
        ctx.add(ctx.at(*loc, "region"), f"{name}: unknown region {region!r} for {provider}; "
                                        "give jurisdiction: explicitly if the region is right")


def _routes(ctx: _Context, doc: PolicyDoc, catalog: Catalog, registry: AdapterRegistry) -> list[Route]:
    known = registry.__contains__
    out: list[Route] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(doc.routes):
        if is_disabled(item):  # before validation: a team file may drop a route with just its id
            continue
        spec = ctx.validate(RouteSpec, item, "routes", i)
        if spec is None:
            _check_names(ctx, item, ("routes", i), catalog, known)  # report these too, all at once
            continue
        if spec.id in seen:
            first = ctx.at("routes", seen[spec.id])[1]
            ctx.add(ctx.at("routes", i, "id"), f"duplicate route id {spec.id!r} (first on line {first})")
            continue
        seen[spec.id] = i
        route = _route(ctx, spec, catalog, registry, ("routes", i))
        if route is not None:
            out.append(route)
    return out


def _route(
    ctx: _Context, spec: RouteSpec, catalog: Catalog, registry: AdapterRegistry, loc: tuple[Any, ...]
) -> Route | None:
    def at(key: str) -> Where:
        return ctx.at(*loc, key)

    before = len(ctx.issues)
    name = f"route {spec.id!r}"
    if spec.provider not in registry:
        ctx.add(at("provider"), f"{name}: unknown provider {spec.provider!r} (no built-in or entry-point adapter)")
        return None
    options = _options(ctx, spec, registry, loc)
    model = catalog.model_for(spec.model)
    if model is None:
        ctx.add(at("model"), f"{name}: unknown model {spec.model!r}; known: {', '.join(sorted(catalog.models))} "
                             "(declare new ones under catalog.models)")
        return None
    table = catalog.jurisdictions
    if spec.region is None and table.is_regional(spec.provider):
        offered = ", ".join(r for r in catalog.regions(spec.provider, model) if r) or "none in the catalog"
        ctx.add(at("provider"),
                f"{name}: a {spec.provider} route needs a region (catalog regions for {model}: {offered})")
    entry = catalog.find(spec.provider, model, spec.region, spec.model_id)
    model_id = spec.model_id or (entry.model_id if entry else None)
    jurisdiction = _jurisdiction(ctx, spec, model_id, catalog, loc)
    if model_id is None and len(ctx.issues) == before:
        offered = ", ".join(r or "(no region)" for r in catalog.regions(spec.provider, model)) or "none"
        ctx.add(ctx.at(*loc), f"{name}: the catalog has no {spec.provider} deployment of {model} in "
                              f"{spec.region or '(no region)'} (catalog regions: {offered}); give model_id")
    if len(ctx.issues) > before or model_id is None or jurisdiction is None or options is None:
        return None
    price = entry.price if entry else None
    if "price" in spec.model_fields_set:
        price = spec.price
        if price is not None and price.source is None:
            price = price.model_copy(update={"source": f"policy {ctx.at(*loc)[0]}"})
    caps = entry.capabilities if entry else catalog.models[model].capabilities
    if spec.capabilities is not None:
        caps = caps.model_copy(update=spec.capabilities.model_dump(exclude_none=True))
    lifecycle = entry.lifecycle if entry else None
    if spec.lifecycle is not None:
        changes = spec.lifecycle.model_dump(exclude_none=True)
        lifecycle = (lifecycle or Lifecycle()).model_copy(update=changes)
    fields: dict[str, Any] = {
        "id": spec.id, "provider": spec.provider, "model": model, "model_id": model_id, "region": spec.region,
        "jurisdiction": jurisdiction, "endpoint": spec.endpoint or None, "api_key_env": spec.api_key_env or None,
        "price": price, "capabilities": caps, "options": options,
    }
    if lifecycle is not None:
        fields["lifecycle"] = lifecycle
    for key in ("timeout_s", "connect_timeout_s", "expected_output_tokens", "rpm", "tpm"):
        if getattr(spec, key) is not None:
            fields[key] = getattr(spec, key)
    try:
        route = Route(**fields)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = ".".join(str(step) for step in err["loc"])
            ctx.add(ctx.at(*loc, *err["loc"]), f"{name}: {field}: {str(err['msg']).removeprefix('Value error, ')}")
        return None
    for problem in route.options.check(route):  # the adapter's own construction-time rules
        ctx.add(ctx.at(*loc, *problem.field.split(".")), f"{name}: {problem.message}")
    return None if len(ctx.issues) > before else route


def _options(ctx: _Context, spec: RouteSpec, registry: AdapterRegistry, loc: tuple[Any, ...]) -> RouteOptions | None:
    """The route's `options:` validated against its adapter's options model (a plain mapping without one)."""
    try:
        model = registry.options_model(spec.provider) or RouteOptions
    except Exception as exc:  # a third-party adapter that cannot be imported: say so at load
        ctx.add(ctx.at(*loc, "provider"), f"route {spec.id!r}: the {spec.provider} adapter cannot be loaded "
                                          f"({type(exc).__name__}: {exc})")
        return None
    keys = set(model.model_fields)
    found: RouteOptions | None = ctx.validate(model, spec.options, *loc, "options", keys=keys)
    return found


def _jurisdiction(
    ctx: _Context, spec: RouteSpec, model_id: str | None, catalog: Catalog, loc: tuple[Any, ...]
) -> str | None:
    table = catalog.jurisdictions
    name = f"route {spec.id!r}"
    derived, basis = table.derive(spec.provider, spec.region, model_id)
    if spec.region is not None and table.of_region(spec.provider, spec.region) is None and spec.jurisdiction is None:
        close = difflib.get_close_matches(spec.region, table.regions(spec.provider), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        ctx.add(ctx.at(*loc, "region"), f"{name}: unknown region {spec.region!r} for {spec.provider}{hint}; "
                                        "give jurisdiction: explicitly if the region is right")
        return None
    host_region = table.endpoint_region(spec.provider, spec.endpoint)
    if host_region is not None and spec.region is not None and host_region != spec.region:
        ctx.add(ctx.at(*loc, "endpoint"),
                f"{name}: endpoint names region {host_region!r} but the route says region {spec.region!r}")
    if spec.jurisdiction is not None:
        if derived not in (None, "unknown") and derived != spec.jurisdiction:
            ctx.add(ctx.at(*loc, "jurisdiction"),
                    f"{name}: jurisdiction {spec.jurisdiction!r} contradicts {basis}, which is {derived!r}")
            return None
        return spec.jurisdiction
    if derived is None:
        ctx.add(ctx.at(*loc), f"{name}: jurisdiction unknown for provider {spec.provider!r} without a region; "
                              "give jurisdiction: (on-prem for your own hardware)")
    return derived


# --------------------------------------------------------------------------- tenants


def _tenants(
    ctx: _Context, doc: PolicyDoc, catalog: Catalog, routes: list[Route], known: Callable[[str], bool]
) -> dict[str, TenantPolicy]:
    default_residency = None if doc.default_residency == "any" else doc.default_residency
    served = {r.model for r in routes}
    raw = dict(doc.tenants)
    if not raw and doc.default_residency is not None:
        raw = {"default": {}}  # a policy without tenants gets one, bound by default_residency
    out: dict[str, TenantPolicy] = {}
    for tname, item in raw.items():
        spec = ctx.validate(TenantSpec, item if item is not None else {}, "tenants", tname)
        if spec is None:
            continue
        loc = ("tenants", tname)
        who = f"tenant {tname!r}"
        if "residency" in spec.model_fields_set and spec.residency is not None:
            residency = None if spec.residency == "any" else list(spec.residency)
        elif doc.default_residency is not None:
            residency = None if doc.default_residency == "any" else list(default_residency or [])
        else:
            ctx.add(ctx.at(*loc), f"{who}: residency is not set and the policy has no default_residency; "
                                  "write residency: [us, eu] (or residency: any)")
            continue
        for kind in ("allow", "deny"):
            for p in getattr(spec.providers, kind) or []:
                if not known(p):
                    ctx.add(ctx.at(*loc, "providers", kind), f"{who}: unknown provider {p!r} in providers.{kind}")
        for p in spec.budget.providers if spec.budget is not None else ():
            if not known(p):
                ctx.add(ctx.at(*loc, "budget", "providers", p), f"{who}: unknown provider {p!r} in budget.providers")
        update: dict[str, Any] = {}
        if spec.models is not None and spec.models.allow is not None:
            allowed = []
            for m in spec.models.allow:
                logical = catalog.model_for(m)
                if logical is None:
                    ctx.add(ctx.at(*loc, "models", "allow"), f"{who}: unknown model {m!r} in models.allow")
                else:
                    allowed.append(logical)
            update["models"] = spec.models.model_copy(update={"allow": allowed})
        if spec.budget is not None and spec.budget.downgrade_to:
            target = catalog.model_for(spec.budget.downgrade_to)
            where = ctx.at(*loc, "budget", "downgrade_to")
            if target is None:
                ctx.add(where, f"{who}: budget.downgrade_to names unknown model {spec.budget.downgrade_to!r}")
            elif target not in served:
                ctx.add(where, f"{who}: budget.downgrade_to {target!r} is served by no route in this policy")
            elif "models" in update and target not in update["models"].allow:
                ctx.add(where, f"{who}: budget.downgrade_to {target!r} is not in the tenant's models.allow")
            else:
                update["budget"] = spec.budget.model_copy(update={"downgrade_to": target})
        if spec.objective == "weighted" and spec.weights.cost + spec.weights.latency == 0:
            ctx.add(ctx.at(*loc, "weights"), f"{who}: objective weighted needs a non-zero weight")
        fields = spec.model_dump(exclude={"residency", "description", "models", "budget"})
        fields.update({"models": spec.models, "budget": spec.budget})
        fields.update(update)
        out[tname] = TenantPolicy(name=tname, residency=residency, **fields)
    return out


# --------------------------------------------------------------------------- groups of tenants


def _groups(
    ctx: _Context, doc: PolicyDoc, catalog: Catalog, routes: list[Route], tenants: dict[str, TenantPolicy]
) -> dict[str, TenantGroup]:
    """`groups:`: every member must be a tenant of the policy, and a group's `downgrade_to` a model
    every member may use."""
    served = {r.model for r in routes}
    out: dict[str, TenantGroup] = {}
    for gname, item in doc.groups.items():
        spec = ctx.validate(GroupSpec, item if item is not None else {}, "groups", gname)
        if spec is None:
            continue
        loc, who, sound = ("groups", gname), f"group {gname!r}", True
        for member in spec.tenants:
            if member not in tenants and member not in doc.tenants:
                close = difflib.get_close_matches(member, list(doc.tenants), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                ctx.add(ctx.at(*loc, "tenants"), f"{who}: unknown tenant {member!r}{hint}")
                sound = False
        budget = spec.budget
        if budget is not None and budget.downgrade_to:
            target = catalog.model_for(budget.downgrade_to)
            where = ctx.at(*loc, "budget", "downgrade_to")
            refusing = [m for m in spec.tenants if m in tenants and target and not tenants[m].allows_model(target)]
            if target is None or target not in served:
                ctx.add(where, f"{who}: budget.downgrade_to {budget.downgrade_to!r} is served by no route "
                               "in this policy")
                sound = False
            elif refusing:
                ctx.add(where, f"{who}: budget.downgrade_to {target!r} is not in the models.allow of {refusing[0]!r}")
                sound = False
            else:
                budget = budget.model_copy(update={"downgrade_to": target})
        if sound:
            fields = spec.model_dump(exclude={"tenants", "description", "budget"})
            out[gname] = TenantGroup(name=gname, tenants=tuple(dict.fromkeys(spec.tenants)), budget=budget, **fields)
    return out
