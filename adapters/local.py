"""Local CUDA runners that speak the OpenAI chat-completions protocol.

vLLM, TGI, llama.cpp server, SGLang and Ollama all serve `POST {endpoint}/chat/completions`
with the same JSON and SSE shapes, so one adapter serves them all.

Route fields: `endpoint` (base URL ending in `/v1`, required), `model_id` (the served model
name, e.g. `meta-llama/Llama-3.1-8B-Instruct`), `api_key_env` (optional; sent as a bearer
token, as `vllm serve --api-key` expects).  Options: `stream_usage: false` for servers that
refuse `stream_options`.
"""

from __future__ import annotations

from typing import ClassVar

from broker.errors import PolicyError
from broker.routes import Capabilities, Route
from broker.transport import HttpClients

from .openai_http import OpenAIHttpAdapter

__all__ = ["LocalAdapter"]


class LocalAdapter(OpenAIHttpAdapter):
    """An OpenAI-compatible server on a machine the organisation runs."""

    provider: ClassVar[str] = "local"
    capabilities: ClassVar[Capabilities] = Capabilities(vision=True)

    def __init__(self, route: Route, *, http: HttpClients) -> None:
        super().__init__(route, http=http)
        if not route.endpoint:
            raise PolicyError(
                f"route {route.id!r}: a local runner needs `endpoint:` (e.g. http://gpu-box:8000/v1)"
            )
        self._url = route.endpoint.rstrip("/") + "/chat/completions"
        self.include_stream_usage = bool(route.options.get("stream_usage", True))
        key = route.api_key(required=True)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def url(self) -> str:
        return self._url

    def auth_headers(self) -> dict[str, str]:
        return self._headers
