"""What other parts of the broker attach to every call: admissions and observers.

Budgets (reservations), rate limits, route quotas, telemetry and the audit trail each watch a
call through one `CallHook`; the executor knows only this protocol, never which hooks exist.

    scope = hook.open(request, decision, meta)   when the call starts; may refuse it (a `BrokerError`)
    scope.claim(route)                           before a route is tried; an error passes the route over
                                                 (recorded in the decision), None lets it go ahead
    scope.attempted(route, event)                after each metered attempt, with its `UsageEvent`
    scope.close(response, error)                 once, however the call ends; settles what was held

An `OutputFilter` (the tenant's output guardrails) sees each answer or stream before the
hooks close, so a blocked or redacted answer is what they record.

A hook whose methods do I/O (a shared store) says `blocking = True`; async calls then run
its methods off the event loop's thread.  With no hooks a call pays nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from .attempts import CallMeta
    from .errors import BrokerError
    from .metering.events import UsageEvent
    from .policy.decision import Decision
    from .routes import Route
    from .types import ChatRequest, ChatResponse, StreamEvent

__all__ = ["CallHook", "CallScope", "OutputFilter"]


class CallScope(Protocol):
    """One hook's view of one call."""

    def claim(self, route: Route) -> BrokerError | None: ...
    def attempted(self, route: Route, event: UsageEvent) -> None: ...
    def close(self, response: ChatResponse | None, error: BaseException | None) -> None: ...


class CallHook(Protocol):
    """Made once per broker; `open` is called for every call and may return None to stay out of it."""

    blocking: bool

    def open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> CallScope | None: ...


class OutputFilter(Protocol):
    """What the caller gets of an answer: applied before the hooks close, so they see its outcome."""

    def response(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                 response: ChatResponse) -> ChatResponse: ...
    async def aresponse(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                        response: ChatResponse) -> ChatResponse: ...
    def stream(self, decision: Decision, request: ChatRequest, meta: CallMeta,
               events: Iterator[StreamEvent]) -> Iterator[StreamEvent]: ...
    def astream(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]: ...
