"""A Vertex AI emulator: Llama MaaS and dedicated Model Garden endpoints on loopback.

Serves `POST /{v1|v1beta1}/projects/{p}/locations/{l}/endpoints/{id}/chat/completions`, where
`id` is `openapi` for the managed API (MaaS) and an endpoint id for a dedicated deployment.
Answers are the OpenAI chat-completions shape (JSON, or SSE with a final usage chunk when
`stream_options.include_usage` is set); errors are Google's body
`{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}`, with a
`google.rpc.RetryInfo` detail when a wait was asked for.

    with VertexEmulator(known_models=["llama-4-maverick-17b-128e-instruct-maas"]) as emu:
        ...                                   # route.endpoint = emu.url
        emu.targets[-1].project               # what the request's path named
        emu.fail(429, retry_after=2)          # RESOURCE_EXHAUSTED, retryDelay "2s"
        emu.fail(400, code="FAILED_PRECONDITION", message="...")   # pick the Google status

Every request must carry `Authorization: Bearer <token>` (401 UNAUTHENTICATED otherwise);
`valid_tokens` narrows which tokens pass.  `known_models` answers 404 NOT_FOUND for any other
MaaS model, as Vertex does for a retired one; `endpoints` does the same for dedicated endpoint
ids.  `guard_terms` stands in for Llama Guard: a prompt containing one is answered with
`finish_reason: "content_filter"` unless the request turned the guard off.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .openai_compat import OpenAICompatEmulator, prompt_texts
from .server import Answer, Fault, Recorded, ReplyPlan

__all__ = ["GOOGLE_STATUS", "VertexEmulator", "VertexTarget"]

#: HTTP status -> Google canonical status name, as Google APIs pair them.
GOOGLE_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/endpoints/(?P<endpoint>[^/]+)/chat/completions$"
)
_REFUSAL = "The prompt is blocked due to prohibited contents"


@dataclass(frozen=True)
class VertexTarget:
    """Where a request went, read from its path."""

    api_version: str
    project: str
    location: str
    endpoint: str

    @property
    def is_maas(self) -> bool:
        return self.endpoint == "openapi"


def _bare(model: str) -> str:
    return model.split("/", 1)[1] if "/" in model else model


class VertexEmulator(OpenAICompatEmulator):
    """Loopback Vertex AI chat-completions server (MaaS and dedicated endpoints)."""

    name = "vertex"

    def __init__(
        self,
        *,
        known_models: Iterable[str] | None = None,
        endpoints: Iterable[str] | None = None,
        valid_tokens: Iterable[str] | None = None,
        guard_terms: Iterable[str] = (),
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.known_models = None if known_models is None else {_bare(m) for m in known_models}
        self.endpoints = None if endpoints is None else set(endpoints)
        self.valid_tokens = None if valid_tokens is None else set(valid_tokens)
        self.guard_terms = [t.lower() for t in guard_terms]
        self.targets: list[VertexTarget] = []

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.targets.clear()

    # ------------------------------------------------------------------ request side

    def check(self, request: Recorded, body: dict[str, Any]) -> Answer | None:
        auth = request.headers.get("Authorization") or request.headers.get("authorization") or ""
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._google(401, "Request is missing required authentication credential.")
        if self.valid_tokens is not None and auth[7:].strip() not in self.valid_tokens:
            return self._google(401, "Request had invalid authentication credentials.")
        match = _PATH.match(request.path)
        if match is None:
            return self._google(404, f"The requested URL {request.path} was not found on this server.")
        target = VertexTarget(match["version"], match["project"], match["location"], match["endpoint"])
        with self._lock:
            self.targets.append(target)
        model = str(body.get("model") or "")
        where = f"projects/{target.project}/locations/{target.location}"
        if target.is_maas:
            if "/" not in model:
                return self._google(400, f"Model name must be publisher/model, got `{model}`.")
            if self.known_models is not None and _bare(model) not in self.known_models:
                name = f"{where}/publishers/{model.replace('/', '/models/', 1)}"
                gone = f"Publisher Model `{name}` was not found or your project does not have access to it."
                return self._google(404, gone)
        elif self.endpoints is not None and target.endpoint not in self.endpoints:
            return self._google(404, f"Endpoint `{where}/endpoints/{target.endpoint}` not found.")
        return None

    def plan_for(self, body: dict[str, Any]) -> ReplyPlan:
        plan = super().plan_for(body)
        if self._guard_on(body):
            prompt = " ".join(prompt_texts(body.get("messages") or [])).lower()
            if any(term in prompt for term in self.guard_terms):
                return ReplyPlan("", [], "content_filter", plan.input_tokens, 0)
        return plan

    @staticmethod
    def _guard_on(body: dict[str, Any]) -> bool:
        settings = ((body.get("extra_body") or {}).get("google") or {}).get("model_safety_settings") or {}
        return bool(settings.get("enabled", True))

    # ------------------------------------------------------------------ answer side

    def completion(self, rid: str, body: dict[str, Any], plan: ReplyPlan) -> dict[str, Any]:
        out = super().completion(rid, body, plan)
        if plan.finish_reason == "content_filter":
            out["choices"][0]["message"] = {"role": "assistant", "refusal": _REFUSAL}
        return out

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        answer = super().handle(request, fault)
        if answer.status < 400:
            answer.headers.setdefault("x-request-id", f"vertex-{uuid.uuid4().hex[:12]}")
        return answer

    def _google(
        self, status: int, message: str, *, google_status: str | None = None, retry_after: float | None = None
    ) -> Answer:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": google_status or GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
        }
        if retry_after is not None:
            info_type = "type.googleapis.com/google.rpc.RetryInfo"
            error["details"] = [{"@type": info_type, "retryDelay": f"{retry_after:g}s"}]
        return Answer.json({"error": error}, status)

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        status = fault.status or 500
        return self._google(status, fault.message, google_status=fault.code, retry_after=fault.retry_after)
