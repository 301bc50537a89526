"""Typed request, response, usage and stream types shared by the client, the engine and the adapters.

Requests accept the OpenAI-style message dicts (system, user, assistant and tool roles; text
and image parts) and validate them once, at the edge.  Responses and stream events are small
frozen dataclasses: cheap to build on the hot path and safe to share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ImagePart",
    "ImageURL",
    "Message",
    "RouteInfo",
    "StreamEvent",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolFunction",
    "Usage",
]


# --------------------------------------------------------------------------- request


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class TextPart(_Lenient):
    type: Literal["text"] = "text"
    text: str


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Lenient):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL

    @field_validator("image_url", mode="before")
    @classmethod
    def _accept_bare_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Lenient):
    name: str
    arguments: str = "{}"

    @field_validator("arguments", mode="before")
    @classmethod
    def _dump_dict(cls, value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict) else value


class ToolCallMessagePart(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Lenient):
    """One chat message in the OpenAI shape; `content` is a string or a list of parts."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallMessagePart] | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text parts joined (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[str]:
        if isinstance(self.content, list):
            return [p.image_url.url for p in self.content if isinstance(p, ImagePart)]
        return []


class ToolFunction(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: ToolFunction


class ChatRequest(BaseModel):
    """A provider-neutral chat request.  Unknown parameters are refused, not dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("response_format", mode="before")
    @classmethod
    def _format_dict(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    # -- what the request needs from a route (read by the capability filter)

    @property
    def needs_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def needs_vision(self) -> bool:
        return any(m.images for m in self.messages)

    @property
    def needs_json(self) -> bool:
        return bool(self.response_format) and self.response_format.get("type") in ("json_object", "json_schema")

    @property
    def prompt_chars(self) -> int:
        return sum(len(m.text) for m in self.messages) + sum(
            len(t.function.model_dump_json()) for t in self.tools or ()
        )

    def estimated_input_tokens(self) -> int:
        """Prompt tokens estimated from text length (about four characters a token), no tokenizer."""
        return max(1, self.prompt_chars // 4 + 4 * len(self.messages))


# --------------------------------------------------------------------------- response


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call.  `estimated` is true when the provider never reported usage."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; `arguments` is the JSON text the model produced."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        return json.loads(self.arguments or "{}")


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """Where a call went: route id, provider, logical model, provider model id, region, jurisdiction."""

    id: str
    provider: str
    model: str
    model_id: str
    region: str | None
    jurisdiction: str


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """The answer to `Broker.chat`.

    Adapters fill the provider-facing fields (text, tool calls, finish reason, usage, the
    provider's request id and latency); the broker adds cost, route, decision and request id.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    provider_request_id: str | None = None
    provider_latency_ms: float | None = None
    provider_timings: dict[str, float] | None = None
    cost_usd: Decimal | None = None
    route: RouteInfo | None = None
    decision: Any = None
    request_id: str | None = None
    attempts: int = 1
    latency_ms: float | None = None
    ttft_ms: float | None = None

    @property
    def message(self) -> dict[str, Any]:
        """The answer as an OpenAI-style assistant message, ready to append to a conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return msg


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call; pieces with the same `index` join into one call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of `Broker.stream`.

    Events carry text deltas (`text`) or tool-call pieces; the last event of a stream has
    `usage` and `response` (the whole answer with cost, route and decision) set.
    """

    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    provider_request_id: str | None = None
    provider_latency_ms: float | None = None
    provider_timings: dict[str, float] | None = None
    response: ChatResponse | None = None

    @property
    def is_final(self) -> bool:
        return self.response is not None
