"""AWS Bedrock: Llama chat over boto3 `bedrock-runtime` Converse and ConverseStream.

Route fields: `region` (required, the client's region_name), `model_id` (a base model id such as
`meta.llama3-3-70b-instruct-v1:0`, or a geo inference profile `us.` / `eu.` / `apac.`), `endpoint`
(optional `endpoint_url`: VPC endpoints, FIPS hosts, loopback emulators), `timeout_s` (botocore
read timeout, per socket read) and `connect_timeout_s`.  Credentials come from the standard AWS
chain (environment, shared files, SSO, container/instance roles) of a default boto3 session;
options: `profile` (an AWS profile name), `max_pool_connections` (default 50).

botocore's own retries are off (`total_max_attempts=1`): the broker retries.  The async twins run
the sync boto3 calls in the adapter's worker threads (as many as pooled connections).  A stream
the route cannot serve natively (its capabilities say `streaming: false`, or `streaming_tools:
false` and the call offers tools, as for every Llama on Bedrock) is served by one Converse call
and replayed as one delta, a finish and the usage; the decision records it.

Every botocore, urllib3 and service error is mapped here, in `_mapped_errors`, the only code that
touches their types.  Service error codes (compared case-insensitively, so the lower-camel codes
of in-stream exceptions match too):

| Bedrock code                                        | broker error        | notes                         |
|-----------------------------------------------------|---------------------|-------------------------------|
| ThrottlingException, TooManyRequestsException,      | Throttled           | retry_after from              |
| ServiceQuotaExceededException                       |                     | x-amz-retry-after / Retry-After|
| ModelNotReadyException                              | Unavailable         | retryable                     |
| InternalServerException, ServiceUnavailableException,| Unavailable        |                               |
| ModelErrorException, ModelStreamErrorException      |                     |                               |
| ModelTimeoutException                               | Timeout             |                               |
| ValidationException                                 | InvalidRequest      | ContextTooLong when the text  |
|                                                     |                     | says the input is too long;   |
|                                                     |                     | ModelNotAvailable for "The    |
|                                                     |                     | provided model identifier is  |
|                                                     |                     | invalid." and "... on-demand  |
|                                                     |                     | throughput isn't supported"   |
| AccessDeniedException, UnrecognizedClientException, | AuthError           |                               |
| ExpiredTokenException                               |                     |                               |
| ResourceNotFoundException                           | ModelNotAvailable   | an unknown resource           |
| any other code                                      | by HTTP status      | `http_errors.error_for_status`|

Client-side failures: missing or unusable credentials -> AuthError; connect/read timeouts ->
Timeout; connection refused or closed -> Unavailable; a body or event stream that cannot be read
(broken chunking, bad event-stream CRC, unreadable JSON) -> ProtocolError; parameters botocore
refuses -> InvalidRequest.  Errors carry the HTTP status, the `x-amzn-requestid` and the code.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from broker.adapter import AdapterBase, require
from broker.errors import (
    AuthError,
    BrokerError,
    ContextTooLong,
    CredentialsError,
    InvalidRequest,
    ModelNotAvailable,
    ProtocolError,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import OptionProblem, Route, RouteOptions
from broker.transport import HttpClients
from broker.types import ChatRequest, ChatResponse, StreamEvent

from . import bedrock_shape
from .http_errors import error_for_status, retry_after_seconds
from .wire_checks import PARSE_FAILURES, raised_in

__all__ = ["BEDROCK_ERROR_CODES", "BedrockAdapter", "BedrockOptions", "error_from_code"]

#: Geographic inference-profile prefix -> the source regions it can be called from (by name prefix).
_PROFILE_SOURCE_REGIONS: dict[str, tuple[str, ...]] = {
    "us.": ("us-",),
    "us-gov.": ("us-gov-",),
    "ca.": ("ca-",),
    "eu.": ("eu-",),
    "apac.": ("ap-",),
    "jp.": ("ap-northeast-1", "ap-northeast-3"),
    "au.": ("ap-southeast-2", "ap-southeast-4"),
}


class BedrockOptions(RouteOptions):
    """Options of a Bedrock route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str | None = Field(default=None, min_length=1)
    """An AWS shared-config profile; unset: the default credential chain."""
    max_pool_connections: int = Field(default=50, ge=1)
    """botocore's connection pool size, and the worker threads of the async twins."""

    def check(self, route: Route) -> Iterator[OptionProblem]:
        if not route.region:
            yield OptionProblem("region", "a bedrock route needs `region:` (e.g. us-east-2)")

    def notes(self, route: Route) -> Iterator[OptionProblem]:
        tail = route.model_id.rsplit("/", 1)[-1] if route.model_id.startswith("arn:") else route.model_id
        for prefix, sources in _PROFILE_SOURCE_REGIONS.items():
            if tail.startswith(prefix) and route.region and not route.region.startswith(sources):
                yield OptionProblem("model_id", f"inference profile {tail!r} is a {prefix.rstrip('.')} profile, "
                                                f"but the route calls it from region {route.region!r}")

#: Bedrock error code (lower-cased) -> broker error.  See the table in the module docstring.
BEDROCK_ERROR_CODES: dict[str, type[ProviderError]] = {
    "throttlingexception": Throttled,
    "toomanyrequestsexception": Throttled,
    "servicequotaexceededexception": Throttled,
    "modelnotreadyexception": Unavailable,
    "internalserverexception": Unavailable,
    "serviceunavailableexception": Unavailable,
    "modelerrorexception": Unavailable,
    "modelstreamerrorexception": Unavailable,
    "modeltimeoutexception": Timeout,
    "validationexception": InvalidRequest,
    "accessdeniedexception": AuthError,
    "unrecognizedclientexception": AuthError,
    "expiredtokenexception": AuthError,
    "resourcenotfoundexception": ModelNotAvailable,
}

#: Client-side exceptions ("module:Class") -> broker error; the first match wins, so order matters.
_CLIENT_ERRORS: tuple[tuple[str, type[ProviderError]], ...] = (
    ("botocore.exceptions:NoCredentialsError", AuthError),
    ("botocore.exceptions:PartialCredentialsError", AuthError),
    ("botocore.exceptions:CredentialRetrievalError", AuthError),
    ("botocore.exceptions:NoAuthTokenError", AuthError),
    ("botocore.exceptions:TokenRetrievalError", AuthError),
    ("botocore.exceptions:SSOError", AuthError),
    ("botocore.exceptions:InvalidEndpointConfigurationError", AuthError),
    ("botocore.exceptions:ReadTimeoutError", Timeout),
    ("botocore.exceptions:ConnectTimeoutError", Timeout),
    ("urllib3.exceptions:TimeoutError", Timeout),
    ("botocore.exceptions:ResponseStreamingError", ProtocolError),
    ("botocore.exceptions:IncompleteReadError", ProtocolError),
    ("botocore.eventstream:ParserError", ProtocolError),
    ("botocore.parsers:ResponseParserError", ProtocolError),
    ("urllib3.exceptions:ProtocolError", ProtocolError),
    ("urllib3.exceptions:DecodeError", ProtocolError),
    ("botocore.exceptions:ParamValidationError", InvalidRequest),
    ("botocore.exceptions:EndpointConnectionError", Unavailable),
    ("botocore.exceptions:ConnectionClosedError", Unavailable),
    ("botocore.exceptions:ConnectionError", Unavailable),
    ("botocore.exceptions:HTTPClientError", Unavailable),
    ("urllib3.exceptions:HTTPError", Unavailable),
    ("botocore.exceptions:BotoCoreError", Unavailable),
)

_MAX_MESSAGE = 500


def error_from_code(
    code: str,
    message: str,
    *,
    status: int | None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    provider: str = "bedrock",
    route_id: str | None = None,
) -> ProviderError:
    """The broker error for a Bedrock error code (HTTP answer or in-stream exception event)."""
    headers = headers or {}
    text = f"Bedrock {code}: {message}"[:_MAX_MESSAGE] if message else f"Bedrock {code}"
    cls = BEDROCK_ERROR_CODES.get(code.lower())
    if cls is None:
        if status is None:
            return Unavailable(text, provider=provider, route_id=route_id, request_id=request_id, code=code)
        err = error_for_status(status, {"message": text, "code": code}, headers, provider=provider,
                               route_id=route_id or "", request_id=request_id)
        err.route_id = route_id
        return err
    if cls is InvalidRequest and bedrock_shape.is_context_error(message):
        cls = ContextTooLong
    elif cls is InvalidRequest and bedrock_shape.is_model_id_error(message):
        cls = ModelNotAvailable
    return cls(text, provider=provider, route_id=route_id, status=status, request_id=request_id, code=code,
               retry_after=retry_after_seconds(headers) if cls.retryable else None)


def _resolve(target: str) -> type[BaseException] | None:
    module_name, _, name = target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


#: botocore's response and event-stream parsers: a bare exception raised in them means the answer
#: was not Bedrock's format (a JSON list where an object belongs, bytes that are not UTF-8).
_PARSER_FILES = ("botocore/parsers.py", "botocore/eventstream.py")


class BedrockAdapter(AdapterBase):
    """Llama on AWS Bedrock through boto3's `bedrock-runtime` client (Converse / ConverseStream)."""

    provider: ClassVar[str] = "bedrock"
    options: ClassVar[type[RouteOptions]] = BedrockOptions

    def __init__(self, route: Route, *, http: HttpClients, client: Any = None) -> None:
        super().__init__(route, http=http)
        self.opts = BedrockOptions.for_route(route, check=client is None)
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pool_size = self.opts.max_pool_connections

    # ------------------------------------------------------------------ client

    @property
    def client(self) -> Any:
        """The `bedrock-runtime` client: injected, or built on first use (boto3 imported then)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> Any:
        boto3: Any = require("boto3", provider="bedrock", package="boto3", extra="bedrock")
        config_mod: Any = require("botocore.config", provider="bedrock", package="boto3", extra="bedrock")
        exceptions: Any = importlib.import_module("botocore.exceptions")
        config = config_mod.Config(
            retries={"total_max_attempts": 1},
            connect_timeout=self.route.connect_timeout_s,
            read_timeout=self.route.timeout_s,
            max_pool_connections=self._pool_size,
        )
        profile = self.opts.profile
        try:
            session = boto3.Session(profile_name=profile) if profile else boto3.Session()
        except exceptions.ProfileNotFound as exc:
            raise CredentialsError(f"route {self.route.id!r}: AWS profile {profile!r} is not configured") from exc
        client = session.client(
            "bedrock-runtime", region_name=self.route.region, endpoint_url=self.route.endpoint or None, config=config
        )
        found = session.get_credentials()  # the chain is resolved and cached by now: no new lookup
        frozen = found.get_frozen_credentials() if found is not None else None
        if frozen is not None:
            self.redact_secrets(frozen.access_key, frozen.secret_key, frozen.token)
        return client

    def _workers(self) -> ThreadPoolExecutor:
        """Threads for the async twins: as many as the client has pooled connections."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix=f"bedrock-{self.route.id}")
        return self._executor

    def _in_thread(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return asyncio.get_running_loop().run_in_executor(self._workers(), call)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            client.close()

    # ------------------------------------------------------------------ the one error seam

    @contextmanager
    def _mapped_errors(self, request_id: str | None = None) -> Iterator[None]:
        try:
            yield
        except ProviderError as exc:
            if exc.route_id is None:
                exc.route_id = self.route.id
            raise
        except BrokerError:
            raise
        except Exception as exc:
            mapped = self._map(exc, request_id)
            if mapped is None:
                raise
            raise mapped from exc

    def _map(self, exc: Exception, request_id: str | None) -> ProviderError | None:
        ctx = self.error_context()
        response = getattr(exc, "response", None)
        client_error = _resolve("botocore.exceptions:ClientError")
        if client_error is not None and isinstance(exc, client_error) and isinstance(response, Mapping):
            error = response.get("Error") or {}
            meta = response.get("ResponseMetadata") or {}
            return error_from_code(
                str(error.get("Code") or "Unknown"),
                str(error.get("Message") or ""),
                status=meta.get("HTTPStatusCode"),
                headers=meta.get("HTTPHeaders") or {},
                request_id=meta.get("RequestId") or request_id,
                **ctx,
            )
        for target, cls in _CLIENT_ERRORS:
            found = _resolve(target)
            if found is not None and isinstance(exc, found):
                return cls(f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE], request_id=request_id, **ctx)
        if isinstance(exc, PARSE_FAILURES) and raised_in(exc, _PARSER_FILES):
            return ProtocolError(
                f"unreadable answer: botocore could not parse it ({type(exc).__name__})", request_id=request_id, **ctx
            )
        return None

    # ------------------------------------------------------------------ sync

    def chat(self, request: ChatRequest) -> ChatResponse:
        with self._mapped_errors():
            kwargs = bedrock_shape.to_provider_request(request, self.route.model_id)
            raw = self.client.converse(**kwargs)
            return bedrock_shape.from_provider_response(raw, **self.error_context())

    def streams_natively(self, kwargs: Mapping[str, Any]) -> bool:
        """Whether ConverseStream may carry these Converse arguments, as the route's capabilities
        say (Llama on Bedrock refuses ConverseStream with a `toolConfig`); else one Converse
        answer is replayed."""
        caps = self.route.capabilities
        return caps.streaming and (caps.streaming_tools or "toolConfig" not in kwargs)

    def stream(self, request: ChatRequest) -> Generator[StreamEvent, None, None]:
        with self._mapped_errors():
            kwargs = bedrock_shape.to_provider_request(request, self.route.model_id)
        if not self.streams_natively(kwargs):
            yield from bedrock_shape.fallback_events(self.chat(request))
            return
        with self._mapped_errors():
            response = self.client.converse_stream(**kwargs)
        request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
        body = response["stream"]
        state = bedrock_shape.StreamState(self.route.provider, self.route.id, request_id)
        try:
            with self._mapped_errors(request_id):
                for raw in body:
                    yield from state.events(raw)
                state.check_complete()
        finally:
            body.close()

    # ------------------------------------------------------------------ async (boto3 in worker threads)

    async def achat(self, request: ChatRequest) -> ChatResponse:
        result: ChatResponse = await self._in_thread(self.chat, request)
        return result

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """`stream` iterated in a worker thread; each event is handed to the loop as it arrives.

        A consumer that stops early sets `stop`; the worker then closes the stream at its next
        event (or when the route's read timeout fires).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def post(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def pump() -> None:
            events = self.stream(request)
            try:
                for event in events:
                    post("event", event)
                    if stop.is_set():
                        break
            except Exception as exc:
                post("error", exc)
            else:
                post("end", None)
            finally:
                events.close()

        self._in_thread(pump)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "event":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            stop.set()
