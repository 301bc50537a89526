"""Shared parts of the telemetry and energy tests: a two-route local policy and an OTLP/HTTP receiver."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from broker.testing import OpenAICompatEmulator


def two_route_policy(first: OpenAICompatEmulator, second: OpenAICompatEmulator, tmp_path: Any,
                     **top: Any) -> dict[str, Any]:
    """Two local routes (`runner-a` ranked first, cheaper), one try each, ledger in `tmp_path`."""
    def route(rid: str, emu: OpenAICompatEmulator, price: str) -> dict[str, Any]:
        return {"id": rid, "provider": "local", "model": "llama-3.1-8b", "model_id": f"llama-8b-{rid}",
                "endpoint": f"{emu.url}/v1", "jurisdiction": "on-prem", "region": "dc-1",
                "price": {"input_per_mtok": price, "output_per_mtok": price}}

    return {
        "ledger": f"sqlite:///{tmp_path}/usage.db",
        "retry": {"max_attempts_per_route": 1, "base_delay_s": 0},
        "routes": [route("runner-a", first, "1"), route("runner-b", second, "2")],
        "tenants": {"acme": {"residency": ["on-prem"]}},
        **top,
    }


class OtlpReceiver:
    """A loopback OTLP/HTTP receiver: decodes the protobuf bodies posted to /v1/traces and /v1/metrics."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.traces: list[Any] = []
        self.metrics: list[Any] = []
        self.content_types: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.content_types.add(self.headers.get("Content-Type", ""))
                if self.path == "/v1/traces":
                    message: Any = ExportTraceServiceRequest()
                    message.ParseFromString(body)
                    receiver.traces.append(message)
                elif self.path == "/v1/metrics":
                    message = ExportMetricsServiceRequest()
                    message.ParseFromString(body)
                    receiver.metrics.append(message)
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[Any]:
        return [s for req in self.traces for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        return [attrs_of(rs.resource.attributes) for req in self.traces for rs in req.resource_spans]

    def metric(self, name: str) -> list[Any]:
        return [m for req in self.metrics for rm in req.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.name == name]


def attrs_of(key_values: Any) -> dict[str, Any]:
    """OTLP KeyValue list -> dict of plain values."""
    out: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind)
    return out
