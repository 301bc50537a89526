"""An Azure AI Foundry (Azure AI Inference) emulator.

Serves what `azure-ai-inference`'s `ChatCompletionsClient` calls:

    POST {endpoint}/chat/completions?api-version=...   JSON, or strict SSE when "stream": true
    GET  {endpoint}/info?api-version=...               model info

where `{endpoint}` is `emulator.endpoint` (`http://127.0.0.1:PORT/models`, the Foundry shape) or
the bare server URL (the serverless shape).  What differs from the OpenAI-compatible emulator:

- auth: an `api-key` or `Authorization` header is required (401 without one; with `api_key=` set
  the value must match either header);
- `api-version` is required in the query string (400 without it);
- the stream is strict SSE (`data: <json>\\n\\n` only, which is all the SDK's parser accepts) and its
  final chunk carries both `finish_reason` and `usage` (Azure style).  `stream_options.include_usage:
  false` leaves usage out; without `stream_options` usage is sent, as Foundry models do;
- errors are `{"error": {"code", "message", "status"}}` with an `x-ms-error-code` header; 429 carries
  the wait hint in every header form named in `retry_after_headers`;
- `filter_prompt()` answers 400 with code `content_filter`; a scripted
  `Reply(finish_reason="content_filter")` answers 200 with that finish reason.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

from .groq import header
from .openai_compat import OpenAICompatEmulator, sse
from .server import Answer, Fault, Recorded, ReplyPlan

__all__ = ["AzureEmulator"]

_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "Timeout",
    413: "PayloadTooLarge",
    422: "UnprocessableEntity",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


class AzureEmulator(OpenAICompatEmulator):
    """Loopback Azure AI Inference endpoint (Foundry `/models` path or serverless root)."""

    name = "azure"

    def __init__(
        self,
        *,
        deployments: list[str] | None = None,
        api_key: str | None = None,
        model_name: str = "Llama-3.3-70B-Instruct",
        retry_after_headers: tuple[str, ...] = ("retry-after-ms", "Retry-After"),
        **kw: Any,
    ) -> None:
        super().__init__(served_models=deployments, api_key=api_key, **kw)
        self.model_name = model_name
        self.retry_after_headers = retry_after_headers

    @property
    def endpoint(self) -> str:
        """The Foundry-style endpoint (`.../models`) to give the SDK client."""
        return f"{self.url}/models"

    def filter_prompt(
        self, message: str = "The prompt was filtered by the content management policy."
    ) -> AzureEmulator:
        """Answer the next request with Azure's content-filter refusal (400, code `content_filter`)."""
        self.fail(400, code="content_filter", message=message)
        return self

    # ------------------------------------------------------------------ request side

    def check(self, request: Recorded, body: dict[str, Any]) -> Answer | None:
        key = header(request, "api-key")
        bearer = header(request, "authorization")
        if not key and not bearer:
            return self.error_answer(
                Fault(401, message="Missing api-key or Authorization header", code="Unauthorized"), request
            )
        if self.api_key is not None and key != self.api_key and bearer != f"Bearer {self.api_key}":
            return self.error_answer(
                Fault(401, message="Access denied due to invalid key", code="Unauthorized"), request
            )
        if "api-version=" not in request.query:
            return self.error_answer(
                Fault(400, message="Missing required query parameter: api-version"), request
            )
        if (
            body
            and self.served_models is not None
            and str(body.get("model", "")).lower() not in {m.lower() for m in self.served_models}
        ):
            return self.error_answer(
                Fault(404, message=f"Unknown model: {body.get('model')}", code="unknown_model"), request
            )
        return None

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        if request.method == "GET" and request.path.endswith("/info"):
            refused = self.check(request, {})
            return refused or Answer.json(
                {
                    "model_name": self.model_name,
                    "model_type": "chat-completion",
                    "model_provider_name": "Meta",
                }
            )
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return self.error_answer(Fault(404, message=f"no route {request.method} {request.path}"), request)
        answer = super().handle(request, fault)
        answer.headers.setdefault("apim-request-id", str(uuid.uuid4()))
        return answer

    # ------------------------------------------------------------------ answer side

    def completion(self, rid: str, body: dict[str, Any], plan: ReplyPlan) -> dict[str, Any]:
        out = super().completion(rid, body, plan)
        out["model"] = body.get("model") or self.model_name
        return out

    def stream_chunks(
        self, rid: str, body: dict[str, Any], plan: ReplyPlan, include_usage: bool
    ) -> Iterator[bytes]:
        options = body.get("stream_options")
        send_usage = include_usage or not isinstance(options, dict) or "include_usage" not in options
        yield sse(self.chunk(rid, body, {"role": "assistant", "content": ""}))
        if plan.tool_calls:
            yield sse(self.chunk(rid, body, {"tool_calls": self.tool_calls_json(plan, indexed=True)}))
        else:
            for piece in plan.text_chunks():
                yield sse(self.chunk(rid, body, {"content": piece}))
        final = self.chunk(rid, body, {}, plan.finish_reason)
        if send_usage:
            self.report(plan.input_tokens, plan.output_tokens)
            final["usage"] = self.usage(plan)
        yield sse(final)
        yield sse("[DONE]")

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        status = fault.status or 500
        code = fault.code or _CODES.get(status, "InternalServerError")
        headers = {"x-ms-error-code": code, "apim-request-id": str(uuid.uuid4())}
        if fault.retry_after is not None:
            for name in self.retry_after_headers:
                if name.lower().endswith("-ms"):
                    headers[name] = str(int(fault.retry_after * 1000))
                else:
                    headers[name] = str(math.ceil(fault.retry_after))
        return Answer.json(
            {"error": {"code": code, "message": fault.message, "status": status}}, status, headers
        )
