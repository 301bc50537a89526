"""Guardrails: input and output checks per tenant (deny and allow lists, PII redaction, length caps,
Llama Guard, third-party checks), run in order with typed outcomes.  See `pipeline.py` for the rule."""

from .checks import Check, Verdict
from .llama_guard import parse_verdict
from .pipeline import ENTRY_POINT_GROUP, GuardOutcome, Guardrails

__all__ = ["ENTRY_POINT_GROUP", "Check", "GuardOutcome", "Guardrails", "Verdict", "parse_verdict"]
