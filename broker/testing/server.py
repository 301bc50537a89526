"""The loopback server every provider emulator stands on.

`Emulator` runs a threaded HTTP/1.1 server on 127.0.0.1 (a free port by default), records
every request, injects faults, scripts replies and counts the tokens it reported.  A provider
emulator subclasses it and implements `handle` (the provider's success answers, JSON or
streamed) and `error_answer` (the provider's own error format).

Faults, applied in the order they were queued, one per request:

    emu.fail(429, retry_after=1)        # the provider's throttling answer
    emu.fail(503, times=3)              # three 503s in a row
    emu.fail(401, echo_credentials=True)  # the error text repeats the request's credential headers
    emu.cut_stream(after=2)             # stream two chunks, then drop the connection
    emu.malformed()                     # 200 with a body no client can read (JSON cut off)
    emu.malformed("null_message")       # 200 with a readable answer of the wrong shape
    emu.delay(0.5)                      # answer half a second late (once)
    emu.latency_s = 0.2                 # every answer 200 ms late from now on

A quota stands for the provider account's limit on the emulator's route:

    emu.quota(rpm=100, tpm=50_000)      # over it, 429 with the provider's own wait hint
    emu.quota_429s                      # how many 429s the quota has answered

`malformed(kind)` takes one of `MALFORMED_KINDS` (truncated, not_json, html_page, json_list,
invalid_utf8, no_choices, null_message, wrong_types, no_finish_reason, absurd_usage,
negative_usage, missing_usage, usage_wrong_types); `broker.testing.malformed` says what each
sends, plain and streamed, in each provider's wire format.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .malformed import HTML_PAGE, MALFORMED_KINDS, NOT_JSON, TRUNCATED_JSON

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = [
    "MALFORMED_KINDS",
    "Answer",
    "Emulator",
    "Fault",
    "Quota",
    "Recorded",
    "Reply",
    "ReplyPlan",
    "TokenCount",
    "count_tokens",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-amz-security-token", "x-goog-api-key"})


def count_tokens(text: str) -> int:
    """The emulators' tokenizer: words and punctuation marks.  Deterministic, no download."""
    return len(_TOKEN.findall(text))


@dataclass
class Fault:
    """One injected failure.  `status=None` with `cut_after` or `malformed` answers 200 first.

    `kind` names the malformed answer (one of `MALFORMED_KINDS`) when `malformed` is set.
    """

    status: int | None = 500
    retry_after: float | None = None
    latency_s: float = 0.0
    cut_after: int | None = None
    malformed: bool = False
    message: str = "injected fault"
    code: str | None = None
    kind: str = "truncated"
    echo_credentials: bool = False

    def echoing(self, request: Recorded) -> Fault:
        """This fault with the request's credential headers appended to its message, as some providers do."""
        sent = {k: v for k, v in request.headers.items() if k in _CREDENTIAL_HEADERS}
        return replace(self, message=f"{self.message}; request credentials: {sent}", echo_credentials=False)


@dataclass
class Reply:
    """A scripted answer.  Without one, emulators answer with a short deterministic text."""

    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class ReplyPlan:
    """What an emulator will answer to one request: text or tool calls, with token counts."""

    text: str
    tool_calls: list[tuple[str, str, str]]  # (id, name, arguments JSON)
    finish_reason: str
    input_tokens: int
    output_tokens: int

    def text_chunks(self, size: int = 3) -> list[str]:
        """The text cut into pieces of `size` words (with their spaces), as a stream sends it."""
        words = re.findall(r"\S+\s*", self.text)
        return ["".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


@dataclass
class TokenCount:
    """Tokens an emulator reported in usage fields, over all calls that reported usage."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Quota:
    """Requests and tokens per minute the emulator serves before it answers 429 (an exact 60-second log).

    Requests count when served (a 429 does not count); tokens count as the emulator reports them.
    The wait hint is the time until the oldest counted request or tokens leave the window.
    """

    WINDOW_S = 60.0

    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float]) -> None:
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self.served: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def _expire(self, now: float) -> None:
        while self.served and self.served[0] <= now - self.WINDOW_S:
            self.served.popleft()
        while self.tokens and self.tokens[0][0] <= now - self.WINDOW_S:
            self.tokens.popleft()

    def admit(self) -> float | None:
        """None when a request may be served now (and it is counted), else the seconds to wait."""
        now = self.clock()
        self._expire(now)
        if self.rpm is not None and len(self.served) >= self.rpm:
            return max(0.001, self.served[0] + self.WINDOW_S - now)
        if self.tpm is not None and sum(n for _, n in self.tokens) >= self.tpm:
            return max(0.001, self.tokens[0][0] + self.WINDOW_S - now)
        self.served.append(now)
        return None

    def used(self, tokens: int) -> None:
        self.tokens.append((self.clock(), tokens))


class Headers(dict[str, str]):
    """Request headers, looked up without regard to case (clients differ in how they spell them)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class Recorded:
    """A request as the emulator saw it."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Answer:
    """What `handle` returns: a status, headers, and a body or an iterable of stream chunks."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    chunks: Iterable[bytes] | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        self.server.emulator._serve(self)

    do_GET = do_POST
    do_PUT = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    emulator: Emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that hangs up early is not an emulator failure


class Emulator:
    """Base loopback emulator.  Use as a context manager, or call `start()` / `stop()`."""

    name = "emulator"

    def __init__(self, *, port: int = 0, latency_s: float = 0.0, chunk_delay_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[Recorded] = []
        self.reported = TokenCount()
        self._faults: deque[Fault] = deque()
        self._muted = threading.local()  # set while a malformed answer is served: its usage is not counted
        self._replies: deque[Reply] = deque()
        self._quota: Quota | None = None
        self.quota_429s = 0
        self._lock = threading.Lock()
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(("127.0.0.1", self._port), _Handler)
            self._server.emulator = self
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=self.name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} emulator is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the server (`http://127.0.0.1:PORT`)."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ scripting

    def fail(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str = "injected fault",
        code: str | None = None,
        latency_s: float = 0.0,
        echo_credentials: bool = False,
    ) -> Emulator:
        """Answer the next `times` requests with the provider's error for `status`.

        `echo_credentials` appends the credential headers of the request to the error message.
        """
        for _ in range(times):
            self._faults.append(
                Fault(status, retry_after, latency_s, message=message, code=code, echo_credentials=echo_credentials)
            )
        return self

    def cut_stream(self, after: int = 1, *, times: int = 1) -> Emulator:
        """Send `after` stream chunks, then drop the connection (no terminator, no usage)."""
        for _ in range(times):
            self._faults.append(Fault(None, cut_after=after))
        return self

    def malformed(self, kind: str = "truncated", *, times: int = 1) -> Emulator:
        """Answer 200 with a malformed answer of `kind` (see `broker.testing.malformed`)."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; one of {', '.join(MALFORMED_KINDS)}")
        for _ in range(times):
            self._faults.append(Fault(None, malformed=True, kind=kind))
        return self

    def delay(self, seconds: float, *, times: int = 1) -> Emulator:
        """Answer the next `times` requests `seconds` late (to trip client timeouts)."""
        for _ in range(times):
            self._faults.append(Fault(None, latency_s=seconds))
        return self

    def quota(
        self, *, rpm: int | None = None, tpm: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> Emulator:
        """Serve at most `rpm` requests and `tpm` tokens a minute; over either, answer 429 with a wait hint.

        `quota_429s` counts the 429s it answered.  `clock` (seconds) is injectable for tests.
        """
        with self._lock:
            self._quota = Quota(rpm, tpm, clock) if rpm is not None or tpm is not None else None
            self.quota_429s = 0
        return self

    def enqueue(self, *replies: Reply) -> Emulator:
        """Script the next answers."""
        self._replies.extend(replies)
        return self

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self._replies.clear()
            self.reported = TokenCount()
            self.quota_429s = 0

    # ------------------------------------------------------------------ for subclasses

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        """The provider's answer to a request (success path; `fault` may ask for a cut stream)."""
        raise NotImplementedError

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        """The provider's error answer for `fault.status`."""
        error = {"message": fault.message, "code": fault.code or str(fault.status)}
        return Answer.json({"error": error}, fault.status or 500)

    def malformed_answer(self, request: Recorded, kind: str = "truncated") -> Answer:
        """A 200 answer of the malformed `kind`; provider emulators send every kind in their format."""
        if kind == "html_page":
            return Answer(200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE)
        if kind == "not_json":
            return Answer(200, {"Content-Type": "application/json"}, NOT_JSON)
        if kind == "truncated":
            return Answer(200, {"Content-Type": "application/json"}, TRUNCATED_JSON)
        raise NotImplementedError(f"{self.name} emulator cannot send a {kind!r} answer")

    def plan(
        self,
        prompt_texts: list[str],
        *,
        tools: list[str] | None = None,
        json_mode: bool = False,
        max_tokens: int | None = None,
    ) -> ReplyPlan:
        """Decide the answer to a request from its prompt, offered tools and output options."""
        with self._lock:
            scripted = self._replies.popleft() if self._replies else None
        prompt = "\n".join(prompt_texts)
        input_tokens = count_tokens(prompt) + 3 * len(prompt_texts)
        tool_calls: list[tuple[str, str, str]] = []
        if scripted and scripted.tool_calls:
            tool_calls = [
                (f"call_{len(self.requests)}_{i}", name, json.dumps(args))
                for i, (name, args) in enumerate(scripted.tool_calls)
            ]
            text = scripted.text or ""
        elif scripted and scripted.text is not None:
            text = scripted.text
        elif json_mode:
            text = json.dumps({"answer": "ok", "emulator": self.name})
        else:
            last = prompt_texts[-1] if prompt_texts else ""
            text = f"Hello from the {self.name} emulator. You said: {' '.join(last.split()[:12])}"
        finish = (scripted.finish_reason if scripted and scripted.finish_reason else None) or (
            "tool_calls" if tool_calls else "stop"
        )
        output_tokens = count_tokens(text) + sum(count_tokens(c[2]) + 1 for c in tool_calls)
        if max_tokens is not None and not tool_calls and output_tokens > max_tokens:
            text, finish = " ".join(text.split()[:max_tokens]), "length"
            output_tokens = count_tokens(text)
        if scripted and scripted.input_tokens is not None:
            input_tokens = scripted.input_tokens
        if scripted and scripted.output_tokens is not None:
            output_tokens = scripted.output_tokens
        return ReplyPlan(text, tool_calls, finish, input_tokens, output_tokens)

    def report(self, input_tokens: int, output_tokens: int) -> None:
        """Count usage the emulator has just sent to a client (not when the answer is malformed)."""
        if getattr(self._muted, "on", False):
            return
        with self._lock:
            self.reported.calls += 1
            self.reported.input_tokens += input_tokens
            self.reported.output_tokens += output_tokens
            if self._quota is not None:
                self._quota.used(input_tokens + output_tokens)

    # ------------------------------------------------------------------ serving

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        request = Recorded(handler.command, parts.path, parts.query, Headers(handler.headers.items()), body)
        with self._lock:
            self.requests.append(request)
            hint = self._quota.admit() if self._quota is not None else None
            if hint is not None:  # each provider's error_answer writes the hint in its own header
                self.quota_429s += 1
                fault: Fault | None = Fault(429, retry_after=round(hint, 3),
                                            message="quota exceeded: requests or tokens per minute for this model")
            else:
                fault = self._faults.popleft() if self._faults else None
        wait = self.latency_s + (fault.latency_s if fault else 0.0)
        if wait:
            time.sleep(wait)
        self._muted.on = fault is not None and fault.malformed
        try:
            if fault is not None and fault.status is not None:
                answer = self.error_answer(fault.echoing(request) if fault.echo_credentials else fault, request)
            else:
                try:
                    if fault is not None and fault.malformed:
                        answer = self.malformed_answer(request, fault.kind)
                    else:
                        answer = self.handle(request, fault)
                except Exception as exc:  # a bug in an emulator shows as a 500 with its text
                    answer = Answer.json({"error": {"message": f"emulator error: {exc!r}"}}, 500)
            self._write(handler, answer, fault.cut_after if fault else None)
        finally:
            self._muted.on = False

    def _write(self, handler: _Handler, answer: Answer, cut_after: int | None) -> None:
        handler.send_response(answer.status)
        for key, value in answer.headers.items():
            handler.send_header(key, value)
        if answer.chunks is None:
            body = answer.body or b""
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunks = iter(answer.chunks)
        try:
            for i in itertools.count():
                if cut_after is not None and i >= cut_after:
                    # drop the connection before the next chunk is even made (its usage is never sent)
                    handler.close_connection = True
                    handler.wfile.flush()
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    return
                chunk = next(chunks, None)
                if chunk is None:
                    break
                if i and self.chunk_delay_s:
                    time.sleep(self.chunk_delay_s)
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

