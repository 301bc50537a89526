"""Groq (LPU inference) over the `groq` SDK, on the broker's shared HTTP clients.

Route fields:

- `endpoint`: the API's host root (default `https://api.groq.com`); the SDK appends
  `/openai/v1/chat/completions`.  A trailing `/openai/v1` is tolerated and removed.
- `model_id`: Groq's model name, e.g. `llama-3.3-70b-versatile`,
  `meta-llama/llama-4-scout-17b-16e-instruct`.
- `api_key_env`: the variable holding the key (`GROQ_API_KEY` when unset).
- `timeout_s` / `connect_timeout_s`: the per-request httpx timeout.

The `Groq` / `AsyncGroq` clients are built with `max_retries=0` (the broker retries) and with
`http_client=` set to the broker's shared httpx clients, so Groq calls use the broker's pools
and its aiohttp-backed async transport.  Closing the adapter leaves those clients open: the
broker owns them.

`max_tokens` goes out as `max_completion_tokens`.  Groq's timings are kept:
`provider_timings` holds `queue_time`, `prompt_time`, `completion_time`, `total_time` (seconds,
from `usage`, or from `x_groq.usage` on a stream's final chunk) and `provider_latency_ms` is
`total_time` in milliseconds.  The rate-limit headers of the answer are kept in
`provider_timings` too, as numbers: `ratelimit_limit_requests`, `ratelimit_limit_tokens`,
`ratelimit_remaining_requests`, `ratelimit_remaining_tokens`, and `ratelimit_reset_requests_s`,
`ratelimit_reset_tokens_s` (the reset durations in seconds).
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict

from broker.adapter import AdapterBase, require
from broker.errors import (
    CredentialsError,
    ModelNotAvailable,
    ProtocolError,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import EnvRef, OptionProblem, Route, RouteOptions
from broker.transport import HttpClients, timeout_for
from broker.types import ChatRequest, ChatResponse, StreamEvent

from . import openai_shape
from .http_errors import error_for_status, retry_after_seconds
from .openai_http import stream_error_status

__all__ = [
    "GroqAdapter",
    "GroqOptions",
    "from_provider_response",
    "rate_limits_from",
    "stream_events",
    "timings_from",
    "to_provider_request",
]

DEFAULT_BASE_URL = "https://api.groq.com"
DEFAULT_KEY_ENV = "GROQ_API_KEY"
TIMING_FIELDS = ("queue_time", "prompt_time", "completion_time", "total_time")
_RATE_LIMIT_COUNTS = ("limit-requests", "limit-tokens", "remaining-requests", "remaining-tokens")
_RATE_LIMIT_RESETS = ("reset-requests", "reset-tokens")
_GONE_CODES = {"model_decommissioned", "model_not_found"}


# ---------------------------------------------------------------------- pure translation


def to_provider_request(request: ChatRequest, model_id: str, *, stream: bool = False) -> dict[str, Any]:
    """Keyword arguments of `chat.completions.create`; `stream_options` travels in `extra_body`."""
    body = openai_shape.request_body(
        request, model_id, stream=stream, include_usage=stream, max_tokens_field="max_completion_tokens"
    )
    options = body.pop("stream_options", None)
    if options:
        body["extra_body"] = {"stream_options": options}
    return body


def timings_from(usage: Any) -> dict[str, float]:
    """Groq's timing fields of a usage object, in seconds (only those it sent as numbers)."""
    if not isinstance(usage, Mapping):
        return {}
    return {
        k: float(v)
        for k in TIMING_FIELDS
        if isinstance(v := usage.get(k), int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def rate_limits_from(headers: Mapping[str, str] | None) -> dict[str, float]:
    """The `x-ratelimit-*` headers as numbers; reset durations (`2m59.56s`) become seconds."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    out: dict[str, float] = {}
    for name in _RATE_LIMIT_COUNTS:
        value = lower.get(f"x-ratelimit-{name}")
        if value is not None:
            with suppress(ValueError):
                out["ratelimit_" + name.replace("-", "_")] = float(value)
    for name in _RATE_LIMIT_RESETS:
        value = lower.get(f"x-ratelimit-{name}")
        seconds = retry_after_seconds({"retry-after": value}) if value else None
        if seconds is not None:
            out["ratelimit_" + name.replace("-", "_") + "_s"] = seconds
    return out


def throttle_wait(headers: Mapping[str, str]) -> float | None:
    """How long a 429 asks to wait: `retry-after(-ms)`, else the reset of the exhausted limit."""
    wait = retry_after_seconds(headers)
    if wait is not None:
        return wait
    limits = rate_limits_from(headers)
    resets = {
        k: limits[f"ratelimit_reset_{k}_s"]
        for k in ("requests", "tokens")
        if f"ratelimit_reset_{k}_s" in limits
    }
    exhausted = [v for k, v in resets.items() if limits.get(f"ratelimit_remaining_{k}") == 0]
    if exhausted:
        return max(exhausted)
    return min(resets.values()) if resets else None


def _x_groq(body: Mapping[str, Any], *, provider: str, route_id: str) -> Mapping[str, Any]:
    """The `x_groq` member of an answer or chunk ({} when absent); any other shape is a `ProtocolError`."""
    x_groq = body.get("x_groq")
    if x_groq is None:
        return {}
    if not isinstance(x_groq, Mapping):
        raise ProtocolError("unreadable answer: x_groq is not an object", provider=provider, route_id=route_id)
    return x_groq


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _with_timings(
    usage_raw: Any, extra: Mapping[str, float]
) -> tuple[dict[str, float] | None, float | None]:
    timings = {**timings_from(usage_raw), **extra}
    total = timings.get("total_time")
    return (timings or None), (total * 1000.0 if total is not None else None)


def from_provider_response(
    body: Mapping[str, Any], *, provider: str, route_id: str, headers: Mapping[str, str] | None = None
) -> ChatResponse:
    """A Groq `ChatCompletion` (as a dict) and its headers -> `ChatResponse` with timings kept."""
    response = openai_shape.response_from_body(body, provider=provider, route_id=route_id)
    x_groq = _x_groq(body, provider=provider, route_id=route_id)
    timings, latency = _with_timings(body.get("usage") or x_groq.get("usage"), rate_limits_from(headers))
    request_id = (headers or {}).get("x-request-id") or _text(x_groq.get("id")) or response.provider_request_id
    return replace(
        response, provider_request_id=request_id, provider_timings=timings, provider_latency_ms=latency
    )


def stream_events(
    chunk: Mapping[str, Any],
    *,
    provider: str,
    route_id: str,
    request_id: str | None = None,
    rate_limits: Mapping[str, float] | None = None,
) -> list[StreamEvent]:
    """One Groq stream chunk -> broker events; the usage event carries the timings."""
    if not isinstance(chunk, Mapping):
        raise ProtocolError("unreadable stream chunk: not a JSON object", provider=provider, route_id=route_id)
    x_groq = _x_groq(chunk, provider=provider, route_id=route_id)
    if x_groq.get("error"):
        raise Unavailable(
            f"stream stopped early: {x_groq['error']}",
            provider=provider,
            route_id=route_id,
            request_id=request_id or _text(x_groq.get("id")),
        )
    usage_raw = chunk.get("usage") or x_groq.get("usage")
    if usage_raw and not chunk.get("usage"):
        chunk = {**chunk, "usage": usage_raw}
    events = []
    for event in openai_shape.events_from_chunk(chunk, provider=provider, route_id=route_id):
        if request_id:
            event = replace(event, provider_request_id=request_id)
        if event.usage is not None:
            timings, latency = _with_timings(usage_raw, rate_limits or {})
            event = replace(event, provider_timings=timings, provider_latency_ms=latency)
        events.append(event)
    return events


# ---------------------------------------------------------------------- the adapter


class GroqOptions(RouteOptions):
    """Options of a Groq route: none of its own; the key comes from `api_key_env` (`GROQ_API_KEY`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @staticmethod
    def key_env(route: Route) -> str:
        return route.api_key_env or DEFAULT_KEY_ENV

    def check(self, route: Route) -> Iterator[OptionProblem]:
        if route.api_key_env and route.api_key_env.startswith("gsk_"):
            yield OptionProblem("api_key_env", "api_key_env holds what looks like a Groq API key; "
                                "name the environment variable that holds it instead")

    def env_refs(self, route: Route) -> Iterator[EnvRef]:
        yield EnvRef("api_key_env", self.key_env(route))


class GroqAdapter(AdapterBase):
    """Groq's chat completions through `groq.Groq` / `groq.AsyncGroq`."""

    provider: ClassVar[str] = "groq"
    options: ClassVar[type[RouteOptions]] = GroqOptions

    def __init__(
        self, route: Route, *, http: HttpClients, client: Any = None, async_client: Any = None
    ) -> None:
        super().__init__(route, http=http)
        self.opts = GroqOptions.for_route(route)
        self._groq: Any = require("groq", provider="groq", package="groq", extra="groq")
        self._client = client
        self._aclient = async_client
        self._key: str | None = None
        if client is None or async_client is None:
            env = self.opts.key_env(route)
            self._key = os.environ.get(env)
            if not self._key:
                raise CredentialsError(f"route {route.id!r}: environment variable {env} is not set")
            self.redact_secrets(self._key)
        base = (route.endpoint or DEFAULT_BASE_URL).rstrip("/")
        self._base_url = base.removesuffix("/openai/v1")
        self._timeout = timeout_for(route.timeout_s, route.connect_timeout_s)

    def _sync(self) -> Any:
        if self._client is None:
            self._client = self._groq.Groq(
                api_key=self._key,
                base_url=self._base_url,
                max_retries=0,
                timeout=self._timeout,
                http_client=self.http.sync,
            )
        return self._client

    def _async(self) -> Any:
        if self._aclient is None:
            self._aclient = self._groq.AsyncGroq(
                api_key=self._key,
                base_url=self._base_url,
                max_retries=0,
                timeout=self._timeout,
                http_client=self.http.async_,
            )
        return self._aclient

    # ------------------------------------------------------------------ the error seam

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        ctx = self.error_context()
        groq = self._groq
        try:
            yield
        except ProviderError:
            raise
        except groq.APITimeoutError as exc:
            raise Timeout(f"no answer within {self.route.timeout_s}s", **ctx) from exc
        except groq.APIConnectionError as exc:
            raise Unavailable(f"could not reach Groq: {exc.message}", **ctx) from exc
        except groq.APIResponseValidationError as exc:
            raise ProtocolError(f"unreadable answer: {exc.message}", status=exc.status_code, **ctx) from exc
        except groq.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except groq.APIError as exc:  # an error event in the middle of a stream
            raise self._stream_error(exc) from exc
        except httpx.TimeoutException as exc:
            raise Timeout(f"stream stalled past {self.route.timeout_s}s", **ctx) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ProtocolError(f"connection broke mid-answer: {type(exc).__name__}", **ctx) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}", **ctx) from exc
        except ValueError as exc:  # JSON the SDK could not decode
            raise ProtocolError(f"unreadable answer: {type(exc).__name__}", **ctx) from exc

    def _stream_error(self, exc: Any) -> ProviderError:
        """An `event: error` in a stream, classified by the status it stands for, as a status answer would be.

        Groq sends `{"error": {"message", "type", "code"}, "status_code": N}`; the SDK raises
        `APIError` with only the `error` member as its body, so the status is read from the body
        when present and otherwise from the error's code or type (`tool_use_failed` is 400).
        """
        raw = exc.body if exc.body is not None else {}
        body: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {"message": str(raw)}
        if "message" not in body and "error" not in body:
            body = {**body, "message": exc.message}
        payload = body if "error" in body else {"error": body}
        return self._classified(stream_error_status(payload), payload, {}, None)

    def _status_error(self, exc: Any) -> ProviderError:
        headers = exc.response.headers
        body = exc.body if isinstance(exc.body, Mapping) else {"error": exc.body} if exc.body else None
        if isinstance(body, Mapping) and "error" not in body:
            body = {"error": body}  # the SDK hands over the `error` member itself for some answers
        return self._classified(exc.status_code, body, headers, headers.get("x-request-id"))

    def _classified(
        self, status: int, body: Any, headers: Mapping[str, str], request_id: str | None
    ) -> ProviderError:
        """The shared status table, refined: Groq's gone-model codes and its rate-limit reset headers."""
        ctx = self.error_context()
        err = error_for_status(status, body, headers, request_id=request_id, **ctx)
        if err.code in _GONE_CODES and not isinstance(err, ModelNotAvailable):
            return ModelNotAvailable(
                err.message, status=err.status, request_id=err.request_id, code=err.code, **ctx
            )
        if status == 429 and err.retry_after is None:  # the wait may only be in the reset headers
            return Throttled(
                err.message,
                status=err.status,
                request_id=err.request_id,
                code=err.code,
                retry_after=throttle_wait(headers),
                **ctx,
            )
        return err

    # ------------------------------------------------------------------ calls

    def _wire(self, parsed: Any) -> dict[str, Any]:
        """What the SDK parsed, as the wire dict it came from.

        The SDK builds its models without validation (`construct`): fields keep the types they
        had on the wire, for the shape functions to check, and a body that is not a JSON object
        comes back as a `str` (a text or HTML page) or a `list`, which is a `ProtocolError` here.
        """
        if not isinstance(parsed, BaseModel):
            raise ProtocolError(
                f"unreadable answer: the body is a JSON {type(parsed).__name__}, not an object", **self.error_context()
            )
        wire: dict[str, Any] = parsed.model_dump(by_alias=True, exclude_unset=True, warnings=False)
        return wire

    def _parse(self, completion: Any, headers: Mapping[str, str]) -> ChatResponse:
        return from_provider_response(self._wire(completion), headers=headers, **self.error_context())

    def _events(self, chunk: Any, headers: Mapping[str, str]) -> list[StreamEvent]:
        return stream_events(
            self._wire(chunk),
            request_id=headers.get("x-request-id"),
            rate_limits=rate_limits_from(headers),
            **self.error_context(),
        )

    def chat(self, request: ChatRequest) -> ChatResponse:
        with self._mapped_errors():
            raw = self._sync().chat.completions.with_raw_response.create(
                **to_provider_request(request, self.route.model_id)
            )
            return self._parse(raw.parse(), raw.headers)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        with self._mapped_errors():
            raw = self._sync().chat.completions.with_raw_response.create(
                **to_provider_request(request, self.route.model_id, stream=True)
            )
            chunks = raw.parse()
            try:
                for chunk in chunks:
                    yield from self._events(chunk, raw.headers)
            finally:
                chunks.close()

    async def achat(self, request: ChatRequest) -> ChatResponse:
        with self._mapped_errors():
            raw = await self._async().chat.completions.with_raw_response.create(
                **to_provider_request(request, self.route.model_id)
            )
            return self._parse(await raw.parse(), raw.headers)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        with self._mapped_errors():
            raw = await self._async().chat.completions.with_raw_response.create(
                **to_provider_request(request, self.route.model_id, stream=True)
            )
            chunks = await raw.parse()
            try:
                async for chunk in chunks:
                    for event in self._events(chunk, raw.headers):
                        yield event
            finally:
                await chunks.close()

    # Closing: the SDK clients wrap the broker's shared httpx clients, which the broker closes.
