"""Credentials out of error text and log records.

Every credential value the broker sends (API keys, bearer tokens, Vertex access tokens, Azure
keys, AWS secret keys and session tokens) is registered here by the adapter that resolved it
(`AdapterBase.redact_secrets`).  Three places apply the redaction:

* `ProviderError` redacts its message, code and request id when it is built, then cuts the
  message to `MAX_ERROR_TEXT` characters (provider error text can be a whole echoed request);
* `Broker` / `AsyncBroker` scrub the cause chain of every error they raise (`scrub_exception`):
  the SDK exceptions underneath carry the provider's raw error body;
* log records of the SDK loggers the broker drives (`SDK_LOGGERS`) and of its own loggers are
  redacted as they are created, format arguments, exception text and stack included; the SDK
  records that dump whole request or response bodies (`BODY_RECORDS`) have the body withheld,
  so prompts and completions stay out of logs at DEBUG too.

Besides registered values, well-known credential shapes are masked wherever they appear:
AWS access key ids, Groq `gsk_` keys, Google `ya29.` tokens and `AIza` keys, JWTs,
`Bearer ...`, credential-named fields (`api-key: ...`, `x-amz-security-token: ...`,
`"access_token": "..."`) and passwords in URLs (`postgresql://user:...@host`).  A text that
was cut in the middle of a registered value has the value's visible start masked too.

The registry is process-wide, on purpose: logging is process-wide, and a record emitted by a
botocore or httpx thread cannot be traced back to the broker that caused it, so the log
redaction has to know every broker's credentials.  For the same reason the log redaction is a
log-record factory and not a filter on a few named loggers: a `logging.Filter` on `botocore`
never sees the records of `botocore.endpoint` or `botocore.auth`, which are where the headers
are logged.  `RedactingFilter` is the same redaction as a filter, for handlers of your own.
(A record factory set later without chaining to the one before it switches the log redaction
off; `logging.setLogRecordFactory`'s documentation shows how to chain.)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections import OrderedDict
from typing import Any

__all__ = [
    "BODY_RECORDS",
    "BODY_WITHHELD",
    "MASK",
    "MAX_ERROR_TEXT",
    "SDK_LOGGERS",
    "SECRETS",
    "RedactingFilter",
    "Redactor",
    "ScrubbedErrors",
    "bounded",
    "install_log_redaction",
    "redact",
    "register_secret",
    "scrub_exception",
    "scrubbed_errors",
]

MASK = "[redacted]"
#: Provider error text longer than this is cut (after redaction) in exception messages.
MAX_ERROR_TEXT = 500
#: Loggers whose records are redacted: the SDKs the adapters drive, their transports, the broker.
SDK_LOGGERS = (
    "botocore", "boto3", "urllib3", "groq", "azure", "httpx", "httpcore", "aiohttp",
    "google.auth", "google.oauth2", "google.api_core", "requests", "llama_broker",
)

#: (logger, message start) of SDK debug records whose arguments are whole request or response
#: bodies (prompts, completions): logged with the body withheld.
BODY_RECORDS = (
    ("botocore.endpoint", "Making request for"),
    ("botocore.endpoint", "Sending http request"),
    ("botocore.parsers", "Response body"),
    ("groq._base_client", "Request options"),
    ("azure.core.pipeline.policies", "Request URL"),
    ("azure.core.pipeline.policies", "Response status"),
)
BODY_WITHHELD = "[body withheld: prompts and completions stay out of logs]"

_MIN_SECRET = 8  # shorter values would mask ordinary words (no real credential is that short)
_MIN_PARTIAL = 6  # the visible start of a cut-off secret is masked from this length on
_MAX_SECRETS = 256  # rotating tokens are registered as they change; the oldest go first

_FIELD_NAMES = (
    r"api[-_]?key|x-api-key|authorization|x-amz-security-token|aws_secret_access_key|"
    r"aws_session_token|secret_?access_?key|session_?token|client_secret|refresh_token|access_token|"
    r"id_token|password"
)
_Shape = tuple[tuple[str, ...], re.Pattern[str], str]


@functools.cache
def _shapes() -> tuple[tuple[_Shape, ...], re.Pattern[str]]:
    """(substrings of the lower-cased text that make the shape worth looking for, shape, replacement),
    and one expression finding those substrings: the cheap substring test keeps the shapes' regular
    expressions off texts that cannot match.  Compiled on the first redaction, not at import."""
    shapes: tuple[_Shape, ...] = (
        (("bearer",), re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
        (("key", "authorization", "token", "secret", "password"),
         re.compile(rf"(?i)\b({_FIELD_NAMES})([\"']?\s*[:=]\s*(?-i:b)?[\"']?)(?!(?:bearer\s+)?\[redacted\])"
                    rf"(?:bearer\s+)?[^\s\"',;}}&]{{2,}}"),
         r"\1\2" + MASK),
        (("akia", "asia", "aida", "aroa", "aipa", "anpa", "anva", "apka", "abia", "acca"),
         re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}\b"), MASK),
        (("gsk_",), re.compile(r"\bgsk_[A-Za-z0-9]{8,}"), MASK),
        (("ya29.",), re.compile(r"\bya29\.[0-9A-Za-z_.-]+"), MASK),
        (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), MASK),
        (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), MASK),
        (("://",), re.compile(r"(://[^:/@\s]+:)[^@\s/]+@"), r"\1" + MASK + "@"),
    )
    triggers = re.compile("|".join(re.escape(t) for t in sorted({t for ts, _, _ in shapes for t in ts})))
    return shapes, triggers


class _Compiled:
    """The registered values as two expressions: the values themselves, and their starts at a text's end."""

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        self.longest = max(map(len, values))
        self.whole = re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))
        starts = sorted({v[:_MIN_PARTIAL] for v in values}, key=len, reverse=True)
        self.tail = re.compile("(?:" + "|".join(re.escape(s) for s in starts) + r")\S*\Z")

    def mask_cut_tail(self, text: str) -> str:
        """Mask the end of `text` when it is the start of a value (a text cut inside a secret)."""
        window = max(0, len(text) - self.longest)
        found = self.tail.search(text, window)
        while found is not None:
            rest = found.group()
            if any(v.startswith(rest) for v in self.values):
                return text[: found.start()] + MASK
            found = self.tail.search(text, found.start() + 1)
        return text


class Redactor:
    """A set of secret values, and the redaction of text against them and the known shapes."""

    def __init__(self) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._compiled: _Compiled | None = None

    def add(self, *values: str | None) -> None:
        """Register credential values (empty, None and very short values are ignored)."""
        with self._lock:
            changed = False
            for value in values:
                if not isinstance(value, str) or len(value) < _MIN_SECRET:
                    continue
                if value in self._values:
                    self._values.move_to_end(value)
                    continue
                self._values[value] = None
                changed = True
                while len(self._values) > _MAX_SECRETS:
                    self._values.popitem(last=False)
            if changed:
                self._compiled = None

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def _current(self) -> _Compiled | None:
        compiled = self._compiled
        if compiled is None and self._values:
            with self._lock:
                if self._compiled is None and self._values:
                    self._compiled = _Compiled(tuple(self._values))
                compiled = self._compiled
        return compiled

    def redact(self, text: str, *, cut: bool = False) -> str:
        """`text` with every registered value and known credential shape masked.

        `cut`: the text may have been cut inside a value (error text an SDK or adapter
        shortened), so a visible start of a value at its very end is masked too.
        """
        if not text:
            return text
        compiled = self._current()
        if compiled is not None:
            text = compiled.whole.sub(MASK, text)
            if cut:
                text = compiled.mask_cut_tail(text)
        shapes, found_triggers = _shapes()
        present = set(found_triggers.findall(text.lower()))
        if present:
            for triggers, shape, replacement in shapes:
                if not present.isdisjoint(triggers):
                    text = shape.sub(replacement, text)
        return text


#: The process-wide registry (see the module docstring for why it is process-wide).
SECRETS = Redactor()


def register_secret(*values: str | None) -> None:
    """Register credential values the broker (or a third-party adapter) is about to send."""
    SECRETS.add(*values)


def redact(text: str, *, cut: bool = True) -> str:
    """`text` redacted against the process-wide registry and the known shapes (error text: `cut`)."""
    return SECRETS.redact(text, cut=cut)


def bounded(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text` redacted, then cut to `limit` characters with a note of how much was cut."""
    text = redact(text if isinstance(text, str) else str(text))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters cut)"


# --------------------------------------------------------------------------- exceptions

def _redacted(value: Any, depth: int = 0) -> Any:
    """`value` with every string in it redacted (strings, bytes and nested mappings and sequences)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        cleaned = redact(text)
        return value if cleaned == text else cleaned.encode("utf-8")
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v, depth + 1) for v in value)
    return value


def _withhold_decoded_bytes(exc: UnicodeDecodeError) -> None:
    # the error holds the whole body it failed to decode (an answer: completion text); keep the bad bytes
    bad = exc.object[exc.start : exc.end]
    exc.object, exc.start, exc.end = bad, 0, len(bad)
    exc.args = (exc.encoding, bad, 0, len(bad), exc.reason)  # the repr shows `args`, not the attributes


def scrub_exception(exc: BaseException, *, max_depth: int = 16) -> None:
    """Redact, in place, `exc` and every exception in its cause/context chain.

    Arguments and instance attributes (strings, and the mappings and lists SDK exceptions keep
    the provider's raw error body in: botocore's `response`, groq's `body`, azure-core's
    `exc_msg`) are redacted; a `UnicodeDecodeError` keeps only the bytes it could not decode.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < max_depth:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnicodeDecodeError):
            _withhold_decoded_bytes(current)
        with contextlib.suppress(AttributeError, TypeError):
            current.args = tuple(_redacted(a) for a in current.args)
        for name, value in list(getattr(current, "__dict__", {}).items()):
            cleaned = _redacted(value)
            if cleaned is not value and cleaned != value:
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(current, name, cleaned)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


class ScrubbedErrors:
    """A context manager that scrubs (`scrub_exception`) any exception leaving its block."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception):
            scrub_exception(exc)


scrubbed_errors = ScrubbedErrors()  # stateless: one instance serves every block


# --------------------------------------------------------------------------- logging


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its formatted message (arguments included), exception and stack."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or SECRETS

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, redacted
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = self.redactor.redact(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            scrub_exception(record.exc_info[1])
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


class _LogRedaction:
    """Installs, once per process, a record factory that redacts the records of `SDK_LOGGERS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._installed = False
        self._exact = frozenset(SDK_LOGGERS)
        self._prefixes = tuple(f"{name}." for name in SDK_LOGGERS)

    def covers(self, name: str) -> bool:
        return name in self._exact or name.startswith(self._prefixes)

    def install(self) -> None:
        with self._lock:
            if self._installed:
                return
            previous = logging.getLogRecordFactory()
            redacting = RedactingFilter(SECRETS)
            covers = self.covers

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                if covers(record.name):
                    try:
                        _withhold_body(record)
                        redacting.filter(record)
                    except Exception:  # never let redaction break a log call, nor let the text out
                        record.msg, record.args = "[log record withheld: it could not be redacted]", ()
                        record.exc_info = record.exc_text = None
                return record

            logging.setLogRecordFactory(factory)
            self._installed = True


def _withhold_body(record: logging.LogRecord) -> None:
    template = record.msg if isinstance(record.msg, str) else ""
    for logger, start in BODY_RECORDS:
        if template.startswith(start) and (record.name == logger or record.name.startswith(f"{logger}.")):
            record.msg, record.args = f"{start} {BODY_WITHHELD}", ()
            return


_LOGS = _LogRedaction()


def install_log_redaction() -> None:
    """Redact every record of the SDK loggers and the broker's own, from now on (idempotent)."""
    _LOGS.install()
