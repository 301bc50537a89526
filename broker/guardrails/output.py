"""The output guardrails as the executor's output filter (`broker.call_hooks.OutputFilter`).

An answer a check changed is signed again (`restamp`) when provenance is on, so the record's
hash is the hash of the text the caller gets.  The classifier's own calls are not checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

from .pipeline import CLASSIFIER_TAG, Guardrails

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.policy.decision import Decision
    from broker.types import ChatRequest, ChatResponse, StreamEvent

__all__ = ["GuardedOutput"]

Restamp = Callable[["ChatResponse", "CallMeta"], "ChatResponse"]


def _own_call(meta: CallMeta) -> bool:
    return CLASSIFIER_TAG in meta.tags


class GuardedOutput:
    def __init__(self, guardrails: Guardrails, restamp: Restamp) -> None:
        self.guardrails = guardrails
        self.restamp = restamp

    def response(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                 response: ChatResponse) -> ChatResponse:
        if _own_call(meta):
            return response
        guarded = self.guardrails.check_output(decision, request, response)
        return guarded if guarded is response else self.restamp(guarded, meta)

    async def aresponse(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                        response: ChatResponse) -> ChatResponse:
        guards = self.guardrails.for_tenant(decision)
        if guards is None or not guards.output or _own_call(meta):
            return response
        if guards.needs_io:  # a classifier call: off the event loop's thread
            return await asyncio.to_thread(self.response, decision, request, meta, response)
        return self.response(decision, request, meta, response)

    def stream(self, decision: Decision, request: ChatRequest, meta: CallMeta,
               events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        if _own_call(meta):
            yield from events
            return
        for event in self.guardrails.guard_stream(decision, request, events):
            yield self._restamp_final(event, meta)

    async def astream(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                      events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        async for event in self.guardrails.aguard_stream(decision, request, events):
            yield self._restamp_final(event, meta)

    def _restamp_final(self, event: StreamEvent, meta: CallMeta) -> StreamEvent:
        response = event.response
        if response is None or response.provenance is None:
            return event
        return dataclasses.replace(event, response=self.restamp(response, meta))
