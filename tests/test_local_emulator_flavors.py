"""The local adapter against the emulator sending what vLLM, llama.cpp server and TGI send.

Each flavor's answers carry the runner's own fields (fingerprints, `logprobs: null`, vLLM's
`stop_reason` / `prompt_logprobs` / `kv_transfer_params`, llama.cpp's `timings`), its usage where
that runner puts it, its cached-token count, its context-overflow error and its in-stream errors.
The adapter must read every one the same way: the usage exactly as reported, an overflow as
`ContextTooLong` (next route), a request error in a stream as `InvalidRequest` (no retry, no next
route), a server fault in a stream as `Unavailable` (retried).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import local_route, policy_dict

from adapters.local import LocalAdapter
from broker import Broker
from broker.errors import ContextTooLong, InvalidRequest, ProviderError, Unavailable
from broker.routes import Route
from broker.testing import OpenAICompatEmulator
from broker.testing.openai_compat import FLAVORS
from broker.transport import HttpClients
from broker.types import ChatRequest

MSG = [{"role": "user", "content": "Hello there, runner! Tell me about rivers."}]
LONG = [{"role": "user", "content": " ".join(["word"] * 80)}]


def make_route(emu: OpenAICompatEmulator, **options: Any) -> Route:
    return Route(id="local-a", provider="local", model="llama-3.1-8b", model_id="llama-8b", jurisdiction="on-prem",
                 endpoint=f"{emu.url}/v1", timeout_s=5.0, options=options)


@pytest.fixture
def http() -> Iterator[HttpClients]:
    clients = HttpClients()
    yield clients
    clients.close()


def ask(messages: list[dict[str, Any]] = MSG, **kw: Any) -> ChatRequest:
    return ChatRequest(model="llama-3.1-8b", messages=messages, **kw)


def raw_stream(emu: OpenAICompatEmulator, **body: Any) -> list[str]:
    payload = {"model": "llama-8b", "messages": MSG, "stream": True, **body}
    text = httpx.post(f"{emu.url}/v1/chat/completions", json=payload).text
    return [e for e in text.split("\n\n") if e]


def chunks(events: list[str]) -> list[dict[str, Any]]:
    return [json.loads(e.removeprefix("data: ")) for e in events if e.startswith("data: {")]


# --------------------------------------------------------------------------- what each runner sends


def test_vllm_answers_carry_vllm_fields() -> None:
    with OpenAICompatEmulator(flavor="vllm") as emu:
        body = httpx.post(f"{emu.url}/v1/chat/completions", json={"model": "llama-8b", "messages": MSG}).json()
        assert {"system_fingerprint", "prompt_logprobs", "kv_transfer_params"} <= body.keys()
        (choice,) = body["choices"]
        assert choice["logprobs"] is None and "stop_reason" in choice and choice["message"]["tool_calls"] == []
        streamed = chunks(raw_stream(emu, stream_options={"include_usage": True}))
        assert all(c["choices"][0]["logprobs"] is None for c in streamed if c["choices"])
        *_, finish, usage_only = streamed
        assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
        assert usage_only["choices"] == [] and usage_only["usage"]["prompt_tokens"] > 0


def test_llamacpp_answers_carry_timings_as_the_real_server_sends_them() -> None:
    with OpenAICompatEmulator(flavor="llamacpp") as emu:
        body = httpx.post(f"{emu.url}/v1/chat/completions", json={"model": "llama-8b", "messages": MSG}).json()
        assert body["system_fingerprint"].startswith("b") and body["timings"]["predicted_n"] > 0
        assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
        *_, finish = chunks(raw_stream(emu))  # no include_usage: the timings still come, usage does not
        assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
        assert finish["timings"]["predicted_n"] == body["timings"]["predicted_n"]
        streamed = chunks(raw_stream(emu, stream_options={"include_usage": True}))
        assert all(c["system_fingerprint"] == body["system_fingerprint"] for c in streamed)
        *_, finish, usage_only = streamed
        assert "timings" in finish and "usage" not in finish
        assert usage_only["choices"] == [] and usage_only["usage"]["completion_tokens"] == finish["timings"]["predicted_n"]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_usage_on_the_finish_chunk_is_read(http: HttpClients, flavor: Any) -> None:
    with OpenAICompatEmulator(flavor=flavor, usage_on_finish_chunk=True, cached_tokens=2) as emu:
        events = list(LocalAdapter(make_route(emu), http=http).stream(ask()))
        *_, finish = chunks(raw_stream(emu, stream_options={"include_usage": True}))
        assert finish["choices"][0]["finish_reason"] == "stop" and "usage" in finish
        usage = [e.usage for e in events if e.usage is not None][-1]
        assert (usage.input_tokens, usage.output_tokens) == (finish["usage"]["prompt_tokens"],
                                                             finish["usage"]["completion_tokens"])


def test_tgi_answers_carry_its_fingerprint() -> None:
    with OpenAICompatEmulator(flavor="tgi") as emu:
        body = httpx.post(f"{emu.url}/v1/chat/completions", json={"model": "llama-8b", "messages": MSG}).json()
        assert body["system_fingerprint"] and body["choices"][0]["logprobs"] is None


def test_an_unknown_flavor_is_refused() -> None:
    with pytest.raises(ValueError, match="flavor"):
        OpenAICompatEmulator(flavor="ollama")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- usage, read the same way


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("cached", [0, 4])
def test_usage_is_read_exactly_as_each_runner_reports_it(http: HttpClients, flavor: Any, cached: int) -> None:
    with OpenAICompatEmulator(flavor=flavor, cached_tokens=cached) as emu:
        adapter = LocalAdapter(make_route(emu), http=http)
        reply = adapter.chat(ask())
        events = list(adapter.stream(ask()))
        final = [e for e in events if e.usage is not None][-1]  # llama.cpp: finish-chunk timings, then usage
        assert emu.reported.calls == 2
        for usage in (reply.usage, final.usage):
            assert not usage.estimated
            assert usage.input_tokens + usage.output_tokens == (emu.reported.input_tokens
                                                                + emu.reported.output_tokens) // 2
            # TGI reports no prefix-cache count
            assert usage.cached_input_tokens == (0 if flavor == "tgi" else cached)


def test_llamacpp_stream_usage_comes_from_timings_without_stream_options(http: HttpClients) -> None:
    with OpenAICompatEmulator(flavor="llamacpp", cached_tokens=3) as emu:
        adapter = LocalAdapter(make_route(emu, stream_usage=False), http=http)
        events = list(adapter.stream(ask()))
        assert "stream_options" not in (emu.requests[-1].json or {})
        (final,) = [e for e in events if e.usage is not None]  # from the finish chunk's timings
        assert (final.usage.input_tokens, final.usage.output_tokens) == (emu.reported.input_tokens,
                                                                         emu.reported.output_tokens)
        assert final.usage.cached_input_tokens == 3


# --------------------------------------------------------------------------- context overflow


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_a_prompt_past_the_context_is_context_too_long(http: HttpClients, flavor: Any, mode: str) -> None:
    with OpenAICompatEmulator(flavor=flavor, context_size=64) as emu:
        adapter = LocalAdapter(make_route(emu), http=http)
        assert adapter.chat(ask(max_tokens=16)).text  # a prompt that fits is answered
        with pytest.raises(ContextTooLong) as info:
            if mode == "chat":
                adapter.chat(ask(LONG, max_tokens=16))
            else:
                list(adapter.stream(ask(LONG, max_tokens=16)))
        assert info.value.failover and not info.value.retryable
        assert info.value.status == (422 if flavor == "tgi" else 400)


def test_overflow_wordings_are_the_runners_own() -> None:
    def refusal(flavor: Any) -> Any:
        with OpenAICompatEmulator(flavor=flavor, context_size=32) as emu:
            answer = httpx.post(f"{emu.url}/v1/chat/completions",
                                json={"model": "m", "messages": LONG, "max_tokens": 8})
            return answer.status_code, answer.json()

    status, body = refusal("llamacpp")
    assert status == 400 and body["error"]["type"] == "exceed_context_size_error"
    assert body["error"]["message"].endswith("exceeds the available context size (32 tokens), try increasing it")
    assert body["error"]["n_ctx"] == 32 and body["error"]["n_prompt_tokens"] > 32
    status, body = refusal("vllm")
    assert status == 400 and body["error"]["message"].startswith("This model's maximum context length is 32 tokens")
    status, body = refusal("tgi")
    assert status == 422 and body["error_type"] == "validation"
    assert "`inputs` tokens + `max_new_tokens` must be <= 32" in body["error"]


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_an_overflow_fails_over_to_the_next_route(tmp_path: Path, flavor: Any, mode: str) -> None:
    with OpenAICompatEmulator(flavor=flavor, context_size=64) as small, OpenAICompatEmulator(flavor=flavor) as big:
        routes = [local_route(small, "small", price={"input_per_mtok": 0.1, "output_per_mtok": 0.1}),
                  local_route(big, "big", price={"input_per_mtok": 0.9, "output_per_mtok": 0.9})]
        with Broker.from_policy(policy_dict(routes, tmp=tmp_path), sleep=lambda s: None) as broker:
            if mode == "chat":
                reply = broker.chat(model="llama-3.1-8b", messages=LONG, max_tokens=16)
                assert reply.route.id == "big"
            else:
                text = "".join(e.text for e in broker.stream(model="llama-3.1-8b", messages=LONG, max_tokens=16))
                assert text
        assert len(small.requests) == 1 and len(big.requests) == 1


# --------------------------------------------------------------------------- errors inside a stream


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize(
    ("status", "error"),
    [(400, InvalidRequest), (422, InvalidRequest), (429, ProviderError), (500, Unavailable), (503, Unavailable)],
)
def test_an_in_stream_error_is_classified_by_its_status(
    http: HttpClients, flavor: Any, status: int, error: type[ProviderError]
) -> None:
    with OpenAICompatEmulator(flavor=flavor) as emu:
        emu.error_in_stream(after=2, status=status, message="Input validation error: `temperature` must be positive")
        adapter = LocalAdapter(make_route(emu), http=http)
        with pytest.raises(ProviderError) as info:
            list(adapter.stream(ask()))
        assert isinstance(info.value, error) and info.value.status == status
        assert info.value.retryable is (status >= 429)
        assert "temperature" in info.value.message


def test_the_in_stream_shapes_are_the_runners_own() -> None:
    with OpenAICompatEmulator(flavor="tgi") as tgi:
        tgi.error_in_stream(after=1, status=422, message="bad")
        assert chunks(raw_stream(tgi))[-1] == {"error": "bad", "error_type": "validation", "http_status_code": 422}
    with OpenAICompatEmulator(flavor="vllm") as vllm:
        vllm.error_in_stream(after=1, status=400, message="bad")
        *_, error, done = raw_stream(vllm)
        assert json.loads(error.removeprefix("data: "))["error"]["code"] == 400 and done == "data: [DONE]"
    with OpenAICompatEmulator(flavor="llamacpp") as llamacpp:
        llamacpp.error_in_stream(after=1, status=400, message="bad")
        *_, error = raw_stream(llamacpp)
        assert error.startswith("error: ") and json.loads(error.removeprefix("error: "))["code"] == 400


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize(
    ("status", "first_requests", "next_requests"),
    [(422, 1, 0), (503, 2, 1)],
    ids=["request-error-ends-the-call", "server-fault-retries-then-fails-over"],
)
async def test_in_stream_errors_through_the_broker(
    tmp_path: Path, flavor: Any, status: int, first_requests: int, next_requests: int
) -> None:
    with OpenAICompatEmulator(flavor=flavor) as first, OpenAICompatEmulator(flavor=flavor) as nxt:
        for _ in range(2):
            first.error_in_stream(after=0, status=status, message="Input validation error: `top_p` must be > 0")
        routes = [local_route(first, "first", price={"input_per_mtok": 0.1, "output_per_mtok": 0.1}),
                  local_route(nxt, "next", price={"input_per_mtok": 0.9, "output_per_mtok": 0.9})]
        policy = policy_dict(routes, tmp=tmp_path, retry={"max_attempts_per_route": 2})
        with Broker.from_policy(policy, sleep=lambda s: None) as broker:
            stream = broker.stream(model="llama-3.1-8b", messages=MSG)
            if status < 500:
                with pytest.raises(InvalidRequest):
                    list(stream)
            else:
                assert "".join(e.text for e in stream)
        assert (len(first.requests), len(nxt.requests)) == (first_requests, next_requests)
