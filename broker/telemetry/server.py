"""A SERVER span per gateway HTTP request, the parent of the call spans the request makes.

The incoming `traceparent` (W3C trace context) is honoured, so a client's trace continues
through the gateway into the provider attempts.  Attributes follow the HTTP conventions:
`http.request.method`, `url.path`, `http.route`, `http.response.status_code`; the span name is
`{method} {path}` for the gateway's fixed endpoints.  Imports `opentelemetry`: used only
when telemetry is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["ServerSpans"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ServerSpans:
    """Wraps an ASGI app's HTTP handling in a SERVER span (the tracer is the call hook's)."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer

    async def serve(self, app: App, scope: Scope, receive: Callable[[], Awaitable[Message]],
                    send: Callable[[Message], Awaitable[None]]) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        parent = propagate.extract(carrier)
        method, path = scope.get("method", "GET"), scope.get("path", "/")
        route = path if not path.startswith("/v1/models/") else "/v1/models/{model}"
        span = self.tracer.start_span(
            f"{method} {route}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path, "http.route": route,
                        "url.scheme": scope.get("scheme", "http")},
        )
        token = context.attach(trace.set_span_in_context(span, parent))

        async def observed(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(status))
            await send(message)

        try:
            await app(scope, receive, observed)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            context.detach(token)
            span.end()
