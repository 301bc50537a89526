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
import re
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..routes import Lifecycle, Price

__all__ = [
    "JURISDICTIONS",
    "ApiKeyRef",
    "AuditSettings",
    "Budget",
    "BudgetSettings",
    "CapabilitiesPatch",
    "CatalogDoc",
    "CircuitSettings",
    "DeploymentSpec",
    "EnergyRoute",
    "EnergySettings",
    "GroupSpec",
    "Jurisdiction",
    "LatencySLO",
    "LifecyclePatch",
    "LimitsSettings",
    "MeteringSettings",
    "ModelRules",
    "ModelSpec",
    "Objective",
    "PolicyDoc",
    "PriceCeiling",
    "ProvenanceSettings",
    "ProviderBudget",
    "ProviderRules",
    "RateLimit",
    "RetrySettings",
    "RouteSpec",
    "Spread",
    "TelemetrySettings",
    "TenantGroup",
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
    # schemas are built on first validation, not at import (`import broker` stays light)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --------------------------------------------------------------------------- settings


class MeteringSettings(_Strict):
    """How usage events are written: batched by default, `durable` commits before `chat()` returns."""

    durable: bool = False
    store_text: bool = False
    flush_interval_s: float = Field(default=1.0, gt=0)
    max_buffer: int = Field(default=10_000, gt=0)


class TelemetrySettings(_Strict):
    """OpenTelemetry spans and metrics (GenAI semantic conventions); off unless `enabled`.

    Spans go to the process's global providers, or, with `otlp_endpoint` (an OTLP/HTTP base
    URL), to providers the broker builds itself under `service_name`.  Prompt and completion
    text go into spans only with `capture_content`.
    """

    enabled: bool = False
    capture_content: bool = False
    service_name: str = Field(default="llama-broker", min_length=1)
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")


class EnergyRoute(_Strict):
    """Which energy counter of this host measures a route's runner: `auto` tries NVML, then RAPL."""

    counter: Literal["auto", "nvml", "rapl"] = "auto"
    device: int = Field(default=0, ge=0)


class EnergySettings(_Strict):
    """Routes whose runner runs on this host, by route id; their events get joules."""

    routes: dict[str, EnergyRoute] = Field(default_factory=dict)


class AuditSettings(_Strict):
    """The decision audit trail beside the ledger: every call's decision and each policy version by hash."""

    enabled: bool = True


class ProvenanceSettings(_Strict):
    """A signed provenance record (a C2PA manifest) on every answer; off unless `enabled`.

    The signing key and its certificate chain are named by reference, never inline: a PEM file
    (`key_file`, `cert_file`) or an environment variable (`key_env`, `cert_env`) holding the PEM
    file's path or the PEM text.  `embed_in_text` also puts the manifest inside the answer's text
    (C2PA 2.4 unstructured text: invisible characters appended).  `trust_anchors_file` is the PEM
    bundle `provenance verify` trusts by default.
    """

    enabled: bool = False
    key_file: str | None = None
    key_env: str | None = None
    cert_file: str | None = None
    cert_env: str | None = None
    embed_in_text: bool = False
    trust_anchors_file: str | None = None

    @model_validator(mode="after")
    def _references(self) -> ProvenanceSettings:
        for what in ("key", "cert"):
            given = [n for n in (f"{what}_file", f"{what}_env") if getattr(self, n)]
            if len(given) > 1:
                raise ValueError(f"provenance: give {what}_file or {what}_env, not both")
            if self.enabled and not given:
                raise ValueError(f"provenance: enabled needs {what}_file or {what}_env")
        return self


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


class BudgetSettings(_Strict):
    """How budget reservations are held in the shared store (`broker/policy/budget.py`).

    A reservation lives `lease_s` seconds and is renewed while its call is open, so the
    reservations of a process that died stop counting at most `lease_s` after it died.
    """

    lease_s: float = Field(default=30.0, ge=1, le=3600)


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


class ProviderBudget(_Strict):
    """A limit on one provider's share of a tenant's spend; exceeding it passes that provider's routes over
    (`block`) or only warns (`alert`)."""

    monthly_usd: Decimal | None = Field(default=None, ge=0)
    daily_usd: Decimal | None = Field(default=None, ge=0)
    on_exceed: Literal["block", "alert"] = "block"

    @model_validator(mode="after")
    def _coherent(self) -> ProviderBudget:
        if self.monthly_usd is None and self.daily_usd is None:
            raise ValueError("a provider budget needs monthly_usd or daily_usd")
        return self


class Budget(_Strict):
    """Spend limits per UTC month and day (the rule: `broker/policy/budget.py`); `providers` adds
    limits per provider within a tenant."""

    monthly_usd: Decimal | None = Field(default=None, ge=0)
    daily_usd: Decimal | None = Field(default=None, ge=0)
    on_exceed: Literal["block", "downgrade", "alert"] = "block"
    downgrade_to: str | None = None
    providers: dict[str, ProviderBudget] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _coherent(self) -> Budget:
        if self.monthly_usd is None and self.daily_usd is None and not self.providers:
            raise ValueError("a budget needs monthly_usd, daily_usd or providers")
        if self.on_exceed == "downgrade" and not self.downgrade_to:
            raise ValueError("on_exceed: downgrade needs downgrade_to (a model)")
        return self


class ModelRules(_Strict):
    allow: list[str] | None = None


class RateLimit(_Strict):
    """Requests and tokens per minute of a tenant or group (`broker/limits`: a sliding 60-second window).

    Tokens are the prompt estimate plus the expected output, settled to the actual usage after
    the call.  `wait_s` > 0 queues a call that is over the limit for up to that long, else it is
    refused at once with `RateLimited` and the seconds until it would be admitted.
    """

    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    wait_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimit:
        if self.rpm is None and self.tpm is None:
            raise ValueError("a rate_limit needs rpm or tpm")
        return self


class Spread(_Strict):
    """Spread calls among the routes whose score is within `tolerance` (a fraction) of the best one.

    The pick is deterministic: weighted by each route's `rpm` quota and seeded by the request's
    content, so explanations and replays of the same requests agree.
    """

    tolerance: float = Field(default=0.1, ge=0, le=10)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _key_refs(value: Any) -> Any:
    """Check `api_keys` entries here, at the list, so a key pasted by mistake is never echoed in an error."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("api_keys is a list of {env: NAME} or {sha256: HEX} entries")
    seen: set[tuple[str, object]] = set()
    for i, item in enumerate(value):
        where = f"api_keys[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: an API key is given by reference ({{env: NAME}} or {{sha256: <64 hex "
                             "digits of the key's SHA-256>}), never the key itself")
        if set(item) - set(ApiKeyRef.model_fields):
            continue  # the model names the unknown key, with a did-you-mean hint
        env, digest = item.get("env"), item.get("sha256")
        if (env is None) == (digest is None):
            raise ValueError(f"{where}: give exactly one of env or sha256")
        if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
            raise ValueError(f"{where}.env: not an environment variable name")
        if digest is not None and (not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest)):
            raise ValueError(f"{where}.sha256: not a SHA-256 digest (64 lower-case hex digits)")
        ref = ("env", env) if env is not None else ("sha256", digest)
        if ref in seen:
            raise ValueError(f"{where}: the same key is listed twice")
        seen.add(ref)
    return value


class ApiKeyRef(_Strict):
    """A gateway API key by reference: the environment variable that holds it, or its SHA-256 (hex)."""

    env: str | None = None
    sha256: str | None = None
    description: str | None = None


ApiKeyRefs = Annotated[list[ApiKeyRef], BeforeValidator(_key_refs)]


class TextListSpec(_Strict):
    """Literals and regular expressions a text is checked against (case-insensitive unless told)."""

    literals: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    case_sensitive: bool = False

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TextListSpec:
        if not (self.literals or self.patterns):
            raise ValueError("give literals or patterns")
        return self


PiiKind = Literal["email", "phone", "card"]


class PiiSpec(_Strict):
    kinds: list[PiiKind] = Field(default_factory=lambda: list(get_args(PiiKind)))
    action: Literal["redact", "block"] = "redact"
    #: where phone numbers without a country prefix are read as dialled from (ISO 3166-1 alpha-2)
    phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")


class LlamaGuardSpec(_Strict):
    """Classify through a route of this policy serving a Llama Guard model."""

    model: str
    #: categories that block (S1..S14); absent: any `unsafe` verdict blocks
    block_categories: list[str] | None = None


class GuardrailPluginSpec(_Strict):
    """A check installed under the `llama_broker.guardrails` entry-point group."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class GuardrailSpec(_Strict):
    """One check, by kind: exactly one of the fields."""

    deny: TextListSpec | None = None
    allow: TextListSpec | None = None
    pii: PiiSpec | None = None
    max_chars: int | None = Field(default=None, gt=0)
    llama_guard: LlamaGuardSpec | None = None
    plugin: GuardrailPluginSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> GuardrailSpec:
        kinds = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("a guardrail is exactly one of deny, allow, pii, max_chars, llama_guard, plugin")
        return self


class GuardrailSettings(_Strict):
    """Checks on what a tenant sends and receives, run in order (broker/guardrails)."""

    input: list[GuardrailSpec] = Field(default_factory=list)
    output: list[GuardrailSpec] = Field(default_factory=list)
    #: characters a stream holds back for checks that look at a span of text (regular expressions)
    stream_window_chars: int = Field(default=256, ge=1, le=65536)


class LicenceDeclaration(_Strict):
    """What a tenant declares of the product it builds, for the licence terms of the models it calls."""

    product: str = Field(min_length=1)
    #: the product's monthly active users, at most (an upper bound the tenant declares)
    monthly_active_users: int = Field(ge=0)
    #: where the licensee is domiciled: `eu`, or an ISO 3166-1 alpha-2 country code
    domicile: str = Field(pattern=r"^(eu|[A-Za-z]{2})$")
    #: the tenant serves end users of a product or service that incorporates the model
    end_user: bool = False
    #: a separate licence from Meta covers the monthly-active-user threshold
    separate_licence: bool = False
    on_violation: Literal["refuse", "warn"] = "refuse"


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
    #: the product this tenant builds, for the licence guard (broker/policy/licence.py)
    licence: LicenceDeclaration | None = None
    guardrails: GuardrailSettings | None = None
    #: the gateway's API keys of this tenant (`llama-broker serve`), by reference only
    api_keys: ApiKeyRefs = Field(default_factory=list)
    #: requests / tokens per minute of this tenant (`broker/limits`)
    rate_limit: RateLimit | None = None
    #: opt-in: spread calls among near-best routes (`broker/limits/spreading.py`)
    spread: Spread | None = None


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


# --------------------------------------------------------------------------- groups of tenants


class _GroupFields(_Strict):
    """What a group of tenants shares; each limit here covers the members' calls together."""

    budget: Budget | None = None
    #: requests / tokens per minute of the members' calls together (`broker/limits`)
    rate_limit: RateLimit | None = None


class GroupSpec(_GroupFields):
    """A group as written under `groups:` (a team over several tenants)."""

    tenants: list[str] = Field(min_length=1)
    description: str | None = None


class TenantGroup(_GroupFields):
    """A group, resolved: its members are tenant names of the policy; `budget.downgrade_to` a logical model."""

    name: str
    tenants: tuple[str, ...]


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
    #: the provider account's quota for this model and region: requests / tokens per minute
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
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


class LimitsSettings(_Strict):
    """Where rate windows live: `memory` (this process, shared by its threads) or `redis://HOST:PORT/DB`."""

    store: str = "memory"
    key_prefix: str = Field(default="llama-broker", min_length=1)

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("limits.store must be memory, redis://HOST:PORT/DB, rediss://... or unix://PATH")
        return value


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
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    energy: EnergySettings = Field(default_factory=EnergySettings)
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    catalog: CatalogDoc | None = None
    routes: list[Any] = Field(default_factory=list)
    tenants: dict[str, Any] = Field(default_factory=dict)
    #: groups of tenants sharing limits: `{team-x: {tenants: [a, b], budget: {...}}}`, validated one by one
    groups: dict[str, Any] = Field(default_factory=dict)
    #: a call naming a tenant the policy does not have: `refuse` it (`UnknownTenant`), or serve
    #: it under the `default` tenant's rules, metered under the name it gave
    unknown_tenants: Literal["refuse", "default"] = "refuse"
    #: decisions, reports and `policy validate` warn of a route's end of life this many days ahead
    lifecycle_warning_days: int = Field(default=90, ge=0, le=3650)

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
        PolicyDoc, RouteSpec, TenantSpec, GroupSpec, Weights, ProviderRules, PriceCeiling, LatencySLO, Budget,
        ProviderBudget, BudgetSettings,
        ModelRules, ApiKeyRef, CapabilitiesPatch, LifecyclePatch, Price, MeteringSettings, RetrySettings,
        CircuitSettings, CatalogDoc, ModelSpec, DeploymentSpec, CatalogDefaults, TelemetrySettings, EnergyRoute,
        EnergySettings, RateLimit, Spread, LimitsSettings,
    ):
        names.update(model.model_fields)
    return names
