"""Pure translation between broker types and the OpenAI chat-completions shape.

Shared by every provider that speaks that shape (local runners, Vertex MaaS, Groq, Azure AI
Inference): request body out, response and stream chunks in.  No I/O here, so unit tests
call these functions without a socket.

Answers are checked field by field (`wire_checks`), so the four providers that share this
shape refuse the same malformed answers in one place: every one is a `ProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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

from .wire_checks import Malformed, mapping, optional_list, optional_mapping, optional_str, token_count

__all__ = [
    "events_from_chunk",
    "message_to_dict",
    "request_body",
    "response_from_body",
    "usage_from",
    "usage_from_timings",
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


def usage_from(raw: Any) -> Usage | None:
    """OpenAI `usage` -> `Usage`; None when the provider sent none.

    Raises `Malformed` for a usage of the wrong shape (a count that is not an integer, say).
    """
    if raw is None:
        return None
    usage = mapping(raw, "usage")
    if not usage:
        return None
    details = optional_mapping(usage.get("prompt_tokens_details"), "usage.prompt_tokens_details") or {}
    return Usage(
        input_tokens=token_count(usage.get("prompt_tokens"), "usage.prompt_tokens"),
        output_tokens=token_count(usage.get("completion_tokens"), "usage.completion_tokens"),
        cached_input_tokens=token_count(details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens"),
    )


def usage_from_timings(raw: Any) -> Usage | None:
    """llama.cpp's `timings` -> `Usage`, for answers that carry no `usage` (None without timings).

    llama.cpp reports `prompt_n` (prompt tokens it evaluated), `cache_n` (prompt tokens it took
    from its cache) and `predicted_n` (completion tokens); its `usage.prompt_tokens` is
    `prompt_n + cache_n`.  Raises `Malformed` for timings of the wrong shape.
    """
    if raw is None:
        return None
    timings = mapping(raw, "timings")
    if "prompt_n" not in timings and "predicted_n" not in timings:
        return None
    cached = token_count(timings.get("cache_n"), "timings.cache_n")
    return Usage(
        input_tokens=token_count(timings.get("prompt_n"), "timings.prompt_n") + cached,
        output_tokens=token_count(timings.get("predicted_n"), "timings.predicted_n"),
        cached_input_tokens=cached,
    )


def _usage(holder: Mapping[str, Any]) -> Usage | None:
    """The usage of an answer or chunk: its `usage`, else llama.cpp's `timings`."""
    usage = usage_from(holder.get("usage"))
    return usage if usage is not None else usage_from_timings(holder.get("timings"))


def _arguments(value: Any, name: str) -> str:
    """Tool-call arguments: JSON text; an object (as some servers send) is written out as JSON."""
    if isinstance(value, Mapping):
        return json.dumps(value)
    text = optional_str(value, name)
    return text if text is not None else "{}"


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    calls = []
    for i, item in enumerate(optional_list(raw, "message.tool_calls") or ()):
        where = f"message.tool_calls[{i}]"
        call = mapping(item, where)
        fn = mapping(call.get("function"), f"{where}.function")
        name = optional_str(fn.get("name"), f"{where}.function.name")
        if not name:
            raise Malformed(f"{where}.function.name is missing")
        call_id = optional_str(call.get("id"), f"{where}.id") or f"call_{i}"
        arguments = _arguments(fn.get("arguments"), f"{where}.function.arguments")
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
    return tuple(calls)


_FILTERED = "content_filter"


def _filtered(refusal: Any, *, provider: str, route_id: str, request_id: Any) -> ContentFiltered:
    return ContentFiltered(
        str(refusal) if isinstance(refusal, str) and refusal else "the provider's safety filter blocked the completion",
        provider=provider, route_id=route_id, status=200, request_id=request_id, code=_FILTERED,
    )


def _request_id(body: Mapping[str, Any]) -> str | None:
    value = body.get("id")
    return value if isinstance(value, str) else None


def response_from_body(body: Any, *, provider: str, route_id: str) -> ChatResponse:
    """A chat-completions JSON body -> `ChatResponse`.

    `finish_reason: content_filter` raises `ContentFiltered` (with the refusal text when the
    provider sent one).  Anything that is not a well-formed answer is a `ProtocolError`: no
    choices, a missing or null message, no finish reason, a field of the wrong type (content
    that is not a string, tool calls that are not a list, a token count that is not an integer).
    An empty or null content with a finish reason is a legitimate (empty) answer.
    """
    request_id = _request_id(body) if isinstance(body, Mapping) else None
    try:
        answer = mapping(body, "the answer")
        choices = optional_list(answer.get("choices"), "choices")
        if not choices:
            raise Malformed("the answer has no choices")
        choice = mapping(choices[0], "choices[0]")
        finish = optional_str(choice.get("finish_reason"), "choices[0].finish_reason")
        message = choice.get("message")
        if finish == _FILTERED:
            refusal = message.get("refusal") if isinstance(message, Mapping) else None
            raise _filtered(refusal, provider=provider, route_id=route_id, request_id=request_id)
        message = mapping(message, "choices[0].message")
        if not finish:
            raise Malformed("the answer has no finish_reason")
        text = optional_str(message.get("content"), "choices[0].message.content") or ""
        tool_calls = _tool_calls(message.get("tool_calls"))
        usage = _usage(answer)
    except Malformed as exc:
        raise ProtocolError(
            f"unreadable chat completion: {exc}", provider=provider, route_id=route_id, request_id=request_id
        ) from exc
    return ChatResponse(
        text=text,
        tool_calls=tool_calls,
        finish_reason=finish,
        usage=usage if usage is not None else Usage(estimated=True),
        provider_request_id=request_id,
    )


def events_from_chunk(chunk: Any, *, provider: str, route_id: str) -> list[StreamEvent]:
    """One `chat.completion.chunk` -> its `StreamEvent`s (text, tool pieces, finish, usage).

    An `error` object in the stream is `Unavailable`; a chunk of the wrong shape (not an
    object, no `choices` list, a null delta before the finish, fields of the wrong type) is a
    `ProtocolError`.
    """
    if not isinstance(chunk, Mapping):
        raise ProtocolError("unreadable stream chunk: not a JSON object", provider=provider, route_id=route_id)
    if chunk.get("error"):
        err = chunk["error"]
        message = err.get("message", "stream error") if isinstance(err, Mapping) else str(err)
        raise Unavailable(f"error in stream: {message}", provider=provider, route_id=route_id)
    try:
        return _chunk_events(chunk, provider=provider, route_id=route_id)
    except Malformed as exc:
        raise ProtocolError(
            f"unreadable stream chunk: {exc}", provider=provider, route_id=route_id, request_id=_request_id(chunk)
        ) from exc


def _delta_tool_calls(raw: Any, where: str) -> tuple[ToolCallDelta, ...]:
    pieces = []
    for i, item in enumerate(optional_list(raw, f"{where}.tool_calls") or ()):
        at = f"{where}.tool_calls[{i}]"
        call = mapping(item, at)
        index = call.get("index", i)
        if isinstance(index, bool) or not isinstance(index, int):
            raise Malformed(f"{at}.index is not an integer")
        fn = optional_mapping(call.get("function"), f"{at}.function") or {}
        pieces.append(
            ToolCallDelta(
                index=index,
                id=optional_str(call.get("id"), f"{at}.id"),
                name=optional_str(fn.get("name"), f"{at}.function.name"),
                arguments=optional_str(fn.get("arguments"), f"{at}.function.arguments") or "",
            )
        )
    return tuple(pieces)


def _chunk_events(chunk: Mapping[str, Any], *, provider: str, route_id: str) -> list[StreamEvent]:
    events = []
    request_id = _request_id(chunk)
    choices = optional_list(chunk.get("choices"), "choices")
    if choices is None:
        raise Malformed("the chunk has no choices list")
    for n, item in enumerate(choices):
        where = f"choices[{n}]"
        choice = mapping(item, where)
        finish = optional_str(choice.get("finish_reason"), f"{where}.finish_reason")
        raw_delta = choice.get("delta")
        if raw_delta is None and not finish:
            raise Malformed(f"{where}.delta is missing")
        delta = optional_mapping(raw_delta, f"{where}.delta") or {}
        if finish == _FILTERED:
            raise _filtered(delta.get("refusal"), provider=provider, route_id=route_id, request_id=request_id)
        text = optional_str(delta.get("content"), f"{where}.delta.content") or ""
        pieces = _delta_tool_calls(delta.get("tool_calls"), f"{where}.delta")
        if text or pieces or finish:
            events.append(
                StreamEvent(text=text, tool_calls=pieces, finish_reason=finish, provider_request_id=request_id)
            )
    usage = _usage(chunk)
    if usage is not None:
        events.append(StreamEvent(usage=usage, provider_request_id=request_id))
    return events
