"""One stored decision: the candidates, the filter that removed each, the scores, the route chosen.

`DecisionEntry` is what the trail keeps on the hot path (references only); `row()` turns it into
the stored columns off the hot path, in the flush.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.policy.decision import Decision

__all__ = ["DECISION_COLUMNS", "DecisionEntry"]

DECISION_COLUMNS = (
    "decision_id", "request_id", "tenant", "rules_tenant", "model", "ts", "policy_version", "policy_sha256",
    "chosen_route", "outcome", "error_kind", "document",
)


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """A decision and how its call ended, as the trail saw it."""

    decision: Decision
    meta: CallMeta
    policy_sha256: str
    timestamp: dt.datetime
    chosen_route: str | None
    error_kind: str | None

    @property
    def decision_id(self) -> str:
        return self.meta.decision_id or self.meta.request_id

    def document(self) -> dict[str, Any]:
        """The explained decision (candidates, filters, scores, failures) with how the call ended."""
        doc = self.decision.to_dict()
        doc["chosen_route"] = self.chosen_route
        doc["error_kind"] = self.error_kind
        return doc

    def row(self) -> dict[str, Any]:
        d = self.decision
        return {
            "decision_id": self.decision_id,
            "request_id": self.meta.request_id,
            "tenant": d.tenant,
            "rules_tenant": d.rules_tenant,
            "model": d.model,
            "ts": self.timestamp,
            "policy_version": self.meta.policy_version,
            "policy_sha256": self.policy_sha256,
            "chosen_route": self.chosen_route,
            "outcome": "error" if self.error_kind else "ok",
            "error_kind": self.error_kind,
            "document": json.dumps(self.document(), sort_keys=True, separators=(",", ":"), default=str),
        }
