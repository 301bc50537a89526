"""The licence rule: a model's licence terms against what the tenant declares of its product.

    terms of the model's licence (broker/data/licences.yaml, by logical model id prefix)
    tenant declares product, monthly active users, domicile (policy `licence:` of a tenant)
    over the licence's MAU threshold, without a separate licence     -> term `mau`
    a restriction for the tenant's domicile on this kind of model   -> its id (e.g. `eu-multimodal`),
        unless the tenant serves end users of a product that incorporates the model
    each finding: `refuse` -> `LicenceRefused` naming the clause; `warn` -> a warning in the decision

A tenant that declares nothing is not checked; attribution duties are listed by
`llama-broker report --licences`, not enforced per call.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.errors import LicenceRefused

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.types import ChatRequest

    from .decision import Decision
    from .loaded import Policy
    from .schema import TenantPolicy

__all__ = ["LicenceFinding", "LicenceGuard", "LicenceTerms", "Restriction", "licence_findings", "licence_for"]

log = logging.getLogger("llama_broker.policy")

#: member states of the European Union (ISO 3166-1 alpha-2), for `domicile: <country>`
EU_MEMBERS = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
})


@dataclass(frozen=True)
class Restriction:
    id: str
    domiciles: tuple[str, ...]
    models: str  # `multimodal` or `all`
    clause: str


@dataclass(frozen=True)
class LicenceTerms:
    id: str
    name: str
    released: dt.date
    text: str
    acceptable_use_policy: str
    mau_threshold: int
    mau_clause: str
    attribution: str
    attribution_clause: str
    restrictions: tuple[Restriction, ...]


@dataclass(frozen=True)
class LicenceFinding:
    """One licence term a call would break, with what the tenant's policy says to do about it."""

    term: str
    clause: str
    message: str
    action: str  # refuse | warn


@functools.cache
def _data() -> tuple[dict[str, LicenceTerms], tuple[tuple[str, str], ...]]:
    from importlib.resources import files

    import yaml

    raw: dict[str, Any] = yaml.safe_load((files("broker") / "data" / "licences.yaml").read_text(encoding="utf-8"))
    terms = {}
    for lid, item in raw["licences"].items():
        restrictions = tuple(Restriction(r["id"], tuple(r["domiciles"]), r["models"], r["clause"])
                             for r in item.get("restrictions") or ())
        terms[lid] = LicenceTerms(
            id=lid, name=item["name"], released=item["released"], text=item["text"],
            acceptable_use_policy=item["acceptable_use_policy"], mau_threshold=int(item["mau_threshold"]),
            mau_clause=item["mau_clause"], attribution=item["attribution"],
            attribution_clause=item["attribution_clause"], restrictions=restrictions,
        )
    prefixes = tuple(sorted(raw["models"].items(), key=lambda kv: -len(kv[0])))
    return terms, prefixes


def licence_for(model: str) -> LicenceTerms | None:
    """The licence terms of a logical model, or None when the data names none."""
    terms, prefixes = _data()
    for prefix, lid in prefixes:
        if model.startswith(prefix):
            return terms[lid]
    return None


def _in(domicile: str, domiciles: tuple[str, ...]) -> bool:
    place = domicile.upper()
    return any(place == d.upper() or (d == "eu" and place in EU_MEMBERS) for d in domiciles)


def licence_findings(tenant: TenantPolicy, model: str, *, multimodal: bool) -> list[LicenceFinding]:
    """The licence terms a call by `tenant` on `model` would break (none when the tenant declares nothing)."""
    declared = tenant.licence
    terms = licence_for(model)
    if declared is None or terms is None:
        return []
    found = []
    if declared.monthly_active_users > terms.mau_threshold and not declared.separate_licence:
        found.append(LicenceFinding(
            "mau", terms.mau_clause,
            f"product {declared.product!r} declares {declared.monthly_active_users:,} monthly active users, over "
            f"the {terms.mau_threshold:,} of the {terms.name}", declared.on_violation,
        ))
    for restriction in terms.restrictions:
        if restriction.models == "multimodal" and not multimodal:
            continue
        if declared.end_user or not _in(declared.domicile, restriction.domiciles):
            continue
        found.append(LicenceFinding(
            restriction.id, restriction.clause,
            f"{model} is a multimodal model of the {terms.name}, and tenant {tenant.name!r} declares its domicile "
            f"{declared.domicile!r}", declared.on_violation,
        ))
    return found


class LicenceGuard:
    """The call hook that applies the licence rule before any route is tried."""

    blocking = False

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> None:
        info = self.policy.catalog.models.get(decision.model)
        multimodal = bool(info and info.capabilities.vision)
        for finding in licence_findings(decision.tenant_policy, decision.model, multimodal=multimodal):
            note = f"licence: {finding.message} ({finding.clause})"
            if finding.action == "refuse":
                raise LicenceRefused(f"tenant {decision.tenant!r}: {note}", tenant=decision.tenant,
                                     model=decision.model, term=finding.term, clause=finding.clause)
            log.warning("tenant %s: %s", decision.tenant, note)
            decision.add_warning(note)
        return None
