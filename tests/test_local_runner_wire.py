"""What local runners send that the broker must read: context-overflow errors and llama.cpp's `timings`.

The bodies below are what llama.cpp server and TGI answer (llama.cpp's as the real server in
tests/test_local_runner.py sent them).  These tests need no runner; they pin the wording the
classification relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters import openai_shape
from adapters.http_errors import error_for_status
from adapters.local import LocalAdapter
from broker.errors import ContextTooLong, InvalidRequest
from broker.routes import Route
from broker.testing import OpenAICompatEmulator
from broker.transport import HttpClients
from broker.types import ChatRequest

LLAMACPP_OVERFLOW = {
    "error": {
        "code": 400,
        "message": "request (624 tokens) exceeds the available context size (512 tokens), try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 624,
        "n_ctx": 512,
    }
}
LLAMACPP_OVERFLOW_OLD = {
    "error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
              "type": "invalid_request_error"}
}
TGI_OVERFLOW_TOTAL = {
    "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
             "Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
    "error_type": "validation",
}
TGI_OVERFLOW_INPUTS = {
    "error": "Input validation error: `inputs` must have less than 4095 tokens. Given: 5000",
    "error_type": "validation",
}
TGI_BAD_ARGUMENT = {"error": "Input validation error: `temperature` must be strictly positive", "error_type": "validation"}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, LLAMACPP_OVERFLOW),
        (400, LLAMACPP_OVERFLOW_OLD),
        (400, {"error": {"code": 400, "message": "a future wording", "type": "exceed_context_size_error"}}),
        (422, TGI_OVERFLOW_TOTAL),
        (422, TGI_OVERFLOW_INPUTS),
    ],
    ids=["llamacpp", "llamacpp-older", "llamacpp-type-only", "tgi-total", "tgi-inputs"],
)
def test_runner_context_overflow_is_context_too_long_and_fails_over(status: int, body: Any) -> None:
    err = error_for_status(status, body, {}, provider="local", route_id="r")
    assert type(err) is ContextTooLong and err.failover and not err.retryable and err.status == status


def test_other_tgi_validation_errors_stay_request_errors() -> None:
    err = error_for_status(422, TGI_BAD_ARGUMENT, {}, provider="local", route_id="r")
    assert type(err) is InvalidRequest and not err.failover


@pytest.fixture
def emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as e:
        yield e


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, LLAMACPP_OVERFLOW["error"]["message"]), (422, TGI_OVERFLOW_TOTAL["error"])],  # type: ignore[index]
    ids=["llamacpp", "tgi"],
)
def test_the_local_adapter_raises_context_too_long_over_http(emu: OpenAICompatEmulator, status: int, message: str) -> None:
    route = Route(id="local-a", provider="local", model="llama-3.1-8b", model_id="m", jurisdiction="on-prem",
                  endpoint=f"{emu.url}/v1")
    adapter = LocalAdapter(route, http=HttpClients())
    emu.fail(status, message=message, times=2)
    request = ChatRequest(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    try:
        with pytest.raises(ContextTooLong):
            adapter.chat(request)
        with pytest.raises(ContextTooLong):
            list(adapter.stream(request))
    finally:
        adapter.close()
        adapter.http.close()


# --------------------------------------------------------------------------- timings


TIMINGS = {"cache_n": 1, "prompt_n": 26, "prompt_ms": 504.2, "predicted_n": 12, "predicted_ms": 583.9}


def completion(**extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gemma-3-270m-q4_k_m",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Paris"}}],
            **extra}


def test_a_body_without_usage_is_read_from_llamacpp_timings() -> None:
    usage = openai_shape.response_from_body(completion(timings=TIMINGS), provider="local", route_id="r").usage
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.estimated) == (27, 12, 1, False)


def test_usage_wins_over_timings_when_both_are_sent() -> None:
    usage_field = {"prompt_tokens": 30, "completion_tokens": 5}
    usage = openai_shape.response_from_body(completion(usage=usage_field, timings=TIMINGS), provider="local",
                                            route_id="r").usage
    assert (usage.input_tokens, usage.output_tokens) == (30, 5)


def test_without_usage_or_timings_the_usage_is_estimated() -> None:
    assert openai_shape.response_from_body(completion(), provider="local", route_id="r").usage.estimated


def test_the_finish_chunk_timings_become_the_stream_usage() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "timings": TIMINGS,
             "choices": [{"index": 0, "finish_reason": "length", "delta": {}}]}
    events = openai_shape.events_from_chunk(chunk, provider="local", route_id="r")
    assert events[0].finish_reason == "length"
    assert events[-1].usage is not None and (events[-1].usage.input_tokens, events[-1].usage.output_tokens) == (27, 12)
