"""Pure translation between broker types and the Bedrock Converse / ConverseStream shapes.

No I/O and no boto3 here: `to_provider_request` builds the keyword arguments of
`bedrock-runtime` `converse` / `converse_stream`, `from_provider_response` reads a Converse
answer, and `StreamState.events` reads one ConverseStream event (as botocore yields it).
Unit tests call these functions without a socket.

Translation rules (OpenAI-style messages -> Converse):

- `system` / `developer` messages become `system=[{"text"}]` blocks, wherever they stand.
- `user` / `assistant` text and image parts become `{"text"}` / `{"image": {format, source: {bytes}}}`
  blocks.  Images must be `data:` URLs (decoded to bytes here); http(s) URLs are refused with
  `InvalidRequest`, because Converse takes bytes and the broker fetches nothing on a user's behalf.
- assistant `tool_calls` become `toolUse{toolUseId, name, input}` blocks (arguments parsed from JSON).
- `tool` messages become a user message of `toolResult{toolUseId, content: [{text}]}` blocks.
- Converse wants strictly alternating roles, so consecutive messages of the same role are merged
  into one (this joins consecutive tool results, too).  Empty text parts are left out, and a
  message left with no blocks is dropped.
- `max_tokens`, `temperature`, `top_p`, `stop` -> `inferenceConfig{maxTokens, temperature, topP,
  stopSequences}`.  `seed` has no Converse field and is dropped.
- `tools` -> `toolConfig{tools: [{toolSpec{name, description, inputSchema{json}}}], toolChoice}`
  with `auto` -> `{auto}`, `required` -> `{any}`, a named function -> `{tool: {name}}`; `none`
  sends no `toolConfig` at all.
- JSON mode: Converse has no JSON flag for Llama, so `response_format` json_object / json_schema
  adds a system instruction asking for one JSON object only (with the schema when given).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from broker.errors import ContentFiltered, InvalidRequest, ProtocolError
from broker.types import ChatRequest, ChatResponse, ImagePart, Message, StreamEvent, ToolCall, ToolCallDelta, Usage

__all__ = [
    "JSON_INSTRUCTION",
    "StreamState",
    "fallback_events",
    "finish_reason_for",
    "from_provider_response",
    "image_block",
    "is_context_error",
    "to_provider_request",
    "usage_from",
]

JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."

_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}

#: Converse stopReason -> OpenAI-style finish_reason.  The filtered and malformed reasons raise instead.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}
_FILTERED = {"guardrail_intervened", "content_filtered"}
_MALFORMED = {"malformed_model_output", "malformed_tool_use"}


# --------------------------------------------------------------------------- request


def image_block(url: str) -> dict[str, Any]:
    """A Converse image block from a `data:` URL; any other URL is an `InvalidRequest`."""
    if not url.startswith("data:"):
        raise InvalidRequest(
            "Bedrock takes image bytes: pass images as data: URLs (the broker does not fetch http URLs)",
            provider="bedrock",
        )
    header, sep, data = url[5:].partition(",")
    mime = header.split(";")[0].strip().lower()
    fmt = _IMAGE_FORMATS.get(mime)
    if not sep or fmt is None:
        raise InvalidRequest(f"unsupported image data URL type {mime or '?'!r} (png, jpeg, gif, webp)", provider="bedrock")
    try:
        raw = base64.b64decode(data, validate=True) if ";base64" in header else unquote_to_bytes(data)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("image data URL is not valid base64", provider="bedrock") from exc
    return {"image": {"format": fmt, "source": {"bytes": raw}}}


def _tool_input(arguments: str, name: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"tool call {name!r} has arguments that are not JSON", provider="bedrock") from exc


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest("a tool message needs tool_call_id", provider="bedrock")
        return [{"toolResult": {"toolUseId": message.tool_call_id, "content": [{"text": message.text}]}}]
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            blocks.append({"text": message.content})
    elif message.content:
        for part in message.content:
            if isinstance(part, ImagePart):
                blocks.append(image_block(part.image_url.url))
            elif part.text:
                blocks.append({"text": part.text})
    for call in message.tool_calls or ():
        blocks.append(
            {"toolUse": {"toolUseId": call.id, "name": call.function.name,
                         "input": _tool_input(call.function.arguments, call.function.name)}}
        )
    return blocks


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    if not request.tools or request.tool_choice == "none":
        return None
    tools = []
    for tool in request.tools:
        spec: dict[str, Any] = {"name": tool.function.name, "inputSchema": {"json": tool.function.parameters}}
        if tool.function.description:
            spec["description"] = tool.function.description
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    choice = request.tool_choice
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function", provider="bedrock")
        config["toolChoice"] = {"tool": {"name": str(name)}}
    return config


def _json_instruction(request: ChatRequest) -> str | None:
    if not request.needs_json:
        return None
    fmt = request.response_format or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    if schema:
        return f"{JSON_INSTRUCTION} The object must match this JSON schema: {json.dumps(schema)}"
    return JSON_INSTRUCTION


def to_provider_request(request: ChatRequest, model_id: str) -> dict[str, Any]:
    """Keyword arguments for `converse(**kw)` / `converse_stream(**kw)` (image bytes left raw)."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            if message.text:
                system.append({"text": message.text})
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    instruction = _json_instruction(request)
    if instruction:
        system.append({"text": instruction})
    kwargs: dict[str, Any] = {"modelId": model_id, "messages": messages}
    if system:
        kwargs["system"] = system
    inference: dict[str, Any] = {}
    for name, key in (("max_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP"),
                      ("stop", "stopSequences")):
        value = getattr(request, name)
        if value is not None:
            inference[key] = value
    if inference:
        kwargs["inferenceConfig"] = inference
    tool_config = _tool_config(request)
    if tool_config:
        kwargs["toolConfig"] = tool_config
    return kwargs


# --------------------------------------------------------------------------- response


def finish_reason_for(stop_reason: Any, *, provider: str, route_id: str, request_id: str | None = None) -> str:
    """Converse `stopReason` -> finish_reason; filtered answers raise `ContentFiltered`."""
    reason = str(stop_reason)
    ctx: dict[str, Any] = {"provider": provider, "route_id": route_id, "request_id": request_id, "code": reason}
    if reason in _FILTERED:
        raise ContentFiltered(f"Bedrock stopped the answer: {reason}", **ctx)
    if reason in _MALFORMED:
        raise ProtocolError(f"the model produced unreadable output: {reason}", **ctx)
    return _FINISH.get(reason, reason)


def usage_from(raw: Mapping[str, Any] | None) -> Usage | None:
    """Converse `usage` -> `Usage`.

    Bedrock counts cache reads and writes apart from `inputTokens`; the broker's `input_tokens`
    includes them (with reads also in `cached_input_tokens`), so prices apply to every prompt token.
    """
    if raw is None:
        return None
    read = int(raw.get("cacheReadInputTokens") or 0)
    write = int(raw.get("cacheWriteInputTokens") or 0)
    return Usage(
        input_tokens=int(raw["inputTokens"]) + read + write,
        output_tokens=int(raw["outputTokens"]),
        cached_input_tokens=read,
    )


def _latency(metrics: Any) -> float | None:
    value = metrics.get("latencyMs") if isinstance(metrics, Mapping) else None
    return float(value) if value is not None else None


def from_provider_response(raw: Mapping[str, Any], *, provider: str, route_id: str) -> ChatResponse:
    """A Converse answer (as boto3 returns it) -> `ChatResponse`; unreadable -> `ProtocolError`."""
    request_id = (raw.get("ResponseMetadata") or {}).get("RequestId") if isinstance(raw, Mapping) else None
    try:
        content = raw["output"]["message"]["content"]
        stop_reason = raw["stopReason"]
        usage = usage_from(raw["usage"])
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in content:
            if "text" in block:
                texts.append(str(block["text"]))
            elif "toolUse" in block:
                use = block["toolUse"]
                calls.append(ToolCall(id=str(use["toolUseId"]), name=str(use["name"]),
                                      arguments=json.dumps(use.get("input", {}))))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ProtocolError(
            f"unreadable Converse answer: {type(exc).__name__} {exc}",
            provider=provider, route_id=route_id, request_id=request_id,
        ) from exc
    finish = finish_reason_for(stop_reason, provider=provider, route_id=route_id, request_id=request_id)
    return ChatResponse(
        text="".join(texts),
        tool_calls=tuple(calls),
        finish_reason=finish,
        usage=usage if usage is not None else Usage(estimated=True),
        provider_request_id=request_id,
        provider_latency_ms=_latency(raw.get("metrics")),
    )


def fallback_events(response: ChatResponse) -> list[StreamEvent]:
    """A whole answer as stream events (for models that cannot stream): one delta, finish, usage."""
    rid = response.provider_request_id
    events: list[StreamEvent] = []
    calls = tuple(ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(response.tool_calls))
    if response.text or calls:
        events.append(StreamEvent(text=response.text, tool_calls=calls, provider_request_id=rid))
    events.append(StreamEvent(finish_reason=response.finish_reason, provider_request_id=rid))
    if not response.usage.estimated:
        events.append(StreamEvent(usage=response.usage, provider_request_id=rid,
                                  provider_latency_ms=response.provider_latency_ms))
    return events


# --------------------------------------------------------------------------- stream


@dataclass
class StreamState:
    """Reads ConverseStream events one at a time and knows whether the stream is complete."""

    provider: str
    route_id: str
    request_id: str | None = None
    stopped: bool = False
    metadata: bool = False
    tool_index: dict[int, int] = field(default_factory=dict)

    def _ctx(self) -> dict[str, Any]:
        return {"provider": self.provider, "route_id": self.route_id, "request_id": self.request_id}

    def _tool(self, block_index: int) -> int:
        if block_index not in self.tool_index:
            self.tool_index[block_index] = len(self.tool_index)
        return self.tool_index[block_index]

    def events(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        """One botocore stream event (`{"contentBlockDelta": {...}}` etc.) -> broker stream events."""
        rid = self.request_id
        try:
            if "contentBlockDelta" in event:
                body = event["contentBlockDelta"]
                delta = body.get("delta") or {}
                if "text" in delta:
                    return [StreamEvent(text=str(delta["text"]), provider_request_id=rid)] if delta["text"] else []
                if "toolUse" in delta:
                    piece = ToolCallDelta(self._tool(int(body.get("contentBlockIndex", 0))),
                                          arguments=str(delta["toolUse"].get("input") or ""))
                    return [StreamEvent(tool_calls=(piece,), provider_request_id=rid)]
                return []  # reasoning, citations: not part of a Llama chat answer
            if "contentBlockStart" in event:
                body = event["contentBlockStart"]
                use = (body.get("start") or {}).get("toolUse")
                if not use:
                    return []
                piece = ToolCallDelta(self._tool(int(body.get("contentBlockIndex", 0))),
                                      id=str(use["toolUseId"]), name=str(use["name"]))
                return [StreamEvent(tool_calls=(piece,), provider_request_id=rid)]
            if "messageStop" in event:
                self.stopped = True
                finish = finish_reason_for(event["messageStop"]["stopReason"], **self._ctx())
                return [StreamEvent(finish_reason=finish, provider_request_id=rid)]
            if "metadata" in event:
                body = event["metadata"]
                usage = usage_from(body["usage"])
                self.metadata = True
                if usage is None:
                    return []
                return [StreamEvent(usage=usage, provider_request_id=rid,
                                    provider_latency_ms=_latency(body.get("metrics")))]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ProtocolError(f"unreadable ConverseStream event: {type(exc).__name__} {exc}", **self._ctx()) from exc
        return []  # messageStart, contentBlockStop

    def check_complete(self) -> None:
        """A stream that ended before `messageStop` and `metadata` is a `ProtocolError`."""
        if not (self.stopped and self.metadata):
            missing = "messageStop" if not self.stopped else "metadata"
            raise ProtocolError(f"ConverseStream ended before its {missing} event", **self._ctx())


_CONTEXT = re.compile(
    r"too long|exceed\w*\W+(the\W+)?(max\w*\W+)?(context|input|token)|context[ _-]?(length|window)|"
    r"maximum context|too many (input )?tokens|reduce the length",
    re.IGNORECASE,
)


def is_context_error(message: str) -> bool:
    """Whether a ValidationException's text says the prompt does not fit the context window."""
    return bool(_CONTEXT.search(message or ""))
