"""Bedrock adapter: pure translation units, then real boto3 against the loopback Bedrock emulator."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from adapters import bedrock_shape
from adapters.bedrock import BedrockAdapter, error_from_code
from broker.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    CredentialsError,
    InvalidRequest,
    ModelNotAvailable,
    PolicyError,
    ProtocolError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import Route
from broker.testing.bedrock import BedrockEmulator, encode_event, encode_message
from broker.testing.server import Reply
from broker.transport import HttpClients
from broker.types import ChatRequest, StreamEvent, ToolCallDelta

MODEL = "us.meta.llama3-3-70b-instruct-v1:0"
LLAMA4 = "us.meta.llama4-scout-17b-instruct-v1:0"
PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def req(*messages: Any, **params: Any) -> ChatRequest:
    msgs = list(messages) or [{"role": "user", "content": "hi there"}]
    return ChatRequest(model="llama-3.3-70b", messages=msgs, **params)


def make_route(emu: BedrockEmulator | None = None, model_id: str = MODEL, **kw: Any) -> Route:
    fields: dict[str, Any] = {"id": "bedrock-us", "provider": "bedrock", "model": "llama-3.3-70b",
                              "model_id": model_id, "region": "us-east-2", "jurisdiction": "us",
                              "endpoint": emu.url if emu else None, "timeout_s": 5.0, **kw}
    return Route(**fields)


def tool_calls_of(events: list[StreamEvent]) -> dict[int, ToolCallDelta]:
    joined: dict[int, ToolCallDelta] = {}
    for piece in (p for e in events for p in e.tool_calls):
        old = joined.get(piece.index, ToolCallDelta(piece.index))
        joined[piece.index] = ToolCallDelta(piece.index, old.id or piece.id, old.name or piece.name,
                                            old.arguments + piece.arguments)
    return joined


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")


@pytest.fixture(scope="module")
def server() -> Any:
    with BedrockEmulator() as emulator:  # one server per module: stopping one costs up to half a second
        yield emulator


@pytest.fixture
def emu(server: BedrockEmulator) -> Any:
    server.reset()
    server.access_key_id, server.known_models, server.chunk_delay_s, server.latency_s = "AKIDFAKE", None, 0.0, 0.0
    return server


@pytest.fixture(scope="module")
def shared_adapter(server: BedrockEmulator) -> Any:
    """One adapter (one boto3 client: building one takes ~50 ms) for the tests on the default route."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
        a = BedrockAdapter(make_route(server), http=HttpClients())
        assert a.client is not None  # credentials are resolved when the client is built
    yield a
    a.close()


@pytest.fixture
def adapter(shared_adapter: BedrockAdapter, emu: BedrockEmulator) -> BedrockAdapter:
    return shared_adapter


# =========================================================================== pure translation


def test_request_hoists_system_merges_roles_and_sets_inference_config() -> None:
    kw = bedrock_shape.to_provider_request(req(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": ""}]},
        {"role": "developer", "content": "No emojis."},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "third"},
        max_tokens=50, temperature=0.2, top_p=0.9, stop="END", seed=7,
    ), MODEL)
    assert kw["modelId"] == MODEL
    assert kw["system"] == [{"text": "Be brief."}, {"text": "No emojis."}]
    assert kw["messages"] == [
        {"role": "user", "content": [{"text": "first"}, {"text": "second"}]},
        {"role": "assistant", "content": [{"text": "ok"}]},
        {"role": "user", "content": [{"text": "third"}]},
    ]
    assert kw["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    assert "seed" not in json.dumps(kw) and "toolConfig" not in kw


def test_request_tool_calls_and_consecutive_results_become_blocks() -> None:
    kw = bedrock_shape.to_provider_request(req(
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "rain"},
        tools=[WEATHER], tool_choice="auto",
    ), MODEL)
    assert kw["messages"][1] == {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
        {"toolUse": {"toolUseId": "t2", "name": "get_weather", "input": {"city": "Rome"}}}]}
    assert kw["messages"][2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}},
        {"toolResult": {"toolUseId": "t2", "content": [{"text": "rain"}]}}]}
    spec = kw["toolConfig"]["tools"][0]["toolSpec"]
    assert spec == {"name": "get_weather", "description": "Weather by city",
                    "inputSchema": {"json": WEATHER["function"]["parameters"]}}
    assert kw["toolConfig"]["toolChoice"] == {"auto": {}}


@pytest.mark.parametrize(("choice", "expected"), [
    ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    (None, None),
])
def test_tool_choice_translation(choice: Any, expected: Any) -> None:
    kw = bedrock_shape.to_provider_request(req(tools=[WEATHER], tool_choice=choice), MODEL)
    assert kw["toolConfig"].get("toolChoice") == expected


def test_tool_choice_none_sends_no_tool_config() -> None:
    assert "toolConfig" not in bedrock_shape.to_provider_request(req(tools=[WEATHER], tool_choice="none"), MODEL)


def test_json_mode_adds_a_system_instruction_with_the_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    kw = bedrock_shape.to_provider_request(
        req(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}), MODEL)
    assert kw["system"][-1]["text"].startswith(bedrock_shape.JSON_INSTRUCTION)
    assert json.dumps(schema) in kw["system"][-1]["text"]


def test_image_data_url_is_decoded_to_bytes() -> None:
    kw = bedrock_shape.to_provider_request(req({"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]}), MODEL)
    assert kw["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert bedrock_shape.image_block("data:image/jpg;base64,AAAA")["image"]["format"] == "jpeg"


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "data:image/tiff;base64,AAAA",
                                 "data:image/png;base64,%%%not-base64"])
def test_unusable_image_urls_are_invalid_requests(url: str) -> None:
    with pytest.raises(InvalidRequest):
        bedrock_shape.image_block(url)


def test_tool_call_arguments_that_are_not_json_are_invalid() -> None:
    bad = {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}]}
    with pytest.raises(InvalidRequest, match="not JSON"):
        bedrock_shape.to_provider_request(req({"role": "user", "content": "x"}, bad), MODEL)


def test_tool_message_without_id_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="tool_call_id"):
        bedrock_shape.to_provider_request(req({"role": "user", "content": "x"}, {"role": "tool", "content": "y"}), MODEL)


def test_response_translation_text_tools_usage_latency() -> None:
    raw = {"ResponseMetadata": {"RequestId": "rid-1", "HTTPStatusCode": 200},
           "output": {"message": {"role": "assistant", "content": [
               {"text": "Let me "}, {"text": "check."},
               {"toolUse": {"toolUseId": "tu1", "name": "get_weather", "input": {"city": "Oslo"}}}]}},
           "stopReason": "tool_use", "metrics": {"latencyMs": 321},
           "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 25, "cacheReadInputTokens": 8,
                     "cacheWriteInputTokens": 2}}
    r = bedrock_shape.from_provider_response(raw, provider="bedrock", route_id="r")
    assert r.text == "Let me check." and r.finish_reason == "tool_calls"
    assert r.tool_calls[0].id == "tu1" and r.tool_calls[0].parsed_arguments() == {"city": "Oslo"}
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.cached_input_tokens) == (20, 5, 8)
    assert r.provider_request_id == "rid-1" and r.provider_latency_ms == 321.0


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("stop_sequence", "stop"),
                                              ("max_tokens", "length"), ("tool_use", "tool_calls")])
def test_stop_reasons_map_to_finish_reasons(stop: str, finish: str) -> None:
    assert bedrock_shape.finish_reason_for(stop, provider="bedrock", route_id="r") == finish


@pytest.mark.parametrize(("stop", "error"), [("guardrail_intervened", ContentFiltered),
                                             ("content_filtered", ContentFiltered),
                                             ("malformed_model_output", ProtocolError)])
def test_filtered_and_malformed_stop_reasons_raise(stop: str, error: type) -> None:
    with pytest.raises(error):
        bedrock_shape.finish_reason_for(stop, provider="bedrock", route_id="r")


@pytest.mark.parametrize("raw", [{"message": '{"output": {"mess'}, {"output": {}, "stopReason": "end_turn"},
                                 {"output": {"message": {"content": []}}, "stopReason": "end_turn", "usage": {}}])
def test_unreadable_response_is_protocol_error(raw: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        bedrock_shape.from_provider_response(raw, provider="bedrock", route_id="r")


def test_stream_state_reads_events_and_knows_completeness() -> None:
    state = bedrock_shape.StreamState("bedrock", "r", "rid")
    raw = [{"messageStart": {"role": "assistant"}},
           {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}},
           {"contentBlockStop": {"contentBlockIndex": 0}},
           {"contentBlockStart": {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "a", "name": "f"}}}},
           {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"x":'}}}},
           {"contentBlockStart": {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "b", "name": "g"}}}},
           {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}},
           {"messageStop": {"stopReason": "tool_use"}}]
    events = [e for r in raw for e in state.events(r)]
    with pytest.raises(ProtocolError, match="metadata"):
        state.check_complete()
    events += state.events({"metadata": {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7},
                                         "metrics": {"latencyMs": 9}}})
    state.check_complete()
    assert "".join(e.text for e in events) == "Hi"
    calls = tool_calls_of(events)
    assert (calls[0].id, calls[0].name, calls[0].arguments) == ("a", "f", '{"x":1}')
    assert (calls[1].id, calls[1].name) == ("b", "g")
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].usage is not None and events[-1].usage.total_tokens == 7
    assert events[-1].provider_latency_ms == 9.0 and all(e.provider_request_id == "rid" for e in events)


@pytest.mark.parametrize(("code", "status", "error"), [
    ("ThrottlingException", 429, Throttled), ("throttlingException", None, Throttled),
    ("TooManyRequestsException", 429, Throttled), ("ServiceQuotaExceededException", 400, Throttled),
    ("ModelNotReadyException", 429, Unavailable), ("InternalServerException", 500, Unavailable),
    ("ServiceUnavailableException", 503, Unavailable), ("ModelErrorException", 424, Unavailable),
    ("modelStreamErrorException", None, Unavailable), ("ModelTimeoutException", 408, Timeout),
    ("ValidationException", 400, InvalidRequest), ("AccessDeniedException", 403, AuthError),
    ("UnrecognizedClientException", 403, AuthError), ("ExpiredTokenException", 403, AuthError),
    ("ResourceNotFoundException", 404, ModelNotAvailable),
    ("SomethingNewException", 502, Unavailable), ("SomethingNewException", 418, InvalidRequest),
    ("SomethingNewException", None, Unavailable),
])
def test_error_code_table(code: str, status: int | None, error: type) -> None:
    err = error_from_code(code, "boom", status=status, request_id="rid", route_id="r")
    assert type(err) is error
    assert (err.code, err.status, err.request_id, err.route_id, err.provider) == (code, status, "rid", "r", "bedrock")


@pytest.mark.parametrize("message", ["Input is too long for requested model.",
                                     "This model's maximum context length is 131072 tokens.",
                                     "The input exceeds the context window of the model"])
def test_validation_about_length_is_context_too_long(message: str) -> None:
    assert isinstance(error_from_code("ValidationException", message, status=400), ContextTooLong)
    assert type(error_from_code("ValidationException", "temperature must be <= 1", status=400)) is InvalidRequest


def test_throttle_retry_after_from_amz_header_in_ms_or_retry_after() -> None:
    assert error_from_code("ThrottlingException", "", status=429, headers={"x-amz-retry-after": "2500"}).retry_after == 2.5
    assert error_from_code("ThrottlingException", "", status=429, headers={"Retry-After": "3"}).retry_after == 3.0


def test_fallback_events_give_one_delta_finish_and_usage() -> None:
    raw = {"output": {"message": {"content": [{"text": "all at once"}]}}, "stopReason": "end_turn",
           "usage": {"inputTokens": 1, "outputTokens": 3, "totalTokens": 4}, "metrics": {"latencyMs": 5}}
    events = bedrock_shape.fallback_events(bedrock_shape.from_provider_response(raw, provider="b", route_id="r"))
    assert [e.text for e in events] == ["all at once", "", ""]
    assert events[1].finish_reason == "stop" and events[2].usage is not None and events[2].usage.output_tokens == 3


def test_event_stream_encoder_decodes_with_botocore() -> None:
    from botocore.eventstream import EventStreamBuffer

    buf = EventStreamBuffer()
    buf.add_data(encode_event("contentBlockDelta", {"delta": {"text": "Hé"}}) + encode_message({"a": "b"}, b""))
    first, second = list(buf)
    assert first.headers[":event-type"] == "contentBlockDelta"
    assert json.loads(first.payload) == {"delta": {"text": "Hé"}}
    assert second.headers == {"a": "b"} and second.payload == b""


def test_importing_the_adapter_does_not_import_boto3() -> None:
    code = "import sys, adapters.bedrock, broker.testing.bedrock; assert 'boto3' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_route_without_region_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="region"):
        BedrockAdapter(make_route(region=None), http=HttpClients())


# =========================================================================== real boto3 over loopback


def test_chat_signs_with_the_env_chain_and_returns_usage_latency_request_id(
    adapter: BedrockAdapter, emu: BedrockEmulator
) -> None:
    r = adapter.chat(req({"role": "user", "content": "hi there"}))
    assert r.text.endswith("You said: hi there") and r.finish_reason == "stop"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (emu.reported.input_tokens, emu.reported.output_tokens)
    assert r.usage.output_tokens > 0 and not r.usage.estimated
    assert r.provider_latency_ms == float(r.usage.output_tokens)  # the emulator's latencyMs
    assert r.provider_request_id and len(r.provider_request_id) == 36
    (sent,) = emu.requests
    assert sent.path == "/model/us.meta.llama3-3-70b-instruct-v1%3A0/converse"
    assert "Credential=AKIDFAKE/" in sent.headers["Authorization"] and "/us-east-2/bedrock/" in sent.headers["Authorization"]


def test_system_prompt_and_multi_turn_arrive_in_converse_shape(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    adapter.chat(req({"role": "system", "content": "You are terse."}, {"role": "user", "content": "One"},
                     {"role": "user", "content": "Two"}, {"role": "assistant", "content": "Yes?"},
                     {"role": "user", "content": "Three"}, max_tokens=64, temperature=0.1))
    body = emu.requests[0].json
    assert body["system"] == [{"text": "You are terse."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": "One"}, {"text": "Two"}]
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.1}


def test_stream_delivers_text_incrementally_then_finish_and_usage(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.chunk_delay_s = 0.15
    start = time.monotonic()
    arrivals: list[tuple[float, StreamEvent]] = [(time.monotonic() - start, e) for e in adapter.stream(req())]
    texts = [(t, e.text) for t, e in arrivals if e.text]
    assert len(texts) >= 3
    assert texts[0][0] < arrivals[-1][0] - 0.3  # the first token came well before the end
    assert "".join(t for _, t in texts).endswith("You said: hi there")
    finish = [e.finish_reason for _, e in arrivals if e.finish_reason]
    usage = arrivals[-1][1].usage
    assert finish == ["stop"] and usage is not None
    assert (usage.input_tokens, usage.output_tokens, emu.reported.calls) == (
        emu.reported.input_tokens, emu.reported.output_tokens, 1)
    assert arrivals[-1][1].provider_latency_ms == float(usage.output_tokens)
    assert emu.requests[0].path.endswith("/converse-stream")


def test_tool_call_sync(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Paris"})]))
    r = adapter.chat(req({"role": "user", "content": "weather in Paris?"}, tools=[WEATHER], tool_choice="auto"))
    assert r.finish_reason == "tool_calls" and r.text == ""
    (call,) = r.tool_calls
    assert call.name == "get_weather" and call.parsed_arguments() == {"city": "Paris"} and call.id
    assert emu.requests[0].json["toolConfig"]["toolChoice"] == {"auto": {}}


def test_tool_call_stream(emu: BedrockEmulator, aws_env: None) -> None:
    # a Bedrock model that streams with tools (no Llama does: see test_bedrock_service_rules)
    adapter = BedrockAdapter(make_route(emu, model_id="mistral.mistral-large-2407-v1:0"), http=HttpClients())
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]))
    events = list(adapter.stream(req({"role": "user", "content": "weather?"}, tools=[WEATHER])))
    assert emu.requests[0].path.endswith("/converse-stream")
    calls = tool_calls_of(events)
    assert [json.loads(calls[i].arguments) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Rome"}]
    assert calls[0].name == "get_weather" and calls[0].id != calls[1].id
    assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert sum(len(e.tool_calls) for e in events) == 6  # start + two argument pieces per call


def test_tool_results_round_trip_is_accepted(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    r = adapter.chat(req(
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": "rain"},
        tools=[WEATHER]))
    assert "sunny rain" in r.text  # the emulator echoes the last (merged) user turn
    assert [m["role"] for m in emu.requests[0].json["messages"]] == ["user", "assistant", "user"]


def test_image_data_url_is_sent_as_bytes(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    adapter.chat(req({"role": "user", "content": [{"type": "text", "text": "describe"},
                                                  {"type": "image_url", "image_url": {"url": PNG_URL}}]}))
    image = emu.requests[0].json["messages"][0]["content"][1]["image"]
    assert image["format"] == "png" and base64.b64decode(image["source"]["bytes"]) == PNG


def test_http_image_url_is_refused_before_any_request(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    with pytest.raises(InvalidRequest) as info:
        adapter.chat(req({"role": "user", "content": [{"type": "image_url", "image_url": "https://x.test/a.png"}]}))
    assert info.value.route_id == "bedrock-us" and emu.requests == []


def test_json_mode_answer_is_json(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    r = adapter.chat(req(response_format={"type": "json_object"}))
    assert isinstance(json.loads(r.text), dict)
    assert emu.requests[0].json["system"][-1]["text"] == bedrock_shape.JSON_INSTRUCTION


def test_max_tokens_cut_is_finish_length(adapter: BedrockAdapter) -> None:
    assert adapter.chat(req(max_tokens=3)).finish_reason == "length"


@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_guardrail_stop_is_content_filtered(adapter: BedrockAdapter, emu: BedrockEmulator, mode: str) -> None:
    emu.enqueue(Reply(text="partial answer", finish_reason="guardrail_intervened"))
    with pytest.raises(ContentFiltered) as info:
        adapter.chat(req()) if mode == "chat" else list(adapter.stream(req()))
    assert info.value.code == "guardrail_intervened" and not info.value.retryable


FAULTS = [
    ({"status": 429, "retry_after": 1.5}, Throttled, "ThrottlingException"),
    ({"status": 500}, Unavailable, "InternalServerException"),
    ({"status": 503}, Unavailable, "ServiceUnavailableException"),
    ({"status": 424}, Unavailable, "ModelErrorException"),
    ({"status": 429, "code": "ModelNotReadyException"}, Unavailable, "ModelNotReadyException"),
    ({"status": 400, "code": "ServiceQuotaExceededException"}, Throttled, "ServiceQuotaExceededException"),
    ({"status": 408}, Timeout, "ModelTimeoutException"),
    ({"status": 400, "message": "Malformed input request: temperature"}, InvalidRequest, "ValidationException"),
    ({"status": 400, "message": "Input is too long for requested model."}, ContextTooLong, "ValidationException"),
    ({"status": 403}, AuthError, "AccessDeniedException"),
    ({"status": 404}, ModelNotAvailable, "ResourceNotFoundException"),
]


@pytest.mark.parametrize("mode", ["chat", "stream"])
@pytest.mark.parametrize(("fault", "error", "code"), FAULTS, ids=[f"{f['status']}-{c}" for f, _, c in FAULTS])
def test_injected_http_errors_map_to_typed_errors_with_one_request(
    adapter: BedrockAdapter, emu: BedrockEmulator, mode: str, fault: dict[str, Any], error: type, code: str
) -> None:
    fault = dict(fault)
    status = fault.pop("status")
    emu.fail(status, **fault)
    with pytest.raises(error) as info:
        adapter.chat(req()) if mode == "chat" else list(adapter.stream(req()))
    err = info.value
    assert type(err) is error
    assert (err.status, err.code, err.provider, err.route_id) == (status, code, "bedrock", "bedrock-us")
    assert err.request_id and len(emu.requests) == 1  # botocore retries are off
    assert err.retry_after == (1.5 if "retry_after" in fault else None)
    assert "fake-secret" not in str(err)


def test_unknown_model_is_model_not_available(emu: BedrockEmulator, aws_env: None) -> None:
    emu.known_models = [MODEL]
    ok = BedrockAdapter(make_route(emu), http=HttpClients()).chat(req())
    with pytest.raises(ModelNotAvailable) as info:
        BedrockAdapter(make_route(emu, model_id="meta.llama3-1-405b-instruct-v1:0"), http=HttpClients()).chat(req())
    # as the service answers: 400 ValidationException, which is a property of the route (fails over)
    assert ok.text and info.value.status == 400 and info.value.code == "ValidationException"
    assert "model identifier is invalid" in info.value.message and info.value.failover


@pytest.mark.parametrize(("code", "error"), [("throttlingException", Throttled),
                                             ("modelStreamErrorException", Unavailable),
                                             ("validationException", InvalidRequest),
                                             ("internalServerException", Unavailable)])
def test_mid_stream_exception_after_text(adapter: BedrockAdapter, emu: BedrockEmulator, code: str, error: type) -> None:
    emu.stream_exception(code, after=2)
    got: list[StreamEvent] = []
    with pytest.raises(error) as info:
        for event in adapter.stream(req()):
            got.append(event)
    assert [e.text for e in got] == ["Hello from the "]
    assert type(info.value) is error and info.value.code == code and info.value.request_id
    assert emu.reported.calls == 0 and len(emu.requests) == 1


def test_stream_exception_drawn_by_converse_is_an_http_error(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.stream_exception("throttlingException")
    with pytest.raises(Throttled) as info:
        adapter.chat(req())
    assert (info.value.status, info.value.code) == (429, "ThrottlingException")


def test_cut_stream_is_protocol_error(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.cut_stream(after=3)
    got: list[StreamEvent] = []
    with pytest.raises(ProtocolError):
        for event in adapter.stream(req()):
            got.append(event)
    assert "".join(e.text for e in got) and not any(e.usage for e in got)
    assert emu.reported.calls == 0


@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_malformed_answer_is_protocol_error(adapter: BedrockAdapter, emu: BedrockEmulator, mode: str) -> None:
    emu.malformed()
    with pytest.raises(ProtocolError) as info:
        adapter.chat(req()) if mode == "chat" else list(adapter.stream(req()))
    assert info.value.retryable and len(emu.requests) == 1


@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_slow_answer_is_timeout(emu: BedrockEmulator, aws_env: None, mode: str) -> None:
    adapter = BedrockAdapter(make_route(emu, timeout_s=0.3), http=HttpClients())
    emu.delay(1.0)
    with pytest.raises(Timeout):
        adapter.chat(req()) if mode == "chat" else list(adapter.stream(req()))
    assert len(emu.requests) == 1


def test_stall_between_events_is_timeout(emu: BedrockEmulator, aws_env: None) -> None:
    emu.chunk_delay_s = 0.5
    adapter = BedrockAdapter(make_route(emu, timeout_s=0.2), http=HttpClients())
    got: list[StreamEvent] = []
    with pytest.raises(Timeout):
        for event in adapter.stream(req()):
            got.append(event)
    assert emu.requests[0].path.endswith("/converse-stream") and not any(e.usage for e in got)


def test_connection_refused_is_unavailable(aws_env: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    route = make_route(endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(Unavailable):
        BedrockAdapter(route, http=HttpClients()).chat(req())


def test_missing_credentials_is_auth_error_without_a_request(emu: BedrockEmulator) -> None:
    with pytest.raises(AuthError, match="NoCredentialsError"):
        BedrockAdapter(make_route(emu), http=HttpClients()).chat(req())
    assert emu.requests == []


def test_unknown_key_is_auth_error(emu: BedrockEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDOTHER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "other")
    with pytest.raises(AuthError) as info:
        BedrockAdapter(make_route(emu), http=HttpClients()).chat(req())
    assert info.value.code == "UnrecognizedClientException" and info.value.status == 403


def test_profile_option_reads_the_shared_credentials_file(
    emu: BedrockEmulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("[work]\naws_access_key_id = AKIDWORK\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    emu.access_key_id = "AKIDWORK"
    assert BedrockAdapter(make_route(emu, options={"profile": "work"}), http=HttpClients()).chat(req()).text
    with pytest.raises(CredentialsError, match="nope"):
        BedrockAdapter(make_route(emu, options={"profile": "nope"}), http=HttpClients()).chat(req())


def test_injected_client_is_used_and_not_closed(emu: BedrockEmulator) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client("bedrock-runtime", region_name="us-west-2", endpoint_url=emu.url,
                          aws_access_key_id="AKIDFAKE", aws_secret_access_key="x",
                          config=Config(retries={"total_max_attempts": 1}))
    adapter = BedrockAdapter(make_route(region=None), http=HttpClients(), client=client)
    assert adapter.chat(req()).text
    adapter.close()
    assert adapter.client is client and "/us-west-2/" in emu.requests[0].headers["Authorization"]


def test_reported_usage_equals_returned_usage_over_many_calls(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    total_in = total_out = 0
    for i in range(3):
        r = adapter.chat(req({"role": "user", "content": f"question number {i} " * (i + 1)}))
        total_in, total_out = total_in + r.usage.input_tokens, total_out + r.usage.output_tokens
        usage = [e.usage for e in adapter.stream(req()) if e.usage][0]
        total_in, total_out = total_in + usage.input_tokens, total_out + usage.output_tokens
    assert (emu.reported.calls, emu.reported.input_tokens, emu.reported.output_tokens) == (6, total_in, total_out)


async def test_async_chat_runs_concurrently(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.latency_s = 0.3
    start = time.monotonic()
    results = await asyncio.gather(*(adapter.achat(req()) for _ in range(5)))
    elapsed = time.monotonic() - start
    assert all(r.text for r in results) and len(emu.requests) == 5
    assert elapsed < 1.2  # five 0.3 s calls overlapped
    assert sum(r.usage.output_tokens for r in results) == emu.reported.output_tokens


async def test_async_stream_is_incremental_and_ends_with_usage(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.chunk_delay_s = 0.15
    start = time.monotonic()
    arrivals = [(time.monotonic() - start, e) async for e in adapter.astream(req())]
    first_text = next(t for t, e in arrivals if e.text)
    assert first_text < arrivals[-1][0] - 0.3
    usage = arrivals[-1][1].usage
    assert usage is not None and usage.output_tokens == emu.reported.output_tokens


async def test_async_stream_raises_mapped_errors(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    emu.stream_exception("throttlingException", after=2)
    got: list[StreamEvent] = []
    with pytest.raises(Throttled):
        async for event in adapter.astream(req()):
            got.append(event)
    assert got and got[0].text


async def test_async_stream_consumer_may_stop_early(adapter: BedrockAdapter, emu: BedrockEmulator) -> None:
    async for event in adapter.astream(req()):
        assert event.text
        break
    assert (await adapter.achat(req())).text


def test_llama4_streams_natively_without_tools(emu: BedrockEmulator, aws_env: None) -> None:
    adapter = BedrockAdapter(make_route(emu, model_id=LLAMA4, capabilities={"streaming_tools": False}),
                             http=HttpClients())
    events = list(adapter.stream(req()))
    (path,) = [r.path for r in emu.requests]
    assert path.endswith("/converse-stream")
    assert len([e for e in events if e.text]) > 1 and "".join(e.text for e in events).endswith("You said: hi there")
    assert events[-1].usage is not None and events[-1].usage.output_tokens == emu.reported.output_tokens


async def test_llama4_async_stream_with_tools_is_one_converse_call(emu: BedrockEmulator, aws_env: None) -> None:
    adapter = BedrockAdapter(make_route(emu, model_id=LLAMA4, capabilities={"streaming_tools": False}),
                             http=HttpClients())
    events = [e async for e in adapter.astream(req(tools=[WEATHER]))]
    assert [e.text for e in events if e.text] and events[-1].usage is not None
    assert [r.path.rsplit("/", 1)[-1] for r in emu.requests] == ["converse"]


# --------------------------------------------------------------------------- malformed answers

_GOOD = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
         "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}


def _converse(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(_GOOD)), **changes}


MALFORMED_CONVERSE = {
    "a list": [_GOOD],
    "no output": _converse(output=None),
    "output without message": _converse(output={}),
    "message null": _converse(output={"message": None}),
    "content not a list": _converse(output={"message": {"content": "hi"}}),
    "block not an object": _converse(output={"message": {"content": ["hi"]}}),
    "text a number": _converse(output={"message": {"content": [{"text": 42}]}}),
    "toolUse not an object": _converse(output={"message": {"content": [{"toolUse": "f"}]}}),
    "toolUse without name": _converse(output={"message": {"content": [{"toolUse": {"toolUseId": "a"}}]}}),
    "no stopReason": {k: v for k, v in _GOOD.items() if k != "stopReason"},
    "stopReason a number": _converse(stopReason=3),
    "usage not an object": _converse(usage="4"),
    "usage without outputTokens": _converse(usage={"inputTokens": 3}),
    "inputTokens a float": _converse(usage={"inputTokens": 1e300, "outputTokens": 1}),
    "outputTokens a string": _converse(usage={"inputTokens": 1, "outputTokens": "12"}),
    "outputTokens a boolean": _converse(usage={"inputTokens": 1, "outputTokens": False}),
    "cache reads a string": _converse(usage={"inputTokens": 1, "outputTokens": 1, "cacheReadInputTokens": "2"}),
}


@pytest.mark.parametrize("name", list(MALFORMED_CONVERSE))
def test_a_malformed_converse_answer_is_a_protocol_error(name: str) -> None:
    with pytest.raises(ProtocolError, match="unreadable Converse answer") as info:
        bedrock_shape.from_provider_response(MALFORMED_CONVERSE[name], provider="bedrock", route_id="r")
    assert (info.value.provider, info.value.route_id) == ("bedrock", "r")


def test_converse_counts_pass_through_and_a_missing_usage_is_estimated() -> None:
    huge = _converse(usage={"inputTokens": 2**63, "outputTokens": -1000})
    usage = bedrock_shape.from_provider_response(huge, provider="b", route_id="r").usage
    assert (usage.input_tokens, usage.output_tokens) == (2**63, -1000)  # the core judges the range
    no_usage = {k: v for k, v in _GOOD.items() if k != "usage"}
    assert bedrock_shape.from_provider_response(no_usage, provider="b", route_id="r").usage.estimated
    empty = _converse(output={"message": {"role": "assistant", "content": []}}, metrics={"latencyMs": "soon"})
    answer = bedrock_shape.from_provider_response(empty, provider="b", route_id="r")
    assert (answer.text, answer.finish_reason, answer.provider_latency_ms) == ("", "stop", None)


MALFORMED_EVENTS = {
    "not an object": ["contentBlockDelta"],
    "delta body not an object": {"contentBlockDelta": "hi"},
    "no delta (what botocore makes of a payload that is not JSON)": {"contentBlockDelta": {}},
    "null delta": {"contentBlockDelta": {"contentBlockIndex": 0, "delta": None}},
    "text a number": {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": 42}}},
    "tool input a number": {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 1}}}},
    "index a string": {"contentBlockDelta": {"contentBlockIndex": "1", "delta": {"toolUse": {"input": "{"}}}},
    "tool start without id": {"contentBlockStart": {"contentBlockIndex": 1, "start": {"toolUse": {"name": "f"}}}},
    "messageStop without stopReason": {"messageStop": {}},
    "usage count a float": {"metadata": {"usage": {"inputTokens": 1e300, "outputTokens": 1}}},
    "usage a list": {"metadata": {"usage": [1, 2]}},
}


@pytest.mark.parametrize("name", list(MALFORMED_EVENTS))
def test_a_malformed_stream_event_is_a_protocol_error(name: str) -> None:
    state = bedrock_shape.StreamState("bedrock", "r", "rid")
    with pytest.raises(ProtocolError, match="unreadable ConverseStream event") as info:
        state.events(MALFORMED_EVENTS[name])
    assert (info.value.provider, info.value.route_id, info.value.request_id) == ("bedrock", "r", "rid")


def test_a_metadata_event_without_usage_completes_the_stream_with_usage_left_to_estimate() -> None:
    state = bedrock_shape.StreamState("bedrock", "r")
    assert state.events({"messageStop": {"stopReason": "end_turn"}})[0].finish_reason == "stop"
    assert state.events({"metadata": {"metrics": {"latencyMs": 3}}}) == []
    state.check_complete()
    reasoning = {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}}}
    assert state.events(reasoning) == []  # other delta kinds are not part of a chat answer


@pytest.mark.parametrize("mode", ["chat", "stream"])
@pytest.mark.parametrize("kind", ["json_list", "invalid_utf8", "not_json", "html_page", "null_message"])
def test_answers_botocore_cannot_parse_are_protocol_errors(
    adapter: BedrockAdapter, emu: BedrockEmulator, kind: str, mode: str
) -> None:
    emu.malformed(kind)
    with pytest.raises(ProtocolError) as info:
        adapter.chat(req()) if mode == "chat" else list(adapter.stream(req()))
    assert info.value.route_id == "bedrock-us"


def test_only_exceptions_raised_inside_botocores_parsers_are_mapped(adapter: BedrockAdapter) -> None:
    try:
        None.get("x")  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert adapter._map(exc, None) is None  # a bug in our own code stays a bug
