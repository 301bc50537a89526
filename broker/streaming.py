"""Assemble a streamed answer: text deltas and tool-call pieces into one `ChatResponse`.

The one completeness rule for streams of every provider lives here: a stream that ends
without a finish reason was cut, and `response()` raises `ProtocolError` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ProtocolError
from .types import ChatRequest, ChatResponse, StreamEvent, ToolCall, Usage
from .usage import estimated_usage

__all__ = ["StreamAccumulator"]


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class StreamAccumulator:
    """Collects a stream's events; `response()` gives the whole answer."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (a retried attempt starts a new answer)."""
        self.text: list[str] = []
        self.tool_calls: dict[int, _ToolCallParts] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.provider_request_id: str | None = None
        self.provider_latency_ms: float | None = None
        self.provider_timings: dict[str, float] | None = None

    @property
    def delivered(self) -> bool:
        """Whether any content has reached the caller (after which a stream cannot fail over)."""
        return bool(self.text or self.tool_calls)

    def add(self, event: StreamEvent) -> None:
        if event.text:
            self.text.append(event.text)
        for piece in event.tool_calls:
            parts = self.tool_calls.setdefault(piece.index, _ToolCallParts())
            parts.id = parts.id or piece.id
            parts.name = parts.name or piece.name
            if piece.arguments:
                parts.arguments.append(piece.arguments)
        self.finish_reason = event.finish_reason or self.finish_reason
        self.usage = event.usage or self.usage
        self.provider_request_id = self.provider_request_id or event.provider_request_id
        self.provider_latency_ms = event.provider_latency_ms or self.provider_latency_ms
        self.provider_timings = event.provider_timings or self.provider_timings

    def estimated_usage(self, request: ChatRequest) -> Usage:
        """Usage when the provider never reported it: estimated from text, flagged as such."""
        chars = sum(len(t) for t in self.text) + sum(len(a) for p in self.tool_calls.values() for a in p.arguments)
        return estimated_usage(request, chars)

    def response(self, request: ChatRequest) -> ChatResponse:
        """The whole answer.  A stream that ended without a finish reason was cut: `ProtocolError`."""
        if self.finish_reason is None:
            raise ProtocolError("stream ended before the answer was complete", request_id=self.provider_request_id)
        calls = tuple(
            ToolCall(id=p.id or f"call_{i}", name=p.name or "", arguments="".join(p.arguments) or "{}")
            for i, p in sorted(self.tool_calls.items())
        )
        return ChatResponse(
            text="".join(self.text),
            tool_calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage if self.usage is not None else self.estimated_usage(request),
            provider_request_id=self.provider_request_id,
            provider_latency_ms=self.provider_latency_ms,
            provider_timings=self.provider_timings,
        )
