"""HTTP clients shared by every adapter of one broker.

One place decides how the broker talks HTTP:

- sync calls: one pooled `httpx.HTTPTransport`.  The adapters that speak HTTP themselves send
  on it directly, each route's URL, fixed headers and timeouts built once (`SyncPost`): the
  client's per-call request building (URL merging, cookies, auth and redirect handling, a timeout
  object) cost more than the rest of the broker's own work.  SDKs that take a client (Groq) get an
  `httpx.Client` over the same transport (`HttpClients.sync`), so both share one pool;
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

__all__ = ["AsyncPost", "HttpClients", "SyncPost", "TransportOptions", "timeout_for"]

#: one DEBUG record per exchange the broker sends itself (`AsyncPost`, `SyncPost`), as httpx's client
#: writes for the SDKs (redacted like every record: broker/redaction.py)
log = logging.getLogger("llama_broker.http")

#: what `httpx.Client` sends on every request, kept on the requests `SyncPost` builds itself
_SYNC_BASE_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


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
        self._sync_transport: httpx.HTTPTransport | None = None
        self._async: httpx.AsyncClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    @property
    def sync_transport(self) -> httpx.HTTPTransport:
        """The sync connection pool (what `SyncPost` sends on; `sync`'s client sends on it too)."""
        if self._sync_transport is None:
            import httpx

            self._sync_transport = httpx.HTTPTransport(limits=self.options.limits, trust_env=False)
        return self._sync_transport

    @property
    def sync(self) -> httpx.Client:
        """An httpx client over `sync_transport`, for SDKs that take one (Groq)."""
        if self._sync is None:
            import httpx

            self._sync = httpx.Client(transport=self.sync_transport, timeout=None, trust_env=False)
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
        client, transport, self._sync, self._sync_transport = self._sync, self._sync_transport, None, None
        if client is not None:
            client.close()  # closes its transport, the shared pool
        elif transport is not None:
            transport.close()

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


class SyncPost:
    """One route's POST on the sync path: its URL, fixed headers and timeouts, built once.

    Sent on the broker's `httpx.HTTPTransport` (`HttpClients.sync_transport`), so the failures are
    httpx's own exception types, as through `httpx.Client`; no cookies are kept and redirects are
    not followed, as on the async path.
    """

    __slots__ = ("extensions", "headers", "url")

    def __init__(self, url: str, *, read_s: float, connect_s: float, headers: dict[str, str] | None = None) -> None:
        import httpx

        self.url = httpx.URL(url)
        self.extensions = {"timeout": timeout_for(read_s, connect_s).as_dict()}
        self.headers: dict[str, str] = {
            **_SYNC_BASE_HEADERS, "User-Agent": f"python-httpx/{httpx.__version__}",
            "Content-Type": "application/json", **(headers or {}),
        }

    def with_headers(self, extra: dict[str, str]) -> dict[str, str]:
        """The fixed headers plus per-call ones (a refreshed token)."""
        return {**self.headers, **extra} if extra else self.headers

    def open(self, transport: httpx.BaseTransport, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Send the request; the answer's body is still to be read (`Response.iter_bytes`), then `close()`d."""
        import httpx

        request = httpx.Request("POST", self.url, content=body, headers=headers, extensions=self.extensions)
        response = transport.handle_request(request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug('HTTP Request: POST %s "%d"', self.url, response.status_code)
        return response

    def send(self, transport: httpx.BaseTransport, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Send the request and read the whole answer (the connection goes back to the pool)."""
        response = self.open(transport, body, headers)
        try:
            response.read()
        finally:
            response.close()
        return response


def timeout_for(read_s: float, connect_s: float) -> httpx.Timeout:
    """The per-request httpx timeout of a route: connect bounded apart from read."""
    import httpx

    return httpx.Timeout(read_s, connect=connect_s)
