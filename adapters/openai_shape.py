"""Pure translation between broker types and the OpenAI chat-completions shape.

Shared by every provider that speaks that shape (local runners, Vertex MaaS, Groq, Azure AI
Inference): request body out, response and stream chunks in.  No I/O here, so unit tests
call these functions without a socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from broker.errors import ContentFiltered, ProtocolError, Unavailable
from broker.types import (
    ChatRequest,
    ChatResponse,
    Message,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "events_from_chunk",
    "message_to_dict",
    "request_body",
    "response_from_body",
    "usage_from",
]

_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed", "tool_choice", "response_format")


def message_to_dict(message: Message) -> dict[str, Any]:
    """One message in OpenAI JSON; `developer` goes out as `system`, which every Llama server knows."""
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role}
    if isinstance(message.content, list):
        out["content"] = [p.model_dump(exclude_none=True) for p in message.content]
    else:
        out["content"] = message.content
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def request_body(
    request: ChatRequest,
    model_id: str,
    *,
    stream: bool = False,
    include_usage: bool = True,
    max_tokens_field: str = "max_tokens",
) -> dict[str, Any]:
    """The JSON body of a chat-completions call for `model_id`."""
    body: dict[str, Any] = {
        "model": model_id,
        "messages": [message_to_dict(m) for m in request.messages],
    }
    for name in _PARAMS:
        value = getattr(request, name)
        if value is not None:
            body[max_tokens_field if name == "max_tokens" else name] = value
    if request.tools:
        body["tools"] = [t.model_dump(exclude_none=True) for t in request.tools]
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def usage_from(raw: Mapping[str, Any] | None) -> Usage | None:
    """OpenAI `usage` -> `Usage`; None when the provider sent none."""
    if not raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int((details or {}).get("cached_tokens") or 0),
    )


def _tool_calls(raw: Iterable[Mapping[str, Any]] | None) -> tuple[ToolCall, ...]:
    calls = []
    for i, call in enumerate(raw or ()):
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):
            args = json.dumps(args or {})
        calls.append(ToolCall(id=str(call.get("id") or f"call_{i}"), name=str(fn.get("name", "")), arguments=args))
    return tuple(calls)


_FILTERED = "content_filter"


def _filtered(refusal: Any, *, provider: str, route_id: str, request_id: Any) -> ContentFiltered:
    return ContentFiltered(
        str(refusal) if refusal else "the provider's safety filter blocked the completion",
        provider=provider, route_id=route_id, status=200, request_id=request_id, code=_FILTERED,
    )


def response_from_body(body: Any, *, provider: str, route_id: str) -> ChatResponse:
    """A chat-completions JSON body -> `ChatResponse`.

    `finish_reason: content_filter` raises `ContentFiltered` (with the refusal text when the
    provider sent one); anything unreadable is a `ProtocolError`.
    """
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
        if choice.get("finish_reason") == _FILTERED:
            raise _filtered(message.get("refusal"), provider=provider, route_id=route_id, request_id=body.get("id"))
        usage = usage_from(body.get("usage"))
        return ChatResponse(
            text=message.get("content") or "",
            tool_calls=_tool_calls(message.get("tool_calls")),
            finish_reason=choice.get("finish_reason"),
            usage=usage if usage is not None else Usage(estimated=True),
            provider_request_id=body.get("id"),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ProtocolError(
            f"unreadable chat completion: {type(exc).__name__}", provider=provider, route_id=route_id
        ) from exc


def events_from_chunk(chunk: Any, *, provider: str, route_id: str) -> list[StreamEvent]:
    """One `chat.completion.chunk` -> its `StreamEvent`s (text, tool pieces, finish, usage).

    An `error` object in the stream is `Unavailable`; a chunk of the wrong shape is a `ProtocolError`.
    """
    if not isinstance(chunk, Mapping):
        raise ProtocolError("stream chunk is not a JSON object", provider=provider, route_id=route_id)
    if chunk.get("error"):
        err = chunk["error"]
        message = err.get("message", "stream error") if isinstance(err, Mapping) else str(err)
        raise Unavailable(f"error in stream: {message}", provider=provider, route_id=route_id)
    try:
        return _chunk_events(chunk, provider=provider, route_id=route_id)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(
            f"unreadable stream chunk: {type(exc).__name__}", provider=provider, route_id=route_id
        ) from exc


def _chunk_events(chunk: Mapping[str, Any], *, provider: str, route_id: str) -> list[StreamEvent]:
    events = []
    request_id = chunk.get("id")
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        pieces = tuple(
            ToolCallDelta(
                index=int(tc.get("index", i)),
                id=tc.get("id"),
                name=(tc.get("function") or {}).get("name"),
                arguments=(tc.get("function") or {}).get("arguments") or "",
            )
            for i, tc in enumerate(delta.get("tool_calls") or ())
        )
        finish = choice.get("finish_reason")
        if finish == _FILTERED:
            raise _filtered(delta.get("refusal"), provider=provider, route_id=route_id, request_id=request_id)
        if text or pieces or finish:
            events.append(StreamEvent(text=text, tool_calls=pieces, finish_reason=finish, provider_request_id=request_id))
    usage = usage_from(chunk.get("usage"))
    if usage is not None:
        events.append(StreamEvent(usage=usage, provider_request_id=request_id))
    return events
