"""Added latency, one call at a time: p50 / p99 and streaming time to first token, over a raw client.

- local adapter: `AsyncBroker` (five routes, cost routing, batched metering) against raw aiohttp
  on the mock; streaming TTFT the same way; sync `Broker.chat` against a bare `httpx.Client.post`;
- Groq adapter (the real `groq` SDK) against `broker.testing`'s Groq emulator, in its own process
  on its own CPU, against raw aiohttp posting the same body to the same emulator.

Each repetition times `n` sequential calls of each contender, interleaved; a figure is the
median over repetitions of (contender percentile - baseline percentile).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._clients import BODY, MESSAGES, MODEL, AsyncBrokerCall, RawAiohttp, five_route_policy, temp_ledger
from ._common import Figure, Settings, median_of, pct
from ._server import BenchServer, EmulatorProcess

SECTION = "latency"
GROQ_MODEL = "llama-3.1-8b-instant"


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(30):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return out


def _timed_sync(call: Callable[[], Any], n: int) -> list[float]:
    for _ in range(30):
        call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return out


async def _local_round(url: str, n: int) -> dict[str, list[float]]:
    raw, broker = RawAiohttp(url, limit=8), AsyncBrokerCall(url)
    try:
        return {
            "raw": await _timed(raw.call, n),
            "broker": await _timed(broker.call, n),
            "raw ttft": await _timed(raw.first_token, n),
            "broker ttft": await _timed(broker.first_token, n),
        }
    finally:
        await raw.aclose()
        await broker.aclose()


def _sync_round(url: str, n: int) -> dict[str, list[float]]:
    import httpx

    from broker import Broker

    tmp, ledger = temp_ledger()
    client = httpx.Client()
    try:
        with Broker.from_policy(five_route_policy(url, ledger)) as broker:
            return {
                "httpx": _timed_sync(lambda: client.post(url + "/chat/completions", json=BODY).json(), n),
                "sync broker": _timed_sync(lambda: broker.chat(model=MODEL, messages=MESSAGES), n),
            }
    finally:
        client.close()
        tmp.cleanup()


def _groq_policy(url: str, ledger: str) -> dict[str, Any]:
    route = {"id": "groq-bench", "provider": "groq", "model": "llama-3.1-8b", "model_id": GROQ_MODEL,
             "endpoint": url, "api_key_env": "LLAMA_BROKER_BENCH_GROQ_KEY"}
    return {"version": 1, "ledger": ledger, "routes": [route],
            "tenants": {"default": {"objective": "cost", "residency": ["unknown"]}}}


async def _groq_round(url: str, n: int) -> dict[str, list[float]]:
    import aiohttp

    from broker import AsyncBroker

    body = json.dumps({"model": GROQ_MODEL, "messages": MESSAGES}).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def raw() -> Any:
        async with session.post(url + "/openai/v1/chat/completions", data=body, headers=headers) as response:
            return json.loads(await response.read())

    tmp, ledger = temp_ledger()
    broker = AsyncBroker.from_policy(_groq_policy(url, ledger))
    try:
        return {
            "groq raw": await _timed(raw, n),
            "groq broker": await _timed(lambda: broker.chat(model="llama-3.1-8b", messages=MESSAGES), n),
        }
    finally:
        await session.close()
        await broker.aclose()
        tmp.cleanup()


def _added(name: str, runs: list[dict[str, list[float]]], base: str, contender: str, q: float,
           target: float | None) -> Figure:
    diffs = [pct(r[contender], q) - pct(r[base], q) for r in runs]
    value = median_of(diffs)
    base_value = median_of([pct(r[base], q) for r in runs])
    fig = Figure(SECTION, name, value, "ms", baseline=base, baseline_value=base_value,
                 ratio=(base_value + value) / base_value if base_value else None, samples=diffs)
    if target is not None:
        fig.target, fig.met = f"<= {target} ms", value <= target
    return fig


def run(settings: Settings) -> list[Figure]:
    import os

    n = settings.size(2000, 400)
    local: list[dict[str, list[float]]] = []
    with BenchServer() as server:
        for _ in range(settings.reps):
            local.append({**asyncio.run(_local_round(server.url, n)), **_sync_round(server.url, n)})
    os.environ["LLAMA_BROKER_BENCH_GROQ_KEY"] = "bench"
    groq: list[dict[str, list[float]]] = []
    with EmulatorProcess("broker.testing.groq:GroqEmulator", queue_time_s=0.0) as emulator:
        for _ in range(settings.reps):
            groq.append(asyncio.run(_groq_round(emulator.url, settings.size(1000, 200))))
    return [
        _added("local: AsyncBroker added p50", local, "raw", "broker", 50, 0.2),
        _added("local: AsyncBroker added p99", local, "raw", "broker", 99, 1.0),
        _added("local: streaming TTFT added p50", local, "raw ttft", "broker ttft", 50, None),
        _added("local: sync Broker.chat added p50", local, "httpx", "sync broker", 50, 0.2),
        _added("groq: AsyncBroker added p50", groq, "groq raw", "groq broker", 50, None),
        _added("groq: AsyncBroker added p99", groq, "groq raw", "groq broker", 99, None),
    ]
