"""A fast OpenAI-compatible loopback server for benchmarks (aiohttp, run in its own process).

It answers every chat-completions POST with the same small completion, so what a benchmark
measures is the client side: the broker, its transport and its pools.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import time

from typing_extensions import Self

_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "benchmark reply"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}).encode()


def _serve(port: int, delay_s: float) -> None:
    import asyncio

    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(body=_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    """Context manager: the server in a child process; `.url` is its `/v1` base URL."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.process = multiprocessing.Process(target=_serve, args=(self.port, delay_s), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Self:
        self.process.start()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("benchmark server did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(5)
