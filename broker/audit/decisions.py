"""One stored decision: the candidates, the filter that removed each, the scores, the route chosen.

`DecisionEntry` is what the trail keeps on the hot path (references only); `row()` turns it into
the stored columns off the hot path, in the flush.

The stored `document` is `Decision.to_dict()` with how the call ended, as canonical JSON (sorted
keys, no whitespace).  `document_json` writes that text directly: what a route contributes that
never changes (its id, provider, region, jurisdiction) is encoded once per route, and each call
adds only its own figures (eligibility, the filter and reason, cost, latency, score, rank).  The
text is the one `json.dumps(..., sort_keys=True)` gives for the same document, character for
character (tests/test_audit_document.py holds the two together).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.policy.decision import Candidate, Decision
    from broker.routes import Route

__all__ = ["DECISION_COLUMNS", "DecisionEntry", "document_json"]

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
            "document": document_json(d, self.chosen_route, self.error_kind),
        }


def _canonical(value: Any) -> str:
    """Any part of a document, as `json.dumps` writes it in the stored text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


_float = float.__repr__


def _number(value: float | None) -> str:
    if value is None:
        return "null"
    kind = type(value)
    if kind is float and -_INF < value < _INF:
        return _float(value)
    if kind is int:
        return _int(value)
    return _canonical(value)  # the spellings json gives infinities and NaN; anything else as json writes it


_INF = float("inf")
_int = int.__repr__


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


class _Parts:
    """Each route's encoded parts, by route id (rebuilt when a route object is replaced)."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[Route, tuple[str, str, str, str]]] = {}

    def of(self, route: Route) -> tuple[str, str, str, str]:
        found = self._by_id.get(route.id)
        if found is None or found[0] is not route:
            parts = (
                f',"jurisdiction":{_text(route.jurisdiction)},"predicted_latency_ms":',
                f',"provider":{_text(route.provider)},"rank":',
                f',"region":{_text(route.region)},"removed_by":',
                f',"route":{_text(route.id)},"score":',
            )
            if len(self._by_id) >= _PARTS_KEPT:
                self._by_id.clear()
            found = self._by_id[route.id] = (route, parts)
        return found[1]


_PARTS_KEPT = 100_000  # routes remembered; past this many (policies reloaded again and again) they start over
_PARTS = _Parts()


def _candidate(c: Candidate) -> str:
    """One entry of `Decision.to_dict()["candidates"]`, encoded (the same fields, the same rules)."""
    at_jurisdiction, at_provider, at_region, at_route = _PARTS.of(c.route)
    cost = c.estimated_cost_usd
    latency = c.predicted_latency_ms
    eligible = c.removed_by is None
    return "".join((
        '{"eligible":', "true" if eligible else "false",
        ',"estimated_cost_usd":', "null" if cost is None else encode_basestring_ascii(str(cost)),
        at_jurisdiction, _number(round(latency, 1)) if latency else "null",
        at_provider, _number(c.rank),
        ',"reason":', encode_basestring_ascii(c.reason),
        at_region, _text(c.removed_by),
        at_route, _number(c.score),
        ',"warnings":', _canonical(list(c.warnings)) if c.warnings else "[]",
        "}",
    ))


def document_json(decision: Decision, chosen_route: str | None, error_kind: str | None) -> str:
    """The stored text of `decision.to_dict()` plus `chosen_route` and `error_kind`: canonical JSON."""
    allowed = decision.allowed_jurisdictions
    failures = [{"route": f.route_id, "reason": f.reason} for f in decision.failures]
    guardrails = [{"check": g.check, "stage": g.stage, "action": g.action, "reason": g.reason,
                   "categories": list(g.categories)} for g in decision.guardrails]
    return "".join((
        '{"allowed_jurisdictions":', "null" if allowed is None else _canonical(allowed),
        ',"candidates":[', ",".join([_candidate(c) for c in decision.candidates]),
        '],"chosen_route":', _text(chosen_route),
        ',"downgraded_from":', _text(decision.downgraded_from),
        ',"error_kind":', _text(error_kind),
        ',"failures":', _canonical(failures) if failures else "[]",
        ',"guardrails":', _canonical(guardrails) if guardrails else "[]",
        ',"model":', _text(decision.model),
        ',"objective":', _text(decision.objective),
        ',"rules_tenant":', _text(decision.rules_tenant),
        ',"spread":', _text(decision.spread),
        ',"tenant":', _text(decision.tenant),
        ',"warnings":', _canonical(list(decision.warnings)) if decision.warnings else "[]",
        "}",
    ))
