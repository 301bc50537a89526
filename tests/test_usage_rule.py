"""The usage rule (`broker/usage.py`): token counts are checked where an answer enters the core.

Out-of-range counts make the answer a `ProtocolError` (retried and failed over like a malformed
body) metered with an estimate; an answer without usage is metered with an estimate, never zero.
Driven by the real local-runner adapter against its emulator (scripted token counts) and by the
scripted third-party adapter of `test_execution_rules`.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from test_execution_rules import MODES, MSG, Recorder, Script, play, play_scripted, scripted_broker

from broker import AsyncBroker, ChatRequest, ChatResponse, ProtocolError, StreamEvent, Usage
from broker.metering import open_ledger
from broker.reports import ReportFilters, report_rows
from broker.testing import OpenAICompatEmulator, Reply
from broker.usage import MAX_TOKENS_PER_CALL, usage_problem

REQUEST = ChatRequest(model="llama-3.1-8b", messages=MSG)


@pytest.mark.parametrize("counts", [(0, 0, 0), (MAX_TOKENS_PER_CALL, MAX_TOKENS_PER_CALL, 0), (12, 3, 12)])
def test_counts_in_range_are_accepted(counts: tuple[int, int, int]) -> None:
    assert usage_problem(Usage(*counts)) is None


@pytest.mark.parametrize(("counts", "shown"), [
    ((-1, 3, 0), "input_tokens=-1"),
    ((3, MAX_TOKENS_PER_CALL + 1, 0), f"output_tokens=>{MAX_TOKENS_PER_CALL}"),
    ((2**63, 1, 0), f"input_tokens=>{MAX_TOKENS_PER_CALL}"),
    ((1.5, 1, 0), "input_tokens=1.5"),
    ((1, True, 0), "output_tokens=True"),
    ((1, "12", 0), "output_tokens='12'"),
    ((1, 1, -5), "cached_input_tokens=-5"),
])
def test_counts_out_of_range_are_named(counts: tuple[Any, Any, Any], shown: str) -> None:
    problem = usage_problem(Usage(*counts))
    assert problem is not None and shown in problem and str(MAX_TOKENS_PER_CALL) in problem


def _rows(url: str) -> list[dict[str, Any]]:
    ledger = open_ledger(url)
    try:
        return report_rows(ledger, ["route_id", "error_kind"], ReportFilters())
    finally:
        ledger.close()


def _sound(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        assert int(row["input_tokens"]) >= 0 and int(row["output_tokens"]) >= 0
        assert row["cost_usd"] is None or Decimal(str(row["cost_usd"])) >= 0


@pytest.mark.parametrize("bad", [(2**63, 5), (-1000, -1000)], ids=["absurd", "negative"])
@pytest.mark.parametrize("mode", ["chat", "achat"])
def test_bad_usage_is_retried_then_failed_over_and_metered_as_an_estimate(
    tmp_path: Path, mode: str, bad: tuple[int, int]
) -> None:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        a.enqueue(Reply(input_tokens=bad[0], output_tokens=bad[1]), Reply(input_tokens=bad[0], output_tokens=bad[1]))
        routes = [local_route(a, "a", price={"input_per_mtok": 1, "output_per_mtok": 1}),
                  local_route(b, "b", price={"input_per_mtok": 2, "output_per_mtok": 2})]
        policy = policy_dict(routes, tmp=tmp_path, retry={"max_attempts_per_route": 2})
        _, reply = play(mode, lambda cls: cls.from_policy(policy, durable=True, sleep=lambda s: None))
        assert isinstance(reply, ChatResponse) and reply.route is not None
        assert reply.route.id == "b" and reply.attempts == 3 and len(a.requests) == 2
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (b.reported.input_tokens,
                                                                          b.reported.output_tokens)
        _, later = play(mode, lambda cls: cls.from_policy(policy, durable=True))  # the ledger still takes events
        assert isinstance(later, ChatResponse) and later.route is not None and later.route.id == "a"
    rows = {(r["route_id"], r["error_kind"]): r for r in _rows(policy["ledger"])}
    failed = rows[("a", "ProtocolError")]
    assert failed["attempts"] == 2 and failed["estimated_calls"] == 2
    assert int(failed["input_tokens"]) > 0 and int(failed["output_tokens"]) > 0  # an estimate from the text
    assert rows[("b", None)]["attempts"] == 1 and rows[("a", None)]["attempts"] == 1
    _sound(list(rows.values()))


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_stream_ending_in_bad_usage_is_a_protocol_error_metered_as_an_estimate(tmp_path: Path, mode: str) -> None:
    with OpenAICompatEmulator() as a:
        a.enqueue(Reply(input_tokens=-1000, output_tokens=-1000))
        policy = policy_dict([local_route(a, "a", price={"input_per_mtok": 1, "output_per_mtok": 1})], tmp=tmp_path)
        _, out = play(mode, lambda cls: cls.from_policy(policy, durable=True, sleep=lambda s: None))
        assert isinstance(out, ProtocolError) and "usage out of range" in str(out)
        assert (out.provider, out.route_id) == ("local", "a")
        assert len(a.requests) == 1  # its text had reached the caller: neither retried nor failed over
    (row,) = _rows(policy["ledger"])
    assert row["error_kind"] == "ProtocolError" and row["estimated_calls"] == 1
    assert int(row["input_tokens"]) > 0 and int(row["output_tokens"]) > 0
    _sound([row])


@pytest.mark.parametrize("bad", [Usage(1.5, 2), Usage(1, True), Usage("7", 2), Usage(3, 2, -1)],  # type: ignore[arg-type]
                         ids=["float", "bool", "str", "negative-cached"])
def test_counts_that_are_not_plain_integers_are_refused_for_any_adapter(bad: Usage) -> None:
    script, recorder = Script(a=[ChatResponse(text="a bad count", finish_reason="stop", usage=bad)]), Recorder()
    _, reply = play_scripted("chat", script, recorder, "a")
    assert isinstance(reply, ChatResponse) and reply.attempts == 2  # retried like a malformed body
    first, second = recorder.events
    assert first.error_kind == "ProtocolError" and first.usage_estimated
    assert first.input_tokens == REQUEST.estimated_input_tokens() and first.output_tokens == 3
    assert second.error_kind is None and (second.input_tokens, second.output_tokens) == (7, 3)


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_without_usage_is_metered_as_an_estimate_never_zero(mode: str) -> None:
    text = "an answer whose provider never said what it cost"
    if "stream" in mode:
        step: Any = [StreamEvent(text=text), StreamEvent(finish_reason="stop")]
    else:
        step = ChatResponse(text=text, finish_reason="stop", usage=Usage(estimated=True))
    script, recorder = Script(a=[step]), Recorder()
    _, reply = play_scripted(mode, script, recorder, "a")
    assert isinstance(reply, ChatResponse) and reply.usage.estimated
    expected = (REQUEST.estimated_input_tokens(), (len(text) + 3) // 4)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == expected
    (event,) = recorder.events
    assert event.usage_estimated and (event.input_tokens, event.output_tokens) == expected
    assert event.cost_usd is not None and event.cost_usd > 0 and reply.cost_usd == event.cost_usd


def test_reported_usage_is_kept_as_reported() -> None:
    script, recorder = Script(), Recorder()
    _, reply = play_scripted("chat", script, recorder, "a")
    assert isinstance(reply, ChatResponse) and not reply.usage.estimated
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (7, 3)


def test_a_stream_abandoned_after_bad_usage_meters_an_estimate() -> None:
    events = [StreamEvent(text="first "), StreamEvent(usage=Usage(-1000, -1000)), StreamEvent(text="second "),
              StreamEvent(text="third"), StreamEvent(finish_reason="stop")]
    script, recorder = Script(a=[events]), Recorder()
    with scripted_broker(script, recorder, "a") as broker:
        stream = broker.stream(model="llama-3.1-8b", messages=MSG)
        assert next(stream).text == "first "
        assert next(stream).text == "second "
        stream.close()
    (event,) = recorder.events
    assert event.error_kind == "Abandoned" and event.usage_estimated
    assert event.input_tokens > 0 and event.output_tokens > 0 and event.cost_usd is not None and event.cost_usd > 0


def test_a_cancelled_async_stream_after_bad_usage_meters_an_estimate() -> None:
    events = [StreamEvent(text="first "), StreamEvent(usage=Usage(2**63, 1)), StreamEvent(text="second ")]
    script, recorder = Script(a=[events]), Recorder()

    async def run() -> None:
        async with scripted_broker(script, recorder, "a", cls=AsyncBroker) as broker:
            stream = broker.stream(model="llama-3.1-8b", messages=MSG)
            async for event in stream:
                if event.text == "second ":
                    break
            await stream.aclose()

    asyncio.run(run())
    (event,) = recorder.events
    assert event.error_kind in ("Abandoned", "Cancelled") and event.usage_estimated
    assert 0 < event.input_tokens <= 1000 and event.output_tokens > 0
