"""HTTP clients shared by every adapter of one broker.

One place decides how the broker talks HTTP: pooled `httpx.Client` for sync calls, and for
async calls an `httpx.AsyncClient` over an aiohttp-backed transport (`httpx-aiohttp`), because
httpx's own async pool degrades badly past a few dozen concurrent requests
(encode/httpx#3215).  Adapters that speak HTTP themselves (local, Vertex) or through an SDK
that accepts an httpx client (Groq) take their clients from here; they never build their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx

__all__ = ["HttpClients", "TransportOptions", "timeout_for"]


@dataclass(frozen=True)
class TransportOptions:
    """Pool and transport settings; `async_backend="httpx"` keeps httpx's own async pool."""

    max_connections: int = 256
    max_keepalive_connections: int = 64
    keepalive_expiry_s: float = 30.0
    async_backend: Literal["aiohttp", "httpx"] = "aiohttp"

    @property
    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry_s,
        )


class HttpClients:
    """Lazily built, shared sync and async httpx clients.  Timeouts are set per request."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None

    @property
    def sync(self) -> httpx.Client:
        if self._sync is None:
            self._sync = httpx.Client(limits=self.options.limits, timeout=None, trust_env=False)
        return self._sync

    @property
    def async_(self) -> httpx.AsyncClient:
        if self._async is None:
            self._async = httpx.AsyncClient(
                transport=self._async_transport(), timeout=None, trust_env=False
            )
        return self._async

    def _async_transport(self) -> httpx.AsyncBaseTransport:
        if self.options.async_backend == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            return AiohttpTransport(limits=self.options.limits, trust_env=False)
        return httpx.AsyncHTTPTransport(limits=self.options.limits)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None


def timeout_for(read_s: float, connect_s: float) -> httpx.Timeout:
    """The per-request timeout of a route: connect bounded apart from read."""
    return httpx.Timeout(read_s, connect=connect_s)
