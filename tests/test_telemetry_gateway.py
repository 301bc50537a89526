"""The gateway's requests carry a SERVER span, parent of the call span, continuing the client's trace."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from broker.gateway import Gateway
from broker.testing import OpenAICompatEmulator

KEY = "sk-test-telemetry-0123456789"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def served(tmp_path: Any) -> Iterator[tuple[str, InMemorySpanExporter]]:
    import uvicorn

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with OpenAICompatEmulator() as emu:
        policy = {
            "ledger": f"sqlite:///{tmp_path}/usage.db",
            "routes": [{"id": "runner", "provider": "local", "model": "llama-3.1-8b", "model_id": "llama-8b",
                        "endpoint": f"{emu.url}/v1", "jurisdiction": "on-prem"}],
            "tenants": {"acme": {"residency": ["on-prem"], "api_keys": [{"env": "TELEMETRY_TEST_KEY"}]}},
        }
        app = Gateway(policy, environ={"TELEMETRY_TEST_KEY": KEY}, broker_options={"tracer_provider": provider})
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, loop="asyncio", lifespan="on", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", spans
        finally:
            server.should_exit = True
            thread.join(15)
            sock.close()


def test_a_gateway_request_is_a_server_span_parenting_the_call_span(served: Any) -> None:
    url, spans = served
    headers = {"authorization": f"Bearer {KEY}", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200
    httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer wrong-key"}, timeout=10)
    deadline = time.monotonic() + 10  # a server span ends just after its response has left
    while time.monotonic() < deadline:
        done = list(spans.get_finished_spans())
        if sum(s.kind is SpanKind.SERVER for s in done) == 2:
            break
        time.sleep(0.01)
    (server,) = [s for s in done if s.kind is SpanKind.SERVER and s.attributes["url.path"] == "/v1/chat/completions"]
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200 and server.attributes["http.request.method"] == "POST"
    assert format(server.context.trace_id, "032x") == TRACE_ID and format(server.parent.span_id, "016x") == PARENT_ID
    (call,) = [s for s in done if s.name == "chat llama-3.1-8b"]
    assert call.parent.span_id == server.context.span_id and call.kind is SpanKind.CLIENT
    assert call.attributes["llama_broker.tenant"] == "acme"
    (attempt,) = [s for s in done if s.parent is not None and s.parent.span_id == call.context.span_id]
    assert attempt.context.trace_id == server.context.trace_id
    (refused,) = [s for s in done if s.attributes.get("url.path") == "/v1/models"]
    assert refused.attributes["http.response.status_code"] == 401 and refused.parent is None
    assert KEY not in str([dict(s.attributes) for s in done])
