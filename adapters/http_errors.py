"""HTTP status -> broker error, shared by every adapter whose provider speaks HTTP status codes.

One table, one function.  Provider-specific adapters refine the result (for example Azure's
`content_filter` code) before falling back to it.

| status            | broker error        | retried | next route |
|-------------------|---------------------|---------|------------|
| 400, 413, 422     | InvalidRequest      | no      | no         |
|   (context text)  | ContextTooLong      | no      | yes        |
|   (filter code)   | ContentFiltered     | no      | no         |
| 401, 403          | AuthError           | no      | yes        |
| 404, 410          | ModelNotAvailable   | no      | yes        |
| 408, 504          | Timeout             | yes     | yes        |
| 429, 498          | Throttled           | yes     | yes        |
| 5xx, 424, 409     | Unavailable         | yes     | yes        |
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

from broker.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    ModelNotAvailable,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)

__all__ = ["error_for_status", "error_message", "retry_after_seconds"]

_STATUS_TABLE: dict[int, type[ProviderError]] = {
    400: InvalidRequest,
    401: AuthError,
    403: AuthError,
    404: ModelNotAvailable,
    408: Timeout,
    409: Unavailable,
    410: ModelNotAvailable,
    413: InvalidRequest,
    422: InvalidRequest,
    424: Unavailable,
    429: Throttled,
    498: Throttled,
    504: Timeout,
}

_CONTEXT_PATTERN = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|prompt is too long|"
    r"input (is )?too long|reduce the length|max_model_len|"
    r"exceeds the available context size|"  # llama.cpp server, current and older wording
    r"`?inputs`? tokens \+ `?max_new_tokens`? must be <=|`?inputs`? must have less than \d+ tokens",  # TGI
    re.IGNORECASE,
)
_CONTEXT_TYPES = {"exceed_context_size_error"}  # llama.cpp server's error `type`
_FILTER_CODES = {"content_filter", "content_filtered", "responsibleaipolicyviolation"}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def error_message(body: Any, fallback: str) -> tuple[str, str | None]:
    """The provider's error text and code from the usual JSON error shapes."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            message = err.get("message") or err.get("detail") or body.get("message")
            code = err.get("code") or err.get("type") or err.get("status")
            return (str(message) if message else fallback, str(code) if code is not None else None)
        if isinstance(err, str):
            return err, None
    return fallback, None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait hint of a response in seconds, from whichever header form the provider sent.

    `retry-after-ms` / `x-ms-retry-after-ms` (milliseconds), `x-amz-retry-after` (milliseconds),
    `retry-after` (seconds or an HTTP date).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms", "x-amz-retry-after"):
        value = lower.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000.0)
            except ValueError:
                pass
    value = lower.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            if "," not in value:
                return _duration(value)
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None  # an unreadable hint: the broker's own backoff applies
    return None


def _duration(text: str) -> float | None:
    """Go-style durations such as `2m59.56s` or `120ms` (Groq's rate-limit reset headers)."""
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def _error_type(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, Mapping) else None
    return str(err.get("type")) if isinstance(err, Mapping) else None


def error_for_status(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    provider: str,
    route_id: str,
    request_id: str | None = None,
) -> ProviderError:
    """Build the broker error for a non-2xx HTTP answer."""
    message, code = error_message(body, f"HTTP {status}")
    kw: dict[str, Any] = {
        "provider": provider,
        "route_id": route_id,
        "status": status,
        "request_id": request_id,
        "code": code,
    }
    if code and code.lower() in _FILTER_CODES:
        return ContentFiltered(message, **kw)
    cls = _STATUS_TABLE.get(status)
    if cls is None:
        cls = Unavailable if status >= 500 else InvalidRequest
    if cls is InvalidRequest and (_CONTEXT_PATTERN.search(message) or _error_type(body) in _CONTEXT_TYPES):
        cls = ContextTooLong
    return cls(message, retry_after=retry_after_seconds(headers), **kw)
