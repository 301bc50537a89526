"""The output guardrails as the executor's output filter (`broker.call_hooks.OutputFilter`).

Answers are signed (`sign`, when provenance is on) after the checks, so a record's hash is the
hash of the text the caller gets.  The classifier's own calls are neither checked nor signed.
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

Sign = Callable[["ChatResponse", "CallMeta"], "ChatResponse"]


def _own_call(meta: CallMeta) -> bool:
    return CLASSIFIER_TAG in meta.tags


class GuardedOutput:
    def __init__(self, guardrails: Guardrails, sign: Sign) -> None:
        self.guardrails = guardrails
        self.sign = sign

    def response(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                 response: ChatResponse) -> ChatResponse:
        if _own_call(meta):
            return response
        return self.sign(self.guardrails.check_output(decision, request, response), meta)

    async def aresponse(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                        response: ChatResponse) -> ChatResponse:
        if _own_call(meta):
            return response
        guards = self.guardrails.for_tenant(decision)
        if guards is not None and guards.needs_io:  # a classifier call: off the event loop's thread
            return await asyncio.to_thread(self.response, decision, request, meta, response)
        return self.response(decision, request, meta, response)

    def stream(self, decision: Decision, request: ChatRequest, meta: CallMeta,
               events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        if _own_call(meta):
            yield from events
            return
        for event in self.guardrails.guard_stream(decision, request, events):
            yield self._sign_final(event, meta)

    async def astream(self, decision: Decision, request: ChatRequest, meta: CallMeta,
                      events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        if _own_call(meta):
            async for event in events:
                yield event
            return
        async for event in self.guardrails.aguard_stream(decision, request, events):
            yield self._sign_final(event, meta)

    def _sign_final(self, event: StreamEvent, meta: CallMeta) -> StreamEvent:
        if event.response is None:
            return event
        signed = self.sign(event.response, meta)
        return event if signed is event.response else dataclasses.replace(event, response=signed)
