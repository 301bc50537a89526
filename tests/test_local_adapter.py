"""The local-runner adapter over real HTTP against the OpenAI-compatible emulator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from adapters import openai_shape
from adapters.local import LocalAdapter
from broker.errors import (
    AuthError,
    ContextTooLong,
    InvalidRequest,
    ModelNotAvailable,
    PolicyError,
    ProtocolError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import Route
from broker.streaming import StreamAccumulator
from broker.testing import OpenAICompatEmulator, Reply, openai_compat
from broker.transport import HttpClients, TransportOptions
from broker.types import ChatRequest

TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


def make_route(emu: OpenAICompatEmulator, **kw: object) -> Route:
    fields = {"id": "local-a", "provider": "local", "model": "llama-3.1-8b", "model_id": "llama-8b",
              "jurisdiction": "on-prem", "endpoint": f"{emu.url}/v1", "timeout_s": 5.0}
    fields.update(kw)
    return Route(**fields)  # type: ignore[arg-type]


@pytest.fixture
def emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as e:
        yield e


@pytest.fixture
def adapter(emu: OpenAICompatEmulator) -> Iterator[LocalAdapter]:
    a = LocalAdapter(make_route(emu), http=HttpClients())
    yield a
    a.close()
    a.http.close()


def req(text: str = "Hello there, runner!", **kw: object) -> ChatRequest:
    return ChatRequest(model="llama-3.1-8b", messages=[{"role": "user", "content": text}], **kw)  # type: ignore[arg-type]


def test_chat_returns_text_and_the_usage_the_server_reported(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    reply = adapter.chat(req())
    assert "local emulator" in reply.text
    assert reply.finish_reason == "stop"
    assert reply.usage.input_tokens == emu.reported.input_tokens > 0
    assert reply.usage.output_tokens == emu.reported.output_tokens > 0
    assert not reply.usage.estimated
    body = emu.requests[-1].json
    assert body["model"] == "llama-8b" and body["messages"][0]["content"] == "Hello there, runner!"
    assert emu.requests[-1].path == "/v1/chat/completions"


def test_parameters_are_sent_on_the_wire(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    adapter.chat(req(max_tokens=50, temperature=0.2, top_p=0.9, stop="END", seed=7))
    body = emu.requests[-1].json
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (50, 0.2, 0.9, ["END"], 7)


def test_stream_delivers_deltas_then_usage(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    events = list(adapter.stream(req()))
    text = "".join(e.text for e in events)
    assert text.startswith("Hello from the local emulator")
    assert len([e for e in events if e.text]) > 1
    usage = [e.usage for e in events if e.usage]
    assert usage and usage[-1].output_tokens == emu.reported.output_tokens
    assert emu.requests[-1].json["stream_options"] == {"include_usage": True}


def test_stream_is_incremental(emu: OpenAICompatEmulator) -> None:
    emu.chunk_delay_s = 0.15
    a = LocalAdapter(make_route(emu), http=HttpClients())
    start = time.perf_counter()
    arrivals = [time.perf_counter() - start for e in a.stream(req("one two three four five six seven eight nine")) if e.text]
    # the server sleeps between chunks: delivered incrementally, the first text arrives well before the last
    assert arrivals[-1] - arrivals[0] >= 0.3


def test_tool_calls_chat_and_stream(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    emu.enqueue(Reply(tool_calls=[("lookup", {"q": "llama"})]), Reply(tool_calls=[("lookup", {"q": "vllm"})]))
    reply = adapter.chat(req(tools=[TOOL]))
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls[0].name == "lookup" and reply.tool_calls[0].parsed_arguments() == {"q": "llama"}
    assert emu.requests[-1].json["tools"][0]["function"]["name"] == "lookup"
    acc = StreamAccumulator()
    for event in adapter.stream(req(tools=[TOOL])):
        acc.add(event)
    streamed = acc.response(req())
    assert streamed.tool_calls[0].parsed_arguments() == {"q": "vllm"}


def test_tool_results_round_trip(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    history = [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    adapter.chat(ChatRequest(model="m", messages=history, tools=[TOOL]))  # type: ignore[arg-type]
    sent = emu.requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == json.dumps({"q": "x"})
    assert sent[2] == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def test_json_mode_and_images(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    reply = adapter.chat(req(response_format={"type": "json_object"}))
    assert json.loads(reply.text)["answer"] == "ok"
    image = {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]}
    adapter.chat(ChatRequest(model="m", messages=[image]))  # type: ignore[arg-type]
    parts = emu.requests[-1].json["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (429, "slow down", Throttled),
        (500, "boom", Unavailable),
        (503, "overloaded", Unavailable),
        (504, "gateway timeout", Timeout),
        (400, "bad temperature", InvalidRequest),
        (400, "This model's maximum context length is 8192 tokens", ContextTooLong),
        (401, "bad key", AuthError),
        (404, "The model `x` does not exist", ModelNotAvailable),
    ],
)
def test_injected_status_faults_arrive_as_typed_errors(
    adapter: LocalAdapter, emu: OpenAICompatEmulator, status: int, message: str, error: type
) -> None:
    emu.fail(status, message=message, retry_after=3 if status == 429 else None)
    with pytest.raises(error) as info:
        adapter.chat(req())
    assert type(info.value) is error
    assert info.value.status == status and info.value.provider == "local" and info.value.route_id == "local-a"
    if status == 429:
        assert info.value.retry_after == 3.0
    assert len(emu.requests) == 1  # no hidden retries in the adapter


def test_fault_on_stream_start_is_typed(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    emu.fail(429, retry_after=1)
    with pytest.raises(Throttled):
        list(adapter.stream(req()))


def test_cut_stream_is_a_protocol_error(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    emu.cut_stream(after=2)
    received = []
    with pytest.raises(ProtocolError):
        for event in adapter.stream(req()):
            received.append(event)
    assert received and received[0].text is not None
    assert emu.reported.calls == 0  # the usage chunk was never sent


def test_stream_without_end_marker_is_a_protocol_error(emu: OpenAICompatEmulator) -> None:
    class NoEnd(OpenAICompatEmulator):
        def stream_chunks(self, rid, body, plan, include_usage):  # type: ignore[no-untyped-def]
            chunks = list(super().stream_chunks(rid, body, plan, include_usage))
            return chunks[:2]

    with NoEnd() as short:
        a = LocalAdapter(make_route(short), http=HttpClients())
        acc = StreamAccumulator()
        for event in a.stream(req()):  # the adapter hands on what came; the broker judges the end
            acc.add(event)
        with pytest.raises(ProtocolError, match="before the answer was complete"):
            acc.response(req())


def test_malformed_body_is_a_protocol_error(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    emu.malformed()
    with pytest.raises(ProtocolError):
        adapter.chat(req())


def test_slow_server_is_a_timeout(emu: OpenAICompatEmulator) -> None:
    emu.delay(1.0)
    a = LocalAdapter(make_route(emu, timeout_s=0.2), http=HttpClients())
    with pytest.raises(Timeout):
        a.chat(req())


def test_refused_connection_is_unavailable() -> None:
    route = Route(id="gone", provider="local", model="m", model_id="m", jurisdiction="on-prem",
                  endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(Unavailable):
        LocalAdapter(route, http=HttpClients()).chat(req())


def test_api_key_is_sent_and_never_in_errors(emu: OpenAICompatEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.api_key = "sk-secret-123"
    monkeypatch.setenv("RUNNER_KEY", "sk-wrong-456")
    a = LocalAdapter(make_route(emu, api_key_env="RUNNER_KEY"), http=HttpClients())
    with pytest.raises(AuthError) as info:
        a.chat(req())
    assert "sk-wrong-456" not in str(info.value) and "sk-wrong-456" not in repr(info.value.__dict__)
    monkeypatch.setenv("RUNNER_KEY", "sk-secret-123")
    ok = LocalAdapter(make_route(emu, api_key_env="RUNNER_KEY"), http=HttpClients())
    assert ok.chat(req()).text


def test_route_without_endpoint_is_a_policy_error() -> None:
    route = Route(id="x", provider="local", model="m", model_id="m", jurisdiction="on-prem")
    with pytest.raises(PolicyError, match="endpoint"):
        LocalAdapter(route, http=HttpClients())


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_async_chat_stream_and_faults(emu: OpenAICompatEmulator, backend: str) -> None:
    http = HttpClients(TransportOptions(async_backend=backend))  # type: ignore[arg-type]
    a = LocalAdapter(make_route(emu), http=http)
    try:
        replies = await asyncio.gather(*(a.achat(req(f"call {i}")) for i in range(20)))
        assert all("local emulator" in r.text for r in replies)
        events = [e async for e in a.astream(req())]
        assert any(e.usage for e in events) and "".join(e.text for e in events)
        emu.fail(429, retry_after=2)
        with pytest.raises(Throttled):
            await a.achat(req())
        emu.cut_stream(after=2)
        with pytest.raises(ProtocolError):
            async for _ in a.astream(req()):
                pass
        emu.malformed()
        with pytest.raises(ProtocolError):
            await a.achat(req())
    finally:
        await http.aclose()


def test_pure_translation_without_a_socket() -> None:
    body = openai_shape.request_body(req(max_tokens=9), "m", stream=True)
    assert body == {"model": "m", "messages": [{"role": "user", "content": "Hello there, runner!"}],
                    "max_tokens": 9, "stream": True, "stream_options": {"include_usage": True}}
    parsed = openai_shape.response_from_body(
        {"id": "x", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2}}},
        provider="local", route_id="r")
    assert (parsed.text, parsed.usage.input_tokens, parsed.usage.cached_input_tokens) == ("hi", 3, 2)
    no_usage = openai_shape.response_from_body(
        {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}, provider="p", route_id="r")
    assert no_usage.usage.estimated
    with pytest.raises(ProtocolError):
        openai_shape.response_from_body({"choices": []}, provider="local", route_id="r")


class _BadRetryDate(OpenAICompatEmulator):
    def error_answer(self, fault, request):  # type: ignore[no-untyped-def]
        answer = super().error_answer(fault, request)
        answer.headers["retry-after"] = "Wed, 99 Foo 2026 00:00:00 GMT"
        return answer


class _BadChunk(OpenAICompatEmulator):
    def stream_chunks(self, rid, body, plan, include_usage):  # type: ignore[no-untyped-def]
        yield openai_compat.sse({"id": rid, "choices": [{"delta": "oops", "finish_reason": None}]})
        yield openai_compat.sse("[DONE]")


class _BadUsage(OpenAICompatEmulator):
    def stream_chunks(self, rid, body, plan, include_usage):  # type: ignore[no-untyped-def]
        yield openai_compat.sse(self.chunk(rid, body, {"content": "hi"}, "stop"))
        yield openai_compat.sse({"id": rid, "choices": [], "usage": {"prompt_tokens": "n/a"}})
        yield openai_compat.sse("[DONE]")


def test_an_unreadable_retry_hint_is_ignored_not_raised() -> None:
    with _BadRetryDate() as e:
        e.fail(429)
        with pytest.raises(Throttled) as info:
            LocalAdapter(make_route(e), http=HttpClients()).chat(req())
    assert info.value.retry_after is None


@pytest.mark.parametrize("emulator", [_BadChunk, _BadUsage])
def test_malformed_stream_chunks_are_protocol_errors(emulator: type[OpenAICompatEmulator]) -> None:
    with emulator() as e:
        with pytest.raises(ProtocolError, match="unreadable stream chunk"):
            list(LocalAdapter(make_route(e), http=HttpClients()).stream(req()))


# ---------------------------------------------------------------------- malformed answers (shared converter)

_OK_CHOICE = {"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}


def _body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"id": "x", "choices": [dict(_OK_CHOICE)], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    body.update(changes)
    return body


def _choice(**changes: object) -> dict[str, object]:
    return _body(choices=[{**_OK_CHOICE, **changes}])


def _message(**changes: object) -> dict[str, object]:
    return _choice(message={"role": "assistant", "content": "hi", **changes})


MALFORMED_BODIES = {
    "not an object": ["x"],
    "text": "<html>502</html>",
    "null": None,
    "no choices key": {"id": "x", "usage": {"prompt_tokens": 1}},
    "empty choices": _body(choices=[]),
    "choices not a list": _body(choices={"0": _OK_CHOICE}),
    "choice not an object": _body(choices=["stop"]),
    "message missing": _body(choices=[{"finish_reason": "stop"}]),
    "message null": _choice(message=None),
    "message a string": _choice(message="hi"),
    "no finish reason": _choice(finish_reason=None),
    "finish reason a number": _choice(finish_reason=1),
    "content a number": _message(content=42),
    "content an object": _message(content={"text": "hi"}),
    "tool_calls not a list": _message(tool_calls={"id": "c"}),
    "tool call not an object": _message(tool_calls=["lookup"]),
    "tool call without function": _message(tool_calls=[{"id": "c"}]),
    "tool call without name": _message(tool_calls=[{"id": "c", "function": {"arguments": "{}"}}]),
    "arguments a number": _message(tool_calls=[{"id": "c", "function": {"name": "f", "arguments": 7}}]),
    "arguments a list": _message(tool_calls=[{"id": "c", "function": {"name": "f", "arguments": [1]}}]),
    "usage not an object": _body(usage=[3, 1]),
    "prompt_tokens a float": _body(usage={"prompt_tokens": 1e300, "completion_tokens": 1}),
    "prompt_tokens infinite": _body(usage={"prompt_tokens": float("inf"), "completion_tokens": 1}),
    "completion_tokens a string": _body(usage={"prompt_tokens": 1, "completion_tokens": "12"}),
    "completion_tokens a boolean": _body(usage={"prompt_tokens": 1, "completion_tokens": True}),
    "cached_tokens a string": _body(usage={"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": "2"}}),
    "timings with a float": _body(usage=None, timings={"prompt_n": 1.5, "predicted_n": 1}),
}


@pytest.mark.parametrize("name", list(MALFORMED_BODIES))
def test_a_malformed_answer_body_is_a_protocol_error(name: str) -> None:
    with pytest.raises(ProtocolError, match="unreadable chat completion") as info:
        openai_shape.response_from_body(MALFORMED_BODIES[name], provider="local", route_id="r")
    assert (info.value.provider, info.value.route_id) == ("local", "r")


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (_message(content=""), ""),  # an empty answer that finished: small models give them
        (_message(content=None), ""),  # null content (vLLM when all output went to reasoning)
        (_message(content=None, tool_calls=[{"id": "c", "function": {"name": "f", "arguments": {"q": 1}}}]), ""),
    ],
)
def test_empty_or_null_content_with_a_finish_reason_is_an_answer(body: dict[str, object], text: str) -> None:
    parsed = openai_shape.response_from_body(body, provider="local", route_id="r")
    assert parsed.text == text and parsed.finish_reason == "stop"
    if parsed.tool_calls:
        assert parsed.tool_calls[0].parsed_arguments() == {"q": 1}  # an object is written out as JSON


def test_token_counts_pass_through_unchanged_for_the_core_to_judge() -> None:
    for counts in ((2**63, 5), (-1000, -1000), (0, 0)):
        body = _body(usage={"prompt_tokens": counts[0], "completion_tokens": counts[1]})
        usage = openai_shape.response_from_body(body, provider="local", route_id="r").usage
        assert (usage.input_tokens, usage.output_tokens) == counts and not usage.estimated


def test_usage_from_llamacpp_timings_when_usage_is_missing() -> None:
    body = _body(usage=None, timings={"prompt_n": 7, "cache_n": 2, "predicted_n": 4, "predicted_ms": 1.5})
    usage = openai_shape.response_from_body(body, provider="local", route_id="r").usage
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (9, 4, 2)
    assert openai_shape.response_from_body(_body(usage=None), provider="l", route_id="r").usage.estimated


def _chunk(**changes: object) -> dict[str, object]:
    return {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None, **changes}]}


MALFORMED_CHUNKS = {
    "not an object": [1, 2],
    "no choices key": {"id": "x"},
    "choices not a list": {"id": "x", "choices": "hi"},
    "choice not an object": {"id": "x", "choices": [None]},
    "delta null before the finish": _chunk(delta=None),
    "delta missing before the finish": {"id": "x", "choices": [{"index": 0, "finish_reason": None}]},
    "delta a string": _chunk(delta="hi"),
    "content a number": _chunk(delta={"content": 42}),
    "tool_calls not a list": _chunk(delta={"tool_calls": {"index": 0}}),
    "tool call index a string": _chunk(delta={"tool_calls": [{"index": "0", "function": {"arguments": "{"}}]}),
    "tool call arguments a number": _chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": 3}}]}),
    "finish reason a number": _chunk(finish_reason=0),
    "usage a string": {"id": "x", "choices": [], "usage": "12"},
    "usage count a float": {"id": "x", "choices": [], "usage": {"prompt_tokens": 1e300}},
}


@pytest.mark.parametrize("name", list(MALFORMED_CHUNKS))
def test_a_malformed_stream_chunk_is_a_protocol_error(name: str) -> None:
    with pytest.raises(ProtocolError, match="unreadable stream chunk") as info:
        openai_shape.events_from_chunk(MALFORMED_CHUNKS[name], provider="local", route_id="r")
    assert (info.value.provider, info.value.route_id) == ("local", "r")


def test_well_formed_chunks_that_carry_little_are_read() -> None:
    final = {"id": "x", "choices": [{"index": 0, "delta": None, "finish_reason": "stop"}]}
    assert [e.finish_reason for e in openai_shape.events_from_chunk(final, provider="l", route_id="r")] == ["stop"]
    usage_only = {"id": "x", "choices": [], "usage": {"prompt_tokens": 2**63, "completion_tokens": 1}}
    (event,) = openai_shape.events_from_chunk(usage_only, provider="l", route_id="r")
    assert event.usage is not None and event.usage.input_tokens == 2**63
    assert openai_shape.events_from_chunk(_chunk(delta={"content": ""}), provider="l", route_id="r") == []


class _SplitCharacter(OpenAICompatEmulator):
    """Sends a text delta whose two-byte character is cut across two HTTP chunks."""

    def stream_chunks(self, rid, body, plan, include_usage):  # type: ignore[no-untyped-def]
        chunk = self.chunk(rid, body, {"content": "caf\u00e9 cr\u00e8me"})
        data = b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        cut = data.index("\u00e9".encode()) + 1
        yield data[:cut]
        yield data[cut:]
        yield openai_compat.sse(self.chunk(rid, body, {}, "stop"))
        yield openai_compat.sse("[DONE]")


def test_stream_text_is_decoded_strictly_but_across_chunk_boundaries() -> None:
    with _SplitCharacter() as e:
        events = list(LocalAdapter(make_route(e), http=HttpClients()).stream(req()))
    assert "".join(ev.text for ev in events) == "caf\u00e9 cr\u00e8me"


@pytest.mark.parametrize("mode", ["chat", "stream", "achat", "astream"])
def test_bytes_that_are_not_utf8_are_a_protocol_error(emu: OpenAICompatEmulator, mode: str) -> None:
    emu.malformed("invalid_utf8")
    adapter = LocalAdapter(make_route(emu), http=HttpClients())

    async def run_async() -> object:
        if mode == "achat":
            return await adapter.achat(req())
        return [e async for e in adapter.astream(req())]

    with pytest.raises(ProtocolError, match="UnicodeDecodeError"):
        if mode == "chat":
            adapter.chat(req())
        elif mode == "stream":
            list(adapter.stream(req()))
        else:
            asyncio.run(run_async())


def test_unknown_malformed_kind_is_refused(emu: OpenAICompatEmulator) -> None:
    with pytest.raises(ValueError, match="unknown malformed kind"):
        emu.malformed("garbled")
