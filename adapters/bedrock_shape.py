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
  stopSequences}`.  `seed` has no Converse field: the catalog declares Bedrock routes `seed: false`,
  so the router sends a request with a seed elsewhere (or refuses it, naming the reason).
- `tools` -> `toolConfig{tools: [{toolSpec{name, description, inputSchema{json}}}], toolChoice}`
  with `auto` -> `{auto}`, `required` -> `{any}`, a named function -> `{tool: {name}}`.
- Converse refuses `toolUse` / `toolResult` blocks without a `toolConfig`, and has no `none`
  choice.  So a conversation holding tool blocks always carries one: with `tool_choice: none`
  (or no tools this turn) it lists the request's tools, or else the tools the history names (by
  name, input schema `{"type": "object"}`), and sends no `toolChoice` (the service's default, auto).
  A conversation without tool blocks and `tool_choice: none` sends no `toolConfig` at all.
- JSON mode: Converse has no JSON flag for Llama, so `response_format` json_object / json_schema
  adds a system instruction asking for one JSON object only (with the schema when given).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from broker.errors import ContentFiltered, InvalidRequest, ProtocolError
from broker.types import ChatRequest, ChatResponse, ImagePart, Message, StreamEvent, ToolCall, ToolCallDelta, Usage

from .wire_checks import Malformed, mapping, optional_list, optional_mapping, optional_str, token_count

__all__ = [
    "JSON_INSTRUCTION",
    "StreamState",
    "fallback_events",
    "finish_reason_for",
    "from_provider_response",
    "image_block",
    "is_context_error",
    "is_model_id_error",
    "to_provider_request",
    "usage_from",
]

JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."

_IMAGE_FORMATS = {
    "image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp",
}

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
        raise InvalidRequest(
            f"unsupported image data URL type {mime or '?'!r} (png, jpeg, gif, webp)", provider="bedrock"
        )
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


#: The input schema of a tool known only by name (from the conversation's earlier tool calls).
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _history_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool specs for the tools the conversation's `toolUse` blocks name, in order of first use."""
    names = [b["toolUse"]["name"] for m in messages for b in m["content"] if "toolUse" in b]
    return [{"toolSpec": {"name": name, "inputSchema": {"json": _ANY_OBJECT}}} for name in dict.fromkeys(names)]


def _has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _tool_config(request: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`toolConfig`: the request's tools and choice; or, for a conversation holding tool blocks
    whose turn offers no tools (or `tool_choice: none`), the tools it names, with no `toolChoice`
    (Converse refuses tool blocks without a `toolConfig`, and has no `none` choice)."""
    offered = bool(request.tools) and request.tool_choice != "none"
    if not offered:
        if not _has_tool_blocks(messages):
            return None
        tools = _tool_specs(request) if request.tools else _history_tools(messages)
        return {"tools": tools} if tools else None
    config: dict[str, Any] = {"tools": _tool_specs(request)}
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


def _tool_specs(request: ChatRequest) -> list[dict[str, Any]]:
    tools = []
    for tool in request.tools or ():
        spec: dict[str, Any] = {"name": tool.function.name, "inputSchema": {"json": tool.function.parameters}}
        if tool.function.description:
            spec["description"] = tool.function.description
        tools.append({"toolSpec": spec})
    return tools


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
    tool_config = _tool_config(request, messages)
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


def usage_from(raw: Any) -> Usage | None:
    """Converse `usage` -> `Usage`; None when the answer has none.

    Bedrock counts cache reads and writes apart from `inputTokens`; the broker's `input_tokens`
    includes them (with reads also in `cached_input_tokens`), so prices apply to every prompt token.
    Raises `Malformed` when a count is missing or is not an integer.
    """
    if raw is None:
        return None
    usage = mapping(raw, "usage")
    for name in ("inputTokens", "outputTokens"):
        if usage.get(name) is None:
            raise Malformed(f"usage.{name} is missing")
    read = token_count(usage.get("cacheReadInputTokens"), "usage.cacheReadInputTokens")
    write = token_count(usage.get("cacheWriteInputTokens"), "usage.cacheWriteInputTokens")
    return Usage(
        input_tokens=token_count(usage["inputTokens"], "usage.inputTokens") + read + write,
        output_tokens=token_count(usage["outputTokens"], "usage.outputTokens"),
        cached_input_tokens=read,
    )


def _latency(metrics: Any) -> float | None:
    value = metrics.get("latencyMs") if isinstance(metrics, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None  # an informational figure: an odd one is left out, never a reason to fail
    return float(value)


def _stop_reason(value: Any, name: str) -> str:
    reason = optional_str(value, name)
    if not reason:
        raise Malformed(f"{name} is missing")
    return reason


def _content(raw: Any) -> tuple[str, tuple[ToolCall, ...]]:
    """The text and tool calls of a Converse message's content blocks."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, item in enumerate(optional_list(raw, "output.message.content") or ()):
        where = f"output.message.content[{i}]"
        block = mapping(item, where)
        if "text" in block:
            texts.append(optional_str(block["text"], f"{where}.text") or "")
        elif "toolUse" in block:
            use = mapping(block["toolUse"], f"{where}.toolUse")
            call_id = optional_str(use.get("toolUseId"), f"{where}.toolUse.toolUseId")
            name = optional_str(use.get("name"), f"{where}.toolUse.name")
            if not call_id or not name:
                raise Malformed(f"{where}.toolUse has no toolUseId or name")
            calls.append(ToolCall(id=call_id, name=name, arguments=json.dumps(use.get("input", {}))))
    return "".join(texts), tuple(calls)


def from_provider_response(raw: Any, *, provider: str, route_id: str) -> ChatResponse:
    """A Converse answer (as boto3 returns it) -> `ChatResponse`.

    Anything that is not a well-formed answer is a `ProtocolError`: no output message, content
    that is not a list of blocks, a text block that is not a string, no `stopReason`, a usage
    count that is not an integer.  An answer without `usage` is read with an estimated usage.
    """
    meta = raw.get("ResponseMetadata") if isinstance(raw, Mapping) else None
    request_id = meta.get("RequestId") if isinstance(meta, Mapping) else None
    try:
        answer = mapping(raw, "the answer")
        output = mapping(answer.get("output"), "output")
        message = mapping(output.get("message"), "output.message")
        text, calls = _content(message.get("content"))
        stop_reason = _stop_reason(answer.get("stopReason"), "stopReason")
        usage = usage_from(answer.get("usage"))
    except Malformed as exc:
        raise ProtocolError(
            f"unreadable Converse answer: {exc}", provider=provider, route_id=route_id, request_id=request_id
        ) from exc
    finish = finish_reason_for(stop_reason, provider=provider, route_id=route_id, request_id=request_id)
    return ChatResponse(
        text=text,
        tool_calls=calls,
        finish_reason=finish,
        usage=usage if usage is not None else Usage(estimated=True),
        provider_request_id=request_id,
        provider_latency_ms=_latency(answer.get("metrics")),
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
    metadata: bool = False
    tool_index: dict[int, int] = field(default_factory=dict)

    def _ctx(self) -> dict[str, Any]:
        return {"provider": self.provider, "route_id": self.route_id, "request_id": self.request_id}

    def _tool(self, block_index: int) -> int:
        if block_index not in self.tool_index:
            self.tool_index[block_index] = len(self.tool_index)
        return self.tool_index[block_index]

    def events(self, event: Any) -> list[StreamEvent]:
        """One botocore stream event (`{"contentBlockDelta": {...}}` etc.) -> broker stream events.

        An event of the wrong shape (a delta that is missing or null, text that is not a string,
        a `messageStop` without `stopReason`, a usage count that is not an integer) is a
        `ProtocolError`; a `metadata` event without usage leaves the usage to be estimated.
        """
        try:
            return self._read(mapping(event, "the event"))
        except Malformed as exc:
            raise ProtocolError(f"unreadable ConverseStream event: {exc}", **self._ctx()) from exc

    def _index(self, body: Mapping[str, Any], name: str) -> int:
        value = body.get("contentBlockIndex", 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Malformed(f"{name}.contentBlockIndex is not an integer")
        return self._tool(value)

    def _read(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        rid = self.request_id
        if "contentBlockDelta" in event:
            body = mapping(event["contentBlockDelta"], "contentBlockDelta")
            delta = body.get("delta")
            if not delta:
                raise Malformed("contentBlockDelta has no delta")
            delta = mapping(delta, "contentBlockDelta.delta")
            if "text" in delta:
                text = optional_str(delta["text"], "contentBlockDelta.delta.text")
                return [StreamEvent(text=text, provider_request_id=rid)] if text else []
            if "toolUse" in delta:
                use = mapping(delta["toolUse"], "contentBlockDelta.delta.toolUse")
                arguments = optional_str(use.get("input"), "contentBlockDelta.delta.toolUse.input") or ""
                piece = ToolCallDelta(self._index(body, "contentBlockDelta"), arguments=arguments)
                return [StreamEvent(tool_calls=(piece,), provider_request_id=rid)]
            return []  # reasoning, citations: not part of a Llama chat answer
        if "contentBlockStart" in event:
            body = mapping(event["contentBlockStart"], "contentBlockStart")
            start = optional_mapping(body.get("start"), "contentBlockStart.start") or {}
            if start.get("toolUse") is None:
                return []
            use = mapping(start["toolUse"], "contentBlockStart.start.toolUse")
            call_id = optional_str(use.get("toolUseId"), "contentBlockStart.start.toolUse.toolUseId")
            name = optional_str(use.get("name"), "contentBlockStart.start.toolUse.name")
            if not call_id or not name:
                raise Malformed("contentBlockStart.start.toolUse has no toolUseId or name")
            piece = ToolCallDelta(self._index(body, "contentBlockStart"), id=call_id, name=name)
            return [StreamEvent(tool_calls=(piece,), provider_request_id=rid)]
        if "messageStop" in event:
            body = mapping(event["messageStop"], "messageStop")
            reason = _stop_reason(body.get("stopReason"), "messageStop.stopReason")
            return [StreamEvent(finish_reason=finish_reason_for(reason, **self._ctx()), provider_request_id=rid)]
        if "metadata" in event:
            body = mapping(event["metadata"], "metadata")
            usage = usage_from(body.get("usage"))
            self.metadata = True
            if usage is None:
                return []
            latency = _latency(body.get("metrics"))
            return [StreamEvent(usage=usage, provider_request_id=rid, provider_latency_ms=latency)]
        return []  # messageStart, contentBlockStop

    def check_complete(self) -> None:
        """A stream that ended before its `metadata` event (usage, latency) is a `ProtocolError`.

        One without `messageStop` has no finish reason, which the core refuses for every provider.
        """
        if not self.metadata:
            raise ProtocolError("ConverseStream ended before its metadata event", **self._ctx())


_CONTEXT = re.compile(
    r"too long|exceed\w*\W+(the\W+)?(max\w*\W+)?(context|input|token)|context[ _-]?(length|window)|"
    r"maximum context|too many (input )?tokens|reduce the length",
    re.IGNORECASE,
)


_MODEL_ID = re.compile(
    r"model identifier is invalid|on-demand throughput isn.t supported|doesn.t support on-demand throughput",
    re.IGNORECASE,
)


def is_model_id_error(message: str) -> bool:
    """Whether a ValidationException's text refuses the route's model id (unknown here, or callable
    only through an inference profile): a property of the route, so another route may serve."""
    return bool(_MODEL_ID.search(message or ""))


def is_context_error(message: str) -> bool:
    """Whether a ValidationException's text says the prompt does not fit the context window."""
    return bool(_CONTEXT.search(message or ""))
