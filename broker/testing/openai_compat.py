"""An OpenAI-compatible chat-completions emulator: what vLLM, TGI, llama.cpp, SGLang and Ollama serve.

`POST .../chat/completions` answers JSON, or SSE when `"stream": true` (with a final usage-only
chunk when `stream_options.include_usage` is set, as vLLM does).  Tool calls and JSON mode
are honoured.  Errors use the OpenAI error body `{"error": {"message", "type", "code"}}` with
`retry-after` on 429.  `malformed(kind)` sends the usual answer changed as
`broker.testing.malformed` describes.  Provider emulators that speak the same shape (Groq, Azure, Vertex MaaS)
subclass it and change what differs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from .malformed import corrupt_completion, corrupt_sse
from .server import Answer, Emulator, Fault, Recorded, ReplyPlan

__all__ = ["OpenAICompatEmulator", "sse"]


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

    def __init__(self, *, served_models: list[str] | None = None, api_key: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.served_models = served_models
        self.api_key = api_key

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

    def usage(self, plan: ReplyPlan) -> dict[str, Any]:
        return {
            "prompt_tokens": plan.input_tokens,
            "completion_tokens": plan.output_tokens,
            "total_tokens": plan.input_tokens + plan.output_tokens,
        }

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
        return {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason}],
            "usage": self.usage(plan),
        }

    def chunk(self, rid: str, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def stream_chunks(
        self, rid: str, body: dict[str, Any], plan: ReplyPlan, include_usage: bool
    ) -> Iterator[bytes]:
        yield sse(self.chunk(rid, body, {"role": "assistant", "content": ""}))
        if plan.tool_calls:
            yield sse(self.chunk(rid, body, {"tool_calls": self.tool_calls_json(plan, indexed=True)}))
        else:
            for piece in plan.text_chunks():
                yield sse(self.chunk(rid, body, {"content": piece}))
        yield sse(self.chunk(rid, body, {}, plan.finish_reason))
        if include_usage:
            self.report(plan.input_tokens, plan.output_tokens)
            yield sse({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": body.get("model"), "choices": [], "usage": self.usage(plan)})
        yield sse("[DONE]")

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

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        status = fault.status or 500
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        error = {
            "message": fault.message,
            "type": self.error_type_by_status.get(status, "server_error"),
            "code": fault.code or (str(status) if status != 429 else "rate_limit_exceeded"),
        }
        return Answer.json({"error": error}, status, headers)
