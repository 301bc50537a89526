"""Async throughput of the local adapter: aiohttp-backed transport vs httpx's own async pool.

    python benchmarks/async_transport.py [--requests 2000] [--concurrency 50,200,500] [--runs 5]

Prints, per concurrency level, the median over runs of requests/second and p50/p99 latency for
each backend, and the ratio aiohttp/httpx measured in the same run.  The server adds a 20 ms
delay per request, like a model's first token, so many requests are in flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _server import BenchServer

from adapters.local import LocalAdapter
from broker.routes import Route
from broker.transport import HttpClients, TransportOptions
from broker.types import ChatRequest

REQUEST = ChatRequest(model="bench", messages=[{"role": "user", "content": "hello"}])


async def one_run(url: str, backend: str, total: int, concurrency: int) -> tuple[float, float, float]:
    http = HttpClients(TransportOptions(async_backend=backend, max_connections=concurrency,  # type: ignore[arg-type]
                                        max_keepalive_connections=concurrency))
    route = Route(id="bench", provider="local", model="bench", model_id="bench", jurisdiction="on-prem",
                  endpoint=url, timeout_s=60)
    adapter = LocalAdapter(route, http=http)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def call() -> None:
        async with gate:
            t = time.perf_counter()
            await adapter.achat(REQUEST)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(total)))
    elapsed = time.perf_counter() - start
    await http.aclose()
    latencies.sort()
    return total / elapsed, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="50,200,500")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with BenchServer(delay_s=0.02) as server:
        print(f"{'conc':>5} {'backend':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for conc in (int(c) for c in args.concurrency.split(",")):
            results: dict[str, list[tuple[float, float, float]]] = {"aiohttp": [], "httpx": []}
            for _ in range(args.runs):
                for backend in results:  # interleaved so both see the same machine noise
                    results[backend].append(asyncio.run(one_run(server.url, backend, args.requests, conc)))
            med = {b: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for b, rs in results.items()}
            for backend, (rps, p50, p99) in med.items():
                print(f"{conc:>5} {backend:>8} {rps:>9.0f} {p50:>8.1f} {p99:>8.1f}")
            print(f"{conc:>5} {'ratio':>8} {med['aiohttp'][0] / med['httpx'][0]:>9.2f}x throughput (aiohttp / httpx)")


if __name__ == "__main__":
    main()
