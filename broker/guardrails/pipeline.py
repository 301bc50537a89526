"""The guardrail rule: each tenant's input and output checks, run in order, before and after the provider.

    input   every text part of every message, check by check; redact rewrites the part in
            place, block raises `GuardrailBlocked` before any route is tried
    output  the answer's text, check by check (the prompt is context for classifiers);
            redact replaces the text the caller gets, block raises `GuardrailBlocked`
    stream  text is released as it flows, holding back only the window the checks need:
            the longest denied literal, `stream_window_chars` for patterns, 64 characters for
            personal data; a check that needs the whole text (allow lists, Llama Guard) holds
            the stream until it ends.  A span that could still grow is never released half-way.

Every outcome other than a pass is recorded on the decision (`decision.guardrails`), which the
audit trail stores.  Third-party checks install under the `llama_broker.guardrails` entry-point
group: a factory called with the spec's `options` that returns a `Check`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.errors import GuardrailBlocked, PolicyError

from .checks import AllowList, Check, DenyList, LengthCap, PiiRedaction, Span, Verdict, redact
from .llama_guard import Classify, LlamaGuardCheck

if TYPE_CHECKING:
    from broker.policy.decision import Decision
    from broker.policy.schema import GuardrailSettings, GuardrailSpec, TenantPolicy
    from broker.types import ChatRequest, ChatResponse, StreamEvent

__all__ = ["CLASSIFIER_TAG", "ENTRY_POINT_GROUP", "GuardOutcome", "Guardrails", "TenantGuards"]

ENTRY_POINT_GROUP = "llama_broker.guardrails"
#: the tag on a classifier's own calls (metered under the tenant; never checked themselves)
CLASSIFIER_TAG = "guardrail_classifier"


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """What one check did to one call: never the text itself."""

    check: str
    stage: str
    action: str
    reason: str = ""
    categories: tuple[str, ...] = ()


class TenantGuards:
    """One tenant's built checks."""

    def __init__(self, settings: GuardrailSettings, classify: Callable[[str], Classify]) -> None:
        self.input = [_build(spec, settings, classify) for spec in settings.input]
        self.output = [_build(spec, settings, classify) for spec in settings.output]
        windows = [c.window for c in self.output]
        self.hold: int | None = None if None in windows else max((w or 0 for w in windows), default=0)
        self.needs_io = any(isinstance(c, LlamaGuardCheck) for c in (*self.input, *self.output))


def _build(spec: GuardrailSpec, settings: GuardrailSettings, classify: Callable[[str], Classify]) -> Check:
    if spec.deny is not None:
        return DenyList(spec.deny, window=settings.stream_window_chars)
    if spec.allow is not None:
        return AllowList(spec.allow)
    if spec.pii is not None:
        return PiiRedaction(spec.pii)
    if spec.max_chars is not None:
        return LengthCap(spec.max_chars)
    if spec.llama_guard is not None:
        return LlamaGuardCheck(classify(spec.llama_guard.model), block_categories=spec.llama_guard.block_categories)
    assert spec.plugin is not None
    return _plugin(spec.plugin.name, spec.plugin.options)


def _plugin(name: str, options: dict[str, Any]) -> Check:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise PolicyError(f"guardrail plugin {name!r} is not installed (entry-point group {ENTRY_POINT_GROUP})")
    check: Check = found[0].load()(**options)
    return check


class Guardrails:
    """The checks of every tenant that declares some, built on first use."""

    def __init__(self, classify: Callable[[str, str], Classify]) -> None:
        self._classify = classify
        self._built: dict[str, TenantGuards] = {}
        self._lock = threading.Lock()

    def for_tenant(self, decision: Decision) -> TenantGuards | None:
        tenant: TenantPolicy = decision.tenant_policy
        if tenant.guardrails is None:
            return None
        key = decision.tenant
        with self._lock:
            guards = self._built.get(key)
            if guards is None:
                guards = TenantGuards(tenant.guardrails, lambda model: self._classify(key, model))
                self._built[key] = guards
        return guards

    # ------------------------------------------------------------------ input

    def check_input(self, decision: Decision, request: ChatRequest) -> ChatRequest:
        """The request after the tenant's input checks over every text part (a copy where one redacted)."""
        guards = self.for_tenant(decision)
        if guards is None or not guards.input:
            return request
        messages = list(request.messages)
        for check in guards.input:
            for i, message in enumerate(messages):
                content = message.content
                if isinstance(content, str):
                    text = self._apply(check, content, decision, "input")
                    if text != content:
                        messages[i] = message.model_copy(update={"content": text})
                elif isinstance(content, list):
                    parts = list(content)
                    for j, part in enumerate(parts):
                        original = getattr(part, "text", None)
                        if isinstance(original, str):
                            checked = self._apply(check, original, decision, "input")
                            if checked != original:
                                parts[j] = part.model_copy(update={"text": checked})
                    if parts != content:
                        messages[i] = message.model_copy(update={"content": parts})
        if messages == list(request.messages):
            return request
        return request.model_copy(update={"messages": messages})

    # ------------------------------------------------------------------ output

    def check_output(self, decision: Decision, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        guards = self.for_tenant(decision)
        if guards is None or not guards.output:
            return response
        text = response.text
        for check in guards.output:
            text = self._apply(check, text, decision, "output", prompt=_last_user_text(request))
        return response if text == response.text else dataclasses.replace(response, text=text)

    def guard_stream(self, decision: Decision, request: ChatRequest,
                     events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        guards = self.for_tenant(decision)
        if guards is None or not guards.output:
            yield from events
            return
        flow = _StreamFlow(self, guards, decision, request)
        for event in events:
            yield from flow.take(event)

    async def aguard_stream(self, decision: Decision, request: ChatRequest,
                            events: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        import asyncio

        guards = self.for_tenant(decision)
        if guards is None or not guards.output:
            async for event in events:
                yield event
            return
        flow = _StreamFlow(self, guards, decision, request)
        async for event in events:
            if event.response is not None and guards.needs_io:
                out = await asyncio.to_thread(lambda e=event: list(flow.take(e)))  # type: ignore[misc]
            else:
                out = list(flow.take(event))
            for item in out:
                yield item

    # ------------------------------------------------------------------ shared

    def _apply(self, check: Check, text: str, decision: Decision, stage: str, *, prompt: str | None = None) -> str:
        verdict = check.check(text, prompt=prompt)
        return self._settle(check, verdict, decision, stage)

    @staticmethod
    def _settle(check: Check, verdict: Verdict, decision: Decision, stage: str) -> str:
        if verdict.action != "pass" or verdict.categories:
            decision.record_guardrail(GuardOutcome(check.name, stage, verdict.action, verdict.reason,
                                                   verdict.categories))
        if verdict.action == "block":
            raise GuardrailBlocked(f"tenant {decision.tenant!r}: the {stage} guardrail {check.name!r} blocked the "
                                   f"call: {verdict.reason}", check=check.name, stage=stage,
                                   categories=verdict.categories)
        return verdict.text


class _StreamFlow:
    """Releases streamed text through the output checks, holding back what a check may still need."""

    def __init__(self, guards_of: Guardrails, guards: TenantGuards, decision: Decision, request: ChatRequest):
        self.rail = guards_of
        self.guards = guards
        self.decision = decision
        self.prompt = _last_user_text(request)
        self.held = ""
        self.released: list[str] = []
        self.capped = False

    def take(self, event: StreamEvent) -> Iterator[StreamEvent]:
        if event.response is not None:  # the final event: check what is held, then the whole answer
            rest = self._release(self.held, final=True)
            self.held = ""
            if rest:
                yield dataclasses.replace(event, text=rest, usage=None, response=None, tool_calls=())
            text = "".join(self.released)
            response = event.response if text == event.response.text else \
                dataclasses.replace(event.response, text=text)
            yield dataclasses.replace(event, response=response)
            return
        if not event.text:
            yield event
            return
        self.held += event.text
        out = self._release(self.held, final=False)
        if out or event.tool_calls or event.finish_reason:
            yield dataclasses.replace(event, text=out)

    def _release(self, text: str, *, final: bool) -> str:
        hold = self.guards.hold
        if not final and hold is None:
            return ""  # a check needs the whole answer
        cut = len(text) if final else max(0, len(text) - (hold or 0))
        spans: list[Span] = []
        for check in self.guards.output:
            if isinstance(check, PiiRedaction):
                spans += check.spans(text)
        for span in spans:  # never release part of a span that could still grow
            if not final and span.end > cut:
                cut = min(cut, span.start)
        checked = text if final else text[:cut]
        for check in self.guards.output:
            if isinstance(check, LengthCap):
                continue
            if isinstance(check, PiiRedaction):
                inside = [s for s in spans if s.end <= len(checked)]
                if inside:
                    verdict = check.check(checked) if check.spec.action == "block" else \
                        Verdict("redact", redact(checked, inside), f"redacted {len(inside)} item(s)")
                    checked = self.rail._settle(check, verdict, self.decision, "output")
                continue
            if check.window is None:  # a verdict on the whole answer: nothing was released before it
                if not final:
                    continue
                checked = self.rail._settle(check, check.check(checked, prompt=self.prompt), self.decision, "output")
            else:  # the whole held text: a match straddling the cut is still all in it
                self.rail._settle(check, check.check(text, prompt=self.prompt), self.decision, "output")
        self.held = text[cut:] if not final else ""
        return self._cap(checked)

    def _cap(self, text: str) -> str:
        for check in self.guards.output:
            if isinstance(check, LengthCap):
                room = check.limit - sum(len(t) for t in self.released)
                if len(text) > room:
                    if not self.capped:
                        self.capped = True
                        self.rail._settle(check, Verdict("redact", "", f"cut at {check.limit} characters"),
                                          self.decision, "output")
                    text = text[: max(room, 0)]
        self.released.append(text)
        return text


def _last_user_text(request: ChatRequest) -> str | None:
    for message in reversed(request.messages):
        if message.role == "user":
            content = message.content
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(t for t in (getattr(p, "text", None) for p in content) if isinstance(t, str))
    return None
