"""The contenders on the mock: raw aiohttp, raw httpx, `AsyncBroker` and sync `Broker` over five local routes.

Each `make_*` returns an async (or sync) zero-argument call that sends one chat completion to
the mock and parses its answer, so the throughput and latency sections time them the same way.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

MODEL = "llama-3.1-8b"
MESSAGES = [{"role": "user", "content": "hello, how fast is this?"}]
BODY = {"model": "bench", "messages": MESSAGES}
PRICES = ["0.10", "0.20", "0.05", "0.30", "0.15"]  # USD per million tokens
JURISDICTIONS = ["on-prem", "eu", "us", "us", "eu"]

AsyncCall = Callable[[], Awaitable[Any]]


def five_route_policy(url: str, ledger: str, *, budget: bool = False) -> dict[str, Any]:
    """Five local routes on the mock, cost routing; `budget` adds a blocking monthly budget."""
    routes = [
        {"id": f"r{i}", "provider": "local", "model": MODEL, "model_id": "bench", "endpoint": url,
         "jurisdiction": j, "price": {"input_per_mtok": p, "output_per_mtok": p}, "timeout_s": 30}
        for i, (j, p) in enumerate(zip(JURISDICTIONS, PRICES, strict=True))
    ]
    tenant: dict[str, Any] = {"objective": "cost", "residency": ["us", "eu", "on-prem"]}
    if budget:
        tenant["budget"] = {"monthly_usd": 1_000_000, "on_exceed": "block"}
    return {"version": 1, "ledger": ledger, "routes": routes, "tenants": {"default": tenant}}


def temp_ledger() -> tuple[tempfile.TemporaryDirectory[str], str]:
    tmp = tempfile.TemporaryDirectory(prefix="llama-broker-bench-")
    return tmp, f"sqlite:///{Path(tmp.name) / 'usage.db'}"


class RawAiohttp:
    """aiohttp with one session, no cookie jar, the body pre-encoded: the floor."""

    def __init__(self, url: str, limit: int = 256) -> None:
        import aiohttp

        self.url = url + "/chat/completions"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                             cookie_jar=aiohttp.DummyCookieJar())
        self.body = json.dumps(BODY).encode()
        self.headers = {"Content-Type": "application/json"}

    async def call(self) -> Any:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as response:
            return json.loads(await response.read())

    async def first_token(self) -> None:
        body = json.dumps({**BODY, "stream": True}).encode()
        async with self.session.post(self.url, data=body, headers=self.headers) as response:
            async for chunk in response.content.iter_any():
                if b'"content": "benchmark"' in chunk or b'"content":"benchmark"' in chunk:
                    break

    async def aclose(self) -> None:
        await self.session.close()


class RawHttpx:
    """httpx.AsyncClient on its own pool."""

    def __init__(self, url: str, limit: int = 256) -> None:
        import httpx

        self.url = url + "/chat/completions"
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                                        timeout=60)

    async def call(self) -> Any:
        return (await self.client.post(self.url, json=BODY)).json()

    async def aclose(self) -> None:
        await self.client.aclose()


class AsyncBrokerCall:
    """`AsyncBroker.chat` over `five_route_policy`, metered (batched) to a temporary SQLite ledger."""

    def __init__(self, url: str, *, budget: bool = False) -> None:
        from broker import AsyncBroker

        self._tmp, ledger = temp_ledger()
        self.broker = AsyncBroker.from_policy(five_route_policy(url, ledger, budget=budget))

    async def call(self) -> Any:
        return await self.broker.chat(model=MODEL, messages=MESSAGES)

    async def first_token(self) -> None:
        async for event in self.broker.stream(model=MODEL, messages=MESSAGES):
            if event.text:
                break

    async def aclose(self) -> None:
        await self.broker.aclose()
        self._tmp.cleanup()


def budget_store_available() -> bool:
    """Whether the broker has a budget reservation store (a budgets-on row needs one)."""
    import importlib.util

    try:
        return importlib.util.find_spec("broker.budgets.store") is not None
    except ModuleNotFoundError:
        return False
