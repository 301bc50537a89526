"""Google Vertex AI: Llama as a managed API (MaaS) or on a dedicated Model Garden endpoint.

Both speak the OpenAI chat-completions shape over HTTPS with a Google OAuth2 bearer token,
so this adapter is `OpenAIHttpAdapter` plus Google's URLs, credentials and error body:

* MaaS: `POST {base}/v1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions`
  with body model `meta/<name>-maas`.
* Dedicated endpoint (a vLLM serving container deployed from Model Garden): `options.endpoint_id`
  replaces `openapi` in that path and the body model is `route.model_id` as written.

`base` is `https://{location}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com` for
location `global`), or `route.endpoint`: a Private Service Connect address, a dedicated DNS name
(`https://{endpoint_id}.{location}-{project_number}.prediction.vertexai.goog`) or a loopback
emulator.  An `endpoint` that already ends in `/chat/completions` is used as the whole URL.

Google errors arrive as `{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}`
(sometimes wrapped in a one-element list).  `google_error` maps them by `status`:

| Google status                                 | broker error                                      |
|-----------------------------------------------|---------------------------------------------------|
| RESOURCE_EXHAUSTED                            | Throttled (retry_after: header, else RetryInfo)   |
| UNAVAILABLE, INTERNAL, UNKNOWN, ABORTED,      | Unavailable                                       |
|   CANCELLED                                   |                                                   |
| DEADLINE_EXCEEDED                             | Timeout                                           |
| UNAUTHENTICATED, PERMISSION_DENIED            | AuthError                                         |
| NOT_FOUND, UNIMPLEMENTED                      | ModelNotAvailable (unknown, retired, not enabled) |
| INVALID_ARGUMENT, FAILED_PRECONDITION,        | InvalidRequest; ContentFiltered when the message  |
|   OUT_OF_RANGE                                |   speaks of safety or prohibited content;         |
|                                               |   ContextTooLong when it speaks of token limits   |
| no Google status in the body                  | the shared HTTP status table (`http_errors`)      |

An answer with `finish_reason: "content_filter"` (Llama Guard blocked the prompt or the
answer) raises `ContentFiltered`, streamed or not.  A refused token refresh is `AuthError`;
a token endpoint that cannot be reached is `Unavailable`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from broker.adapter import require
from broker.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    CredentialsError,
    InvalidRequest,
    ModelNotAvailable,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import EnvName, EnvRef, OptionProblem, Route, RouteOptions
from broker.transport import HttpClients
from broker.types import ChatRequest, ChatResponse, StreamEvent

from .http_errors import error_for_status, retry_after_seconds
from .openai_http import OpenAIHttpAdapter

__all__ = [
    "CLOUD_PLATFORM_SCOPE", "VertexAdapter", "VertexOptions", "chat_url", "google_error", "maas_model_id",
    "safety_settings", "service_base_url",
]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MAAS_ENDPOINT = "openapi"

_GOOGLE_STATUS: dict[str, type[ProviderError]] = {
    "RESOURCE_EXHAUSTED": Throttled,
    **dict.fromkeys(("UNAVAILABLE", "INTERNAL", "UNKNOWN", "ABORTED", "CANCELLED"), Unavailable),
    "DEADLINE_EXCEEDED": Timeout,
    **dict.fromkeys(("UNAUTHENTICATED", "PERMISSION_DENIED"), AuthError),
    **dict.fromkeys(("NOT_FOUND", "UNIMPLEMENTED"), ModelNotAvailable),
    **dict.fromkeys(("INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"), InvalidRequest),
}
_CONTEXT = re.compile(
    r"context[ _-]?(length|window)|maximum (context|number of tokens|input)|too many (input )?tokens|"
    r"(prompt|input) (is )?too long|exceeds? the (max|limit)|max_model_len|token count",
    re.IGNORECASE,
)
_SAFETY = re.compile(
    r"prohibited content|blocked due to|safety (filter|setting|polic)|llama ?guard", re.IGNORECASE
)
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


# --------------------------------------------------------------------------- pure helpers


def service_base_url(location: str) -> str:
    """The public Vertex AI host for a location (`global` has no regional prefix)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def chat_url(
    *, project: str, location: str, endpoint_id: str | None = None, base: str | None = None,
    api_version: str = "v1",
) -> str:
    """The chat-completions URL of a MaaS model (`endpoint_id=None`) or of a dedicated endpoint."""
    if base and base.rstrip("/").endswith("/chat/completions"):
        return base.rstrip("/")
    root = (base or service_base_url(location)).rstrip("/")
    path = f"projects/{project}/locations/{location}/endpoints/{endpoint_id or MAAS_ENDPOINT}"
    return f"{root}/{api_version}/{path}/chat/completions"


def maas_model_id(model_id: str) -> str:
    """The body `model` of a MaaS call: `publisher/name`, with `meta/` added when no publisher is given."""
    return model_id if "/" in model_id else f"meta/{model_id}"


def safety_settings(llama_guard: bool | None) -> dict[str, Any]:
    """The body member that turns Llama Guard on or off on MaaS; empty to keep the service default.

    Google's samples put it in the JSON body as a top-level `extra_body` member (what the OpenAI
    library sends for `extra_body={"extra_body": {...}}`).
    """
    if llama_guard is None:
        return {}
    settings = {"enabled": bool(llama_guard), "llama_guard_settings": {}}
    return {"extra_body": {"google": {"model_safety_settings": settings}}}


def _retry_delay(details: Any) -> float | None:
    for item in details if isinstance(details, list) else ():
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def google_error(
    status: int, body: Any, headers: Mapping[str, str], *, provider: str, route_id: str,
    request_id: str | None = None,
) -> ProviderError:
    """The broker error for a Google error body (see the module table); other bodies use the HTTP table."""
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, Mapping) else None
    gstatus = str(err.get("status") or "") if isinstance(err, Mapping) else ""
    cls = _GOOGLE_STATUS.get(gstatus)
    if cls is None or not isinstance(err, Mapping):
        return error_for_status(status, body, headers, provider=provider, route_id=route_id, request_id=request_id)
    message = str(err.get("message") or f"HTTP {status} {gstatus}")
    if cls is InvalidRequest and _SAFETY.search(message):
        cls = ContentFiltered
    elif cls is InvalidRequest and _CONTEXT.search(message):
        cls = ContextTooLong
    retry_after = retry_after_seconds(headers)
    if retry_after is None:
        retry_after = _retry_delay(err.get("details"))
    return cls(message, provider=provider, route_id=route_id, status=status, request_id=request_id,
               code=gstatus, retry_after=retry_after)


def _aiplatform_project() -> str | None:
    """The project of `aiplatform.init(...)`: the last fallback, and the only import of it.

    google-cloud-aiplatform takes seconds to import, so it is never imported on the call path
    nor when the route names its project.  Its location is never used: the location is the
    route's `region`, the field its jurisdiction was derived from, so nothing outside the policy
    can move a call to another place.
    """
    try:
        initializer = importlib.import_module("google.cloud.aiplatform.initializer")
    except ImportError:
        return None
    try:
        return initializer.global_config.project or None
    except Exception:  # its own lookup failed: no project configured anywhere
        return None


# --------------------------------------------------------------------------- options


class VertexOptions(RouteOptions):
    """Options of a Vertex AI route.  The location is the route's `region`, never an option of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = Field(default=None, min_length=1)
    project_env: EnvName | None = None
    """A variable holding the project, read when `project` is not given."""
    location: str | None = None
    """Accepted only when equal to `region` (from which residency is derived)."""
    endpoint_id: str | None = Field(default=None, min_length=1)
    """A dedicated Model Garden endpoint; unset: the MaaS endpoint."""
    api_version: str = Field(default="v1", min_length=1)
    stream_usage: bool = True
    quota_project: str | None = None
    llama_guard: bool | None = None
    """Turn Llama Guard on or off on MaaS; unset: the service default."""
    access_token_env: EnvName | None = None
    """A variable holding a static OAuth2 access token (else `api_key_env`, else ADC)."""
    credentials_file: str | None = Field(default=None, min_length=1)
    """A service-account key file."""

    def token_env(self, route: Route) -> str | None:
        return None if self.credentials_file else (self.access_token_env or route.api_key_env)

    def check(self, route: Route) -> Iterator[OptionProblem]:
        if not route.region:
            yield OptionProblem("region", "a Vertex route needs `region:` (its location, e.g. us-east5)")
        elif self.location not in (None, route.region):
            yield OptionProblem("options.location", f"options.location {self.location!r} contradicts region "
                                f"{route.region!r}; the location is the region (residency is derived from it)")

    def notes(self, route: Route) -> Iterator[OptionProblem]:
        if not self.project and not self.project_env:
            yield OptionProblem("options", "no options.project: the project comes from the credentials, "
                                "GOOGLE_CLOUD_PROJECT or application-default credentials at call time")

    def env_refs(self, route: Route) -> Iterator[EnvRef]:
        token = self.token_env(route)
        if token:
            yield EnvRef("options.access_token_env" if self.access_token_env else "api_key_env", token)
        if self.project_env and not self.project:
            yield EnvRef("options.project_env", self.project_env)


# --------------------------------------------------------------------------- adapter


class VertexAdapter(OpenAIHttpAdapter):
    """Llama on Vertex AI, MaaS or a dedicated endpoint, over the broker's shared HTTP clients.

    Injectables: `credentials=` (any google-auth credentials object) and `auth_request=` (the
    google-auth transport that refreshes tokens; default `google.auth.transport.requests.Request()`).
    """

    provider: ClassVar[str] = "vertex"
    options: ClassVar[type[RouteOptions]] = VertexOptions

    def __init__(
        self, route: Route, *, http: HttpClients, credentials: Any = None, auth_request: Any = None
    ) -> None:
        super().__init__(route, http=http)
        self._google_auth: Any = require("google.auth", provider="vertex", package="google-auth",
                                         extra="vertex")
        self.opts = opts = VertexOptions.for_route(route)
        self.endpoint_id: str | None = opts.endpoint_id
        self.api_version = opts.api_version
        self.include_stream_usage = opts.stream_usage
        self.quota_project: str | None = opts.quota_project
        self._project_env: str | None = opts.project_env
        self.project: str | None = opts.project or os.environ.get(self._project_env or "") or None
        self.location: str = route.region or ""
        self._llama_guard: bool | None = opts.llama_guard
        self._credentials = credentials
        self._credentials_project: str | None = None
        self._adc_consulted = False
        self._auth_request = auth_request
        self._lock = threading.Lock()
        self._url = self._build_url() if self.project else None

    # ------------------------------------------------------------------ where and what

    @property
    def is_maas(self) -> bool:
        return not self.endpoint_id

    def _build_url(self) -> str:
        assert self.project
        return chat_url(project=self.project, location=self.location, endpoint_id=self.endpoint_id,
                        base=self.route.endpoint, api_version=self.api_version)

    @property
    def url(self) -> str:
        if self._url is None:
            with self._lock:
                if self._url is None:
                    self._resolve_place()
                    self._url = self._build_url()
        return self._url

    def _resolve_place(self) -> None:
        """Project: options -> credentials' own -> GOOGLE_CLOUD_PROJECT -> ADC's -> aiplatform.init()."""
        if not self.project:
            self._load_credentials()
            env_project = os.environ.get("GOOGLE_CLOUD_PROJECT")
            self.project = self._credentials_project or env_project or self._adc_project() or _aiplatform_project()
        if not self.project:
            unset = f" ({self._project_env} is not set)" if self._project_env else ""
            raise CredentialsError(f"route {self.route.id!r}: no Google Cloud project{unset}; set "
                                   "options.project, GOOGLE_CLOUD_PROJECT or aiplatform.init(project=...)")

    def _adc_project(self) -> str | None:
        if self._adc_consulted:
            return None
        self._adc_consulted = True
        try:
            _, project = self._google_auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except self._google_auth.exceptions.DefaultCredentialsError:
            return None
        return project or None

    def body_model_id(self) -> str:
        return maas_model_id(self.route.model_id) if self.is_maas else self.route.model_id

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body = super()._body(request, stream)
        if self.is_maas:
            body.update(safety_settings(self._llama_guard))
        return body

    # ------------------------------------------------------------------ credentials

    def _load_credentials(self) -> Any:
        """Injected credentials, else a service-account file, else a token from the environment, else ADC."""
        if self._credentials is not None:
            return self._credentials
        opts, rid = self.opts, self.route.id
        token_env = opts.token_env(self.route)
        if opts.credentials_file:
            path = opts.credentials_file
            service_account = importlib.import_module("google.oauth2.service_account").Credentials
            try:
                creds = service_account.from_service_account_file(path, scopes=[CLOUD_PLATFORM_SCOPE])
            except (OSError, ValueError, KeyError) as exc:
                raise CredentialsError(f"route {rid!r}: unreadable service-account file {path}") from exc
            self._credentials_project = creds.project_id
        elif token_env:
            token = os.environ.get(token_env)
            if not token:
                raise CredentialsError(f"route {rid!r}: environment variable {token_env} is not set")
            creds = importlib.import_module("google.oauth2.credentials").Credentials(token=token)
        else:
            self._adc_consulted = True
            try:
                creds, project = self._google_auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            except self._google_auth.exceptions.DefaultCredentialsError as exc:
                raise CredentialsError(f"route {rid!r}: no Application Default Credentials found") from exc
            self._credentials_project = project or None
        self._credentials = creds
        return creds

    @contextmanager
    def _auth_errors(self) -> Iterator[None]:
        """The one place google-auth's exception types become broker errors."""
        exceptions, ctx = self._google_auth.exceptions, self.error_context()
        try:
            yield
        except exceptions.RefreshError as exc:
            raise AuthError(f"token refresh failed: {type(exc).__name__}", **ctx) from exc
        except exceptions.TransportError as exc:
            raise Unavailable(f"token endpoint unreachable: {type(exc).__name__}", **ctx) from exc

    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Bearer`, refreshed under a lock when the token is missing or expiring."""
        with self._lock:
            creds = self._load_credentials()
            if not creds.valid:
                if self._auth_request is None:
                    transport: Any = require("google.auth.transport.requests", provider="vertex",
                                             package="requests", extra="vertex")
                    self._auth_request = transport.Request()
                with self._auth_errors():
                    creds.refresh(self._auth_request)
            headers: dict[str, str] = {}
            creds.apply(headers)
            self.redact_secrets(creds.token, getattr(creds, "refresh_token", None))
        out = {("Authorization" if k.lower() == "authorization" else k): v for k, v in headers.items()}
        if self.quota_project:
            out["x-goog-user-project"] = self.quota_project
        return out

    async def aauth_headers(self) -> dict[str, str]:
        if self._credentials is not None and self._credentials.valid:
            return self.auth_headers()
        return await asyncio.to_thread(self.auth_headers)  # a refresh or an ADC lookup blocks: off the loop

    # ------------------------------------------------------------------ answers

    def status_error(self, status: int, body: Any, headers: Mapping[str, str], request_id: str | None) -> ProviderError:
        return google_error(status, body, headers, request_id=request_id, **self.error_context())

    def chunk_events(self, chunk: Any) -> list[StreamEvent]:
        if isinstance(chunk, Mapping) and isinstance(chunk.get("error"), Mapping):
            code = chunk["error"].get("code")
            raise google_error(code if isinstance(code, int) else 500, chunk, {}, **self.error_context())
        return super().chunk_events(chunk)

    # ------------------------------------------------------------------ async entry points

    async def _aprepare(self) -> None:
        if self._url is None:  # finding the project may call ADC: off the loop
            await asyncio.to_thread(lambda: self.url)

    async def achat(self, request: ChatRequest) -> ChatResponse:
        await self._aprepare()
        return await super().achat(request)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        await self._aprepare()
        async for event in super().astream(request):
            yield event
