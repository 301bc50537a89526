"""A Groq (LPU) emulator.

Serves `POST /openai/v1/chat/completions`, the path the `groq` SDK appends to its base URL (give
the SDK `emulator.url`).  What differs from the OpenAI-compatible emulator:

- auth: `Authorization: Bearer <key>` is required (401 without it; with `api_key=` it must match);
- `known_models=[...]`: any other model is a 404, with code `model_decommissioned` for names in
  `decommissioned_models` and `model_not_found` otherwise;
- usage carries Groq's timings in seconds (`queue_time`, `prompt_time`, `completion_time`,
  `total_time` = prompt + completion), derived deterministically from the token counts;
- every answer has an `x_groq` object (`id`, "req_..."); a stream sends it on the first chunk and
  on the final chunk, where it also carries `usage`.  Top-level `usage` in a stream is sent only
  when `stream_options.include_usage` is true (on the same final chunk);
- every answer, errors included, carries `x-ratelimit-limit/remaining/reset-requests/-tokens`
  headers (resets as Go duration strings such as `2m59.56s`) and `x-request-id`;
- errors are `{"error": {"message", "type", "code"}}`; 429 carries `retry-after` (the header
  forms named in `retry_after_headers`); 498 is Groq's flex-tier "capacity exceeded";
- `error_in_stream(after=n, status=...)` sends n chunks, then the error event Groq ends a failed
  stream with: an `event: error` line and `data: {"error": {"message", "type", "code"},
  "status_code": N}` (`error_in_stream(after=0, status=400, code="tool_use_failed")` is a tool call
  the model could not form), or, with `form="x_groq"`, a chunk whose `x_groq.error` says why the
  stream stopped.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

from .openai_compat import OpenAICompatEmulator, StreamError, sse
from .server import Answer, Fault, Recorded, ReplyPlan

__all__ = ["GroqEmulator", "header"]

CHAT_PATH = "/openai/v1/chat/completions"

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "tokens",
    498: "capacity_exceeded",
}
_CODES = {
    401: "invalid_api_key",
    404: "model_not_found",
    429: "rate_limit_exceeded",
    498: "capacity_exceeded",
}


def header(request: Recorded, name: str) -> str:
    """A request header by name, case-insensitively (HTTP/1.1 clients differ in casing)."""
    name = name.lower()
    return next((v for k, v in request.headers.items() if k.lower() == name), "")


class GroqEmulator(OpenAICompatEmulator):
    """Loopback Groq API (`/openai/v1/chat/completions`)."""

    name = "groq"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        known_models: list[str] | None = None,
        decommissioned_models: list[str] | None = None,
        limit_requests: int = 14_400,
        limit_tokens: int = 6_000,
        reset_requests: str = "2m59.56s",
        reset_tokens: str = "7.66s",
        queue_time_s: float = 0.0125,
        retry_after_headers: tuple[str, ...] = ("retry-after",),
        **kw: Any,
    ) -> None:
        super().__init__(served_models=known_models, api_key=api_key, **kw)
        self.decommissioned_models = list(decommissioned_models or ())
        self.limit_requests = limit_requests
        self.limit_tokens = limit_tokens
        self.reset_requests = reset_requests
        self.reset_tokens = reset_tokens
        self.queue_time_s = queue_time_s
        self.retry_after_headers = retry_after_headers
        self._used_requests = 0
        self._used_tokens = 0
        self._count_lock = threading.Lock()
        self._groq_stream_errors: deque[tuple[StreamError, str]] = deque()

    def error_in_stream(
        self,
        after: int = 1,
        *,
        status: int = 503,
        message: str = "stream stopped: service overloaded",
        error_type: str | None = None,
        code: str | None = None,
        form: str = "event",
    ) -> GroqEmulator:
        """The next stream sends `after` chunks, then an error (`form`: "event" or "x_groq")."""
        if form not in ("event", "x_groq"):
            raise ValueError(f"unknown stream error form {form!r}; use 'event' or 'x_groq'")
        fallback = "invalid_request" if status < 500 else "internal_server_error"
        if status == 503:
            fallback = "service_unavailable"
        error = StreamError(after, status, message, error_type or _TYPES.get(status, "internal_server_error"),
                            code or _CODES.get(status, fallback))
        with self._lock:
            self._groq_stream_errors.append((error, form))
        return self

    # ------------------------------------------------------------------ request side

    def check(self, request: Recorded, body: dict[str, Any]) -> Answer | None:
        auth = header(request, "authorization")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return self.error_answer(Fault(401, message="Invalid API Key"), request)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return self.error_answer(Fault(401, message="Invalid API Key"), request)
        model = body.get("model")
        if self.served_models is not None and model not in self.served_models:
            if model in self.decommissioned_models:
                return self.error_answer(
                    Fault(
                        404,
                        code="model_decommissioned",
                        message=(f"The model `{model}` has been decommissioned and is no longer supported."),
                    ),
                    request,
                )
            return self.error_answer(
                Fault(
                    404,
                    code="model_not_found",
                    message=(f"The model `{model}` does not exist or you do not have access to it."),
                ),
                request,
            )
        return None

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        if request.method != "POST" or request.path != CHAT_PATH:
            return self.error_answer(
                Fault(404, code="unknown_url", message=f"Unknown request URL: {request.path}"), request
            )
        answer = super().handle(request, fault)
        self._count(request, answer)
        return answer

    # ------------------------------------------------------------------ answer side

    def usage(self, plan: ReplyPlan) -> dict[str, Any]:
        prompt_time = round(plan.input_tokens * 0.0001, 6)
        completion_time = round(plan.output_tokens * 0.002, 6)
        return {
            **super().usage(plan),
            "queue_time": self.queue_time_s,
            "prompt_time": prompt_time,
            "completion_time": completion_time,
            "total_time": round(prompt_time + completion_time, 6),
        }

    def completion(self, rid: str, body: dict[str, Any], plan: ReplyPlan) -> dict[str, Any]:
        out = super().completion(rid, body, plan)
        out["system_fingerprint"] = "fp_emulator"
        out["x_groq"] = {"id": self._groq_id(rid)}
        return out

    def stream_chunks(
        self, rid: str, body: dict[str, Any], plan: ReplyPlan, include_usage: bool
    ) -> Iterator[bytes]:
        with self._lock:
            stop = self._groq_stream_errors.popleft() if self._groq_stream_errors else None
        xid = self._groq_id(rid)
        first = self.chunk(rid, body, {"role": "assistant", "content": ""})
        first["x_groq"] = {"id": xid}
        chunks = [first]
        if plan.tool_calls:
            chunks.append(self.chunk(rid, body, {"tool_calls": self.tool_calls_json(plan, indexed=True)}))
        else:
            chunks.extend(self.chunk(rid, body, {"content": piece}) for piece in plan.text_chunks())
        for i, chunk in enumerate(chunks):
            if stop is not None and i >= stop[0].after:
                yield self._stream_error(rid, body, xid, *stop)
                return
            yield sse(chunk)
        final = self.chunk(rid, body, {}, plan.finish_reason)
        usage = self.usage(plan)
        final["x_groq"] = {"id": xid, "usage": usage}
        if include_usage:
            final["usage"] = usage
        self.report(plan.input_tokens, plan.output_tokens)
        yield sse(final)
        yield sse("[DONE]")

    def _stream_error(self, rid: str, body: dict[str, Any], xid: str, error: StreamError, form: str) -> bytes:
        if form == "x_groq":
            chunk = self.chunk(rid, body, {}, None)
            chunk["x_groq"] = {"id": xid, "error": error.message}
            return sse(chunk)
        payload = {
            "error": {"message": error.message, "type": error.error_type, "code": error.code},
            "status_code": error.status,
        }
        return b"event: error\n" + sse(payload)

    @staticmethod
    def _groq_id(rid: str) -> str:
        return "req_" + rid.rsplit("-", 1)[-1]

    def rate_limit_headers(self) -> dict[str, str]:
        with self._count_lock:
            used_requests, used_tokens = self._used_requests, self._used_tokens
        return {
            "x-ratelimit-limit-requests": str(self.limit_requests),
            "x-ratelimit-limit-tokens": str(self.limit_tokens),
            "x-ratelimit-remaining-requests": str(max(0, self.limit_requests - used_requests)),
            "x-ratelimit-remaining-tokens": str(max(0, self.limit_tokens - used_tokens)),
            "x-ratelimit-reset-requests": self.reset_requests,
            "x-ratelimit-reset-tokens": self.reset_tokens,
        }

    def _count(self, request: Recorded, answer: Answer) -> None:
        with self._count_lock:
            self._used_requests += 1
            self._used_tokens += max(1, len(request.body) // 4)
        answer.headers.update(self.rate_limit_headers())
        rid = answer.headers.get("x-request-id")  # Groq's request id is the `x_groq.id` of the answer
        answer.headers["x-request-id"] = self._groq_id(rid) if rid else f"req_{uuid.uuid4().hex[:26]}"

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        status = fault.status or 500
        headers = {**self.rate_limit_headers(), "x-request-id": f"req_{uuid.uuid4().hex[:26]}"}
        if fault.retry_after is not None:
            for name in self.retry_after_headers:
                value = fault.retry_after * 1000 if name.lower().endswith("-ms") else fault.retry_after
                headers[name] = f"{value:g}"
        if status == 429 and fault.retry_after is None:
            headers["x-ratelimit-remaining-tokens"] = "0"
        error = {
            "message": fault.message,
            "type": _TYPES.get(status, "internal_server_error"),
            "code": fault.code
            or _CODES.get(status, str(status) if status < 500 else "internal_server_error"),
        }
        return Answer.json({"error": error}, status, headers)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._groq_stream_errors.clear()
        with self._count_lock:
            self._used_requests = self._used_tokens = 0
