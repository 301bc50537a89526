"""HTTP clients shared by every adapter of one broker.

One place decides how the broker talks HTTP:

- sync calls: one pooled `httpx.Client`;
- async calls of the adapters that speak HTTP themselves (local runners, Vertex): aiohttp
  directly, one `aiohttp.ClientSession` per broker with no cookie jar, and each route's URL,
  fixed headers and timeouts built once (`AsyncPost`).  httpx stacked on aiohttp spent more than
  half of a loopback call in httpx (URL merging, cookie extraction, the body read through
  generators, a timeout object per call), which is why these adapters skip it;
- async calls of SDKs that take an httpx client (Groq): an `httpx.AsyncClient` over an
  aiohttp-backed transport (`httpx-aiohttp`), because httpx's own async pool degrades badly past
  a few dozen concurrent requests (encode/httpx#3215).  `async_backend="httpx"` keeps httpx's pool.

httpx and aiohttp are imported on first use, so `import broker` does not pay for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import asyncio

    import aiohttp
    import httpx

__all__ = ["AsyncPost", "HttpClients", "TransportOptions", "timeout_for"]

#: one DEBUG record per exchange on the aiohttp path, as httpx writes for the sync path (redacted
#: like every record: broker/redaction.py)
log = logging.getLogger("llama_broker.http")


@dataclass(frozen=True)
class TransportOptions:
    """Pool and transport settings; `async_backend="httpx"` keeps httpx's own async pool for SDK clients."""

    max_connections: int = 256
    max_keepalive_connections: int = 64
    keepalive_expiry_s: float = 30.0
    async_backend: Literal["aiohttp", "httpx"] = "aiohttp"

    @property
    def limits(self) -> httpx.Limits:
        import httpx

        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry_s,
        )


class HttpClients:
    """Lazily built, shared HTTP clients of one broker.  Timeouts are set per request."""

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    @property
    def sync(self) -> httpx.Client:
        if self._sync is None:
            import httpx

            self._sync = httpx.Client(limits=self.options.limits, timeout=None, trust_env=False)
        return self._sync

    @property
    def async_(self) -> httpx.AsyncClient:
        """An httpx async client, for SDKs that take one (Groq)."""
        if self._async is None:
            import httpx

            self._async = httpx.AsyncClient(transport=self._async_transport(), timeout=None, trust_env=False)
        return self._async

    def _async_transport(self) -> httpx.AsyncBaseTransport:
        if self.options.async_backend == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            return AiohttpTransport(limits=self.options.limits, trust_env=False)
        import httpx

        return httpx.AsyncHTTPTransport(limits=self.options.limits)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session of the running event loop (built on first use, again if the loop changed)."""
        import asyncio

        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._session_loop is not loop:
            import aiohttp

            opts = self.options
            connector = aiohttp.TCPConnector(
                limit=opts.max_connections, limit_per_host=0, keepalive_timeout=opts.keepalive_expiry_s,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                auto_decompress=True, timeout=aiohttp.ClientTimeout(total=None),
            )
            self._session, self._session_loop = session, loop
        return session

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        session, self._session = self._session, None
        import asyncio

        if session is not None and not session.closed and self._session_loop is asyncio.get_running_loop():
            await session.close()


class AsyncPost:
    """One route's POST on the async path: its URL, fixed headers and timeouts, built once.

    `read_s` bounds each socket read (as httpx's read timeout does), `connect_s` the connection.
    """

    __slots__ = ("headers", "timeout", "url")

    def __init__(self, url: str, *, read_s: float, connect_s: float, headers: dict[str, str] | None = None) -> None:
        import aiohttp
        import yarl

        self.url = yarl.URL(url)
        self.timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_s, sock_read=read_s)
        self.headers: dict[str, str] = {"Content-Type": "application/json", **(headers or {})}

    def with_headers(self, extra: dict[str, str]) -> dict[str, str]:
        """The fixed headers plus per-call ones (a refreshed token)."""
        return {**self.headers, **extra} if extra else self.headers

    def send(self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]) -> Any:
        """The request context manager (`async with post.send(...) as response`)."""
        return session.post(self.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False)

    def answered(self, status: int) -> None:
        """Log the exchange at DEBUG (the URL and status: never headers or bodies)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug('HTTP Request: POST %s "%d"', self.url, status)


def timeout_for(read_s: float, connect_s: float) -> httpx.Timeout:
    """The per-request httpx timeout of a route: connect bounded apart from read."""
    import httpx

    return httpx.Timeout(read_s, connect=connect_s)
