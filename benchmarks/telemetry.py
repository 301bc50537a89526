"""What telemetry costs per call, off and on, and what it adds to `import broker`.

    python benchmarks/telemetry.py [--calls 1000] [--runs 5]

Against a fast loopback OpenAI-compatible server (its own process), Broker.chat through one
local route metered to SQLite, per call (median of runs), in four states:
  off        no telemetry section, no providers: `opentelemetry` is never imported
  noop       telemetry on with the API's no-op global providers (nothing configured)
  sdk        SDK providers: batched spans to an in-memory exporter, metrics to an in-memory reader
  sdk+text   the same with `capture_content: true` (prompt and completion JSON on the call span)
then the hook alone with no I/O (steadier on a busy machine), and `import broker` with and
without importing the telemetry hook (a fresh interpreter each time, median of 5).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _server import BenchServer

from broker import Broker

MESSAGES = [{"role": "user", "content": "hello, how much does tracing cost?"}]


def policy(url: str, ledger: Path, telemetry: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ledger": f"sqlite:///{ledger}",
        "routes": [{"id": "r", "provider": "local", "model": "llama-3.1-8b", "model_id": "bench", "endpoint": url,
                    "jurisdiction": "on-prem", "price": {"input_per_mtok": "0.1", "output_per_mtok": "0.1"}}],
        "tenants": {"default": {"residency": ["on-prem"]}},
    }
    if telemetry is not None:
        doc["telemetry"] = telemetry
    return doc


def sdk_providers() -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}


def per_call_us(broker: Broker, calls: int) -> float:
    for _ in range(20):
        broker.chat(model="llama-3.1-8b", messages=MESSAGES)
    start = time.perf_counter()
    for _ in range(calls):
        broker.chat(model="llama-3.1-8b", messages=MESSAGES)
    return (time.perf_counter() - start) / calls * 1e6


def hook_us(providers: dict[str, Any], capture: bool, calls: int = 5000) -> float:
    """The telemetry hook alone, per call (open, one attempt, close): no network, no ledger."""
    import datetime as dt
    from decimal import Decimal

    from broker.attempts import CallMeta
    from broker.metering.events import UsageEvent
    from broker.routes import Route
    from broker.telemetry.hook import TelemetryHook
    from broker.types import ChatRequest, ChatResponse, Usage

    hook = TelemetryHook(capture_content=capture, **providers)
    request = ChatRequest(model="llama-3.1-8b", messages=MESSAGES)
    route = Route(id="r", provider="local", model="llama-3.1-8b", model_id="bench", jurisdiction="on-prem",
                  endpoint="http://127.0.0.1:8000/v1")
    meta = CallMeta(request_id="r" * 32, tenant="default", tags={}, policy_version="v", decision_id="d" * 32)
    event = UsageEvent(event_id="e", request_id="r", attempt=1, tenant="default", tags={}, model="llama-3.1-8b",
                       provider="local", region=None, jurisdiction="on-prem", model_id="bench", route_id="r",
                       input_tokens=12, output_tokens=30, cached_input_tokens=0, usage_estimated=False,
                       cost_usd=Decimal("0.000004"), price_version="p", latency_ms=5.0, ttft_ms=None, status="ok",
                       error_kind=None, timestamp=dt.datetime.now(dt.timezone.utc), policy_version="v")
    response = ChatResponse(text="an answer", usage=Usage(input_tokens=12, output_tokens=30))
    start = time.perf_counter()
    for _ in range(calls):
        scope = hook.open(request, None, meta)  # type: ignore[arg-type]
        scope.attempted(route, event)
        scope.close(response, None)
    return (time.perf_counter() - start) / calls * 1e6


def import_ms(code: str) -> float:
    """Median cumulative import time of `broker` (and what `code` adds) in a fresh interpreter."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    states: dict[str, tuple[dict[str, Any] | None, bool]] = {
        "off": (None, False), "noop": ({"enabled": True}, False),
        "sdk": ({"enabled": True}, True), "sdk+text": ({"enabled": True, "capture_content": True}, True),
    }
    results: dict[str, list[float]] = {name: [] for name in states}
    with BenchServer() as server, tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            names = list(states)
            names = names[run % len(names):] + names[: run % len(names)]  # interleaved and rotated
            for name in names:
                telemetry, sdk = states[name]
                ledger = Path(tmp) / f"{name}-{run}.db"
                with Broker(policy(server.url, ledger, telemetry), **(sdk_providers() if sdk else {})) as broker:
                    results[name].append(per_call_us(broker, args.calls))
    base = statistics.median(results["off"])
    print(f"{args.calls} calls x {args.runs} runs, median per call (loopback runner, SQLite ledger)")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<9} {median:8.1f} us/call   {median - base:+7.1f} us vs off")
    print("the telemetry hook alone (open + one attempt + close, no I/O), per call:")
    print(f"  noop      {hook_us({}, False):8.1f} us")
    print(f"  sdk       {hook_us(sdk_providers(), False):8.1f} us")
    print(f"  sdk+text  {hook_us(sdk_providers(), True):8.1f} us")
    plain = import_ms("import broker")
    hooked = import_ms("import broker, broker.telemetry.hook")
    print(f"import broker: {plain:.0f} ms wall (fresh interpreter); with the telemetry hook imported: "
          f"{hooked:.0f} ms (+{hooked - plain:.0f} ms, paid only when telemetry is on)")


if __name__ == "__main__":
    main()
