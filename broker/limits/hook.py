"""The call hook that applies tenant and group rate limits, route quotas and saturation marks.

    open      take one request and the call's token estimate from the tenant's and its groups'
              windows in one step; over a limit: wait (up to the limit's `wait_s`) or refuse
              with `RateLimited` and the seconds until the call would be admitted
    claim     take one request and the route's token estimate from the route's quota windows,
              unless the route is marked saturated; a refusal passes the route over (recorded
              in the decision), so a burst spills to the next route before the provider says 429
    attempted a retry on the same route counts one more request against its quota; a provider 429
              with a wait hint marks the route saturated for that long, for every instance
    close     settle the token estimates to the tokens the attempts actually used; a call that
              reached no route gives its request back

The token estimate is the prompt estimate plus `max_tokens` (else the route's expected output).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import BrokerError, RateLimited
from .windows import Held, Refused, Take, Windows

if TYPE_CHECKING:
    from ..attempts import CallMeta
    from ..metering.events import UsageEvent
    from ..policy.decision import Decision
    from ..policy.loaded import Policy
    from ..policy.schema import RateLimit
    from ..routes import Route
    from ..types import ChatRequest, ChatResponse

__all__ = ["RateLimits"]

log = logging.getLogger("llama_broker.limits")

WINDOW_S = 60.0
"""Every limit is per minute: requests or tokens in any 60-second span."""


@dataclass(frozen=True, slots=True)
class _Limit:
    """One scope's limit (`tenant:acme`, `group:team-x`), as the windows it takes from."""

    scope: str
    rule: RateLimit


class RateLimits:
    """Made once per broker from its policy; `now` and `sleep` are injectable (seconds on any epoch)."""

    def __init__(
        self,
        policy: Policy,
        windows: Windows,
        *,
        key_prefix: str = "llama-broker",
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self.windows = windows
        self.prefix = "{" + key_prefix + "}:rl:"
        self.now = now
        self.sleep = sleep
        waits = any(t.rate_limit is not None and t.rate_limit.wait_s > 0 for t in policy.tenants.values()) or any(
            g.rate_limit is not None and g.rate_limit.wait_s > 0 for g in policy.groups.values()
        )
        self.blocking = windows.blocking or waits
        self._quota_routes = frozenset(r.id for r in policy.routes if r.rpm or r.tpm)

    def key(self, scope: str, what: str) -> str:
        """The store key of a scope's window (`rpm`, `tpm`) or mark (`saturated`)."""
        return f"{self.prefix}{scope}:{what}"

    def limits_of(self, decision: Decision) -> tuple[_Limit, ...]:
        """The tenant's own limit and its groups' limits, in that order."""
        found = []
        tenant = decision.tenant_policy
        if tenant.rate_limit is not None:
            found.append(_Limit(f"tenant:{decision.tenant}", tenant.rate_limit))
        for group in self.policy.groups_of(decision.rules_tenant):
            if group.rate_limit is not None:
                found.append(_Limit(f"group:{group.name}", group.rate_limit))
        return tuple(found)

    def open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> _Scope | None:
        limits = self.limits_of(decision)
        quotas = any(r.id in self._quota_routes for r in decision.routes)
        if not limits and not quotas:
            return None
        input_tokens = request.estimated_input_tokens()
        first = decision.routes[0] if decision.routes else None
        estimate = input_tokens + (request.max_tokens or (first.expected_output_tokens if first else 0))
        scope = _Scope(self, request, input_tokens, estimate)
        if limits:
            scope.held = self._admit(limits, estimate)
        return scope

    def _admit(self, limits: Sequence[_Limit], estimate: int) -> tuple[Held, ...]:
        takes: list[Take] = []
        names: list[tuple[str, str]] = []
        for limit in limits:
            if limit.rule.rpm is not None:
                takes.append(Take(self.key(limit.scope, "rpm"), limit.rule.rpm, 1, WINDOW_S))
                names.append((limit.scope, "rpm"))
            if limit.rule.tpm is not None:
                takes.append(Take(self.key(limit.scope, "tpm"), limit.rule.tpm, estimate, WINDOW_S))
                names.append((limit.scope, "tpm"))
        wait_s = min(limit.rule.wait_s for limit in limits)
        deadline = self.now() + wait_s
        while True:
            now = self.now()
            outcome = self.windows.take(takes, (), now)
            if not isinstance(outcome, Refused):
                return outcome
            scope, what = names[outcome.index]
            if outcome.never:
                raise RateLimited(
                    f"{scope}: the call's estimated {estimate} tokens exceed the whole {what} limit "
                    f"{takes[outcome.index].limit}; lower max_tokens or the prompt",
                    retry_after=outcome.wait_s, limit=what, scope=scope,
                )
            if now + outcome.wait_s > deadline:
                queued = f" (waited {wait_s:g} s at most)" if wait_s else ""
                raise RateLimited(
                    f"{scope}: {what} limit {takes[outcome.index].limit} per minute reached{queued}; "
                    f"retry after {outcome.wait_s:.3g} s",
                    retry_after=outcome.wait_s, limit=what, scope=scope,
                )
            self.sleep(max(outcome.wait_s, 0.001))


@dataclass(eq=False)
class _RouteUse:
    held: tuple[Held, ...]
    estimate: int
    attempts: int = 0
    tokens: int = 0


@dataclass(eq=False)
class _Scope:
    """One call's view of the limits."""

    limits: RateLimits
    request: ChatRequest
    input_tokens: int
    estimate: int
    held: tuple[Held, ...] = ()
    routes: dict[str, _RouteUse] = field(default_factory=dict)
    attempts: int = 0
    tokens: int = 0

    def claim(self, route: Route) -> BrokerError | None:
        if not (route.rpm or route.tpm):
            return None
        limits = self.limits
        estimate = self.input_tokens + (self.request.max_tokens or route.expected_output_tokens)
        takes, names = [], []
        if route.rpm:
            takes.append(Take(limits.key(f"route:{route.id}", "rpm"), route.rpm, 1, WINDOW_S))
            names.append("rpm")
        if route.tpm:
            takes.append(Take(limits.key(f"route:{route.id}", "tpm"), route.tpm, estimate, WINDOW_S))
            names.append("tpm")
        mark = limits.key(f"route:{route.id}", "saturated")
        outcome = limits.windows.take(takes, (mark,), limits.now())
        if isinstance(outcome, Refused):
            if outcome.index < 0:
                what, why = "saturated", f"is saturated: the provider asked to wait {outcome.wait_s:.3g} s more"
            elif outcome.never:
                what, why = "tpm", f"cannot take the call's estimated {estimate} tokens: its whole tpm quota is less"
            else:
                what = names[outcome.index]
                why = f"is at its {what} quota of {takes[outcome.index].limit} per minute"
            return RateLimited(f"route {route.id!r} {why}; free again in {outcome.wait_s:.3g} s",
                               retry_after=outcome.wait_s, limit=what, scope=f"route:{route.id}")
        self.routes[route.id] = _RouteUse(outcome, estimate)
        return None

    def attempted(self, route: Route, event: UsageEvent) -> None:
        use = self.routes.get(route.id)
        limits, now = self.limits, self.limits.now()
        self.attempts += 1
        self.tokens += event.total_tokens
        if use is not None:
            use.attempts += 1
            use.tokens += event.total_tokens
            if use.attempts > 1 and route.rpm:  # a retry is one more request the provider counts
                limits.windows.add(limits.key(f"route:{route.id}", "rpm"), 1, WINDOW_S, now)
        hint = event.retry_after_s
        if event.error_kind == "Throttled" and hint is not None and hint > 0:
            limits.windows.mark(limits.key(f"route:{route.id}", "saturated"), now + hint, now)
            log.info("route %r saturated for %.3g s by the provider's wait hint", route.id, hint)

    def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
        windows, now = self.limits.windows, self.limits.now()
        for held in self.held:
            if held.key.endswith(":tpm"):
                windows.adjust(held, self.tokens - held.amount, now)
            elif not self.attempts:  # no provider saw the call: its request is given back
                windows.adjust(held, -held.amount, now)
        for use in self.routes.values():
            for held in use.held:
                if held.key.endswith(":tpm"):
                    windows.adjust(held, use.tokens - held.amount, now)
                elif not use.attempts:  # claimed, then not called (no adapter, open circuit)
                    windows.adjust(held, -held.amount, now)
