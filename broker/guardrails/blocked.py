"""The usage event of a call an input guardrail blocked: metered, with nothing sent anywhere.

One event with no tokens and no cost on the pseudo-route `guardrail` (provider `broker`,
jurisdiction `none`: the text never left the process), so reports count blocked requests and
the residency audit has nothing to check.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING

from broker.metering.events import UsageEvent, new_event_id

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.errors import GuardrailBlocked
    from broker.policy.decision import Decision

__all__ = ["GUARDRAIL_ROUTE", "blocked_event"]

GUARDRAIL_ROUTE = "guardrail"


def blocked_event(decision: Decision, meta: CallMeta, error: GuardrailBlocked, now: dt.datetime) -> UsageEvent:
    return UsageEvent(
        event_id=new_event_id(), request_id=meta.request_id, attempt=0, tenant=meta.tenant,
        tags={**meta.tags, "guardrail": error.check}, model=decision.model, provider="broker", region=None,
        jurisdiction="none", model_id="-", route_id=GUARDRAIL_ROUTE, input_tokens=0, output_tokens=0,
        cached_input_tokens=0, usage_estimated=False, cost_usd=Decimal(0), price_version=None, latency_ms=None,
        ttft_ms=None, status="error", error_kind="GuardrailBlocked", timestamp=now, policy_version=meta.policy_version,
    )
