"""The residency audit: every event against the residency of the policy version it ran under.

An event whose version is stored is checked: its jurisdiction must be one its tenant's rules in
that version allowed (a tenant name the version does not have gets what unknown names got, `*`).
An event whose version was never stored cannot be checked: it is counted apart, per tenant, as
unverifiable, never as compliant.  Events of calls whose text never left the process (an input
guardrail's block: provider `broker`, jurisdiction `none`) are neither checked nor counted.  The
check runs in SQL on either backend.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from .versions import PolicyVersion, tenant_residency

__all__ = ["RESIDENCY_COUNTS", "RESIDENCY_VIOLATIONS", "ResidencyReport", "Violation", "residency_rows"]

#: the residency audit: events whose version is stored and whose jurisdiction that version did not allow
RESIDENCY_VIOLATIONS = """
SELECT e.event_id, e.request_id, e.decision_id, e.ts, e.tenant, e.provider, e.region, e.jurisdiction,
       e.route_id, e.policy_version
FROM usage_events e JOIN audit_policy_versions v ON v.version = e.policy_version
WHERE {tenant} NOT (e.provider = 'broker' AND e.jurisdiction = 'none') AND NOT EXISTS (
    SELECT 1 FROM audit_policy_residency r
    WHERE r.version = e.policy_version
      AND r.tenant = CASE WHEN EXISTS (
              SELECT 1 FROM audit_policy_residency t WHERE t.version = e.policy_version AND t.tenant = e.tenant
          ) THEN e.tenant ELSE '*' END
      AND r.jurisdiction IN (e.jurisdiction, '*'))
ORDER BY e.ts, e.event_id
"""
#: events per tenant, split by whether the version they ran under is stored
RESIDENCY_COUNTS = """
SELECT e.tenant, (v.version IS NOT NULL) AS known, COUNT(*)
FROM usage_events e LEFT JOIN audit_policy_versions v ON v.version = e.policy_version
WHERE {tenant} NOT (e.provider = 'broker' AND e.jurisdiction = 'none')
GROUP BY e.tenant, (v.version IS NOT NULL)
"""


@dataclass(frozen=True)
class Violation:
    """An event that ran outside the residency of the policy version it recorded."""

    event_id: str
    request_id: str
    decision_id: str | None
    timestamp: dt.datetime
    tenant: str
    provider: str
    region: str | None
    jurisdiction: str
    route_id: str
    policy_version: str


@dataclass(frozen=True)
class ResidencyReport:
    """Checked events, their violations, and events whose policy version was never stored."""

    checked: int
    violations: tuple[Violation, ...]
    unverifiable: dict[str, int] = field(default_factory=dict)

    @property
    def unverifiable_total(self) -> int:
        return sum(self.unverifiable.values())

    @property
    def compliant(self) -> bool:
        """No violation among the checked events (unverifiable events are never counted as compliant)."""
        return not self.violations


def residency_rows(version: PolicyVersion) -> list[tuple[str, str, str]]:
    """The `audit_policy_residency` rows of a version: (version, tenant, jurisdiction)."""
    return [
        (version.version, tenant, jurisdiction)
        for tenant, allowed in sorted(tenant_residency(version).items())
        for jurisdiction in allowed
    ]
