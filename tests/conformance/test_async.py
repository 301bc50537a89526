"""Async conformance: `AsyncBroker` chat and stream behave like their sync twins on every provider."""

from __future__ import annotations

import asyncio

import pytest
from conformance_cases import MESSAGES, WEATHER_TOOL, Case, assert_clean, expected_cost, ledger_totals

from broker import ProtocolError, ProviderError, Throttled
from broker.testing import Reply


async def test_async_chat(case: Case) -> None:
    async with case.async_broker() as broker:
        reply = await broker.chat(model=case.model, messages=MESSAGES)
        totals = ledger_totals(broker)

    assert reply.text.startswith(f"Hello from the {case.provider} emulator")
    assert reply.route.provider == case.provider
    reported = case.emulator.reported
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        reported.input_tokens,
        reported.output_tokens,
    )
    assert reply.cost_usd == expected_cost(
        case.provider, broker, reported.input_tokens, reported.output_tokens
    )
    assert len(case.emulator.requests) == 1 and totals["calls"] == 1


async def test_async_stream(case: Case) -> None:
    async with case.async_broker() as broker:
        events = [event async for event in broker.stream(model=case.model, messages=MESSAGES)]

    deltas = [e.text for e in events if e.text]
    assert len(deltas) > 1
    final = events[-1]
    assert final.is_final and final.response.text == "".join(deltas)
    assert final.response.route.provider == case.provider
    reported = case.emulator.reported
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        reported.input_tokens,
        reported.output_tokens,
    )
    assert len(case.emulator.requests) == 1


async def test_async_tool_calls_in_chat_and_stream(case: Case) -> None:
    case.emulator.enqueue(
        Reply(tool_calls=[("get_weather", {"city": "Quito"})]),
        Reply(tool_calls=[("get_weather", {"city": "Baku"})]),
    )
    async with case.async_broker() as broker:
        reply = await broker.chat(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL])
        events = [e async for e in broker.stream(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL])]

    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [("get_weather", {"city": "Quito"})]
    streamed = events[-1].response.tool_calls
    assert [(c.name, c.parsed_arguments()) for c in streamed] == [("get_weather", {"city": "Baku"})]


async def test_async_throttle_is_typed_then_retried_with_the_hint(case: Case) -> None:
    case.emulator.fail(429, retry_after=1.5)
    async with case.async_broker(max_attempts=1) as strict:
        with pytest.raises(ProviderError) as info:
            await strict.chat(model=case.model, messages=MESSAGES)
    assert type(info.value) is Throttled and info.value.retry_after == pytest.approx(1.5)
    assert info.value.provider == case.provider
    assert_clean(info.value)

    case.emulator.fail(429, retry_after=1.5)
    async with case.async_broker() as broker:
        reply = await broker.chat(model=case.model, messages=MESSAGES)
        totals = ledger_totals(broker)
    assert reply.attempts == 2 and case.sleeps == [pytest.approx(1.5)]
    assert len(case.emulator.requests) == 3 and totals["attempts"] == 2


async def test_async_stream_errors_are_typed(case: Case) -> None:
    async with case.async_broker(max_attempts=1) as broker:
        case.emulator.fail(503)
        with pytest.raises(ProviderError) as before:
            [e async for e in broker.stream(model=case.model, messages=MESSAGES)]
        case.emulator.cut_stream(after=3)
        received: list[str] = []
        with pytest.raises(ProtocolError) as cut:
            async for event in broker.stream(model=case.model, messages=MESSAGES):
                received.append(event.text)

    assert type(before.value).__name__ == "Unavailable" and before.value.status == 503
    assert type(cut.value) is ProtocolError and "".join(received)
    assert len(case.emulator.requests) == 2


async def test_async_concurrent_calls_each_send_one_request(case: Case) -> None:
    async with case.async_broker() as broker:
        replies = await asyncio.gather(
            *(
                broker.chat(model=case.model, messages=[{"role": "user", "content": f"question {i}"}])
                for i in range(8)
            )
        )
        totals = ledger_totals(broker)

    assert sorted(r.text.rsplit(" ", 1)[-1] for r in replies) == [str(i) for i in range(8)]
    assert len(case.emulator.requests) == 8 and case.emulator.reported.calls == 8
    reported = case.emulator.reported
    assert totals["calls"] == 8
    assert (totals["input_tokens"], totals["output_tokens"]) == (
        reported.input_tokens,
        reported.output_tokens,
    )
