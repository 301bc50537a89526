"""Broker errors as OpenAI-shaped HTTP answers: the gateway's one status table.

Every answer that is not a success has the body OpenAI's API sends,
``{"error": {"message", "type", "param", "code"}}``.  The status comes from `STATUS_TABLE`,
looked up by the error's class name along its MRO, most specific first: so a subclass gets its
parent's answer until it has its own row, and a row may name a class that is not defined yet.

| cause                                                         | status | code                     |
|---------------------------------------------------------------|--------|--------------------------|
| `InvalidRequest` (and `ContextTooLong`, `ContentFiltered`),   | 400    | invalid_request, ...     |
| `GuardrailBlocked`                                            |        |                          |
| a bad body, an unknown parameter, a bad tags header           | 400    | invalid_request          |
| no route can do what the request asks (tools, vision, ...)    | 400    | unsupported_by_routes    |
| no key, or a key the policy does not list                     | 401    | invalid_api_key          |
| the tenant's own policy leaves no route (residency, providers, | 403    | no_route_allowed         |
| models.allow, price ceiling, latency SLO), `ResidencyViolation`|        |                          |
| the model's licence terms refuse the call (`LicenceRefused`)  | 403    | licence_refused          |
| a model name the catalog does not know                        | 404    | model_not_found          |
| `Throttled`, `RateLimited` (with `Retry-After`)               | 429    | rate_limit_exceeded      |
| `BudgetExceeded` (`Retry-After`: when the budget period turns)| 429    | budget_exceeded          |
| a provider failed (`ProtocolError`, `AuthError`, ...), a route | 502    | upstream_error           |
| that cannot be used, any other broker error                   |        |                          |
| `Unavailable`; every eligible route's circuit is open         | 503    | upstream_unavailable     |
| `Timeout`                                                     | 504    | upstream_timeout         |
| the ledger or the provenance signer failed (`MeteringError`)  | 500    | internal_error           |
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BrokerError, NoEligibleRoute
from ..policy.decision import Decision
from ..policy.schema import TenantPolicy

__all__ = ["STATUS_TABLE", "ErrorAnswer", "HttpRefusal", "Rule", "answer_for", "error_body"]


@dataclass(frozen=True, slots=True)
class Rule:
    status: int
    type: str
    code: str


STATUS_TABLE: dict[str, Rule] = {
    # the request itself
    "ContextTooLong": Rule(400, "invalid_request_error", "context_length_exceeded"),
    "ContentFiltered": Rule(400, "invalid_request_error", "content_filter"),
    "InvalidRequest": Rule(400, "invalid_request_error", "invalid_request"),
    "GuardrailBlocked": Rule(400, "invalid_request_error", "guardrail_blocked"),
    "NoEligibleRoute:capabilities": Rule(400, "invalid_request_error", "unsupported_by_routes"),
    "gateway:bad_request": Rule(400, "invalid_request_error", "invalid_request"),
    "gateway:too_large": Rule(413, "invalid_request_error", "request_too_large"),
    "gateway:not_found": Rule(404, "invalid_request_error", "not_found"),
    "gateway:method": Rule(405, "invalid_request_error", "method_not_allowed"),
    "gateway:unknown_model": Rule(404, "invalid_request_error", "model_not_found"),
    # who is calling, and what its own policy allows
    "gateway:bad_key": Rule(401, "invalid_request_error", "invalid_api_key"),
    "UnknownTenant": Rule(401, "invalid_request_error", "invalid_api_key"),
    "NoEligibleRoute": Rule(403, "permission_error", "no_route_allowed"),
    "ResidencyViolation": Rule(403, "permission_error", "no_route_allowed"),
    "LicenceRefused": Rule(403, "permission_error", "licence_refused"),
    # limits
    "RateLimited": Rule(429, "rate_limit_error", "rate_limit_exceeded"),
    "Throttled": Rule(429, "rate_limit_error", "rate_limit_exceeded"),
    "BudgetExceeded": Rule(429, "insufficient_quota", "budget_exceeded"),
    # the providers behind the gateway
    "Timeout": Rule(504, "server_error", "upstream_timeout"),
    "Unavailable": Rule(503, "server_error", "upstream_unavailable"),
    "NoEligibleRoute:health": Rule(503, "server_error", "upstream_unavailable"),
    "ProviderError": Rule(502, "server_error", "upstream_error"),
    "MeteringError": Rule(500, "server_error", "internal_error"),
    "ProvenanceError": Rule(500, "server_error", "internal_error"),
    "BrokerError": Rule(502, "server_error", "upstream_error"),
    "gateway:internal": Rule(500, "server_error", "internal_error"),
}
"""Error class name (or `NoEligibleRoute:<cause>`, or a `gateway:` refusal) -> HTTP answer."""

_RETRY_AFTER_DEFAULT_S = 1.0
_POLICY_FILTERS = frozenset({"lifecycle", "residency", "providers"})
_PARAM = re.compile(r"invalid chat request: ([A-Za-z_][\w.\[\]]*)(?::| \()")


class HttpRefusal(Exception):
    """A request the gateway refuses itself, before the broker sees it; `key` names its `STATUS_TABLE` row."""

    def __init__(self, key: str, message: str, *, param: str | None = None) -> None:
        self.key, self.param = key, param
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status: int
    body: dict[str, Any]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    kind: str = ""


def error_body(message: str, rule: Rule, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": rule.type, "param": param, "code": rule.code}}


def _no_route_cause(exc: NoEligibleRoute) -> str:
    """Which row a `NoEligibleRoute` takes: the tenant's own rules, the request's needs, or route health."""
    decision = exc.decision
    if not isinstance(decision, Decision):
        return "NoEligibleRoute"
    candidates = decision.candidates
    if candidates and all(c.eligible for c in candidates):
        return "NoEligibleRoute:health"  # every eligible route has an open circuit
    open_to_tenant = [c for c in candidates if c.removed_by not in _POLICY_FILTERS]
    causes = {c.removed_by for c in open_to_tenant}
    if "health" in causes:
        return "NoEligibleRoute:health"
    if causes == {"capabilities"}:
        return "NoEligibleRoute:capabilities"
    return "NoEligibleRoute"


def _rule_key(exc: BaseException) -> str:
    if isinstance(exc, HttpRefusal):
        return exc.key
    if isinstance(exc, NoEligibleRoute):
        return _no_route_cause(exc)
    for cls in type(exc).__mro__:
        if cls.__name__ in STATUS_TABLE:
            return cls.__name__
    return "gateway:internal"


def _seconds_to_next_period(period: object, tenant: TenantPolicy | None, now: dt.datetime) -> float:
    """Until the budget's period turns: the next UTC midnight (a daily limit) or month start.

    The period is the error's own when it names one, else the tenant's daily budget if it has one.
    """
    budget = tenant.budget if tenant is not None else None
    daily = period == "day" if period in ("day", "month") else budget is not None and budget.daily_usd is not None
    if daily:
        turn = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        turn = now.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (turn - now).total_seconds())


def _retry_after(exc: BaseException, tenant: TenantPolicy | None, now: dt.datetime) -> float | None:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "BudgetExceeded" in names:
        return _seconds_to_next_period(getattr(exc, "period", None), tenant, now)
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, (int, float)) and math.isfinite(hint) and hint >= 0:
        return float(hint)
    if names & {"Throttled", "RateLimited"}:
        return _RETRY_AFTER_DEFAULT_S
    return None


def answer_for(
    exc: BaseException, *, tenant: TenantPolicy | None = None, now: dt.datetime | None = None
) -> ErrorAnswer:
    """The HTTP answer to an error: status and code from `STATUS_TABLE`, `Retry-After` when one applies.

    Exceptions that are not broker errors (bugs) answer 500 with a message that names nothing of them.
    """
    key = _rule_key(exc)
    rule = STATUS_TABLE[key]
    if isinstance(exc, (BrokerError, HttpRefusal)):
        message = str(exc) or type(exc).__name__
    else:
        message = "internal error in the gateway"
    param = exc.param if isinstance(exc, HttpRefusal) else None
    if param is None and rule.status == 400:
        found = _PARAM.match(message)
        param = found.group(1) if found else None
    headers: list[tuple[bytes, bytes]] = []
    wait = _retry_after(exc, tenant, now or dt.datetime.now(dt.timezone.utc))
    if wait is not None and rule.status in (429, 503):
        headers.append((b"retry-after", str(max(1, math.ceil(wait))).encode()))
        headers.append((b"retry-after-ms", str(max(1, round(wait * 1000))).encode()))
    kind = type(exc).__name__ if not isinstance(exc, HttpRefusal) else key.removeprefix("gateway:")
    return ErrorAnswer(rule.status, error_body(message, rule, param), headers, kind)
