"""Policy files: schema, loader and the built-in catalog.

::

    from broker.policy import load_policy
    policy = load_policy("policies/default.yaml")   # or a dict
    policy.routes          # resolved broker.routes.Route objects, catalog defaults merged
    policy.tenant("acme")  # TenantPolicy (the `default` tenant for unknown names, if defined)

Errors are collected and raised together as `broker.errors.PolicyError`, each issue located
as `FILE:LINE: message`.
"""

from __future__ import annotations

from .catalog import (
    Catalog,
    CatalogEntry,
    Jurisdictions,
    ModelInfo,
    builtin_catalog,
    load_catalog,
    load_jurisdictions,
)
from .loaded import Policy
from .loader import load_policy, load_policy_text
from .schema import (
    JURISDICTIONS,
    Budget,
    CircuitSettings,
    LatencySLO,
    MeteringSettings,
    ModelRules,
    PriceCeiling,
    ProviderRules,
    RetrySettings,
    TenantPolicy,
    Weights,
)

__all__ = [
    "JURISDICTIONS",
    "Budget",
    "Catalog",
    "CatalogEntry",
    "CircuitSettings",
    "Jurisdictions",
    "LatencySLO",
    "MeteringSettings",
    "ModelInfo",
    "ModelRules",
    "Policy",
    "PriceCeiling",
    "ProviderRules",
    "RetrySettings",
    "TenantPolicy",
    "Weights",
    "builtin_catalog",
    "load_catalog",
    "load_jurisdictions",
    "load_policy",
    "load_policy_text",
]
