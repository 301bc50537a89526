"""OpenAI chat-completions bodies to broker calls and back: pure functions, no I/O.

What a request body may carry:

| field                                   | becomes                                                 |
|-----------------------------------------|---------------------------------------------------------|
| model, messages                         | the call's model and messages (OpenAI message shape)    |
| max_tokens / max_completion_tokens      | `max_tokens`                                            |
| temperature, top_p, stop, seed, tools,  | the same broker parameters                              |
| tool_choice, response_format            |                                                         |
| stream, stream_options.include_usage    | a streamed answer (SSE), with a usage chunk when asked  |
| user                                    | the ledger tag `user`                                   |
| n, logprobs, presence_penalty,          | accepted at their defaults (1, false, 0, 0, true,       |
| frequency_penalty, parallel_tool_calls, | false) or null; anything else is refused                |
| store                                   |                                                         |

Any other field is refused (`invalid_request`, naming it): in particular no field names a
tenant, whose only source is the API key.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..types import ChatResponse, StreamEvent, ToolCallDelta, Usage
from .errors import HttpRefusal

__all__ = [
    "ChatCall",
    "chunk",
    "completion_body",
    "parse_chat_body",
    "parse_tags_header",
    "usage_body",
]

_PASSED = ("temperature", "top_p", "stop", "seed", "tools", "tool_choice", "response_format")
_DEFAULT_ONLY: dict[str, object] = {
    "n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0, "parallel_tool_calls": True,
    "store": False,
}
_KNOWN = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "user",
                    *_PASSED, *_DEFAULT_ONLY})
_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_MAX_TAGS, _MAX_TAG_CHARS = 32, 256


@dataclass(frozen=True)
class ChatCall:
    """A chat-completions request, checked: what the gateway hands to `AsyncBroker`."""

    model: str
    messages: list[Any]
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def _refuse(message: str, param: str | None = None) -> HttpRefusal:
    return HttpRefusal("gateway:bad_request", message, param=param)


def parse_chat_body(body: object) -> ChatCall:
    """Check a decoded request body; anything the gateway cannot honour is refused, naming the field."""
    if not isinstance(body, dict):
        raise _refuse("the request body must be a JSON object")
    for name in body:
        if name not in _KNOWN:
            raise _refuse(f"unknown parameter {name!r}", name)
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise _refuse("model must be a non-empty string", "model")
    if not isinstance(messages, list) or not messages:
        raise _refuse("messages must be a non-empty list", "messages")
    for name, default in _DEFAULT_ONLY.items():
        value = body.get(name)
        if value is not None and value != default:
            raise _refuse(f"{name}={value!r} is not supported by this gateway (only {json.dumps(default)})", name)
    params = {name: body[name] for name in _PASSED if body.get(name) is not None}
    limit = _max_tokens(body)
    if limit is not None:
        params["max_tokens"] = limit
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _refuse("stream must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise _refuse("stream_options is an object, and only for stream: true", "stream_options")
    include_usage = bool((options or {}).get("include_usage"))
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > _MAX_TAG_CHARS):
        raise _refuse(f"user must be a string of at most {_MAX_TAG_CHARS} characters", "user")
    return ChatCall(model, messages, params, bool(stream), include_usage, user or None)


def _max_tokens(body: dict[str, Any]) -> Any:
    old, new = body.get("max_tokens"), body.get("max_completion_tokens")
    if old is not None and new is not None and old != new:
        raise _refuse("max_tokens and max_completion_tokens disagree; give one", "max_completion_tokens")
    return new if new is not None else old


def parse_tags_header(value: str | None) -> dict[str, str]:
    """`k=v,k2=v2` (the `x-llama-broker-tags` header) as tags; a malformed header is refused."""
    if not value or not value.strip():
        return {}
    tags: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not key or len(key) > _MAX_TAG_CHARS or len(val) > _MAX_TAG_CHARS:
            raise _refuse(f"x-llama-broker-tags: each tag is name=value (at most {_MAX_TAG_CHARS} characters each), "
                          "separated by commas")
        tags[key] = val
    if len(tags) > _MAX_TAGS:
        raise _refuse(f"x-llama-broker-tags: at most {_MAX_TAGS} tags")
    return tags


# --------------------------------------------------------------------------- answers


def _finish(reason: str | None) -> str | None:
    if reason is None:
        return None
    return reason if reason in _FINISH else "stop"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def completion_body(reply: ChatResponse, *, completion_id: str, model: str) -> dict[str, Any]:
    """A `chat.completion` object for a whole answer."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    elif not reply.text:
        message["content"] = ""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish(reply.finish_reason) or "stop"}],
        "usage": usage_body(reply.usage),
    }


def _tool_delta(piece: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": piece.index}
    if piece.id is not None:
        out["id"], out["type"] = piece.id, "function"
    function: dict[str, Any] = {"arguments": piece.arguments}
    if piece.name is not None:
        function["name"] = piece.name
    out["function"] = function
    return out


def chunk(
    *,
    completion_id: str,
    model: str,
    created: int,
    event: StreamEvent | None = None,
    role: bool = False,
    finish_reason: str | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`: the opening role delta, an event's deltas, or the finish."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"], delta["content"] = "assistant", ""
    if event is not None:
        if event.text:
            delta["content"] = event.text
        if event.tool_calls:
            delta["tool_calls"] = [_tool_delta(p) for p in event.tool_calls]
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": _finish(finish_reason)}],
    }
    if include_usage:
        body["usage"] = None
    return body


def usage_chunk(*, completion_id: str, model: str, created: int, usage: Usage) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, the usage."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage_body(usage),
    }
