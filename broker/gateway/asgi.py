"""The few ASGI pieces the gateway needs: read a body, answer JSON, send server-sent events."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import HttpRefusal

__all__ = ["ClientGone", "Headers", "Receive", "Scope", "Send", "header_value", "read_body", "send_json", "sse"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client hung up before its request was read."""


def header_value(text: str) -> bytes:
    """A header value from text: ASCII, no line breaks (anything else is replaced)."""
    return text.replace("\r", " ").replace("\n", " ").encode("ascii", "replace")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; more than `limit` bytes is refused (413)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise HttpRefusal("gateway:too_large", f"the request body is larger than {limit} bytes")
        parts.append(part)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


async def send_json(send: Send, status: int, payload: Any, headers: Headers) -> None:
    body = dumps(payload)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def send_bytes(send: Send, status: int, body: bytes, content_type: str, headers: Headers) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": body})


def sse(payload: Any) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    return b"data: " + (payload if isinstance(payload, bytes) else dumps(payload)) + b"\n\n"
