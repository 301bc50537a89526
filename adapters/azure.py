"""Azure AI Foundry Models (Azure AI Inference) over the `azure-ai-inference` SDK.

Route fields:

- `endpoint` (required): the Foundry models endpoint `https://<resource>.services.ai.azure.com/models`,
  or a serverless endpoint URL; the SDK appends `/chat/completions?api-version=...`.
- `model_id`: the deployment name, sent as the body's `model` field.
- `api_key_env`: a key credential (the SDK sends it as `api-key` and as a bearer token).  Without it
  the adapter uses Entra ID: the `credential=` object it was given, else azure-identity's
  `DefaultAzureCredential`, with the scope `https://cognitiveservices.azure.com/.default`.
- `timeout_s` / `connect_timeout_s`: the SDK's `read_timeout` / `connection_timeout`.
- options: `api_version` (the SDK's default when unset), `credential_scopes` (list of scopes).

The SDK's own retries are off (`retry_total=0`): the broker retries.  Streams ask for usage with
`stream_options.include_usage` (sent through `model_extras`); Azure puts it on the final chunk.
A `content_filter` finish reason on a 200 answer is raised as `ContentFiltered`, like the 400
refusal with code `content_filter`.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field

from broker.adapter import AdapterBase, require
from broker.errors import (
    AuthError,
    ModelNotAvailable,
    ProtocolError,
    ProviderError,
    Timeout,
    Unavailable,
)
from broker.routes import OptionProblem, Route, RouteOptions
from broker.transport import HttpClients
from broker.types import ChatRequest, ChatResponse, StreamEvent

from . import openai_shape
from .http_errors import error_for_status
from .wire_checks import PARSE_FAILURES, raised_in

__all__ = ["AzureAdapter", "AzureOptions", "from_provider_response", "to_provider_request"]

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
_SDK_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice")
_REQUEST_ID_HEADERS = ("apim-request-id", "x-request-id", "x-ms-request-id")
#: the SDK's model builders: a bare exception raised in them means the answer was not an object
_SDK_PARSERS = ("azure/ai/inference/_model_base.py", "azure/ai/inference/models/_patch.py")


# ---------------------------------------------------------------------- pure translation


def to_provider_request(request: ChatRequest, deployment: str, *, stream: bool = False) -> dict[str, Any]:
    """Keyword arguments of `ChatCompletionsClient.complete` for this request.

    Messages, tools and image parts go out in the OpenAI shape the service reads; `json_object`
    and `text` formats use the SDK's own `response_format`, anything else (a JSON schema) and
    `stream_options` travel in `model_extras`.
    """
    body = openai_shape.request_body(request, deployment, include_usage=False)
    kwargs: dict[str, Any] = {"messages": body["messages"], "model": deployment}
    kwargs.update({name: body[name] for name in _SDK_PARAMS if name in body})
    extras: dict[str, Any] = {}
    fmt = body.get("response_format")
    if fmt is not None:
        if fmt.get("type") in ("json_object", "text") and len(fmt) == 1:
            kwargs["response_format"] = fmt["type"]
        else:
            extras["response_format"] = fmt
    if stream:
        kwargs["stream"] = True
        extras["stream_options"] = {"include_usage": True}
    if extras:
        kwargs["model_extras"] = extras
    return kwargs


def from_provider_response(
    body: Mapping[str, Any], *, provider: str, route_id: str, request_id: str | None = None
) -> ChatResponse:
    """A `ChatCompletions` (as its wire dict) -> `ChatResponse`; a filtered or malformed answer raises."""
    try:
        response = openai_shape.response_from_body(body, provider=provider, route_id=route_id)
    except ProviderError as exc:
        exc.request_id = request_id or exc.request_id  # the service's request id, as on every other error
        raise
    return replace(response, provider_request_id=request_id or response.provider_request_id)


def stream_events(
    update: Mapping[str, Any], *, provider: str, route_id: str, request_id: str | None = None
) -> list[StreamEvent]:
    """One `StreamingChatCompletionsUpdate` (as its wire dict) -> broker stream events."""
    try:
        events = list(openai_shape.events_from_chunk(update, provider=provider, route_id=route_id))
    except ProviderError as exc:
        exc.request_id = request_id or exc.request_id
        raise
    if request_id:
        events = [replace(e, provider_request_id=request_id) for e in events]
    return events


def _request_id(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    return next((lower[h] for h in _REQUEST_ID_HEADERS if lower.get(h)), None)


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------- the adapter


class AzureOptions(RouteOptions):
    """Options of an Azure AI Foundry route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_version: str | None = Field(default=None, min_length=1)
    """The API version the SDK sends; unset: the SDK's default."""
    credential_scopes: list[str] | None = None
    """Entra ID token scopes; unset: the Cognitive Services scope."""

    def check(self, route: Route) -> Iterator[OptionProblem]:
        if not route.endpoint:
            yield OptionProblem("endpoint", "an azure route needs `endpoint:` "
                                "(e.g. https://<resource>.services.ai.azure.com/models)")


class AzureAdapter(AdapterBase):
    """Azure AI Foundry deployments through `azure.ai.inference.ChatCompletionsClient` (sync + aio)."""

    provider: ClassVar[str] = "azure"
    options: ClassVar[type[RouteOptions]] = AzureOptions

    def __init__(
        self,
        route: Route,
        *,
        http: HttpClients,
        credential: Any = None,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        super().__init__(route, http=http)
        self.opts = AzureOptions.for_route(route, check=client is None)
        self._inference: Any = require(
            "azure.ai.inference", provider="azure", package="azure-ai-inference", extra="azure"
        )
        self._core: Any = require(
            "azure.core.exceptions", provider="azure", package="azure-core", extra="azure"
        )
        self._credential = credential
        self._owned: list[Any] = []  # credentials this adapter built and must close
        credentials: Any = require(
            "azure.core.credentials", provider="azure", package="azure-core", extra="azure"
        )
        key = route.api_key(required=True)
        self.redact_secrets(key)
        if key is not None:
            self._credential = credentials.AzureKeyCredential(key)
        self._token_auth = not isinstance(self._credential, credentials.AzureKeyCredential)
        self._client = client
        self._aclient = async_client
        self._call_kwargs: dict[str, Any] = {}
        if self._token_auth and route.endpoint and _is_loopback_http(route.endpoint):
            self._call_kwargs["enforce_https"] = False  # bearer tokens over plain http: loopback only
        if self._client is None:
            self._client = self._inference.ChatCompletionsClient(
                **self._client_kwargs(self._sync_credential())
            )

    # ------------------------------------------------------------------ construction

    def _client_kwargs(self, credential: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "endpoint": self.route.endpoint,
            "credential": credential,
            "retry_total": 0,
            "connection_timeout": self.route.connect_timeout_s,
            "read_timeout": self.route.timeout_s,
        }
        if self.opts.api_version:
            kwargs["api_version"] = self.opts.api_version
        if self._token_auth:
            kwargs["credential_scopes"] = list(self.opts.credential_scopes or [ENTRA_SCOPE])
        return kwargs

    def _sync_credential(self) -> Any:
        if self._credential is None:
            identity: Any = require(
                "azure.identity", provider="azure", package="azure-identity", extra="azure"
            )
            self._credential = identity.DefaultAzureCredential()
            self._owned.append(self._credential)
        return self._credential

    def _async_client(self) -> Any:
        if self._aclient is None:
            aio: Any = require(
                "azure.ai.inference.aio", provider="azure", package="azure-ai-inference", extra="azure"
            )
            credential = self._credential
            if credential is None or credential in self._owned:  # the default chain, in its async form
                identity: Any = require(
                    "azure.identity.aio", provider="azure", package="azure-identity", extra="azure"
                )
                credential = identity.DefaultAzureCredential()
                self._owned.append(credential)
            self._aclient = aio.ChatCompletionsClient(**self._client_kwargs(credential))
        return self._aclient

    # ------------------------------------------------------------------ the error seam

    @contextmanager
    def _mapped_errors(self, seen: dict[str, str]) -> Iterator[None]:
        ctx = self.error_context()
        core = self._core
        try:
            yield
        except ProviderError:
            raise
        except core.DecodeError as exc:  # an unreadable body, or a stream cut short (IncompleteReadError)
            raise ProtocolError(
                f"unreadable answer: {exc.message}", request_id=_request_id(seen), **ctx
            ) from exc
        except core.HttpResponseError as exc:
            raise self._status_error(exc) from exc
        except core.ServiceRequestTimeoutError as exc:
            raise Timeout(f"connect timed out after {self.route.connect_timeout_s}s", **ctx) from exc
        except core.ServiceRequestError as exc:
            raise Unavailable(f"could not reach the endpoint: {type(exc).__name__}", **ctx) from exc
        except core.ServiceResponseTimeoutError as exc:
            raise Timeout(
                f"no answer within {self.route.timeout_s}s", request_id=_request_id(seen), **ctx
            ) from exc
        except core.ServiceResponseError as exc:
            raise ProtocolError(f"connection broke mid-answer: {type(exc).__name__}", **ctx) from exc
        except core.AzureError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc.message}", **ctx) from exc
        except ValueError as exc:  # the SDK's strict SSE parser, or JSON it could not decode
            raise ProtocolError(
                f"unreadable answer: {type(exc).__name__}", request_id=_request_id(seen), **ctx
            ) from exc
        except PARSE_FAILURES as exc:  # the SDK's model builder, handed JSON that is not an object
            if not raised_in(exc, _SDK_PARSERS):
                raise
            raise ProtocolError(
                f"unreadable answer: {type(exc).__name__} in the SDK's parser", request_id=_request_id(seen), **ctx
            ) from exc

    def _status_error(self, exc: Any) -> ProviderError:
        ctx = self.error_context()
        response = exc.response
        status = exc.status_code
        if response is None or status is None or status < 400:
            return ProtocolError(f"answer broke off: {exc.message}", status=status, **ctx)
        headers = dict(response.headers)
        try:
            body: Any = json.loads(response.text())
        except ValueError:
            body = None
        code = {k.lower(): v for k, v in headers.items()}.get("x-ms-error-code")
        error = body.get("error") if isinstance(body, dict) else None
        if code and not (isinstance(error, dict) and error.get("code")):
            message = exc.error.message if exc.error is not None else exc.reason
            body = {"error": {"code": code, "message": message or f"HTTP {status}"}}
        err = error_for_status(status, body, headers, request_id=_request_id(headers), **ctx)
        core = self._core
        for sdk_class, broker_class in (
            (core.ClientAuthenticationError, AuthError),
            (core.ResourceNotFoundError, ModelNotAvailable),
        ):
            if isinstance(exc, sdk_class) and not isinstance(err, broker_class):
                return broker_class(
                    err.message, status=status, request_id=err.request_id, code=err.code, **ctx
                )
        return err

    # ------------------------------------------------------------------ calls

    def _hook(self, seen: dict[str, str], stream: bool) -> Callable[[Any], None]:
        """Keeps the answer's headers; refuses a whole answer whose body is not UTF-8.

        azure-core decodes a body without a `charset` with replacement characters, so bytes that
        are not UTF-8 would otherwise reach the caller as a quiet success.  (Streams are decoded
        strictly by the SDK's own SSE reader.)
        """
        def hook(pipeline_response: Any) -> None:
            response = pipeline_response.http_response
            seen.update(response.headers)
            if stream or not 200 <= (response.status_code or 0) < 300:
                return
            try:
                response.body().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(
                    "unreadable answer: the body is not valid UTF-8", request_id=_request_id(seen),
                    **self.error_context(),
                ) from exc

        return hook

    def _kwargs(self, request: ChatRequest, stream: bool, seen: dict[str, str]) -> dict[str, Any]:
        return {
            **to_provider_request(request, self.route.model_id, stream=stream),
            **self._call_kwargs,
            "raw_response_hook": self._hook(seen, stream),
        }

    def _result(self, result: Any, seen: dict[str, str]) -> ChatResponse:
        as_dict = getattr(result, "as_dict", None)
        if not callable(as_dict):  # the SDK hands back a body that is not a JSON object as it is
            raise ProtocolError(
                f"unreadable answer: the body is a JSON {type(result).__name__}, not an object",
                request_id=_request_id(seen), **self.error_context(),
            )
        return from_provider_response(as_dict(), request_id=_request_id(seen), **self.error_context())

    def _events(self, update: Any, seen: dict[str, str]) -> list[StreamEvent]:
        return stream_events(update.as_dict(), request_id=_request_id(seen), **self.error_context())

    def chat(self, request: ChatRequest) -> ChatResponse:
        seen: dict[str, str] = {}
        with self._mapped_errors(seen):
            return self._result(self._client.complete(**self._kwargs(request, False, seen)), seen)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        seen: dict[str, str] = {}
        with self._mapped_errors(seen), self._client.complete(**self._kwargs(request, True, seen)) as updates:
            for update in updates:
                yield from self._events(update, seen)

    async def achat(self, request: ChatRequest) -> ChatResponse:
        seen: dict[str, str] = {}
        with self._mapped_errors(seen):
            client = self._async_client()
            return self._result(await client.complete(**self._kwargs(request, False, seen)), seen)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        seen: dict[str, str] = {}
        with self._mapped_errors(seen):
            client = self._async_client()
            async with await client.complete(**self._kwargs(request, True, seen)) as updates:
                async for update in updates:
                    for event in self._events(update, seen):
                        yield event

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for credential in self._owned:
            if hasattr(credential, "close") and not inspect.iscoroutinefunction(credential.close):
                credential.close()

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.close()
            self._aclient = None
        for credential in self._owned:
            if hasattr(credential, "close") and inspect.iscoroutinefunction(credential.close):
                await credential.close()
        self.close()
