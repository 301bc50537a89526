"""The executor's rules: retries, unusable routes, adapter bugs, and the one stream-completeness rule.

Two kinds of provider drive them: real adapters against the loopback emulators, and a small
scripted third-party adapter (`ScriptedAdapter`) registered through `Broker(adapters=...)`,
the plugin seam, for answers no emulator sends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from tenacity import RetryCallState, Retrying

from broker import (
    AdapterBug,
    AsyncBroker,
    Broker,
    BrokerError,
    CredentialsError,
    MissingDependency,
    PolicyError,
    ProtocolError,
    Unavailable,
)
from broker.adapter import AdapterBase
from broker.health import CircuitBoard, CircuitState
from broker.metering.events import UsageEvent
from broker.policy.schema import RetrySettings
from broker.retry import RetryRule
from broker.routes import Route
from broker.testing import OpenAICompatEmulator
from broker.testing.bedrock import BedrockEmulator
from broker.testing.groq import GroqEmulator
from broker.transport import HttpClients
from broker.types import ChatRequest, ChatResponse, StreamEvent, Usage

MSG = [{"role": "user", "content": "Hello there"}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
MODEL = "llama-3.1-8b"

Step = ChatResponse | Sequence[StreamEvent | BaseException] | BaseException

ANSWER = ChatResponse(text="scripted answer", finish_reason="stop", usage=Usage(input_tokens=7, output_tokens=3))
EVENTS: tuple[StreamEvent, ...] = (
    StreamEvent(text="scripted "),
    StreamEvent(text="answer"),
    StreamEvent(finish_reason="stop"),
    StreamEvent(usage=Usage(input_tokens=7, output_tokens=3)),
)


# --------------------------------------------------------------------------- a scripted third-party adapter


class Script:
    """What each route's adapter answers, in order (then `ANSWER` / `EVENTS`), and who was called."""

    def __init__(self, **steps: Sequence[Step]) -> None:
        self.steps = {route_id: deque(s) for route_id, s in steps.items()}
        self.build_errors: dict[str, BaseException] = {}
        self.calls: list[str] = []

    def adapter(self, route: Route, *, http: HttpClients) -> ScriptedAdapter:
        """The adapter factory registered with the broker."""
        if route.id in self.build_errors:
            raise self.build_errors[route.id]
        return ScriptedAdapter(route, http=http, script=self)

    def next(self, route_id: str, *, stream: bool) -> Step:
        self.calls.append(route_id)
        queue = self.steps.get(route_id)
        return queue.popleft() if queue else (EVENTS if stream else ANSWER)


class ScriptedAdapter(AdapterBase):
    """A third-party adapter that plays its `Script`."""

    provider = "scripted"

    def __init__(self, route: Route, *, http: HttpClients, script: Script) -> None:
        super().__init__(route, http=http)
        self.script = script

    def chat(self, request: ChatRequest) -> ChatResponse:
        step = self.script.next(self.route.id, stream=False)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, ChatResponse)
        return step

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        step = self.script.next(self.route.id, stream=True)
        if isinstance(step, BaseException):
            raise step
        assert not isinstance(step, ChatResponse)
        for item in step:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def achat(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(0)
        return self.chat(request)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        for event in self.stream(request):
            await asyncio.sleep(0)
            yield event


class Recorder:
    """A ledger that keeps the events it is given, to read them back as written."""

    url = "memory://recorder"

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def write(self, events: Sequence[UsageEvent]) -> int:
        self.events.extend(events)
        return len(events)

    def set_aside(self, entries: Sequence[Any]) -> None:
        return None

    def dead_letters(self) -> list[Any]:
        return []

    def spend(self, tenant: str, since: dt.datetime, until: dt.datetime | None = None) -> Decimal:
        return sum((e.cost_usd or Decimal(0) for e in self.events if e.tenant == tenant), Decimal(0))

    def aggregate(self, *, group_by: Sequence[str], filters: Any) -> list[dict[str, Any]]:
        return []

    def count(self) -> int:
        return len(self.events)

    def close(self) -> None:
        return None

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(e.route_id, e.error_kind) for e in self.events]


def scripted_route(route_id: str, price: float) -> dict[str, Any]:
    """A route served by the scripted adapter (registered under the `local` provider name)."""
    return {"id": route_id, "provider": "local", "model": MODEL, "model_id": "scripted-8b",
            "endpoint": "http://127.0.0.1:9/v1", "jurisdiction": "on-prem",
            "price": {"input_per_mtok": price, "output_per_mtok": price}}


def scripted_broker(script: Script, recorder: Recorder, *routes: str, cls: type = Broker, **policy: Any) -> Any:
    """A broker whose routes (cheapest first) all go to the scripted adapter."""
    specs = [scripted_route(rid, 0.1 * (i + 1)) for i, rid in enumerate(routes)]
    return cls.from_policy(policy_dict(specs, **policy), adapters={"local": script.adapter}, ledger=recorder,
                           durable=True, sleep=lambda s: None, asleep=_no_wait)


async def _no_wait(seconds: float) -> None:
    return None


MODES = ("chat", "stream", "achat", "astream")

Outcome = ChatResponse | BrokerError


def play(mode: str, make: Callable[[type], Any]) -> tuple[Any, Outcome]:
    """One call in `mode` on the broker `make(Broker or AsyncBroker)` builds, then closed.

    The answer (a stream's final response) or the broker error it raised.
    """
    if not mode.startswith("a"):
        with make(Broker) as broker:
            try:
                if mode == "chat":
                    return broker, broker.chat(model=MODEL, messages=MSG)
                return broker, list(broker.stream(model=MODEL, messages=MSG))[-1].response
            except BrokerError as exc:
                return broker, exc

    async def run() -> tuple[Any, Outcome]:
        async with make(AsyncBroker) as broker:
            try:
                if mode == "achat":
                    return broker, await broker.chat(model=MODEL, messages=MSG)
                return broker, [e async for e in broker.stream(model=MODEL, messages=MSG)][-1].response
            except BrokerError as exc:
                return broker, exc

    return asyncio.run(run())


def play_scripted(mode: str, script: Script, recorder: Recorder, *routes: str, **policy: Any) -> tuple[Any, Outcome]:
    return play(mode, lambda cls: scripted_broker(script, recorder, *routes, cls=cls, **policy))


# --------------------------------------------------------------------------- the retry rule


def _failed_state(retrying: Retrying, exc: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(retrying, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_the_retry_decision_reads_the_budget_and_spends_nothing() -> None:
    rule = RetryRule(RetrySettings(budget_capacity=1), circuits=CircuitBoard(), sleep=lambda s: None,
                     asleep=_no_wait)
    retrying = rule.retrying("a")
    state = _failed_state(retrying, Unavailable("down"))
    assert retrying.retry(state) and retrying.retry(state)  # asked twice: still one token
    assert rule.budget.tokens("a") == 1
    assert retrying.before_sleep is not None
    retrying.before_sleep(state)  # tenacity's hook once a retry is certain: the token is spent
    assert rule.budget.tokens("a") == 0
    assert not retrying.retry(state)  # an empty budget means no retry
    assert not retrying.retry(_failed_state(retrying, ValueError("not a provider fault")))


def test_an_empty_budget_fails_over_at_once(tmp_path: Path) -> None:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        a.fail(503, times=100)
        routes = [local_route(a, "a", price={"input_per_mtok": 0.1, "output_per_mtok": 0.1}),
                  local_route(b, "b", price={"input_per_mtok": 0.9, "output_per_mtok": 0.9})]
        policy = policy_dict(routes, tmp=tmp_path, retry={"max_attempts_per_route": 5, "budget_capacity": 1},
                             circuit={"failure_threshold": 1000, "window_s": 60, "cooldown_s": 30})
        with Broker.from_policy(policy, sleep=lambda s: None) as broker:
            assert broker.chat(model=MODEL, messages=MSG).route.id == "b"
            assert len(a.requests) == 2  # one retry spent the only token
            assert broker._core.executor.budget.tokens("a") == 0
            assert broker.chat(model=MODEL, messages=MSG).route.id == "b"
            assert len(a.requests) == 3  # no token: no retry, straight to the next route


@pytest.mark.parametrize("fault", ["hint_too_long", "single_attempt"])
def test_a_failure_that_is_not_retried_spends_no_token(tmp_path: Path, fault: str) -> None:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        if fault == "hint_too_long":
            a.fail(429, retry_after=60)  # longer than max_delay_s: fail over rather than wait
        else:
            a.fail(503)
        routes = [local_route(a, "a", price={"input_per_mtok": 0.1, "output_per_mtok": 0.1}),
                  local_route(b, "b", price={"input_per_mtok": 0.9, "output_per_mtok": 0.9})]
        retry = {"max_delay_s": 8} if fault == "hint_too_long" else {"max_attempts_per_route": 1}
        with Broker.from_policy(policy_dict(routes, tmp=tmp_path, retry=retry), sleep=lambda s: None) as broker:
            assert broker.chat(model=MODEL, messages=MSG).route.id == "b"
            assert len(a.requests) == 1
            assert broker._core.executor.budget.tokens("a") == 10


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_stream_that_delivered_content_is_never_retried(mode: str) -> None:
    cut = [StreamEvent(text="half an "), Unavailable("connection reset")]
    script, recorder = Script(a=[cut]), Recorder()
    broker, out = play_scripted(mode, script, recorder, "a", "b")
    assert isinstance(out, Unavailable)
    assert script.calls == ["a"]  # neither retried nor failed over
    assert broker._core.executor.budget.tokens("a") == 10
    (event,) = recorder.events
    assert event.error_kind == "Unavailable" and event.usage_estimated and event.output_tokens > 0


# --------------------------------------------------------------------------- routes that cannot be used


def test_a_missing_credential_on_the_top_route_fails_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSENT_GROQ_KEY", raising=False)
    with GroqEmulator() as groq, OpenAICompatEmulator() as local:
        routes = [
            {"id": "groq-top", "provider": "groq", "model": MODEL, "endpoint": groq.url, "api_key_env": "ABSENT_GROQ_KEY",
             "jurisdiction": "us",
             "price": {"input_per_mtok": 0.01, "output_per_mtok": 0.01}},
            local_route(local, "local-next", price={"input_per_mtok": 0.9, "output_per_mtok": 0.9}),
        ]
        with Broker.from_policy(policy_dict(routes, tmp=tmp_path)) as broker:
            assert [r.id for r in broker.route(model=MODEL, messages=MSG).routes] == ["groq-top", "local-next"]
            reply = broker.chat(model=MODEL, messages=MSG)
            assert reply.route.id == "local-next"
            (failure,) = reply.decision.failures
            assert failure.route_id == "groq-top" and isinstance(failure.error, CredentialsError)
            assert "ABSENT_GROQ_KEY" in failure.reason
            assert reply.decision.to_dict()["failures"] == [{"route": "groq-top", "reason": failure.reason}]
            assert "groq-top could not be used" in reply.decision.explain()
            events = list(broker.stream(model=MODEL, messages=MSG))  # streams move on the same way
            assert events[-1].response is not None and events[-1].response.route.id == "local-next"
            assert broker._core.circuits.state("groq-top") is CircuitState.CLOSED
        assert groq.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_routes_that_cannot_be_built_or_configured_are_passed_over(mode: str) -> None:
    script, recorder = Script(b=[MissingDependency("scripted", "scripted-sdk", "scripted")]), Recorder()
    script.build_errors["a"] = PolicyError("route 'a': a scripted route needs `endpoint:`")
    _, reply = play_scripted(mode, script, recorder, "a", "b", "c")
    assert isinstance(reply, ChatResponse) and reply.route is not None and reply.route.id == "c"
    assert [(f.route_id, type(f.error).__name__) for f in reply.decision.failures] == [
        ("a", "PolicyError"), ("b", "MissingDependency")]
    assert recorder.kinds() == [("b", "MissingDependency"), ("c", None)]  # b was tried at call time


@pytest.mark.parametrize("mode", MODES)
def test_when_no_route_can_be_used_the_first_error_is_raised(mode: str) -> None:
    script, recorder = Script(b=[CredentialsError("route 'b': environment variable B_KEY is not set")]), Recorder()
    script.build_errors["a"] = MissingDependency("scripted", "scripted-sdk", "scripted")
    _, out = play_scripted(mode, script, recorder, "a", "b")
    assert isinstance(out, MissingDependency) and "pip install 'llama-broker[scripted]'" in str(out)
    assert script.calls == ["b"]


# --------------------------------------------------------------------------- adapter bugs


@pytest.mark.parametrize("mode", MODES)
def test_an_unmapped_exception_is_an_adapter_bug_raised_at_once(mode: str) -> None:
    bug = TypeError("unsupported operand for the prompt 'my secret plan'")
    step: Step = [bug] if "stream" in mode else bug
    script, recorder = Script(a=[step, step, step]), Recorder()
    policy = {"circuit": {"failure_threshold": 1, "window_s": 60, "cooldown_s": 30}}
    broker, out = play_scripted(mode, script, recorder, "a", "b", **policy)
    assert isinstance(out, AdapterBug)
    assert script.calls == ["a"]  # not retried, not failed over
    assert out.__cause__ is bug
    assert (out.provider, out.route_id) == ("local", "a")
    assert "TypeError" in str(out) and "'a'" in str(out) and "secret" not in str(out)
    assert recorder.kinds() == [("a", "AdapterBug")]
    assert broker._core.circuits.state("a") is CircuitState.CLOSED  # not counted against the route
    assert broker._core.executor.budget.tokens("a") == 10


# --------------------------------------------------------------------------- stream completeness


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_stream_without_a_finish_reason_is_cut_for_any_adapter(mode: str) -> None:
    unfinished = [StreamEvent(text="all of it"), StreamEvent(usage=Usage(input_tokens=5, output_tokens=3))]
    script, recorder = Script(a=[unfinished]), Recorder()
    _, out = play_scripted(mode, script, recorder, "a", "b")
    assert isinstance(out, ProtocolError) and "before the answer was complete" in str(out)
    assert (out.provider, out.route_id) == ("local", "a")
    assert script.calls == ["a"]  # content had reached the caller: no retry, no failover
    assert recorder.kinds() == [("a", "ProtocolError")]


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_an_unfinished_stream_that_delivered_nothing_is_retried(mode: str) -> None:
    script, recorder = Script(a=[[StreamEvent(usage=Usage(input_tokens=5, output_tokens=0))]]), Recorder()
    _, reply = play_scripted(mode, script, recorder, "a", "b")
    assert isinstance(reply, ChatResponse) and reply.route is not None
    assert reply.route.id == "a" and reply.attempts == 2
    assert recorder.kinds() == [("a", "ProtocolError"), ("a", None)]


class _NoFinish(OpenAICompatEmulator):
    """A runner whose streams end cleanly, `[DONE]` included, but with no finish reason."""

    def chunk(self, rid: str, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return super().chunk(rid, body, delta, None)


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_real_runner_stream_without_a_finish_reason_is_a_protocol_error(tmp_path: Path, mode: str) -> None:
    with _NoFinish() as emu:
        policy = policy_dict([local_route(emu, "a")], tmp=tmp_path, retry={"max_attempts_per_route": 1})
        broker, out = play(mode, lambda cls: cls.from_policy(policy, durable=True))
        assert isinstance(out, ProtocolError) and "before the answer was complete" in str(out)
        assert (out.provider, out.route_id) == ("local", "a")
        assert len(emu.requests) == 1
    with Broker.from_policy(policy) as again:
        assert again.meter.ledger.count() == 1  # the attempt is metered


# --------------------------------------------------------------------------- capabilities from the catalog


def test_bedrock_streams_as_the_catalog_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    with BedrockEmulator() as emu:
        routes = [{"id": "scout", "provider": "bedrock", "model": "llama-4-scout", "region": "us-east-1",
                   "endpoint": emu.url},
                  {"id": "llama33", "provider": "bedrock", "model": "llama-3.3-70b", "region": "us-east-1",
                   "endpoint": emu.url}]
        tenants = {"default": {"residency": ["us"]}}
        with Broker.from_policy(policy_dict(routes, tenants, tmp=tmp_path)) as broker:
            scout, llama33 = (next(r for r in broker.policy.routes if r.id == rid) for rid in ("scout", "llama33"))
            assert scout.capabilities.streaming is True and scout.capabilities.streaming_tools is False
            events = list(broker.stream(model="llama-4-scout", messages=MSG))
            assert events[-1].response is not None and events[-1].response.text
            list(broker.stream(model="llama-3.3-70b", messages=MSG, tools=[WEATHER_TOOL]))
        paths = [r.path.rsplit("/", 1)[-1] for r in emu.requests]
        assert paths == ["converse-stream", "converse"]  # with tools: one Converse call, as the catalog states
        emu.reset()
        routes[1]["capabilities"] = {"streaming": False}  # a policy may say so of any route
        with Broker.from_policy(policy_dict(routes[1:], tenants, tmp=tmp_path)) as broker:
            list(broker.stream(model="llama-3.3-70b", messages=MSG))
        assert [r.path.rsplit("/", 1)[-1] for r in emu.requests] == ["converse"]
