"""The built-in catalog (models x providers x regions x prices x capabilities x lifecycle) and
the region -> jurisdiction table, both shipped as data in `broker/data/`.

A `Catalog` answers three questions for the policy loader and the engine:

* which logical model a name means (`model_for`, case-insensitive over aliases and
  provider model ids);
* what a (provider, model, region) deployment looks like (`find`): model id, price with its
  source and date, capabilities and lifecycle;
* which jurisdiction a route is in (`jurisdictions.derive`).

Nothing here opens a network connection: all of it is read from the package.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import NoEligibleRoute, PolicyError, PolicyIssue
from ..routes import Capabilities, Lifecycle, Price
from .schema import JURISDICTIONS, CapabilitiesPatch, CatalogDoc, DeploymentSpec, schema_keys
from .yaml_source import LineIndex, issues_from_validation, read_yaml

__all__ = [
    "Catalog", "CatalogEntry", "Jurisdictions", "ModelInfo", "builtin_catalog", "load_catalog", "load_jurisdictions",
]

Where = tuple[str, int]


@dataclass(frozen=True)
class ModelInfo:
    """A logical Llama model: its id, display name, aliases and family capabilities."""

    id: str
    name: str
    aliases: tuple[str, ...]
    capabilities: Capabilities


class CatalogEntry(BaseModel):
    """One deployment a provider offers: a (provider, model, region) with its model id and facts."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    provider: str
    model: str
    region: str | None
    model_id: str
    price: Price | None
    capabilities: Capabilities
    lifecycle: Lifecycle
    note: str | None = None
    base_model_id: str | None = None
    """When `model_id` is an inference profile: the base id, which needs the profile in this region."""


@dataclass(frozen=True)
class _Cloud:
    providers: frozenset[str]
    regions: Mapping[str, str]
    endpoint_pattern: re.Pattern[str] | None


class Jurisdictions:
    """Region -> jurisdiction per cloud, provider defaults and geography-carrying model-id prefixes."""

    def __init__(
        self,
        names: Mapping[str, str],
        clouds: Mapping[str, _Cloud],
        provider_defaults: Mapping[str, str],
        prefixes: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.names = MappingProxyType(dict(names))
        self._clouds = dict(clouds)
        self._defaults = dict(provider_defaults)
        self._prefixes = {p: dict(v) for p, v in prefixes.items()}

    def _tables(self, provider: str) -> list[_Cloud]:
        own = [c for c in self._clouds.values() if provider in c.providers]
        return own or list(self._clouds.values())

    def is_regional(self, provider: str) -> bool:
        """Whether the provider's regions are listed (then a route must name one)."""
        return any(provider in c.providers for c in self._clouds.values())

    def regions(self, provider: str) -> list[str]:
        return sorted({r for c in self._tables(provider) for r in c.regions})

    def of_region(self, provider: str, region: str) -> str | None:
        for cloud in self._tables(provider):
            if region in cloud.regions:
                return cloud.regions[region]
        return None

    def of_model_id(self, provider: str, model_id: str | None) -> str | None:
        if not model_id:
            return None
        tail = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
        for prefix, jurisdiction in self._prefixes.get(provider, {}).items():
            if tail.startswith(prefix):
                return jurisdiction
        return None

    def derive(self, provider: str, region: str | None, model_id: str | None) -> tuple[str | None, str]:
        """(jurisdiction or None, what it was derived from) for a route."""
        by_prefix = self.of_model_id(provider, model_id)
        if by_prefix is not None:
            return by_prefix, f"model id {model_id}"
        if region is not None:
            return self.of_region(provider, region), f"region {region}"
        default = self._defaults.get(provider)
        return default, f"provider {provider} (no region)"

    def endpoint_region(self, provider: str, endpoint: str | None) -> str | None:
        """The region an endpoint URL names (e.g. a regional Bedrock host), if it names one."""
        if not endpoint:
            return None
        for cloud in self._clouds.values():
            if provider in cloud.providers and cloud.endpoint_pattern is not None:
                match = cloud.endpoint_pattern.match(endpoint)
                if match:
                    return match.group("region")
        return None


class Catalog:
    """Logical models, their aliases and the deployments providers offer (immutable)."""

    def __init__(
        self,
        *,
        models: Mapping[str, ModelInfo],
        entries: Iterable[CatalogEntry],
        jurisdictions: Jurisdictions,
        as_of: dt.date | None = None,
        source: str = "<catalog>",
    ) -> None:
        self.models: Mapping[str, ModelInfo] = MappingProxyType(dict(models))
        self.entries: tuple[CatalogEntry, ...] = tuple(entries)
        self.jurisdictions = jurisdictions
        self.as_of = as_of
        self.source = source
        aliases: dict[str, str] = {}
        for info in self.models.values():
            for name in (info.id, *info.aliases):
                aliases.setdefault(name.casefold(), info.id)
        for entry in self.entries:  # provider model ids name their model too
            for name in _id_aliases(entry.model_id):
                aliases.setdefault(name.casefold(), entry.model)
        self._aliases = aliases

    def model_for(self, name: str) -> str | None:
        """Logical model id for a name, alias or provider model id (case-insensitive); None if unknown."""
        return self._aliases.get(name.strip().casefold())

    def resolve_model(self, name: str) -> str:
        logical = self.model_for(name)
        if logical is None:
            raise NoEligibleRoute(
                f"unknown model {name!r}; known models: {', '.join(sorted(self.models))}", reasons={}
            )
        return logical

    def entries_for(self, model: str | None = None, *, provider: str | None = None) -> tuple[CatalogEntry, ...]:
        logical = self.model_for(model) if model is not None else None
        return tuple(
            e for e in self.entries
            if (model is None or e.model == logical) and (provider is None or e.provider == provider)
        )

    def find(self, provider: str, model: str, region: str | None, model_id: str | None = None) -> CatalogEntry | None:
        """The deployment for (provider, model, region): the one with `model_id` if given and listed,
        else the first listed for the triple (so a custom deployment name keeps the price).

        Providers without listed regions (local runners) match their region-less rows whatever
        region the route names: there the region only says where the server stands."""
        logical = self.model_for(model) or model
        if region is not None and not self.jurisdictions.is_regional(provider):
            region = None
        rows = [e for e in self.entries if e.provider == provider and e.model == logical and e.region == region]
        if model_id is not None:
            exact = [e for e in rows if e.model_id == model_id] or [
                e for e in rows if e.model_id.casefold() == model_id.casefold()
            ]
            if exact:
                return exact[0]
        return rows[0] if rows else None

    def profile_for(self, provider: str, region: str | None, model_id: str) -> CatalogEntry | None:
        """The inference-profile deployment to call instead, when `model_id` is a base id that the
        catalog lists only behind a profile in `region` (the provider refuses it on demand there)."""
        rows = [e for e in self.entries if e.provider == provider and e.region == region]
        if any(e.model_id.casefold() == model_id.casefold() for e in rows):
            return None
        return next((e for e in rows if e.base_model_id and e.base_model_id.casefold() == model_id.casefold()), None)

    def regions(self, provider: str, model: str) -> list[str | None]:
        logical = self.model_for(model) or model
        return list(dict.fromkeys(e.region for e in self.entries if e.provider == provider and e.model == logical))


def _id_aliases(model_id: str) -> tuple[str, ...]:
    tail = model_id.rsplit("/", 1)[-1]
    return (model_id, tail) if tail != model_id else (model_id,)


# --------------------------------------------------------------------------- loading


def load_jurisdictions(path: str | Path | None = None) -> Jurisdictions:
    """Read a jurisdictions table (default: the one shipped in the package)."""
    text, name = _read(path, "jurisdictions.yaml")
    issues: list[PolicyIssue] = []
    index = LineIndex()
    data = read_yaml(text, name, index, issues) or {}
    table = _jurisdictions_from(data, name, index, issues)
    if issues:
        raise PolicyError(issues)
    return table


def _jurisdictions_from(data: Any, name: str, index: LineIndex, issues: list[PolicyIssue]) -> Jurisdictions:
    def at(container: Any, key: Any) -> int:
        where = index.where_of(container, key)
        return where[1] if where else 0

    names = dict(data.get("jurisdictions") or {})
    if set(names) != JURISDICTIONS:
        differ = sorted(set(names) ^ JURISDICTIONS)
        issues.append(PolicyIssue(name, at(data, "jurisdictions"),
                                  f"jurisdictions differ from the closed set in schema.py: {differ}"))
    clouds: dict[str, _Cloud] = {}
    for cloud_name, cloud in (data.get("clouds") or {}).items():
        regions = dict(cloud.get("regions") or {})
        for region, jurisdiction in regions.items():
            if jurisdiction not in names:
                issues.append(PolicyIssue(name, at(cloud["regions"], region), f"unknown jurisdiction {jurisdiction!r}"))
        pattern = cloud.get("endpoint_pattern")
        compiled = re.compile(pattern) if pattern else None
        clouds[cloud_name] = _Cloud(frozenset(cloud.get("providers") or ()), regions, compiled)
    return Jurisdictions(names, clouds, data.get("provider_defaults") or {}, data.get("model_id_prefixes") or {})


def load_catalog(path: str | Path | None = None, *, jurisdictions: Jurisdictions | None = None) -> Catalog:
    """Read a catalog file (default: the built-in one, dated, shipped in the package)."""
    if path is None and jurisdictions is None:
        return builtin_catalog()
    text, name = _read(path, "catalog.yaml")
    table = jurisdictions or load_jurisdictions()
    issues: list[PolicyIssue] = []
    index = LineIndex()
    data = read_yaml(text, name, index, issues)
    empty = Catalog(models={}, entries=(), jurisdictions=table, source=name)
    catalog = apply_catalog_doc(empty, data or {}, index=index, issues=issues, path=(), default=(name, 0))
    if issues:
        raise PolicyError(issues)
    return catalog


@functools.lru_cache(maxsize=1)
def builtin_catalog() -> Catalog:
    """The catalog shipped in `broker/data/catalog.yaml` (read once per process)."""
    return load_catalog(None, jurisdictions=load_jurisdictions())


def _read(path: str | Path | None, default_name: str) -> tuple[str, str]:
    if path is None:
        resource = Path(__file__).resolve().parent.parent / "data" / default_name
        return resource.read_text(encoding="utf-8"), f"broker/data/{default_name}"
    return Path(path).read_text(encoding="utf-8"), str(path)


def apply_catalog_doc(
    base: Catalog, data: Any, *, index: LineIndex, issues: list[PolicyIssue], path: tuple[Any, ...], default: Where
) -> Catalog:
    """Extend `base` with a catalog document (models and deployments); problems go to `issues`.

    A deployment with the same (provider, model, region, model_id) as one in `base` replaces
    it; others go in front, so they become the default for their (provider, model, region).
    """
    root = data
    node = _walk(data, path)
    keys = schema_keys()
    try:
        head = {k: v for k, v in node.items() if k != "deployments"} if isinstance(node, dict) else {}
        doc = CatalogDoc.model_validate(head)
    except ValidationError as exc:
        issues.extend(issues_from_validation(
            exc, root=root, prefix=path, index=index, default=default, known_keys=keys))
        return base
    if isinstance(node, dict) and not isinstance(node.get("deployments", []), list):
        file, line = index.lookup(root, (*path, "deployments"), default)
        issues.append(PolicyIssue(file, line, "deployments must be a list"))
    models = dict(base.models)
    owner = {a.casefold(): m.id for m in models.values() for a in (m.id, *m.aliases)}
    for model_id, spec in doc.models.items():
        old = models.get(model_id)
        caps = _patched(old.capabilities if old else Capabilities(), spec.capabilities)
        aliases = tuple(dict.fromkeys((*(old.aliases if old else ()), *spec.aliases)))
        for alias in (model_id, *spec.aliases):
            taken = owner.get(alias.casefold())
            if taken is not None and taken != model_id:
                file, line = index.lookup(root, (*path, "models", model_id, "aliases"), default)
                issues.append(PolicyIssue(file, line, f"model {model_id!r}: alias {alias!r} already names {taken!r}"))
            owner.setdefault(alias.casefold(), model_id)
        models[model_id] = ModelInfo(model_id, spec.name or (old.name if old else model_id), aliases, caps)
    added: list[CatalogEntry] = []
    raw = node.get("deployments", []) if isinstance(node, dict) else []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        loc = (*path, "deployments", i)
        try:
            deployment = DeploymentSpec.model_validate(item)
        except ValidationError as exc:
            issues.extend(issues_from_validation(
                exc, root=root, prefix=loc, index=index, default=default, known_keys=keys))
            continue

        def at(key: str, loc: tuple[Any, ...] = loc) -> Where:
            return index.lookup(root, (*loc, key), default)

        added.extend(_entries_from(deployment, doc, models, base.jurisdictions, at, issues))
    replaced = {(e.provider, e.model, e.region, e.model_id) for e in added}
    entries = [*added, *(e for e in base.entries if (e.provider, e.model, e.region, e.model_id) not in replaced)]
    return Catalog(models=models, entries=entries, jurisdictions=base.jurisdictions,
                   as_of=doc.as_of or base.as_of, source=base.source)


def _entries_from(
    spec: DeploymentSpec, doc: CatalogDoc, models: Mapping[str, ModelInfo], table: Jurisdictions,
    at: Callable[[str], Where], issues: list[PolicyIssue],
) -> list[CatalogEntry]:
    owner = {a.casefold(): m.id for m in models.values() for a in (m.id, *m.aliases)}
    logical = owner.get(spec.model.casefold())
    if logical is None:
        issues.append(PolicyIssue(*at("model"), message=f"unknown model {spec.model!r}; declare it under models:"))
        return []
    regions: list[str | None] = list(spec.regions) if spec.regions is not None else [spec.region]
    for region in regions:
        if region is None and table.is_regional(spec.provider):
            issues.append(PolicyIssue(*at("provider"), message=f"a {spec.provider} deployment needs a region"))
        elif region is not None and table.derive(spec.provider, region, spec.model_id)[0] is None:
            where = at("regions" if spec.regions else "region")
            issues.append(PolicyIssue(*where, message=f"unknown region {region!r} for {spec.provider}"))
    price = spec.price
    if price is not None and (price.source is None or price.as_of is None):
        price = price.model_copy(update={
            "source": price.source or doc.defaults.price_source,
            "as_of": price.as_of or doc.defaults.price_as_of,
        })
    caps = _patched(models[logical].capabilities, spec.capabilities)
    return [
        CatalogEntry(provider=spec.provider, model=logical, region=region, model_id=spec.model_id, price=price,
                     capabilities=caps, lifecycle=spec.lifecycle, note=spec.note, base_model_id=spec.base_model_id)
        for region in regions
    ]


def _patched(caps: Capabilities, patch: CapabilitiesPatch | None) -> Capabilities:
    if patch is None:
        return caps
    changes = patch.model_dump(exclude_none=True)
    return caps.model_copy(update=changes) if changes else caps


def _walk(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        data = data.get(step) if isinstance(data, dict) else None
    return data if data is not None else {}
