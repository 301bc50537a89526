"""A Llama Guard check: classify a text through a route of the policy serving a Llama Guard model.

The classifier is an ordinary call of the tenant (same residency, metered under the tenant
with the tag `guardrail_classifier=llama_guard`): the conversation goes to the model as chat messages,
the served chat template turns them into Llama Guard's prompt, and the answer is its verdict:

    safe
    unsafe
    S1,S10

The categories are those of the hazard taxonomy Llama Guard 3 and 4 are trained on (S1 violent
crimes ... S14 code interpreter abuse).  An answer in any other shape is a `ProtocolError`:
a guard that cannot be read never passes a text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from broker.errors import ProtocolError

from .checks import Verdict

__all__ = ["CATEGORIES", "LlamaGuardCheck", "parse_verdict"]

CATEGORIES = {
    "S1": "violent crimes", "S2": "non-violent crimes", "S3": "sex-related crimes",
    "S4": "child sexual exploitation", "S5": "defamation", "S6": "specialized advice", "S7": "privacy",
    "S8": "intellectual property", "S9": "indiscriminate weapons", "S10": "hate",
    "S11": "suicide and self-harm", "S12": "sexual content", "S13": "elections", "S14": "code interpreter abuse",
}
_CATEGORY = re.compile(r"S\d{1,2}")

#: sends chat messages to the guard model and returns its answer text
Classify = Callable[[list[dict[str, str]]], str]


def parse_verdict(answer: str) -> tuple[bool, tuple[str, ...]]:
    """(safe, categories) from a Llama Guard answer; anything else is a `ProtocolError`."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if lines and lines[0].lower() == "safe" and len(lines) == 1:
        return True, ()
    if lines and lines[0].lower() == "unsafe":
        categories = tuple(c.strip() for c in ",".join(lines[1:]).split(",") if c.strip())
        if all(_CATEGORY.fullmatch(c) for c in categories):
            return False, categories
    raise ProtocolError("the Llama Guard model answered something that is not a verdict", code="bad_verdict")


class LlamaGuardCheck:
    name = "llama_guard"
    window: int | None = None  # a verdict on the whole text

    def __init__(self, classify: Classify, *, block_categories: list[str] | None) -> None:
        self.classify = classify
        self.block_categories = set(block_categories) if block_categories is not None else None

    def check(self, text: str, *, prompt: str | None = None) -> Verdict:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}] \
            if prompt is not None else [{"role": "user", "content": text}]
        safe, categories = parse_verdict(self.classify(messages))
        if safe:
            return Verdict("pass", text)
        named = ", ".join(f"{c} {CATEGORIES.get(c, 'unknown category')}" for c in categories) or "no category"
        if self.block_categories is not None and not (set(categories) & self.block_categories):
            return Verdict("pass", text, f"unsafe ({named}), not a blocking category", categories)
        return Verdict("block", text, f"Llama Guard: unsafe ({named})", categories)
