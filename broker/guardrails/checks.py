"""The built-in guardrail checks and the protocol every check follows.

A check looks at one text and gives a `Verdict`: pass, redact (with the new text) or block
(with a reason that never quotes the text).  Checks that find spans (deny lists, PII) also say
where, so a stream can hold back exactly the text a match could still grow into.

    deny       any literal or pattern found             -> block
    allow      none of the literals or patterns found   -> block (the whole text is needed)
    pii        emails, phone numbers, card numbers      -> redact as [email] / [phone] / [card], or block
    max_chars  longer than the cap                       -> cut at the cap (redact)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from broker.policy.schema import PiiSpec, TextListSpec

__all__ = ["AllowList", "Check", "DenyList", "LengthCap", "PiiRedaction", "Span", "Verdict"]

Action = Literal["pass", "redact", "block"]


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    text: str
    reason: str = ""
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    label: str


class Check(Protocol):
    """One guardrail.  `window`: characters a stream must hold back for it; None: the whole text."""

    name: str
    window: int | None

    def check(self, text: str, *, prompt: str | None = None) -> Verdict: ...


class _Matcher:
    def __init__(self, spec: TextListSpec) -> None:
        flags = 0 if spec.case_sensitive else re.IGNORECASE
        parts = [re.escape(lit) for lit in spec.literals] + [f"(?:{p})" for p in spec.patterns]
        self.regex = re.compile("|".join(parts), flags)
        self.longest_literal = max((len(lit) for lit in spec.literals), default=0)
        self.has_patterns = bool(spec.patterns)


class DenyList:
    name = "deny"

    def __init__(self, spec: TextListSpec, *, window: int) -> None:
        self.matcher = _Matcher(spec)
        self.window: int | None = max(self.matcher.longest_literal, window if self.matcher.has_patterns else 0)

    def check(self, text: str, *, prompt: str | None = None) -> Verdict:
        match = self.matcher.regex.search(text)
        if match is None:
            return Verdict("pass", text)
        return Verdict("block", text, f"a denied term at character {match.start()}")


class AllowList:
    name = "allow"
    window: int | None = None

    def __init__(self, spec: TextListSpec) -> None:
        self.matcher = _Matcher(spec)

    def check(self, text: str, *, prompt: str | None = None) -> Verdict:
        if self.matcher.regex.search(text):
            return Verdict("pass", text)
        return Verdict("block", text, "none of the allowed terms")


_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PII_WINDOW = 64  # longer than an email local part + domain in practice, and than any phone or card number


class PiiRedaction:
    """Emails (pattern), phone numbers (libphonenumber's matcher), card numbers (pattern + Luhn check)."""

    name = "pii"
    window: int | None = _PII_WINDOW

    def __init__(self, spec: PiiSpec) -> None:
        self.spec = spec

    def spans(self, text: str) -> list[Span]:
        found: list[Span] = []
        kinds = set(self.spec.kinds)
        if "email" in kinds:
            found += [Span(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
        if "card" in kinds:
            from stdnum import luhn

            for m in _CARD.finditer(text):
                digits = re.sub(r"\D", "", m.group())
                if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
                    found.append(Span(m.start(), m.end(), "card"))
        if "phone" in kinds:
            import phonenumbers

            taken = [(s.start, s.end) for s in found]
            for number in phonenumbers.PhoneNumberMatcher(text, self.spec.phone_region):
                start, end = int(number.start), int(number.end)
                if not any(a < end and start < b for a, b in taken):
                    found.append(Span(start, end, "phone"))
        return sorted(found, key=lambda s: s.start)

    def check(self, text: str, *, prompt: str | None = None) -> Verdict:
        spans = self.spans(text)
        if not spans:
            return Verdict("pass", text)
        labels = sorted({s.label for s in spans})
        if self.spec.action == "block":
            return Verdict("block", text, f"personal data ({', '.join(labels)})")
        return Verdict("redact", redact(text, spans), f"redacted {len(spans)} item(s): {', '.join(labels)}")


def redact(text: str, spans: list[Span]) -> str:
    out, at = [], 0
    for span in spans:
        if span.start < at:
            continue
        out += [text[at:span.start], f"[{span.label}]"]
        at = span.end
    out.append(text[at:])
    return "".join(out)


class LengthCap:
    name = "max_chars"
    window: int | None = 0

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def check(self, text: str, *, prompt: str | None = None) -> Verdict:
        if len(text) <= self.limit:
            return Verdict("pass", text)
        return Verdict("redact", text[: self.limit], f"cut at {self.limit} characters")
