"""A fast OpenAI-compatible loopback server for benchmarks (aiohttp, run in its own process).

It answers every chat-completions POST with the same small completion (or, when the body asks
for `"stream": true`, the same few SSE chunks), so what a benchmark measures is the client side:
the broker, its transport and its pools.  The server process is pinned to its own CPU
(`server_cpu()`, the last one) and `pin_client()` keeps the measuring process off it.

`serve_emulator()` runs one of `broker.testing`'s provider emulators the same way, for the
figures that go through a cloud SDK adapter.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import socket
import time
from typing import Any

from typing_extensions import Self

__all__ = ["BenchServer", "EmulatorProcess", "client_cpus", "free_port", "pin_client", "server_cpu"]

_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "benchmark reply"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    payload: dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                               "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        payload["choices"] = []
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "benchmark"}),
    _chunk({"content": " reply"}),
    _chunk({}, finish="stop"),
    _chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}),
    b"data: [DONE]\n\n",
]


_ALLOWED: list[set[int]] = []  # the CPUs this process could use before `pin_client` narrowed them


def _allowed() -> set[int]:
    if not _ALLOWED:
        _ALLOWED.append(set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set())
    return _ALLOWED[0]


def server_cpu() -> int | None:
    """The CPU the server processes run on (the last one the benchmark may use); None without affinity."""
    cpus = sorted(_allowed())
    return cpus[-1] if len(cpus) > 1 else None


def client_cpus() -> set[int] | None:
    """The CPUs the measuring processes run on: every allowed one but the server's."""
    cpu = server_cpu()
    if cpu is None:
        return None
    return _allowed() - {cpu}


def pin_client() -> None:
    """Keep this process (and the processes it starts after this) off the server's CPU."""
    cpus = client_cpus()
    if cpus:
        os.sched_setaffinity(0, cpus)


def _pin_server(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _serve(port: int, delay_s: float, chunk_delay_s: float, cpu: int | None) -> None:
    _pin_server(cpu)
    import asyncio
    import logging

    from aiohttp import web

    # a client that stops reading after the first token (the TTFT figures) is not a server error
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        if b'"stream"' not in body or not json.loads(body).get("stream"):
            return web.Response(body=_BODY, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for chunk in _STREAM:
            await response.write(chunk)
            if chunk_delay_s:
                await asyncio.sleep(chunk_delay_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, process: multiprocessing.Process) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if not process.is_alive():
            raise RuntimeError("benchmark server exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("benchmark server did not start")


class BenchServer:
    """Context manager: the server in a child process pinned to its own CPU; `.url` is its `/v1` base URL."""

    def __init__(self, delay_s: float = 0.0, chunk_delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(self.port, delay_s, chunk_delay_s, server_cpu()), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Self:
        self.process.start()
        _wait_for(self.port, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(5)


def _serve_emulator(spec: str, port: int, kwargs: dict[str, Any], cpu: int | None) -> None:
    _pin_server(cpu)
    module, _, name = spec.partition(":")
    emulator = getattr(importlib.import_module(module), name)(port=port, **kwargs)
    emulator.start()
    while True:
        time.sleep(3600)


class EmulatorProcess:
    """A `broker.testing` emulator (`"module:Class"`) in a child process pinned to the server CPU."""

    def __init__(self, spec: str, **kwargs: Any) -> None:
        self.port = free_port()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve_emulator, args=(spec, self.port, kwargs, server_cpu()), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.process.start()
        _wait_for(self.port, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(5)
