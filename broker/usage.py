"""The usage rule: which token counts the broker accepts from a provider, and what it meters otherwise.

Every answer's usage is checked where it enters the core (`broker/attempts.py`), for every
provider, sync and streamed:

- each count (`input_tokens`, `output_tokens`, `cached_input_tokens`) must be an `int`
  (not a `bool`, not a float) from 0 to `MAX_TOKENS_PER_CALL` (10,000,000) inclusive.
  Anything else makes the answer a `ProtocolError`: it is retried and failed over like a
  malformed body, and the attempt is metered as failed with an estimate.
- an answer that reports no usage is metered with an estimate, never as zero.

Estimates come from text length, about four characters a token (as the cost estimate before a
call does, with no tokenizer to download), and are flagged `estimated`.  So no usage event can
carry a negative or absurd token count, nor a negative cost.
"""

from __future__ import annotations

from .types import ChatRequest, ChatResponse, Usage

__all__ = ["MAX_TOKENS_PER_CALL", "completion_chars", "estimated_usage", "usage_problem"]

#: The most tokens of each kind one call may report; more is taken as a provider fault.
MAX_TOKENS_PER_CALL = 10_000_000


def _ok(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS_PER_CALL


def usage_problem(usage: Usage) -> str | None:
    """Why `usage` breaks the rule above, or None when it keeps it."""
    if _ok(usage.input_tokens) and _ok(usage.output_tokens) and _ok(usage.cached_input_tokens):
        return None
    counts = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
              "cached_input_tokens": usage.cached_input_tokens}
    bad = ", ".join(f"{name}={_shown(value)}" for name, value in counts.items() if not _ok(value))
    return f"usage out of range: {bad} (each count must be an integer from 0 to {MAX_TOKENS_PER_CALL})"


def _shown(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS_PER_CALL:
        return f">{MAX_TOKENS_PER_CALL}"
    return f"{value!r}"[:40]


def completion_chars(response: ChatResponse) -> int:
    """Characters of an answer's text and tool-call arguments: what an output estimate counts."""
    return len(response.text) + sum(len(call.arguments) for call in response.tool_calls)


def estimated_usage(request: ChatRequest, output_chars: int) -> Usage:
    """Usage estimated from the prompt and `output_chars` characters of completion, flagged as such."""
    return Usage(input_tokens=request.estimated_input_tokens(), output_tokens=(output_chars + 3) // 4, estimated=True)
