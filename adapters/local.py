"""Local CUDA runners that speak the OpenAI chat-completions protocol.

vLLM, TGI, llama.cpp server, SGLang and Ollama all serve `POST {endpoint}/chat/completions`
with the same JSON and SSE shapes, so one adapter serves them all.

Route fields: `endpoint` (base URL ending in `/v1`, required), `model_id` (the served model
name, e.g. `meta-llama/Llama-3.1-8B-Instruct`), `api_key_env` (optional; sent as a bearer
token, as `vllm serve --api-key` expects).  Options: `stream_usage: false` for servers that
refuse `stream_options`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import ConfigDict

from broker.routes import OptionProblem, Route, RouteOptions
from broker.transport import HttpClients

from .openai_http import OpenAIHttpAdapter

__all__ = ["LocalAdapter", "LocalOptions"]


class LocalOptions(RouteOptions):
    """Options of a local runner route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_usage: bool = True
    """Send `stream_options.include_usage`; false for servers that refuse `stream_options`."""

    def check(self, route: Route) -> Iterator[OptionProblem]:
        if not route.endpoint:
            yield OptionProblem("endpoint", "a local runner needs `endpoint:` (e.g. http://gpu-box:8000/v1)")


class LocalAdapter(OpenAIHttpAdapter):
    """An OpenAI-compatible server on a machine the organisation runs."""

    provider: ClassVar[str] = "local"
    options: ClassVar[type[RouteOptions]] = LocalOptions
    static_auth = True

    def __init__(self, route: Route, *, http: HttpClients) -> None:
        super().__init__(route, http=http)
        self.opts = LocalOptions.for_route(route)
        self._url = (route.endpoint or "").rstrip("/") + "/chat/completions"
        self.include_stream_usage = self.opts.stream_usage
        key = route.api_key(required=True)
        self.redact_secrets(key)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def url(self) -> str:
        return self._url

    def auth_headers(self) -> dict[str, str]:
        return self._headers
