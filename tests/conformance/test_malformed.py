"""Malformed answers: on every provider, sync, async and streamed, each is a typed `ProtocolError`.

The emulators send each kind of `broker.testing.malformed` in their provider's own wire format
(OpenAI chat-completions JSON and SSE, Converse JSON and the ConverseStream event stream), with
status 200.  None of them may come back as a success (least of all one with empty text), nor as
a raw exception: each is a `ProtocolError` naming the provider and the route, and the attempt is
in the ledger as a failed one.  An empty answer (content "" with finish reason "stop") is a real
answer, and stays a success.

Which check decides: the adapters' shape functions (and their SDK error seams) refuse every
kind, except these, which the broker's core decides for every provider alike: token counts out
of range (`absurd_usage`, `negative_usage`: ProtocolError), an answer without usage
(`missing_usage`: a success metered with an estimate, never zero), and a stream that ends
without a finish reason (`no_finish_reason` and `html_page` streamed on the four OpenAI-shape
providers, whose adapters hand on what came and leave the judgement of the end to the core).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from conformance_cases import MESSAGES, Case, assert_clean, ledger_totals

from broker import AsyncBroker, Broker, ProtocolError
from broker.reports import ReportFilters, report_rows
from broker.testing import Reply
from broker.testing.malformed import MALFORMED_KINDS
from broker.types import ChatResponse

MODES = ("chat", "achat", "stream", "astream")

#: kinds that must be a ProtocolError
MALFORMED = tuple(kind for kind in MALFORMED_KINDS if kind != "missing_usage")

@dataclass
class Outcome:
    """What one call gave: its answer or its `ProtocolError`, and the ledger of its broker after it."""

    reply: ChatResponse | None
    error: ProtocolError | None
    kinds: dict[str | None, int]
    totals: dict[str, Any]


def _kinds(broker: Broker | AsyncBroker) -> dict[str | None, int]:
    broker.meter.flush()
    rows = report_rows(broker.meter.ledger, ["error_kind"], ReportFilters())
    return {row["error_kind"]: row["attempts"] for row in rows}


def _call(case: Case, mode: str) -> Outcome:
    """One call in `mode` through a broker that tries the route once (so no retry hides a fault)."""
    if mode in ("achat", "astream"):
        return asyncio.run(_acall(case, mode))
    broker = case.broker(max_attempts=1)
    reply, error = None, None
    try:
        if mode == "chat":
            reply = broker.chat(model=case.model, messages=MESSAGES)
        else:
            reply = list(broker.stream(model=case.model, messages=MESSAGES))[-1].response
    except ProtocolError as exc:
        error = exc
    return Outcome(reply, error, _kinds(broker), ledger_totals(broker))


async def _acall(case: Case, mode: str) -> Outcome:
    async with case.async_broker(max_attempts=1) as broker:
        reply, error = None, None
        try:
            if mode == "achat":
                reply = await broker.chat(model=case.model, messages=MESSAGES)
            else:
                reply = [e async for e in broker.stream(model=case.model, messages=MESSAGES)][-1].response
        except ProtocolError as exc:
            error = exc
        return Outcome(reply, error, _kinds(broker), ledger_totals(broker))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_answer_is_a_protocol_error(case: Case, kind: str, mode: str) -> None:
    case.emulator.malformed(kind)

    outcome = _call(case, mode)

    assert outcome.reply is None, f"{kind} came back as a success: {outcome.reply}"
    exc = outcome.error
    assert type(exc) is ProtocolError, f"{type(exc).__name__}: {exc}"
    assert (exc.provider, exc.route_id) == (case.provider, f"{case.provider}-conformance")
    assert_clean(exc)
    assert len(case.emulator.requests) == 1  # the emulator did send this kind
    assert outcome.kinds == {"ProtocolError": 1}  # metered as one failed attempt


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_without_usage_is_a_success_metered_with_an_estimate(case: Case, mode: str) -> None:
    case.emulator.malformed("missing_usage")

    outcome = _call(case, mode)

    reply = outcome.reply
    assert reply is not None, outcome.error
    assert reply.text.startswith(f"Hello from the {case.provider} emulator")
    assert reply.usage.estimated
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0  # an estimate, never zero
    assert outcome.kinds == {None: 1}
    totals = outcome.totals
    assert totals["estimated_calls"] == 1 and totals["input_tokens"] > 0 and totals["output_tokens"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_answer_that_finished_is_a_success(case: Case, mode: str) -> None:
    case.emulator.enqueue(Reply(text=""))

    outcome = _call(case, mode)

    reply = outcome.reply
    assert reply is not None, outcome.error
    assert reply.text == "" and reply.tool_calls == ()
    assert reply.finish_reason == "stop"
    assert reply.route is not None and reply.route.provider == case.provider
    assert outcome.kinds == {None: 1}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_answer_is_retried_and_the_retry_succeeds(case: Case, kind: str) -> None:
    case.emulator.malformed(kind)

    reply = case.broker().chat(model=case.model, messages=MESSAGES)

    assert reply.attempts == 2 and len(case.emulator.requests) == 2
    assert reply.text.startswith(f"Hello from the {case.provider} emulator")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        case.emulator.reported.input_tokens,
        case.emulator.reported.output_tokens,
    )  # the malformed answer's usage is not counted by the emulator, nor billed by the broker
