"""The `local` provider's conformance against a real llama.cpp server (the `runner` extra).

One server per module (Gemma 3 270M on CPU, a 512-token context, prompt caching off so equal
requests give equal answers).  Every call goes through `Broker` and the real `LocalAdapter`
over HTTP; token counts are checked against the server's own counters (`/metrics`), which
the broker never reads.  Without the extra the module is skipped, with the reason; in CI
(`CI=true`) a missing runner fails instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters import openai_shape
from adapters.local import LocalAdapter
from broker import AsyncBroker, Broker, ContextTooLong
from broker.metering import ReportFilters
from broker.routes import Route
from broker.testing import OpenAICompatEmulator
from broker.testing.llamacpp import ANSWER_STOP, LlamaCppServer, require_runner
from broker.transport import HttpClients
from broker.types import ChatRequest

N_CTX = 512
MODEL = "llama-3.1-8b"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOO_LONG = [{"role": "user", "content": "hello " * 600}]  # about 600 tokens: past the 512-token context


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppServer]:
    require_runner()
    with LlamaCppServer(n_ctx=N_CTX) as s:
        yield s


@pytest.fixture(scope="module")
def fallback() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as emu:
        yield emu


def runner_route(server: LlamaCppServer, **extra: Any) -> dict[str, Any]:
    return {
        "id": "llamacpp", "provider": "local", "model": MODEL, "model_id": server.model,
        "endpoint": server.endpoint, "jurisdiction": "on-prem", "timeout_s": 60,
        "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.1}, **extra,
    }


def policy(server: LlamaCppServer, tmp: Path, *more: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": f"sqlite:///{tmp / 'usage.db'}",
        "routes": [runner_route(server, **extra), *more],
        "tenants": {"default": {"objective": "cost", "residency": ["on-prem"]}},
    }


def fallback_route(emu: OpenAICompatEmulator) -> dict[str, Any]:
    """The next route by price: the OpenAI-compatible emulator."""
    return {
        "id": "emulator", "provider": "local", "model": MODEL, "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "endpoint": f"{emu.url}/v1", "jurisdiction": "on-prem",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
    }


class Counted:
    """Tokens the server counted during the block (its /metrics), to compare with the ledger."""

    def __init__(self, server: LlamaCppServer) -> None:
        self.server = server
        self.input_tokens = self.output_tokens = 0

    def __enter__(self) -> Counted:
        self._start = self.server.reported_tokens()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self.server.reported_tokens()
        self.input_tokens, self.output_tokens = end[0] - self._start[0], end[1] - self._start[1]


def ledger_rows(broker: Broker) -> dict[tuple[str, str], dict[str, Any]]:
    rows = broker.meter.ledger.aggregate(group_by=["route_id", "status"], filters=ReportFilters())
    return {(r["route_id"], r["status"]): r for r in rows}


# --------------------------------------------------------------------------- chat and usage


def test_chat_answers_from_the_model_and_meters_what_the_server_counted(server: LlamaCppServer, tmp_path: Path) -> None:
    with Broker.from_policy(policy(server, tmp_path), durable=True) as broker, Counted(server) as counted:
        reply = broker.chat(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0)
    assert reply.text.strip() and reply.route.id == "llamacpp" and reply.route.model_id == server.model
    assert not reply.usage.estimated
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (counted.input_tokens, counted.output_tokens)
    assert 0 < reply.usage.output_tokens <= 8
    with Broker.from_policy(policy(server, tmp_path), durable=True) as again:
        row = ledger_rows(again)[("llamacpp", "ok")]
    assert (row["calls"], row["input_tokens"], row["output_tokens"]) == (1, counted.input_tokens, counted.output_tokens)


def test_stream_delivers_text_and_ends_with_the_servers_usage(server: LlamaCppServer, tmp_path: Path) -> None:
    with Broker.from_policy(policy(server, tmp_path), durable=True) as broker, Counted(server) as counted:
        events = list(broker.stream(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0))
    final = events[-1]
    assert final.is_final and final.response is not None
    assert final.response.text == "".join(e.text for e in events[:-1]) != ""
    assert not final.usage.estimated
    assert (final.usage.input_tokens, final.usage.output_tokens) == (counted.input_tokens, counted.output_tokens)


def test_a_stream_without_usage_is_metered_from_the_servers_timings(server: LlamaCppServer, tmp_path: Path) -> None:
    # `stream_usage: false` sends no `stream_options`; llama.cpp then reports only `timings`
    with Broker.from_policy(policy(server, tmp_path, options={"stream_usage": False}), durable=True) as broker, \
            Counted(server) as counted:
        events = list(broker.stream(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0))
        rows = ledger_rows(broker)
    usage = events[-1].usage
    assert not usage.estimated  # without the timings fallback this would be an estimate
    assert (usage.input_tokens, usage.output_tokens) == (counted.input_tokens, counted.output_tokens)
    assert (rows[("llamacpp", "ok")]["input_tokens"], rows[("llamacpp", "ok")]["output_tokens"]) == (
        counted.input_tokens, counted.output_tokens)


def test_timings_give_the_same_usage_as_the_servers_usage_field(server: LlamaCppServer) -> None:
    body = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                      json={"messages": QUESTION, "max_tokens": 4, "temperature": 0}).json()
    assert "usage" in body and "timings" in body
    reported = openai_shape.response_from_body(body, provider="local", route_id="r").usage
    body.pop("usage")
    from_timings = openai_shape.response_from_body(body, provider="local", route_id="r").usage
    assert from_timings == reported and not from_timings.estimated


async def test_async_chat_through_the_real_server(server: LlamaCppServer, tmp_path: Path) -> None:
    async with AsyncBroker.from_policy(policy(server, tmp_path), durable=True) as broker:
        reply = await broker.chat(model=MODEL, messages=QUESTION, max_tokens=4, temperature=0)
    assert reply.route.id == "llamacpp" and reply.usage.output_tokens > 0 and not reply.usage.estimated


# --------------------------------------------------------------------------- parameters


def test_stop_sequence_ends_the_answer(server: LlamaCppServer, tmp_path: Path) -> None:
    with Broker.from_policy(policy(server, tmp_path), durable=True) as broker:
        free = broker.chat(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
        stopped = broker.chat(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0, stop=[ANSWER_STOP])
    assert ANSWER_STOP in free.text  # the model goes on to invent the next question
    assert stopped.finish_reason == "stop" and ANSWER_STOP not in stopped.text
    assert free.text.startswith(stopped.text) and stopped.text.strip()


def test_same_seed_gives_the_same_text_and_the_seed_matters(server: LlamaCppServer, tmp_path: Path) -> None:
    with Broker.from_policy(policy(server, tmp_path), durable=True) as broker:
        def say(**kw: Any) -> str:
            return str(broker.chat(model=MODEL, messages=QUESTION, max_tokens=8, **kw).text)

        assert say(temperature=0, seed=7) == say(temperature=0, seed=7)
        sampled = say(temperature=1.0, seed=42)
        assert sampled == say(temperature=1.0, seed=42)
        others = {say(temperature=1.0, seed=s) for s in (1, 2, 3)}
    assert others - {sampled}, "three other seeds all gave the seed-42 text: the seed did not reach the sampler"


def test_json_mode_answers_a_json_object(server: LlamaCppServer, tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "Is the sky blue? Answer in JSON."},
        {"role": "assistant", "content": '{"answer": "yes"}'},
        {"role": "user", "content": "Is grass green? Answer in JSON."},
    ]
    with Broker.from_policy(policy(server, tmp_path), durable=True) as broker:
        reply = broker.chat(model=MODEL, messages=messages, max_tokens=24, temperature=0,
                            response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.text), dict)


def test_json_schema_is_accepted_and_enforced_by_llama_cpp(server: LlamaCppServer, tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 12}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    messages = [  # one example, so that the small base model starts the object at once
        {"role": "user", "content": "What is the capital of Spain?"},
        {"role": "assistant", "content": '{"capital": "Madrid"}'},
        *QUESTION,
    ]
    with Broker.from_policy(policy(server, tmp_path), durable=True) as broker:
        plain = broker.chat(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0)
        shaped = broker.chat(model=MODEL, messages=messages, max_tokens=16, temperature=0, response_format=fmt)
    assert not plain.text.lstrip().startswith("{")  # without the schema the model answers in prose
    value = json.loads(shaped.text)
    assert set(value) == {"capital"} and isinstance(value["capital"], str) and len(value["capital"]) <= 12


# --------------------------------------------------------------------------- context overflow


def test_the_adapter_raises_context_too_long_for_llama_cpps_overflow(server: LlamaCppServer) -> None:
    route = Route(**{k: v for k, v in runner_route(server).items() if k != "price"})
    adapter = LocalAdapter(route, http=HttpClients())
    try:
        with pytest.raises(ContextTooLong) as caught:
            adapter.chat(ChatRequest(model=MODEL, messages=TOO_LONG, max_tokens=4))  # type: ignore[arg-type]
    finally:
        adapter.close()
        adapter.http.close()
    err = caught.value
    assert err.status == 400 and err.failover and not err.retryable
    assert "exceeds the available context size" in str(err)


def test_a_prompt_past_the_context_fails_over_to_the_next_route(
    server: LlamaCppServer, fallback: OpenAICompatEmulator, tmp_path: Path
) -> None:
    seen = len(fallback.requests)
    with Broker.from_policy(policy(server, tmp_path, fallback_route(fallback)), durable=True) as broker:
        reply = broker.chat(model=MODEL, messages=TOO_LONG, max_tokens=4)
        streamed = list(broker.stream(model=MODEL, messages=TOO_LONG, max_tokens=4))[-1].response
        rows = ledger_rows(broker)
    assert reply.route.id == "emulator" and reply.attempts == 2
    assert streamed is not None and streamed.route.id == "emulator"
    assert len(fallback.requests) == seen + 2
    failed = rows[("llamacpp", "error")]
    assert failed["calls"] == 2 and failed["output_tokens"] == 0
    with Broker.from_policy(policy(server, tmp_path), durable=True) as again:
        kinds = again.meter.ledger.aggregate(group_by=["error_kind"], filters=ReportFilters())
    assert {r["error_kind"] for r in kinds} >= {"ContextTooLong"}
