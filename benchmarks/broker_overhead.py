"""What the broker adds to one call: decision, retries wrapper, metering, response assembly.

    python benchmarks/broker_overhead.py [--calls 2000] [--runs 5]

Against a fast loopback OpenAI-compatible server, times (median of runs, per call):
  raw      httpx.Client.post + json parse (the floor any client pays)
  broker   Broker.chat through a policy with three candidate routes, metered to SQLite
  route    Broker.route alone (the decision, no I/O)
and prints the broker's overhead over raw in microseconds and as a ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _server import BenchServer

from broker import Broker

MESSAGES = [{"role": "user", "content": "hello, how fast is this broker?"}]


def policy(url: str, ledger: Path) -> dict:
    routes = [
        {"id": f"r{i}", "provider": "local", "model": "llama-3.1-8b", "model_id": "bench", "endpoint": url,
         "jurisdiction": j, "price": {"input_per_mtok": p, "output_per_mtok": p}}
        for i, (j, p) in enumerate([("on-prem", "0.10"), ("eu", "0.20"), ("us", "0.05")])
    ]
    return {"version": 1, "ledger": f"sqlite:///{ledger}", "routes": routes,
            "tenants": {"default": {"objective": "cost", "residency": ["eu", "on-prem"]}}}


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with BenchServer() as server, tempfile.TemporaryDirectory() as tmp:
        raw_client = httpx.Client()
        body = {"model": "bench", "messages": MESSAGES}
        raw = lambda: raw_client.post(server.url + "/chat/completions", json=body).json()  # noqa: E731
        with Broker.from_policy(policy(server.url, Path(tmp) / "u.db")) as broker:
            chat = lambda: broker.chat(model="llama-3.1-8b", messages=MESSAGES)  # noqa: E731
            decide = lambda: broker.route(model="llama-3.1-8b", messages=MESSAGES)  # noqa: E731
            for fn in (raw, chat, decide):  # warm up pools and caches
                per_call_us(fn, 50)
            results: dict[str, list[float]] = {"raw": [], "broker": [], "route": []}
            for _ in range(args.runs):
                results["raw"].append(per_call_us(raw, args.calls))
                results["broker"].append(per_call_us(chat, args.calls))
                results["route"].append(per_call_us(decide, args.calls))
            events = broker.meter.ledger.count() if broker.meter.flush() is None else None
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"per call, median of {args.runs} runs x {args.calls} calls:")
        for name, value in med.items():
            print(f"  {name:<7} {value:8.1f} us")
        print(f"  overhead {med['broker'] - med['raw']:8.1f} us per call ({med['broker'] / med['raw']:.2f}x raw httpx)")
        print(f"  ledger events written: {events}")


if __name__ == "__main__":
    main()
