"""A loopback Llama Guard runner: an OpenAI-compatible server that answers in Llama Guard's verdict format.

No Llama Guard model ships on PyPI, so the guardrail tests classify through this emulator:
the last message of the conversation is unsafe when it contains one of `unsafe_terms` (term ->
hazard category, e.g. `{"build a bomb": "S9"}`), and the answer is exactly what a served
Llama Guard 3 or 4 model sends: `safe`, or `unsafe` and the categories on a second line.
"""

from __future__ import annotations

from typing import Any

from .openai_compat import OpenAICompatEmulator
from .server import ReplyPlan, count_tokens

__all__ = ["LlamaGuardEmulator"]


class LlamaGuardEmulator(OpenAICompatEmulator):
    name = "llama-guard"

    def __init__(self, unsafe_terms: dict[str, str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.unsafe_terms = {k.lower(): v for k, v in (unsafe_terms or {}).items()}

    def plan(self, prompt_texts: list[str], *, tools: list[str] | None = None, json_mode: bool = False,
             max_tokens: int | None = None) -> ReplyPlan:
        last = (prompt_texts[-1] if prompt_texts else "").lower()
        categories = sorted({cat for term, cat in self.unsafe_terms.items() if term in last},
                            key=lambda c: int(c[1:]))
        text = "unsafe\n" + ",".join(categories) if categories else "safe"
        prompt = "\n".join(prompt_texts)
        return ReplyPlan(text, [], "stop", count_tokens(prompt) + 3 * len(prompt_texts), count_tokens(text))
