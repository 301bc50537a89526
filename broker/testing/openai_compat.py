"""An OpenAI-compatible chat-completions emulator: what vLLM, TGI, llama.cpp, SGLang and Ollama serve.

`POST .../chat/completions` answers JSON, or SSE when `"stream": true`.  Tool calls and JSON mode
are honoured.  `malformed(kind)` sends the usual answer changed as `broker.testing.malformed`
describes.  Provider emulators that speak the same shape (Groq, Azure, Vertex MaaS) subclass it
and change what differs; they send the plain OpenAI shape (no runner `flavor`).

`flavor=` picks the runner whose answers the emulator sends (default "vllm"):

- "vllm": `logprobs: null`, `stop_reason`, `prompt_logprobs`, `kv_transfer_params`,
  `system_fingerprint: null`, `tool_calls: []`; a stream's usage on a final chunk with
  `choices: []` when `stream_options.include_usage` is set; overflow: 400 "This model's maximum
  context length is M tokens. However, you requested N tokens ...".
- "llamacpp": `system_fingerprint` (the build), `timings` (`prompt_n`, `cache_n`, `predicted_n`,
  times in ms) and `prompt_tokens_details.cached_tokens`; in a stream, `timings` on the finish
  chunk whether usage was asked for or not, and with `include_usage` a final `choices: []`
  chunk with usage and timings (as a llama.cpp server build of 2026-10 answers); overflow: 400
  `exceed_context_size_error` "request (N tokens) exceeds the available context size (M tokens),
  try increasing it", also for a streamed request (before any chunk).
- "tgi": `system_fingerprint` (the version) and `logprobs: null`; usage as vLLM; overflow: 422
  "Input validation error: `inputs` tokens + `max_new_tokens` must be <= M", which a streamed
  request gets as an in-stream error (TGI validates inside the stream).

`usage_on_finish_chunk=True` puts a stream's usage on its finish chunk instead of a chunk of its
own (as older llama.cpp builds and some servers do).  `context_size=M` turns the overflow on:
llama.cpp refuses a prompt of M tokens or more, vLLM and TGI a prompt plus `max_tokens` over M.
`cached_tokens=n` reports n prompt tokens served from the prefix cache
(`usage.prompt_tokens_details.cached_tokens`; llama.cpp also `timings.cache_n`).

Errors: vLLM and the plain shape answer `{"error": {"message", "type", "code"}}` with
`retry-after` on 429; llama.cpp `{"error": {"code": <status>, "message", "type"}}`; TGI
`{"error": "<text>", "error_type": "<kind>"}`.  `error_in_stream(after=n, status=...)` streams n
chunks and then the runner's in-stream error: vLLM `data: {"error": {"message", "type", "code":
<status>}}` then `data: [DONE]`; TGI `data: {"error": "<text>", "error_type", "http_status_code"}`;
llama.cpp an `error: {"code", "message", "type"}` line.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .malformed import corrupt_completion, corrupt_sse
from .server import Answer, Emulator, Fault, Recorded, ReplyPlan

__all__ = ["FLAVORS", "Flavor", "OpenAICompatEmulator", "StreamError", "sse"]

Flavor = Literal["vllm", "llamacpp", "tgi"]
FLAVORS: tuple[Flavor, ...] = ("vllm", "llamacpp", "tgi")

_LLAMACPP_FINGERPRINT = "b6710-74b8fc17"
_TGI_FINGERPRINT = "3.3.6-sha-8f3c2d1"
_TGI_ERROR_TYPES = {422: "validation", 424: "generation", 429: "overloaded"}
_LLAMACPP_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                         501: "not_supported_error", 503: "unavailable_error"}


@dataclass(frozen=True)
class StreamError:
    """An error a server reports inside a stream, after `after` chunks."""

    after: int
    status: int
    message: str
    error_type: str
    code: str | None = None


def sse(payload: Any) -> bytes:
    """One SSE event in the strict form every SDK parser accepts (`data: <json>` + blank line)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


def prompt_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The text of each OpenAI-style message (text parts only)."""
    texts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            texts.append(" ".join(p.get("text", "") for p in content if isinstance(p, dict)))
        else:
            texts.append(content or "")
    return texts


class OpenAICompatEmulator(Emulator):
    """Loopback OpenAI-compatible server (a stand-in for a local vLLM runner)."""

    name = "local"
    error_type_by_status: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_exceeded",
    }

    def __init__(
        self,
        *,
        served_models: list[str] | None = None,
        api_key: str | None = None,
        flavor: Flavor | None = None,
        context_size: int | None = None,
        cached_tokens: int = 0,
        usage_on_finish_chunk: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if flavor is not None and flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; use one of {', '.join(FLAVORS)}")
        self.served_models = served_models
        self.api_key = api_key
        # provider emulators built on this class (Groq, Azure, Vertex) send the plain shape
        self.flavor: Flavor | None = flavor or ("vllm" if type(self).name == OpenAICompatEmulator.name else None)
        self.context_size = context_size
        self.cached_tokens = cached_tokens
        self.usage_on_finish_chunk = usage_on_finish_chunk
        self._stream_errors: deque[StreamError] = deque()

    def error_in_stream(
        self,
        after: int = 0,
        *,
        status: int = 500,
        message: str = "stream stopped: internal error",
        error_type: str | None = None,
        code: str | None = None,
    ) -> OpenAICompatEmulator:
        """The next stream sends `after` chunks, then this runner's in-stream error for `status`."""
        with self._lock:
            error = StreamError(after, status, message, error_type or self._error_type(status), code)
            self._stream_errors.append(error)
        return self

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._stream_errors.clear()

    # ------------------------------------------------------------------ request side

    def plan_for(self, body: dict[str, Any]) -> ReplyPlan:
        tools = [t["function"]["name"] for t in body.get("tools") or ()]
        fmt = body.get("response_format") or {}
        return self.plan(
            prompt_texts(body.get("messages") or []),
            tools=tools or None,
            json_mode=fmt.get("type") in ("json_object", "json_schema"),
            max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
        )

    def check(self, request: Recorded, body: dict[str, Any]) -> Answer | None:
        """Authentication and model checks; an `Answer` here is returned instead of a reply."""
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error_answer(Fault(401, message="invalid api key"), request)
        if self.served_models is not None and body.get("model") not in self.served_models:
            return self.error_answer(Fault(404, message=f"The model `{body.get('model')}` does not exist."), request)
        return None

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        if not request.path.endswith("/chat/completions"):
            return self.error_answer(Fault(404, message=f"no route {request.path}"), request)
        body = request.json or {}
        refused = self.check(request, body)
        if refused is not None:
            return refused
        plan = self.plan_for(body)
        rid = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        overflow = self._overflow(body, plan)
        if overflow is not None:
            if body.get("stream") and self.flavor == "tgi":  # TGI validates inside the stream
                with self._lock:
                    self._stream_errors.appendleft(overflow)
            else:
                return Answer.json(self._error_body(overflow, n_prompt_tokens=plan.input_tokens), overflow.status)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return Answer(
                200,
                {"Content-Type": "text/event-stream", "x-request-id": rid},
                chunks=self.stream_chunks(rid, body, plan, include_usage),
            )
        self.report(plan.input_tokens, plan.output_tokens)
        return Answer.json(self.completion(rid, body, plan), headers={"x-request-id": rid})

    # ------------------------------------------------------------------ answer side

    def _overflow(self, body: dict[str, Any], plan: ReplyPlan) -> StreamError | None:
        """The runner's context-overflow error when the prompt does not fit `context_size`, else None."""
        size, prompt = self.context_size, plan.input_tokens
        if size is None:
            return None
        wanted = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if self.flavor == "llamacpp":
            if prompt < size:
                return None
            return StreamError(0, 400, f"request ({prompt} tokens) exceeds the available context size "
                               f"({size} tokens), try increasing it", "exceed_context_size_error")
        if prompt + wanted <= size:
            return None
        if self.flavor == "tgi":
            return StreamError(0, 422, f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {size}. "
                               f"Given: {prompt} `inputs` tokens and {wanted} `max_new_tokens`", "validation")
        return StreamError(0, 400, f"This model's maximum context length is {size} tokens. However, you requested "
                           f"{prompt + wanted} tokens ({prompt} in the messages, {wanted} in the completion). "
                           "Please reduce the length of the messages or completion.", "BadRequestError")

    def _error_type(self, status: int) -> str:
        if self.flavor == "tgi":
            return _TGI_ERROR_TYPES.get(status, "incomplete_generation" if status >= 500 else "validation")
        if self.flavor == "llamacpp":
            return _LLAMACPP_ERROR_TYPES.get(status, "server_error")
        return self.error_type_by_status.get(status, "server_error")

    def _cached(self, plan: ReplyPlan) -> int:
        return min(self.cached_tokens, plan.input_tokens)

    def usage(self, plan: ReplyPlan) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": plan.input_tokens,
            "completion_tokens": plan.output_tokens,
            "total_tokens": plan.input_tokens + plan.output_tokens,
        }
        if self.flavor == "llamacpp" or (self.flavor == "vllm" and self.cached_tokens):
            usage["prompt_tokens_details"] = {"cached_tokens": self._cached(plan)}
        elif self.flavor == "vllm":
            usage["prompt_tokens_details"] = None
        return usage

    def timings(self, plan: ReplyPlan) -> dict[str, Any]:
        """llama.cpp's `timings`: tokens evaluated, taken from the cache and predicted, with times."""
        cached = self._cached(plan)
        prompt_n, predicted_n = plan.input_tokens - cached, plan.output_tokens
        prompt_ms, predicted_ms = prompt_n * 0.5, predicted_n * 14.0
        return {
            "cache_n": cached,
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": 0.5,
            "prompt_per_second": 2000.0,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": 14.0,
            "predicted_per_second": 1000.0 / 14.0,
        }

    def _answer_extras(self, answer: dict[str, Any], choice: dict[str, Any], *, final: bool) -> None:
        """Add what the flavor's runner sends beside the OpenAI fields of an answer or chunk."""
        if self.flavor == "vllm":
            choice["logprobs"] = None
            if final:
                choice["stop_reason"] = None
            if answer["object"] == "chat.completion":
                answer.update(service_tier=None, system_fingerprint=None, prompt_logprobs=None,
                              prompt_token_ids=None, kv_transfer_params=None)
        elif self.flavor == "llamacpp":
            answer["system_fingerprint"] = _LLAMACPP_FINGERPRINT
        elif self.flavor == "tgi":
            choice["logprobs"] = None
            answer["system_fingerprint"] = _TGI_FINGERPRINT

    @staticmethod
    def tool_calls_json(plan: ReplyPlan, *, indexed: bool = False) -> list[dict[str, Any]]:
        return [
            {
                **({"index": i} if indexed else {}),
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            for i, (call_id, name, args) in enumerate(plan.tool_calls)
        ]

    def completion(self, rid: str, body: dict[str, Any], plan: ReplyPlan) -> dict[str, Any]:
        # content is null beside tool calls, and "" for an empty answer (as small models give)
        content = None if plan.tool_calls and not plan.text else plan.text
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if plan.tool_calls:
            message["tool_calls"] = self.tool_calls_json(plan)
        elif self.flavor == "vllm":
            message.update(tool_calls=[], reasoning_content=None)
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": plan.finish_reason}
        answer: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
            "usage": self.usage(plan),
        }
        self._answer_extras(answer, choice, final=True)
        if self.flavor == "llamacpp":
            answer["timings"] = self.timings(plan)
        return answer

    def chunk(self, rid: str, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
        }
        self._answer_extras(chunk, choice, final=finish is not None)
        return chunk

    def stream_chunks(
        self, rid: str, body: dict[str, Any], plan: ReplyPlan, include_usage: bool
    ) -> Iterator[bytes]:
        with self._lock:
            stop = self._stream_errors.popleft() if self._stream_errors else None
        chunks = [self.chunk(rid, body, {"role": "assistant", "content": ""})]
        if plan.tool_calls:
            chunks.append(self.chunk(rid, body, {"tool_calls": self.tool_calls_json(plan, indexed=True)}))
        else:
            chunks.extend(self.chunk(rid, body, {"content": piece}) for piece in plan.text_chunks())
        for i, chunk in enumerate(chunks):
            if stop is not None and i >= stop.after:
                yield self.stream_error(stop)
                return
            yield sse(chunk)
        finish = self.chunk(rid, body, {}, plan.finish_reason)
        if self.flavor == "llamacpp":  # llama.cpp: timings on the finish chunk, asked for or not
            finish["timings"] = self.timings(plan)
        if include_usage and self.usage_on_finish_chunk:
            finish["usage"] = self.usage(plan)
        if include_usage or self.flavor == "llamacpp":  # llama.cpp's timings carry the counts too
            self.report(plan.input_tokens, plan.output_tokens)
        yield sse(finish)
        if include_usage and not self.usage_on_finish_chunk:
            usage_chunk: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                                           "model": body.get("model"), "choices": [], "usage": self.usage(plan)}
            if self.flavor == "llamacpp":
                usage_chunk.update(system_fingerprint=_LLAMACPP_FINGERPRINT, timings=self.timings(plan))
            elif self.flavor == "tgi":
                usage_chunk["system_fingerprint"] = _TGI_FINGERPRINT
            yield sse(usage_chunk)
        yield sse("[DONE]")

    def stream_error(self, error: StreamError) -> bytes:
        """The bytes this runner sends for an error in the middle of a stream (the stream ends after them)."""
        if self.flavor == "tgi":
            return sse({"error": error.message, "error_type": error.error_type, "http_status_code": error.status})
        if self.flavor == "llamacpp":
            payload = {"code": error.status, "message": error.message, "type": error.error_type}
            return b"error: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
        return sse({"error": {"message": error.message, "type": error.error_type, "param": None,
                              "code": error.code or error.status}}) + sse("[DONE]")

    def malformed_answer(self, request: Recorded, kind: str = "truncated") -> Answer:
        """The answer `handle` would give, changed as `kind` says; refusals (auth, model) stay as they are."""
        if kind == "html_page":
            return super().malformed_answer(request, kind)
        answer = self.handle(request, None)
        if answer.status >= 400:
            return answer
        if answer.chunks is not None:
            answer.chunks = corrupt_sse(kind, answer.chunks)
        else:
            answer.body = corrupt_completion(kind, json.loads(answer.body or b"{}"))
        return answer

    def _error_body(self, error: StreamError, **llamacpp_extra: Any) -> dict[str, Any]:
        """The flavor's JSON error body for an HTTP error answer."""
        if self.flavor == "tgi":
            return {"error": error.message, "error_type": error.error_type}
        if self.flavor == "llamacpp":
            body = {"code": error.status, "message": error.message, "type": error.error_type}
            if error.error_type == "exceed_context_size_error":
                body.update(llamacpp_extra, n_ctx=self.context_size)
            return {"error": body}
        code = error.code or (str(error.status) if error.status != 429 else "rate_limit_exceeded")
        return {"error": {"message": error.message, "type": error.error_type, "code": code}}

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        status = fault.status or 500
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        error = StreamError(0, status, fault.message, self._error_type(status), fault.code)
        return Answer.json(self._error_body(error), status, headers)
