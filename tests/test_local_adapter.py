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
    fields = dict(id="local-a", provider="local", model="llama-3.1-8b", model_id="llama-8b",
                  jurisdiction="on-prem", endpoint=f"{emu.url}/v1", timeout_s=5.0)
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
        with pytest.raises(ProtocolError, match="before the answer was complete"):
            list(a.stream(req()))


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
    no_usage = openai_shape.response_from_body({"choices": [{"message": {"content": "x"}}]}, provider="p", route_id="r")
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
