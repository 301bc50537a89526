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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_CATALOG = frozenset({"Catalog", "CatalogEntry", "Jurisdictions", "ModelInfo", "builtin_catalog", "load_catalog",
                      "load_jurisdictions"})
_SCHEMA = frozenset({"JURISDICTIONS", "Budget", "CircuitSettings", "LatencySLO", "MeteringSettings", "ModelRules",
                     "PriceCeiling", "ProviderRules", "RetrySettings", "TenantPolicy", "Weights"})


def __getattr__(name: str) -> Any:
    """Names load from their modules on first use: the router and the executor import `schema` and
    `decision` on every broker, the loader, the catalog and their YAML reader only load a policy."""
    if name in _CATALOG:
        from . import catalog

        value = getattr(catalog, name)
    elif name in _SCHEMA:
        from . import schema

        value = getattr(schema, name)
    elif name == "Policy":
        from . import loaded

        value = loaded.Policy
    elif name in ("load_policy", "load_policy_text"):
        from . import loader

        value = getattr(loader, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


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
