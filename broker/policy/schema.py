"""The policy file schema: strict, typed models (unknown keys are errors) and the loaded `Policy`.

Two layers:

* *specs* mirror what a file may say (`RouteSpec`, `TenantSpec`, `PolicyDoc`, the catalog's
  `ModelSpec` / `DeploymentSpec`); most fields are optional because the catalog fills them;
* the *resolved* objects the rest of the broker reads: `broker.routes.Route`,
  `TenantPolicy`, the settings models and `Policy`.

Money is `Decimal` throughout.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..routes import Lifecycle, Price

__all__ = [
    "JURISDICTIONS",
    "Budget",
    "CapabilitiesPatch",
    "CatalogDoc",
    "CircuitSettings",
    "DeploymentSpec",
    "Jurisdiction",
    "LatencySLO",
    "LifecyclePatch",
    "MeteringSettings",
    "ModelRules",
    "ModelSpec",
    "Objective",
    "PolicyDoc",
    "PriceCeiling",
    "ProviderRules",
    "RetrySettings",
    "RouteSpec",
    "TenantPolicy",
    "TenantSpec",
    "Weights",
    "schema_keys",
]

Jurisdiction = Literal[
    "us", "ca", "mx", "br", "eu", "uk", "ch", "in", "jp", "kr", "au", "apac", "me", "il", "za", "cn",
    "global", "on-prem", "unknown",
]
"""The closed set of jurisdictions (kept equal to `broker/data/jurisdictions.yaml` by a test)."""
JURISDICTIONS: frozenset[str] = frozenset(get_args(Jurisdiction))
Objective = Literal["cost", "latency", "weighted"]


def _jurisdiction(value: Any) -> Any:
    if isinstance(value, str) and value not in JURISDICTIONS:
        raise ValueError(f"unknown jurisdiction {value!r}; known: {', '.join(sorted(JURISDICTIONS))}")
    return value


def _residency(value: Any) -> Any:
    if value is None or value == "any":
        return value
    if not isinstance(value, list):
        raise ValueError(f"residency is a list of jurisdictions, or `any` (got {value!r})")
    for item in value:
        _jurisdiction(item)
    return value


JurisdictionName = Annotated[Jurisdiction, BeforeValidator(_jurisdiction)]
Residency = Annotated[list[str] | Literal["any"] | None, BeforeValidator(_residency)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- settings


class MeteringSettings(_Strict):
    """How usage events are written: batched by default, `durable` commits before `chat()` returns."""

    durable: bool = False
    store_text: bool = False
    flush_interval_s: float = Field(default=1.0, gt=0)
    max_buffer: int = Field(default=10_000, gt=0)


class RetrySettings(_Strict):
    """Retries of transient errors on one route, and the retry budget shared by all calls.

    The retry budget is a token bucket per route in the style of the AWS SDK retry quota: it
    holds at most `budget_capacity` retries, each retry spends one, each successful call earns
    back `budget_ratio`, so a provider outage cannot multiply the load on it.
    """

    max_attempts_per_route: int = Field(default=3, ge=1)
    base_delay_s: float = Field(default=0.25, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    budget_ratio: float = Field(default=0.2, ge=0)
    budget_capacity: float = Field(default=10.0, ge=0)


class CircuitSettings(_Strict):
    """A route opens after `failure_threshold` failures within `window_s`, and is probed after `cooldown_s`."""

    failure_threshold: int = Field(default=5, ge=1)
    window_s: float = Field(default=30.0, gt=0)
    cooldown_s: float = Field(default=15.0, gt=0)


# --------------------------------------------------------------------------- tenants


class Weights(_Strict):
    cost: float = Field(default=0.5, ge=0)
    latency: float = Field(default=0.5, ge=0)


class ProviderRules(_Strict):
    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)


class PriceCeiling(_Strict):
    """Highest acceptable price, USD per million tokens."""

    input: Decimal | None = Field(default=None, ge=0)
    output: Decimal | None = Field(default=None, ge=0)


class LatencySLO(_Strict):
    p50: float | None = Field(default=None, gt=0)
    p95: float | None = Field(default=None, gt=0)


class Budget(_Strict):
    monthly_usd: Decimal | None = Field(default=None, ge=0)
    daily_usd: Decimal | None = Field(default=None, ge=0)
    on_exceed: Literal["block", "downgrade", "alert"] = "block"
    downgrade_to: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Budget:
        if self.monthly_usd is None and self.daily_usd is None:
            raise ValueError("a budget needs monthly_usd or daily_usd")
        if self.on_exceed == "downgrade" and not self.downgrade_to:
            raise ValueError("on_exceed: downgrade needs downgrade_to (a model)")
        return self


class ModelRules(_Strict):
    allow: list[str] | None = None


class _TenantFields(_Strict):
    objective: Objective = "cost"
    weights: Weights = Field(default_factory=Weights)
    providers: ProviderRules = Field(default_factory=ProviderRules)
    max_price_per_mtok: PriceCeiling | None = None
    latency_slo_ms: LatencySLO | None = None
    budget: Budget | None = None
    models: ModelRules | None = None
    store_text: bool = False
    tags: dict[str, str] = Field(default_factory=dict)


class TenantSpec(_TenantFields):
    """A tenant as written: `residency` is a list, `any`, or absent (then `default_residency`)."""

    residency: Residency = None
    description: str | None = None


class TenantPolicy(_TenantFields):
    """A tenant's rules, resolved: models are logical ids, `residency` None means any jurisdiction.

    A jurisdiction satisfies a residency list only when it is named in it: `global` (may be
    processed anywhere) and `unknown` (provider documents no place) are never implied.
    """

    name: str
    residency: list[str] | None

    def allows_jurisdiction(self, jurisdiction: str) -> bool:
        return self.residency is None or jurisdiction in self.residency

    def allows_provider(self, provider: str) -> bool:
        allow = self.providers.allow
        return provider not in self.providers.deny and (allow is None or provider in allow)

    def allows_model(self, model: str) -> bool:
        return self.models is None or self.models.allow is None or model in self.models.allow


# --------------------------------------------------------------------------- routes and catalog


class CapabilitiesPatch(_Strict):
    """Field-wise overrides of `broker.routes.Capabilities`."""

    streaming: bool | None = None
    streaming_tools: bool | None = None
    tools: bool | None = None
    vision: bool | None = None
    json_mode: bool | None = None
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    max_temperature: float | None = Field(default=None, ge=0)
    required_tool_choice: bool | None = None
    named_tool_choice: bool | None = None
    seed: bool | None = None


class LifecyclePatch(_Strict):
    """Field-wise overrides of `broker.routes.Lifecycle`."""

    status: Literal["ga", "preview", "deprecated", "retired"] | None = None
    retires_on: dt.date | None = None
    note: str | None = None


class RouteSpec(_Strict):
    """A route as written in a policy file; missing fields come from the catalog."""

    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    model_id: str | None = None
    region: str | None = None
    jurisdiction: JurisdictionName | None = None
    endpoint: str | None = None
    api_key_env: str | None = None
    price: Price | None = None
    capabilities: CapabilitiesPatch | None = None
    lifecycle: LifecyclePatch | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    connect_timeout_s: float | None = Field(default=None, gt=0)
    expected_output_tokens: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    description: str | None = None


class ModelSpec(_Strict):
    """A logical Llama model: display name, aliases and family capabilities."""

    name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    capabilities: CapabilitiesPatch | None = None


class DeploymentSpec(_Strict):
    """One catalog row (or several sharing a shape, via `regions:`)."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    region: str | None = None
    regions: list[str] | None = None
    model_id: str = Field(min_length=1)
    base_model_id: str | None = Field(default=None, min_length=1)
    """When `model_id` is an inference profile: the base model id the provider refuses on demand here."""
    price: Price | None = None
    capabilities: CapabilitiesPatch | None = None
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    note: str | None = None

    @model_validator(mode="after")
    def _one_region_form(self) -> DeploymentSpec:
        if self.region is not None and self.regions is not None:
            raise ValueError("give region or regions, not both")
        return self


class CatalogDefaults(_Strict):
    price_source: str | None = None
    price_as_of: dt.date | None = None


class CatalogDoc(_Strict):
    """A catalog file, or the `catalog:` section of a policy that extends the built-in one."""

    as_of: dt.date | None = None
    defaults: CatalogDefaults = Field(default_factory=CatalogDefaults)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    deployments: list[Any] = Field(default_factory=list)


class PolicyDoc(_Strict):
    """The top level of a policy file; routes and tenants are validated one by one."""

    version: Literal[1] = 1
    description: str | None = None
    extends: str | list[str] | None = None
    ledger: str | None = None
    default_residency: Residency = None
    metering: MeteringSettings = Field(default_factory=MeteringSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    circuit: CircuitSettings = Field(default_factory=CircuitSettings)
    catalog: CatalogDoc | None = None
    routes: list[Any] = Field(default_factory=list)
    tenants: dict[str, Any] = Field(default_factory=dict)
    #: a call naming a tenant the policy does not have: `refuse` it (`UnknownTenant`), or serve
    #: it under the `default` tenant's rules, metered under the name it gave
    unknown_tenants: Literal["refuse", "default"] = "refuse"

    @field_validator("unknown_tenants")
    @classmethod
    def _default_exists(cls, value: str, info: ValidationInfo) -> str:
        tenants = info.data.get("tenants") or {}
        implied = not tenants and info.data.get("default_residency") is not None
        if value == "default" and "default" not in tenants and not implied:
            raise ValueError("unknown_tenants: default needs a tenant named `default` (whose rules unknown names get)")
        return value

    @field_validator("ledger")
    @classmethod
    def _ledger_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("ledger must be sqlite:///PATH or postgresql://...")
        return value or None


def schema_keys() -> set[str]:
    """Every key the schema knows, for "did you mean" hints."""
    names: set[str] = set()
    for model in (
        PolicyDoc, RouteSpec, TenantSpec, Weights, ProviderRules, PriceCeiling, LatencySLO, Budget,
        ModelRules, CapabilitiesPatch, LifecyclePatch, Price, MeteringSettings, RetrySettings,
        CircuitSettings, CatalogDoc, ModelSpec, DeploymentSpec, CatalogDefaults,
    ):
        names.update(model.model_fields)
    return names
