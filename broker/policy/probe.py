"""What a policy lets a tenant reach, asked of the real engine with probe requests that carry no text.

`policy diff` and `policy test` both ask the router itself, never a second reading of the
rules, so what they report is what calls would get.  A probe request is one short user
message, with the needs asked for (tools, an image, JSON mode, a stream, `max_tokens`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from broker.errors import BrokerError
from broker.health import CircuitBoard, LatencyTracker
from broker.types import ChatRequest

from .decision import Decision
from .engine import Router
from .loaded import Policy

__all__ = ["NEEDS_VARIANTS", "Needs", "Probe", "probe_request"]

_IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
          "AAAABJRU5ErkJggg==")


@dataclass(frozen=True)
class Needs:
    """What a probe request asks of a route."""

    tools: bool = False
    vision: bool = False
    json: bool = False
    stream: bool = False
    max_tokens: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Needs:
        raw = raw or {}
        unknown = set(raw) - {"tools", "vision", "json", "stream", "max_tokens"}
        if unknown:
            raise ValueError(f"unknown needs: {', '.join(sorted(unknown))} (known: tools, vision, json, stream, "
                             "max_tokens)")
        max_tokens = raw.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens <= 0):
            raise ValueError("needs.max_tokens must be a positive whole number")
        flags = {k: raw.get(k, False) for k in ("tools", "vision", "json", "stream")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"needs.{key} must be true or false")
        return cls(max_tokens=max_tokens, **flags)

    def label(self) -> str:
        parts = [name for name in ("tools", "vision", "json", "stream") if getattr(self, name)]
        if self.max_tokens is not None:
            parts.append(f"max_tokens={self.max_tokens}")
        return ", ".join(parts) or "plain"


#: the needs every diff asks about: a route reachable under any of them counts as reachable
NEEDS_VARIANTS = (Needs(), Needs(tools=True), Needs(vision=True), Needs(json=True), Needs(stream=True))


def probe_request(model: str, needs: Needs, *, input_tokens: int | None = None) -> ChatRequest:
    """A request with `needs` whose prompt the router estimates at `input_tokens` (about) when given."""
    content: Any = "x" * max(4, (input_tokens - 4) * 4) if input_tokens else "probe"
    if needs.vision:
        content = [{"type": "text", "text": content}, {"type": "image_url", "image_url": {"url": _IMAGE}}]
    params: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if needs.tools:
        params["tools"] = [{"type": "function", "function": {"name": "probe"}}]
    if needs.json:
        params["response_format"] = {"type": "json_object"}
    if needs.max_tokens is not None:
        params["max_tokens"] = needs.max_tokens
    return ChatRequest.model_validate(params)


class _FixedSpend:
    """A spend source that reports one figure for every tenant and period."""

    def __init__(self, spent: Decimal) -> None:
        self.spent = spent

    def month_to_date(self, tenant: str, now: dt.datetime) -> Decimal:
        return self.spent

    def day_to_date(self, tenant: str, now: dt.datetime) -> Decimal:
        return self.spent


class Probe:
    """Asks one policy's router where probe calls would go, on a fixed day, with healthy routes."""

    def __init__(self, policy: Policy, *, today: dt.date | None = None, spent_usd: Decimal | None = None) -> None:
        self.policy = policy
        day = today or dt.date.today()
        at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)
        spend = _FixedSpend(spent_usd) if spent_usd is not None else None
        self.router = Router(policy, latency=LatencyTracker(), circuits=CircuitBoard(), spend=spend, now=lambda: at)

    def decide(self, tenant: str, model: str, needs: Needs, *, input_tokens: int | None = None
               ) -> Decision | BrokerError:
        """The decision for a probe call, or the broker error that refused it."""
        try:
            request = probe_request(model, needs, input_tokens=input_tokens)
            return self.router.decide(request, tenant, stream=needs.stream)
        except BrokerError as exc:
            return exc

    def reachable(self, tenant: str, model: str) -> dict[str, str]:
        """Route id -> jurisdiction of every route some probe call could be sent to."""
        routes: dict[str, str] = {}
        for needs in NEEDS_VARIANTS:
            outcome = self.decide(tenant, model, needs)
            if isinstance(outcome, Decision):
                routes.update((r.id, r.jurisdiction) for r in outcome.routes)
        return routes

    def models(self) -> list[str]:
        return sorted({route.model for route in self.policy.routes})
