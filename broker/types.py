"""Typed request, response, usage and stream types shared by the client, the engine and the adapters.

Requests accept the OpenAI-style message dicts (system, user, assistant and tool roles; text
and image parts) and validate them once, at the edge, the same way for every provider: what
one provider would refuse is refused (`InvalidRequest`) before any is called.

| role                | needs                                   | may not carry            |
|---------------------|-----------------------------------------|--------------------------|
| system, developer   | content (text)                          | images, tool_calls       |
| user                | content with text that is not blank, or | tool_calls               |
|                     | an image                                |                          |
| assistant           | content or tool_calls                   | images                   |
| tool                | tool_call_id and content (text)         | images, tool_calls       |

`tool_call_id` belongs to tool messages only.  Responses and stream events are small frozen
dataclasses: cheap to build on the hot path and safe to share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import InvalidRequest

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
    "call_tags",
    "call_tenant",
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


def _role_problem(message: Message) -> str | None:
    """What is wrong with a message for its role (see the table in the module docstring), or None."""
    role, content = message.role, message.content
    has_content = content is not None and content != []
    if message.tool_calls and role != "assistant":
        return "has tool_calls; only assistant messages carry them"
    if message.tool_call_id is not None and role != "tool":
        return "has tool_call_id; only tool messages carry it"
    if message.images and role != "user":
        return "has an image part; images belong in user messages"
    if role == "assistant":
        return None if (has_content and content != "") or message.tool_calls else "has neither content nor tool_calls"
    if not has_content:
        return "has no content"
    if role == "user" and not message.text.strip() and not message.images:
        return "has no text and no image"
    if role == "tool" and not message.tool_call_id:
        return "has no tool_call_id (the id of the tool call it answers)"
    return None


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

    @model_validator(mode="after")
    def _roles(self) -> ChatRequest:
        for i, message in enumerate(self.messages):
            problem = _role_problem(message)
            if problem:
                raise InvalidRequest(f"invalid chat request: messages[{i}] ({message.role}) {problem}")
        return self

    # -- what the request needs from a route (read by the capability filter)

    @property
    def needs_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def needs_vision(self) -> bool:
        return any(isinstance(m.content, list) and any(isinstance(p, ImagePart) for p in m.content)
                   for m in self.messages)

    @property
    def needs_json(self) -> bool:
        fmt = self.response_format
        return bool(fmt) and fmt is not None and fmt.get("type") in ("json_object", "json_schema")

    @property
    def prompt_chars(self) -> int:
        return sum(len(m.text) for m in self.messages) + sum(
            len(t.function.model_dump_json()) for t in self.tools or ()
        )

    def estimated_input_tokens(self) -> int:
        """Prompt tokens estimated from text length (about four characters a token), no tokenizer."""
        return max(1, self.prompt_chars // 4 + 4 * len(self.messages))


_TAGS = "invalid chat request: tags must be a mapping of strings to strings"


def call_tags(tags: object) -> dict[str, str]:
    """The `tags=` of a call as a dict; anything but a mapping of strings to strings is `InvalidRequest`."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidRequest(f"{_TAGS}; not a {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str):
            raise InvalidRequest(f"{_TAGS}; a tag name is a {type(key).__name__}")
        if not isinstance(value, str):
            raise InvalidRequest(f"{_TAGS}; tag {key!r} is a {type(value).__name__}")
    return dict(tags)


def call_tenant(tenant: object) -> str:
    """The `tenant=` of a call; anything but a non-empty string is `InvalidRequest`."""
    if not isinstance(tenant, str) or not tenant:
        shown = repr(tenant) if isinstance(tenant, str) else f"a {type(tenant).__name__}"
        raise InvalidRequest(f"invalid chat request: tenant must be a non-empty string, not {shown}")
    return tenant


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
    #: the signed provenance record (`broker.provenance.SignedRecord`) when the policy turns it on
    provenance: Any = None

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
