"""Policy versions by hash: the rules in force, as a canonical JSON document an audit can read back.

`snapshot(policy)` gives the document (routes with their jurisdictions, every tenant's rules,
what unknown tenant names get) and its SHA-256.  The policy's short `version` is what each
usage event records; the store keeps one document per version, so the residency audit reads
the rules an event ran under, not today's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.policy import Policy

__all__ = ["PolicyVersion", "snapshot", "tenant_residency"]

#: the jurisdiction list stored for a tenant whose residency is unrestricted
ANY = "*"


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One stored policy version: its short version, the SHA-256 of `document`, and the document."""

    version: str
    sha256: str
    source: str
    document: str

    def rules(self) -> dict[str, Any]:
        return dict(json.loads(self.document))


def snapshot(policy: Policy) -> PolicyVersion:
    """The canonical document of `policy` and its hash (sorted keys, no whitespace)."""
    content = {
        "version": policy.version,
        "unknown_tenants": policy.unknown_tenants,
        "routes": [
            {
                "id": r.id,
                "provider": r.provider,
                "model": r.model,
                "model_id": r.model_id,
                "region": r.region,
                "jurisdiction": r.jurisdiction,
                "endpoint": r.endpoint,
            }
            for r in policy.routes
        ],
        "tenants": {name: t.model_dump(mode="json") for name, t in sorted(policy.tenants.items())},
    }
    document = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return PolicyVersion(
        version=policy.version,
        sha256=hashlib.sha256(document.encode()).hexdigest(),
        source=str(policy.source),
        document=document,
    )


def tenant_residency(version: PolicyVersion) -> dict[str, list[str]]:
    """Allowed jurisdictions per tenant name of a version (`["*"]`: any); key `*` for unknown names.

    The `*` key is present only where the version serves unknown tenant names under `default`'s rules.
    """
    rules = version.rules()
    out: dict[str, list[str]] = {}
    for name, tenant in rules.get("tenants", {}).items():
        residency = tenant.get("residency")
        out[name] = [ANY] if residency is None else sorted(residency)
    if rules.get("unknown_tenants") == "default" and "default" in out:
        out[ANY] = out["default"]
    return out
