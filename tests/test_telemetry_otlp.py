"""Telemetry over OTLP/HTTP to a loopback receiver, turned on by the policy; and its cost when off."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from telemetry_fixtures import OtlpReceiver, attrs_of, two_route_policy

from broker import Broker
from broker.testing import OpenAICompatEmulator

HELLO = [{"role": "user", "content": "say something short"}]


@pytest.fixture
def runners() -> Iterator[tuple[OpenAICompatEmulator, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        yield a, b


def test_the_policy_turns_on_spans_and_metrics_exported_over_otlp_http(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    a.fail(500)
    with OtlpReceiver() as receiver:
        policy = two_route_policy(a, b, tmp_path, telemetry={
            "enabled": True, "service_name": "checkout-api", "otlp_endpoint": receiver.url})
        with Broker(policy) as broker:
            reply = broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
        # closing the broker shut its providers down: everything pending was exported
        assert receiver.content_types == {"application/x-protobuf"}
        spans = receiver.spans()
        assert {r.get("service.name") for r in receiver.resources()} == {"checkout-api"}
        (call,) = [s for s in spans if not s.parent_span_id]
        children = sorted((s for s in spans if s.parent_span_id), key=lambda s: attrs_of(s.attributes)["llama_broker.attempt"])
        assert [c.parent_span_id for c in children] == [call.span_id, call.span_id]
        assert all(c.trace_id == call.trace_id for c in children)
        attrs = attrs_of(call.attributes)
        assert call.name == "chat llama-3.1-8b" and call.kind == 3  # SPAN_KIND_CLIENT
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "local"
        assert attrs["gen_ai.response.model"] == "llama-8b-runner-b" and attrs["llama_broker.tenant"] == "acme"
        assert attrs["gen_ai.usage.input_tokens"] == reply.usage.input_tokens
        assert attrs["llama_broker.request_id"] == reply.request_id
        first = attrs_of(children[0].attributes)
        assert first["error.type"] == "Unavailable" and children[0].status.code == 2  # STATUS_CODE_ERROR
        assert first["server.port"] == a.port and first["llama_broker.route"] == "runner-a"

        (tokens,) = receiver.metric("gen_ai.client.token.usage")
        assert tokens.unit == "{token}"
        sums = {attrs_of(p.attributes)["gen_ai.token.type"]: p.sum for p in tokens.histogram.data_points}
        assert sums == {"input": reply.usage.input_tokens, "output": reply.usage.output_tokens}
        (duration,) = receiver.metric("gen_ai.client.operation.duration")
        (point,) = duration.histogram.data_points
        assert duration.unit == "s" and point.count == 1
        assert attrs_of(point.attributes)["llama_broker.route"] == "runner-b"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)


def test_import_broker_never_imports_opentelemetry() -> None:
    done = _run("import sys, broker; print(json.dumps(sorted(m for m in sys.modules if 'opentelemetry' in m)))"
                .replace("import sys,", "import json, sys,"))
    assert json.loads(done.stdout) == []
    assert "opentelemetry" not in done.stderr  # the -X importtime listing


def test_calls_with_telemetry_off_never_import_opentelemetry(runners: Any, tmp_path: Any) -> None:
    a, b = runners
    policy = json.dumps(two_route_policy(a, b, tmp_path))
    code = (
        "import json, sys\n"
        "from broker import Broker\n"
        f"with Broker(json.loads({policy!r})) as b:\n"
        "    b.chat(model='llama-3.1-8b', messages=[{'role': 'user', 'content': 'hi'}], tenant='acme')\n"
        "print(json.dumps(sorted(m for m in sys.modules if 'opentelemetry' in m)))\n"
    )
    done = _run(code)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert "opentelemetry" not in done.stderr
    # the same program with telemetry on does import it: the check above can fail
    on = json.dumps(two_route_policy(a, b, tmp_path, telemetry={"enabled": True}))
    done = _run(code.replace(repr(policy), repr(on)))
    assert "opentelemetry.trace" in json.loads(done.stdout.strip().splitlines()[-1])
