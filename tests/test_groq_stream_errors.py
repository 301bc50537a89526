"""Groq's `event: error` in a stream, through the real groq SDK, classified by the status it carries.

Groq ends a failed stream with `event: error` and `data: {"error": {...}, "status_code": N}`; the
SDK raises `APIError` holding only the `error` member.  The adapter classifies it through the same
status table as a non-streamed answer: a request error is not retried or failed over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import local_route, policy_dict

from adapters.groq import GroqAdapter
from broker import Broker
from broker.errors import InvalidRequest, ProviderError, Throttled, Unavailable
from broker.routes import Route
from broker.testing import OpenAICompatEmulator
from broker.testing.groq import GroqEmulator
from broker.transport import HttpClients
from broker.types import ChatRequest

MODEL_ID = "meta-llama/llama-4-scout-17b-16e-instruct"
TOOL_FAILED = "Failed to call a function. Please adjust your prompt. See 'failed_generation' for more details."


@pytest.fixture(scope="module")
def server() -> Iterator[GroqEmulator]:
    with GroqEmulator(api_key="gsk_test") as running:
        yield running


@pytest.fixture
def emu(server: GroqEmulator) -> GroqEmulator:
    server.reset()
    return server


@pytest.fixture
def adapter(emu: GroqEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[GroqAdapter]:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    http = HttpClients()
    route = Route(id="groq-scout", provider="groq", model="llama-4-scout", model_id=MODEL_ID, endpoint=emu.url,
                  jurisdiction="unknown", timeout_s=5.0)
    yield GroqAdapter(route, http=http)
    http.close()


def ask() -> ChatRequest:
    return ChatRequest(model="llama-4-scout", messages=[{"role": "user", "content": "What is the weather in Oslo?"}])


def test_the_emulator_ends_a_failed_stream_as_groq_does(emu: GroqEmulator) -> None:
    emu.error_in_stream(after=1, status=400, message=TOOL_FAILED, code="tool_use_failed")
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    raw = httpx.post(f"{emu.url}/openai/v1/chat/completions", json=body, headers={"Authorization": "Bearer gsk_test"})
    *_, last = [e for e in raw.text.split("\n\n") if e]
    event, data = last.split("\n")
    assert event == "event: error"
    assert json.loads(data.removeprefix("data: ")) == {
        "error": {"message": TOOL_FAILED, "type": "invalid_request_error", "code": "tool_use_failed"},
        "status_code": 400,
    }


@pytest.mark.parametrize(
    ("status", "code", "error", "retryable"),
    [
        (400, "tool_use_failed", InvalidRequest, False),
        (429, None, Throttled, True),
        (503, None, Unavailable, True),
        (500, None, Unavailable, True),
    ],
)
def test_an_error_event_is_classified_by_its_status(
    adapter: GroqAdapter, emu: GroqEmulator, status: int, code: str | None, error: type[ProviderError],
    retryable: bool,
) -> None:
    emu.error_in_stream(after=1, status=status, message="stopped", code=code)
    with pytest.raises(ProviderError) as info:
        list(adapter.stream(ask()))
    assert type(info.value) is error and info.value.retryable is retryable
    assert info.value.status == status and info.value.provider == "groq"
    if code:
        assert info.value.code == code and not info.value.failover


async def test_the_async_stream_classifies_the_same_way(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    emu.error_in_stream(after=0, status=400, message=TOOL_FAILED, code="tool_use_failed")
    with pytest.raises(InvalidRequest) as info:
        _ = [e async for e in adapter.astream(ask())]
    assert info.value.code == "tool_use_failed" and TOOL_FAILED in str(info.value)


@pytest.mark.parametrize(
    ("status", "code", "groq_requests", "next_requests"),
    [(400, "tool_use_failed", 1, 0), (503, None, 3, 1)],
    ids=["request-error-ends-the-call", "transient-error-retries-then-fails-over"],
)
def test_through_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, code: str | None, groq_requests: int,
    next_requests: int,
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    with GroqEmulator(api_key="gsk_test") as groq, OpenAICompatEmulator() as local:
        for _ in range(3):
            groq.error_in_stream(after=0, status=status, message=TOOL_FAILED if code else "overloaded", code=code)
        routes: list[dict[str, Any]] = [
            {"id": "groq-first", "provider": "groq", "model": "llama-3.1-8b", "model_id": "llama-3.1-8b-instant",
             "endpoint": groq.url, "jurisdiction": "us",
             "price": {"input_per_mtok": 0.01, "output_per_mtok": 0.01}},
            local_route(local, "local-next", price={"input_per_mtok": 0.9, "output_per_mtok": 0.9}),
        ]
        policy = policy_dict(routes, tmp=tmp_path, retry={"max_attempts_per_route": 3})
        with Broker.from_policy(policy, sleep=lambda s: None) as broker:
            stream = broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}])
            if code:
                with pytest.raises(InvalidRequest):
                    list(stream)
            else:
                assert "".join(e.text for e in stream)
        assert len(groq.requests) == groq_requests and len(local.requests) == next_requests
