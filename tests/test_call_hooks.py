"""The call-hook seam: what a hook sees of a call, and how its refusals steer the executor."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_execution_rules import MODES, Recorder, Script, play, scripted_broker

from broker import BrokerError
from broker.errors import BudgetExceeded, Unavailable
from broker.metering.events import UsageEvent
from broker.routes import Route
from broker.types import ChatResponse


class Watching:
    """A hook that records every call it sees, refusing the routes and calls it is told to."""

    def __init__(self, *, refuse_routes: tuple[str, ...] = (), refuse_call: bool = False, blocking: bool = False):
        self.blocking = blocking
        self.refuse_routes = refuse_routes
        self.refuse_call = refuse_call
        self.seen: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()

    def open(self, request: Any, decision: Any, meta: Any) -> Watching:
        self.threads.add(threading.get_ident())
        if self.refuse_call:
            raise BudgetExceeded("refused by the hook", tenant=meta.tenant)
        self.seen.append(("open", meta.request_id))
        return self

    def claim(self, route: Route) -> BrokerError | None:
        self.threads.add(threading.get_ident())
        self.seen.append(("claim", route.id))
        if route.id in self.refuse_routes:
            return BudgetExceeded(f"route {route.id} refused by the hook", tenant="default")
        return None

    def attempted(self, route: Route, event: UsageEvent) -> None:
        self.seen.append(("attempted", route.id, event.status))

    def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
        self.seen.append(("close", response is not None, type(error).__name__ if error else None))


def _with_hook(hook: Watching, script: Script, recorder: Recorder) -> Any:
    def make(cls: type) -> Any:
        broker = scripted_broker(script, recorder, "cheap", "dear", cls=cls)
        broker._core.executor.hooks = (hook,)
        return broker
    return make


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_route_is_passed_over_and_every_attempt_is_seen(mode: str) -> None:
    hook, script, recorder = Watching(refuse_routes=("cheap",)), Script(), Recorder()
    _, outcome = play(mode, _with_hook(hook, script, recorder))
    assert isinstance(outcome, ChatResponse)
    assert script.calls == ["dear"]  # the refused route was never called
    names = [s[0] for s in hook.seen]
    assert names == ["open", "claim", "claim", "attempted", "close"]
    assert hook.seen[-2] == ("attempted", "dear", "ok")
    assert hook.seen[-1] == ("close", True, None)
    assert len(recorder.events) == 1


@pytest.mark.parametrize("mode", MODES)
def test_failed_attempts_reach_the_hook_before_the_call_closes_with_the_error(mode: str) -> None:
    down = Unavailable("down", provider="local", status=503)
    hook, script = Watching(), Script(cheap=[down] * 10, dear=[down] * 10)
    _, outcome = play(mode, _with_hook(hook, script, Recorder()))
    assert isinstance(outcome, Unavailable)
    attempts = [s for s in hook.seen if s[0] == "attempted"]
    assert attempts and all(s[2] != "ok" for s in attempts)
    assert hook.seen[-1] == ("close", False, "Unavailable")
    assert [s[0] for s in hook.seen].count("close") == 1


@pytest.mark.parametrize("mode", MODES)
def test_when_every_route_is_refused_the_caller_gets_the_first_refusal(mode: str) -> None:
    hook, script = Watching(refuse_routes=("cheap", "dear")), Script()
    _, outcome = play(mode, _with_hook(hook, script, Recorder()))
    assert isinstance(outcome, BudgetExceeded) and "cheap" in str(outcome)
    assert script.calls == []


@pytest.mark.parametrize("mode", MODES)
def test_a_hook_that_refuses_the_call_stops_it_before_any_route(mode: str) -> None:
    hook, script, recorder = Watching(refuse_call=True), Script(), Recorder()
    _, outcome = play(mode, _with_hook(hook, script, recorder))
    assert isinstance(outcome, BudgetExceeded)
    assert script.calls == [] and recorder.events == []


def test_a_blocking_hook_runs_off_the_event_loop_thread() -> None:
    hook = Watching(blocking=True)
    _, outcome = play("achat", _with_hook(hook, Script(), Recorder()))
    assert isinstance(outcome, ChatResponse)
    assert threading.get_ident() not in hook.threads


def test_a_hook_failing_to_settle_does_not_fail_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Watching):
        def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
            raise RuntimeError("store unreachable")

    _, outcome = play("chat", _with_hook(Broken(), Script(), Recorder()))
    assert isinstance(outcome, ChatResponse)
    assert "failed to close a call" in caplog.text
