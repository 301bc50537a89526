"""Chat completions over the broker's own HTTP code: the I/O half shared by local runners and Vertex MaaS.

Subclasses say where to POST (`url`) and how to authenticate (`auth_headers` /
`aauth_headers`; `static_auth = True` when the headers never change, so they are built into the
route's request once).  Sync calls go on the broker's shared httpx transport directly
(`broker.transport.SyncPost`), async calls on its aiohttp session (`broker.transport.AsyncPost`):
each route's URL, fixed headers and timeouts built once, the body read once.  Every
transport failure and non-2xx answer is mapped onto the broker's errors in `_mapped_errors`,
the only place this module touches httpx's and aiohttp's exception types:

| transport failure                                      | broker error  |
|--------------------------------------------------------|---------------|
| a connect or read timeout                              | Timeout       |
| the connection broke or the HTTP framing was bad       | ProtocolError |
| the body is not JSON / not UTF-8                       | ProtocolError |
| the server cannot be reached, any other client error   | Unavailable   |

An error a server reports inside a stream is classified like the same error answered as an
HTTP status (`stream_error`), so a request error mid-stream is not retried and a context
overflow still fails over.  The shapes read:

- OpenAI, vLLM, SGLang: `data: {"error": {"message", "type", "code"}}` (`code` the HTTP status
  as a number on vLLM, a word on OpenAI);
- TGI: `data: {"error": "<text>", "error_type": "validation", "http_status_code": 422}`;
- llama.cpp server: an `error: {"code", "message", "type"}` line (not `data:`).

The status is the one the payload states; without one it comes from the error's code or type
(TGI's `validation` is 422, `invalid_request_error` 400, `overloaded` 429, ...), else 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import httpx

from broker.adapter import AdapterBase
from broker.errors import ProtocolError, ProviderError, Timeout, Unavailable
from broker.transport import AsyncPost, SyncPost
from broker.types import ChatRequest, ChatResponse, StreamEvent

from . import openai_shape
from .http_errors import error_for_status

__all__ = ["OpenAIHttpAdapter", "stream_error_status"]

_DONE = "[DONE]"
_ERROR_LINE = "error:"

#: the HTTP status an in-stream error of this `code` / `type` / TGI `error_type` would have been answered with
_STATUS_BY_ERROR_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "badrequesterror": 400,
    "exceed_context_size_error": 400,
    "tool_use_failed": 400,
    "validation": 422,
    "template_error": 422,
    "tool_error": 422,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "notfounderror": 404,
    "model_not_found": 404,
    "generation": 424,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "overloaded": 429,
    "capacity_exceeded": 498,
    "incomplete_generation": 500,
    "server_error": 500,
    "internal_server_error": 500,
    "service_unavailable": 503,
}


def _status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 400 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and 400 <= int(value) <= 599:
        return int(value)
    return None


def stream_error_status(payload: Mapping[str, Any]) -> int:
    """The HTTP status an error event stands for: the one it states, else the one its code or type implies, else 500.

    `payload` is the event's JSON: `{"error": ..., "status_code"/"http_status_code": N}` or the
    error object itself (`{"code", "message", "type"}`).
    """
    err = payload.get("error")
    inner: Mapping[str, Any] = err if isinstance(err, Mapping) else payload
    for value in (payload.get("http_status_code"), payload.get("status_code"), inner.get("status_code"),
                  inner.get("code")):
        status = _status(value)
        if status is not None:
            return status
    for value in (payload.get("error_type"), inner.get("code"), inner.get("type")):
        if isinstance(value, str) and value.lower() in _STATUS_BY_ERROR_TYPE:
            return _STATUS_BY_ERROR_TYPE[value.lower()]
    return 500


class _Lines:
    """Splits a byte stream into lines, each decoded as strict UTF-8.

    httpx's own line iterators decode with replacement characters, which would turn bytes that
    are not UTF-8 into a quiet success; here they raise `UnicodeDecodeError` (a `ProtocolError`
    at `_mapped_errors`).  A character split across two network chunks is joined before decoding.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8") for line in lines]

    def end(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [rest.rstrip(b"\r").decode("utf-8")] if rest else []


class OpenAIHttpAdapter(AdapterBase):
    """Base for adapters that POST OpenAI-shaped JSON to a chat-completions URL."""

    #: servers differ in whether they accept `stream_options`; all OpenAI-compatible Llama servers do.
    include_stream_usage = True
    #: whether `auth_headers()` always returns the same headers (then they are built into the request once)
    static_auth = False
    _async_post: AsyncPost | None = None
    _sync_post: SyncPost | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def body_model_id(self) -> str:
        return self.route.model_id

    def auth_headers(self) -> dict[str, str]:
        return {}

    async def aauth_headers(self) -> dict[str, str]:
        return self.auth_headers()

    # ------------------------------------------------------------------ helpers

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        return openai_shape.request_body(
            request, self.body_model_id(), stream=stream, include_usage=self.include_stream_usage
        )

    def _post(self) -> AsyncPost:
        """The route's async request, built on first use (the URL may need the credentials first)."""
        post = self._async_post
        if post is None:
            post = AsyncPost(self.url, read_s=self.route.timeout_s, connect_s=self.route.connect_timeout_s,
                             headers=self.auth_headers() if self.static_auth else None)
            self._async_post = post
        return post

    def _sync_request(self) -> tuple[SyncPost, dict[str, str]]:
        """The route's sync request (built on first use, as `_post`) and this call's headers."""
        post = self._sync_post
        if post is None:
            post = SyncPost(self.url, read_s=self.route.timeout_s, connect_s=self.route.connect_timeout_s,
                            headers=self.auth_headers() if self.static_auth else None)
            self._sync_post = post
        return post, post.headers if self.static_auth else post.with_headers(self.auth_headers())

    async def _async_headers(self, post: AsyncPost) -> dict[str, str]:
        return post.headers if self.static_auth else post.with_headers(await self.aauth_headers())

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        ctx = self.error_context()
        try:
            yield
        except ProviderError:
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise Timeout(f"{type(exc).__name__} after {self.route.timeout_s}s", **ctx) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
            raise ProtocolError(f"connection broke mid-answer: {type(exc).__name__}", **ctx) from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}", **ctx) from exc
        except httpx.TimeoutException as exc:
            raise Timeout(f"{type(exc).__name__} after {self.route.timeout_s}s", **ctx) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ProtocolError(f"connection broke mid-answer: {exc}", **ctx) from exc
        except (httpx.NetworkError, httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}", **ctx) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}", **ctx) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"unreadable body: {type(exc).__name__}", **ctx) from exc

    def status_error(self, status: int, body: Any, headers: Mapping[str, str], request_id: str | None) -> ProviderError:
        """The broker error for a non-2xx answer; providers with their own error body override it."""
        return error_for_status(status, body, headers, request_id=request_id, **self.error_context())

    def stream_error(self, payload: Mapping[str, Any]) -> ProviderError:
        """The broker error for an error event in a stream: the status it stands for, through the status table."""
        body: Mapping[str, Any] = payload if "error" in payload else {"error": payload}
        return self.status_error(stream_error_status(payload), body, {}, None)

    def chunk_events(self, chunk: Any) -> list[StreamEvent]:
        """One decoded stream chunk -> events; providers with in-stream error shapes override it."""
        if isinstance(chunk, Mapping) and chunk.get("error"):
            raise self.stream_error(chunk)
        return list(openai_shape.events_from_chunk(chunk, **self.error_context()))

    def _raise_for_status(self, status: int, headers: Mapping[str, str], body_bytes: bytes) -> None:
        if status < 400:
            return
        try:
            body: Any = json.loads(body_bytes) if body_bytes else None
        except ValueError:
            body = body_bytes[:200].decode("utf-8", "replace")
        raise self.status_error(status, body, headers, headers.get("x-request-id"))

    def _parse(self, body_bytes: bytes, headers: Mapping[str, str]) -> ChatResponse:
        result = openai_shape.response_from_body(json.loads(body_bytes), **self.error_context())
        if result.provider_request_id is None:
            request_id = headers.get("x-request-id")
            if request_id is not None:
                result = replace(result, provider_request_id=request_id)
        return result

    def _events(self, line: str) -> list[StreamEvent]:
        if line.startswith(_ERROR_LINE):
            payload = json.loads(line[len(_ERROR_LINE):])
            raise self.stream_error(payload if isinstance(payload, Mapping) else {"error": str(payload)})
        if not line.startswith("data:"):
            return []
        payload = line[5:].strip()
        if payload == _DONE:
            return []
        return self.chunk_events(json.loads(payload))

    # ------------------------------------------------------------------ sync

    def chat(self, request: ChatRequest) -> ChatResponse:
        with self._mapped_errors():
            post, headers = self._sync_request()
            response = post.send(self.http.sync_transport, self._encode(self._body(request, False)), headers)
            body = response.content
            self._raise_for_status(response.status_code, response.headers, body)
            return self._parse(body, response.headers)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        with self._mapped_errors():
            post, headers = self._sync_request()
            response = post.open(self.http.sync_transport, self._encode(self._body(request, True)), headers)
            try:
                if response.status_code >= 400:
                    self._raise_for_status(response.status_code, response.headers, response.read())
                lines = _Lines()
                for data in response.iter_bytes():
                    for line in lines.feed(data):
                        yield from self._events(line)
                for line in lines.end():
                    yield from self._events(line)
            finally:
                response.close()

    # ------------------------------------------------------------------ async

    async def achat(self, request: ChatRequest) -> ChatResponse:
        with self._mapped_errors():
            post = self._post()
            headers = await self._async_headers(post)
            async with post.send(self.http.session, self._encode(self._body(request, False)), headers) as response:
                post.answered(response.status)
                body = await response.read()
                self._raise_for_status(response.status, response.headers, body)
                return self._parse(body, response.headers)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        with self._mapped_errors():
            post = self._post()
            headers = await self._async_headers(post)
            async with post.send(self.http.session, self._encode(self._body(request, True)), headers) as response:
                post.answered(response.status)
                if response.status >= 400:
                    self._raise_for_status(response.status, response.headers, await response.read())
                lines = _Lines()
                async for data in response.content.iter_any():
                    for line in lines.feed(data):
                        for event in self._events(line):
                            yield event
                for line in lines.end():
                    for event in self._events(line):
                        yield event
