"""What a budget reservation costs per call: reserve before, settle after, in the store beside the ledger.

    .venv/bin/python -m benchmarks.budgets [--calls 300] [--rounds 5]

Against the fast loopback mock (its own process), `Broker.chat` one call at a time with a
`block` budget that never refuses, beside the same broker with no budget, on a SQLite ledger
file and on a temporary PostgreSQL server (skipped with a note without its binaries).  The
four brokers run interleaved, `rounds` x `calls` calls each, so they share the machine's noise;
it prints p50 and p99 per call and what the budget adds to each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import Broker

from ._common import pct
from ._postgres import temporary_server
from ._server import BenchServer

MESSAGES = [{"role": "user", "content": "hello, how much does this cost?"}]


def policy(url: str, ledger: str, *, budget: bool) -> dict[str, Any]:
    route = {"id": "r", "provider": "local", "model": "llama-3.1-8b", "model_id": "bench", "endpoint": url,
             "jurisdiction": "on-prem", "price": {"input_per_mtok": "0.10", "output_per_mtok": "0.10"}}
    tenant: dict[str, Any] = {"residency": ["on-prem"]}
    if budget:
        tenant["budget"] = {"monthly_usd": 1_000_000, "on_exceed": "block"}
    return {"version": 1, "ledger": ledger, "routes": [route], "tenants": {"acme": tenant}}


def timed(broker: Broker, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        broker.chat(model="llama-3.1-8b", messages=MESSAGES, tenant="acme", max_tokens=16)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with BenchServer() as server, tempfile.TemporaryDirectory() as tmp, temporary_server() as (pg_url, pg_note):
        ledgers = {"SQLite": f"sqlite:///{Path(tmp) / 'usage.db'}"}
        if pg_url:
            ledgers["PostgreSQL"] = pg_url
        brokers: dict[tuple[str, bool], Broker] = {}
        try:
            for name, ledger in ledgers.items():
                for budget in (False, True):
                    brokers[(name, budget)] = Broker.from_policy(policy(server.url, ledger, budget=budget))
            samples: dict[tuple[str, bool], list[float]] = {key: [] for key in brokers}
            for broker in brokers.values():
                timed(broker, 50)  # warm up pools, caches and period rows
            for _ in range(args.rounds):
                for key, broker in brokers.items():
                    samples[key] += timed(broker, args.calls)
        finally:
            for broker in brokers.values():
                broker.close()
    figures: dict[tuple[str, bool], tuple[float, float]] = {}
    for key, values in samples.items():
        values.sort()
        figures[key] = (pct(values, 50), pct(values, 99))
    print(f"Broker.chat one call at a time, {args.rounds} x {args.calls} calls each, interleaved (us per call):")
    print(f"  {'ledger':<11} {'budgets off p50/p99':>22} {'budget on p50/p99':>22} {'added p50/p99':>18}")
    show: Callable[[float, float], str] = lambda a, b: f"{a:8.0f} / {b:8.0f}"  # noqa: E731
    for name in ledgers:
        off, on = figures[(name, False)], figures[(name, True)]
        print(f"  {name:<11} {show(*off):>22} {show(*on):>22} {show(on[0] - off[0], on[1] - off[1]):>18}")
    if not pg_url:
        print(f"  PostgreSQL: skipped ({pg_note})")


if __name__ == "__main__":
    main()
