"""OpenTelemetry GenAI spans and metrics: through the SDK's in-memory exporters, real calls to emulators."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_fixtures import two_route_policy

from broker import AsyncBroker, Broker
from broker.errors import Unavailable
from broker.testing import OpenAICompatEmulator

SECRET_PROMPT = "my card number is 4111-1111-1111-1111"
HELLO = [{"role": "user", "content": SECRET_PROMPT}]


class Otel:
    """SDK providers with in-memory exporters."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def kwargs(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def finished(self) -> list[Any]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                if m.name == name for p in m.data.data_points]

    def metric(self, name: str) -> Any:
        data = self.reader.get_metrics_data()
        return next(m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name)


@pytest.fixture
def runners() -> Iterator[tuple[OpenAICompatEmulator, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        yield a, b


def ledger_rows(tmp_path: Any) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"{tmp_path}/usage.db")
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute("SELECT * FROM usage_events ORDER BY attempt"))
    finally:
        db.close()


def test_a_failover_makes_a_call_span_with_one_child_span_per_attempt(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    a.fail(503)
    otel = Otel()
    with Broker(two_route_policy(a, b, tmp_path), **otel.kwargs()) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme", max_tokens=40, temperature=0.5)
    spans = otel.finished()
    call = next(s for s in spans if s.parent is None)
    attempts = sorted((s for s in spans if s.parent is not None), key=lambda s: s.attributes["llama_broker.attempt"])
    assert len(spans) == 3 and len(attempts) == 2
    assert call.name == "chat llama-3.1-8b" and call.kind is SpanKind.CLIENT
    assert all(s.parent.span_id == call.context.span_id and s.context.trace_id == call.context.trace_id
               for s in attempts)
    assert [s.name for s in attempts] == ["chat llama-8b-runner-a", "chat llama-8b-runner-b"]

    first, second = (s.attributes for s in attempts)
    assert first["error.type"] == "Unavailable" and attempts[0].status.status_code is StatusCode.ERROR
    assert first["llama_broker.route"] == "runner-a" and first["server.port"] == a.port
    assert "error.type" not in second and attempts[1].status.status_code is StatusCode.UNSET
    assert second["gen_ai.provider.name"] == "local" and second["gen_ai.response.model"] == "llama-8b-runner-b"
    assert second["server.address"] == "127.0.0.1" and second["server.port"] == b.port
    assert second["gen_ai.usage.input_tokens"] == reply.usage.input_tokens > 0
    assert second["gen_ai.usage.output_tokens"] == reply.usage.output_tokens > 0
    assert Decimal(str(second["llama_broker.cost_usd"])) == reply.cost_usd

    attrs = call.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "llama-3.1-8b"
    assert attrs["gen_ai.request.max_tokens"] == 40 and attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.provider.name"] == "local" and attrs["gen_ai.response.model"] == "llama-8b-runner-b"
    assert attrs["llama_broker.tenant"] == "acme" and attrs["llama_broker.route"] == "runner-b"
    assert attrs["llama_broker.region"] == "dc-1" and attrs["llama_broker.jurisdiction"] == "on-prem"
    assert attrs["llama_broker.request_id"] == reply.request_id and attrs["llama_broker.attempts"] == 2
    assert attrs["gen_ai.usage.output_tokens"] == reply.usage.output_tokens
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert "error.type" not in attrs and call.status.status_code is StatusCode.UNSET
    # children lie inside their parent, in order
    assert call.start_time <= attempts[0].start_time <= attempts[0].end_time <= attempts[1].start_time
    assert attempts[1].end_time <= call.end_time

    # the ids, costs and tokens are the ledger's
    rows = ledger_rows(tmp_path)
    assert [r["route_id"] for r in rows] == ["runner-a", "runner-b"]
    assert {r["decision_id"] for r in rows} == {attrs["llama_broker.decision_id"]}
    assert all(s.attributes["llama_broker.decision_id"] == attrs["llama_broker.decision_id"] for s in attempts)
    assert rows[1]["output_tokens"] == second["gen_ai.usage.output_tokens"]


def test_metrics_follow_the_conventions_and_sum_to_the_ledger(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    otel = Otel()
    with Broker(two_route_policy(a, b, tmp_path), **otel.kwargs()) as broker:
        replies = [broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme") for _ in range(3)]
    tokens = otel.metric("gen_ai.client.token.usage")
    assert tokens.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens.data.data_points}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == sum(r.usage.input_tokens for r in replies) and by_type["input"].count == 3
    assert by_type["output"].sum == sum(r.usage.output_tokens for r in replies)
    assert tuple(by_type["input"].explicit_bounds)[:4] == (1, 4, 16, 64)
    labels = dict(by_type["output"].attributes)
    assert labels == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "local", "gen_ai.request.model": "llama-3.1-8b",
        "gen_ai.response.model": "llama-8b-runner-a", "server.address": "127.0.0.1", "server.port": a.port,
        "llama_broker.tenant": "acme", "llama_broker.route": "runner-a", "llama_broker.region": "dc-1",
        "llama_broker.jurisdiction": "on-prem", "gen_ai.token.type": "output",
    }
    duration = otel.metric("gen_ai.client.operation.duration")
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert point.count == 3 and 0 < point.sum < 30
    assert sum(r.latency_ms or 0 for r in replies) / 1000 <= point.sum  # the call covers its attempt
    assert tuple(point.explicit_bounds)[:3] == (0.01, 0.02, 0.04)


def test_a_failed_call_carries_error_type_on_span_and_duration(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    a.fail(503)
    b.fail(503)
    otel = Otel()
    with Broker(two_route_policy(a, b, tmp_path), **otel.kwargs()) as broker, pytest.raises(Unavailable):
        broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
    call = next(s for s in otel.finished() if s.parent is None)
    assert call.status.status_code is StatusCode.ERROR and call.attributes["error.type"] == "Unavailable"
    assert SECRET_PROMPT not in (call.status.description or "")
    (point,) = otel.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "Unavailable"


def test_prompt_and_completion_text_stay_out_of_spans_unless_the_policy_opts_in(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    otel = Otel()
    with Broker(two_route_policy(a, b, tmp_path), **otel.kwargs()) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
    everything = json.dumps([dict(s.attributes) for s in otel.finished()] + [s.name for s in otel.finished()])
    assert SECRET_PROMPT not in everything and reply.text not in everything
    assert "gen_ai.input.messages" not in everything

    otel = Otel()
    policy = two_route_policy(a, b, tmp_path / "on", telemetry={"capture_content": True})
    (tmp_path / "on").mkdir()
    with Broker(policy, **otel.kwargs()) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
    call = next(s for s in otel.finished() if s.parent is None)
    assert json.loads(call.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]}]
    (out,) = json.loads(call.attributes["gen_ai.output.messages"])
    assert out["role"] == "assistant" and out["parts"] == [{"type": "text", "content": reply.text}]
    child = next(s for s in otel.finished() if s.parent is not None)
    assert SECRET_PROMPT not in json.dumps(dict(child.attributes))  # text goes on the call span only


async def test_async_streams_make_the_same_spans(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    otel = Otel()
    async with AsyncBroker(two_route_policy(a, b, tmp_path), **otel.kwargs()) as broker:
        async def one() -> Any:
            final = None
            async for event in broker.stream(model="llama-3.1-8b", messages=HELLO, tenant="acme"):
                final = event.response or final
            return final

        finals = await asyncio.gather(one(), one())
    spans = otel.finished()
    calls = [s for s in spans if s.parent is None]
    assert len(calls) == 2 and len(spans) == 4
    for call in calls:
        (child,) = [s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id]
        assert child.attributes["gen_ai.usage.output_tokens"] == call.attributes["gen_ai.usage.output_tokens"]
    assert sorted(c.attributes["llama_broker.request_id"] for c in calls) == sorted(f.request_id for f in finals)


def test_a_meter_provider_alone_turns_metrics_on(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    otel = Otel()
    with Broker(two_route_policy(a, b, tmp_path), meter_provider=otel.meter_provider) as broker:
        broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
        assert broker._core.telemetry is not None
    assert otel.points("gen_ai.client.operation.duration")[0].count == 1
    assert otel.finished() == []  # spans went to the global provider (a no-op here), not to this one


def test_telemetry_is_off_by_default(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    with Broker(two_route_policy(a, b, tmp_path)) as broker:
        assert broker._core.telemetry is None
        assert not [h for h in broker._core.executor.hooks if type(h).__module__.startswith("broker.telemetry")]


@pytest.mark.parametrize("bad", [{"enabled": "sometimes"}, {"otlp_endpoint": "collector:4318"}, {"sample": 1}])
def test_a_bad_telemetry_section_is_a_policy_error(runners: Any, tmp_path: Any, bad: dict[str, Any]) -> None:
    from broker.errors import PolicyError

    a, b = runners
    with pytest.raises(PolicyError, match="telemetry"):
        Broker(two_route_policy(a, b, tmp_path, telemetry=bad))
