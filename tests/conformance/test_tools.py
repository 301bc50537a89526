"""Tool-call conformance: scripted calls come back parsed, in chat and in stream, on every provider."""

from __future__ import annotations

from conformance_cases import MESSAGES, WEATHER_TOOL, Case, sent_tool_names

from broker import Broker
from broker.testing import Reply

LOOKUP_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


def test_chat_returns_the_tool_call_parsed(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(Reply(tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})]))

    reply = broker.chat(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL])

    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert call.id and call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Paris", "unit": "celsius"}
    assert reply.message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert reply.usage.output_tokens == case.emulator.reported.output_tokens > 0
    assert sent_tool_names(case.provider, case.emulator.requests[-1].json) == ["get_weather"]


def test_chat_returns_several_tool_calls_in_order(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(Reply(tool_calls=[("get_weather", {"city": "Oslo"}), ("lookup", {"q": "fjords"})]))

    reply = broker.chat(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL, LOOKUP_TOOL])

    assert [c.name for c in reply.tool_calls] == ["get_weather", "lookup"]
    assert [c.parsed_arguments() for c in reply.tool_calls] == [{"city": "Oslo"}, {"q": "fjords"}]
    assert len({c.id for c in reply.tool_calls}) == 2


def test_stream_assembles_the_tool_call(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(Reply(tool_calls=[("get_weather", {"city": "Lima", "unit": "fahrenheit"})]))

    events = list(broker.stream(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL]))

    assert any(e.tool_calls for e in events[:-1])
    final = events[-1].response
    (call,) = final.tool_calls
    assert call.id and call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Lima", "unit": "fahrenheit"}
    assert final.finish_reason == "tool_calls"
    assert events[-1].usage.output_tokens == case.emulator.reported.output_tokens > 0


def test_stream_assembles_several_tool_calls(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(Reply(tool_calls=[("get_weather", {"city": "Oslo"}), ("lookup", {"q": "fjords"})]))

    final = list(broker.stream(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL, LOOKUP_TOOL]))[
        -1
    ].response

    assert [(c.name, c.parsed_arguments()) for c in final.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("lookup", {"q": "fjords"}),
    ]


def test_tool_result_round_trip(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(Reply(tool_calls=[("get_weather", {"city": "Rome"})]))
    first = broker.chat(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL])
    (call,) = first.tool_calls

    conversation = [
        *MESSAGES,
        first.message,
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny and 24 degrees"},
    ]
    second = broker.chat(model=case.model, messages=conversation, tools=[WEATHER_TOOL])

    assert second.tool_calls == () and second.finish_reason == "stop"
    assert second.text.endswith("You said: Sunny and 24 degrees")  # the tool result reached the provider
    assert len(case.emulator.requests) == 2
