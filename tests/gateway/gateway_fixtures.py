"""What the gateway tests share: the keys, the policy, the emulators behind it, a running gateway.

Routes (every one on a loopback emulator; faults are standing, so each client meets the same
answers whatever order its scenarios run in):

| route          | model              | emulator                 | jurisdiction | answers                      |
|----------------|--------------------|--------------------------|--------------|------------------------------|
| local-8b       | llama-3.1-8b       | suite "local" (vLLM)     | on-prem      | text, JSON mode              |
| local-scout    | llama-4-scout      | suite "local"            | on-prem      | images                       |
| groq-8b        | llama-3.1-8b       | suite "groq"             | unknown      | text                         |
| tools-70b      | llama-3.3-70b      | ToolCallingEmulator      | on-prem      | a tool call, then text       |
| throttled-405b | llama-3.1-405b     | always 429, retry-after 7| on-prem      | 429                          |
| down-1b        | llama-3.2-1b       | always 503               | on-prem      | 503                          |
| us-8b          | llama-3.1-8b       | "spender"                | us           | text                         |

Tenants: acme (on-prem, key by environment variable), globex (unknown, key by SHA-256),
eu-only (eu: no route at all), capped (us, a budget of one micro-dollar, spent or refused by
its first call, made when the gateway starts: from then on it is refused).
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker.testing import EmulatorSuite, OpenAICompatEmulator, Reply

KEYS = {
    "acme": "sk-gw-acme-0f3c9a",
    "globex": "sk-gw-globex-77d1e2",
    "eu-only": "sk-gw-eu-4b8a10",
    "capped": "sk-gw-capped-91c2f0",
}
WRONG_KEY = "sk-gw-nobody-000000"
KEY_ENV = {"GATEWAY_KEY_ACME": KEYS["acme"], "GATEWAY_KEY_EU": KEYS["eu-only"]}
THROTTLE_RETRY_AFTER_S = 7
PRICE = {"input_per_mtok": 0.5, "output_per_mtok": 1.5}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ToolCallingEmulator(OpenAICompatEmulator):
    """Calls the first tool offered when the user spoke last; answers in text after a tool result."""

    def plan_for(self, body: dict[str, Any]) -> Any:
        messages = body.get("messages") or []
        tools = body.get("tools") or []
        if tools and messages and messages[-1].get("role") == "user":
            self.enqueue(Reply(tool_calls=[(tools[0]["function"]["name"], {"city": "Paris"})]))
        return super().plan_for(body)


class Backends:
    """The emulators behind the gateway."""

    def __init__(self) -> None:
        self.suite = EmulatorSuite(providers=["local", "groq"])
        self.tools = ToolCallingEmulator()
        self.throttled = OpenAICompatEmulator()
        self.down = OpenAICompatEmulator()
        self.spender = OpenAICompatEmulator()

    def __enter__(self) -> Backends:
        self.suite.start()
        for emu in (self.tools, self.throttled, self.down, self.spender):
            emu.start()
        self.throttled.fail(429, retry_after=THROTTLE_RETRY_AFTER_S, times=100_000)
        self.down.fail(503, message="runner overloaded", times=100_000)
        return self

    def __exit__(self, *exc: object) -> None:
        self.suite.stop()
        for emu in (self.tools, self.throttled, self.down, self.spender):
            emu.stop()

    def served(self) -> dict[str, tuple[int, int]]:
        """Input and output tokens the emulators reported, by the tenant whose routes they serve (none: left out)."""
        local, groq = self.suite["local"].reported, self.suite["groq"].reported
        tools = self.tools.reported
        served = {
            "acme": (local.input_tokens + tools.input_tokens, local.output_tokens + tools.output_tokens),
            "globex": (groq.input_tokens, groq.output_tokens),
            "capped": (self.spender.reported.input_tokens, self.spender.reported.output_tokens),
        }
        return {tenant: tokens for tenant, tokens in served.items() if tokens != (0, 0)}


def _local(route_id: str, model: str, emu: OpenAICompatEmulator) -> dict[str, Any]:
    return {"id": route_id, "provider": "local", "model": model, "model_id": f"served/{model}",
            "endpoint": f"{emu.url}/v1", "jurisdiction": "on-prem", "price": PRICE}


def gateway_policy(backends: Backends, ledger: Path, *, durable: bool = True) -> dict[str, Any]:
    local = backends.suite["local"]
    return {
        "version": 1,
        "ledger": f"sqlite:///{ledger}",
        "metering": {"durable": durable},
        "retry": {"max_attempts_per_route": 1},
        "circuit": {"failure_threshold": 1_000_000},
        "routes": [
            _local("local-8b", "llama-3.1-8b", local),
            _local("local-scout", "llama-4-scout", local),
            {"id": "groq-8b", "provider": "groq", "model": "llama-3.1-8b", "endpoint": backends.suite["groq"].url,
             "api_key_env": "GROQ_API_KEY"},
            _local("tools-70b", "llama-3.3-70b", backends.tools),
            _local("throttled-405b", "llama-3.1-405b", backends.throttled),
            _local("down-1b", "llama-3.2-1b", backends.down),
            {**_local("us-8b", "llama-3.1-8b", backends.spender), "jurisdiction": "us"},
        ],
        "tenants": {
            "acme": {"residency": ["on-prem"], "tags": {"team": "acme"},
                     "api_keys": [{"env": "GATEWAY_KEY_ACME"}]},
            "globex": {"residency": ["unknown"], "api_keys": [{"sha256": sha256(KEYS["globex"])}]},
            "eu-only": {"residency": ["eu"], "api_keys": [{"env": "GATEWAY_KEY_EU"}]},
            "capped": {"residency": ["us"], "budget": {"monthly_usd": "0.000001", "on_exceed": "block"},
                       "api_keys": [{"sha256": sha256(KEYS["capped"])}]},
        },
    }


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def spend_capped_budget(url: str) -> None:
    """The capped tenant's first call: it spends more than the whole budget, unless the budget's
    reservation for it (an upper bound of its cost) is refused already; either way, calls after it are."""
    import httpx

    answer = httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {KEYS['capped']}"},
                        json={"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "spend it"}]})
    assert answer.status_code in (200, 429), answer.text


@contextmanager
def running(app: Any) -> Iterator[str]:
    """`app` on uvicorn in a thread, on a free loopback port; yields its base URL (`.../v1`)."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    # the asyncio loop: uvloop would set a process-wide event-loop policy under the other tests
    config = uvicorn.Config(app, loop="asyncio", http="auto", lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM usage_events ORDER BY ts")]


def metered_tokens(path: Path) -> dict[str, tuple[int, int]]:
    """Input and output tokens of the successful attempts in the ledger, by tenant."""
    out: dict[str, tuple[int, int]] = {}
    for row in ledger_rows(path):
        if row["status"] == "ok":
            i, o = out.get(row["tenant"], (0, 0))
            out[row["tenant"]] = (i + row["input_tokens"], o + row["output_tokens"])
    return out
