"""The executor's success path carries no retry machinery, and what it keeps per call is cheap.

Driven through the real `Executor` with an in-process adapter (the plugin seam) and a meter that
keeps its events: a call that succeeds at once builds no tenacity loop; the first failure builds
the route's retry state, which follows the same rule, in the same order, as tenacity's own loop.
Latency percentiles kept as calls arrive equal those of a sorted window.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from broker.adapter import AdapterBase
from broker.attempts import event_id, new_call_id
from broker.errors import Throttled, Unavailable
from broker.execute import CallMeta, Executor
from broker.health import CircuitBoard, LatencyTracker
from broker.metering.events import UsageEvent
from broker.policy import load_policy
from broker.policy.engine import Router
from broker.policy.schema import RetrySettings
from broker.retry import RetryRule
from broker.routes import Route
from broker.types import ChatRequest, ChatResponse, Usage

MODEL = "llama-3.1-8b"
SHARED = ChatResponse(text="the same answer object every time", finish_reason="stop",
                      usage=Usage(input_tokens=9, output_tokens=4))


class Answers(AdapterBase):
    """Answers from a queue (a `BaseException` is raised), then the one shared response object."""

    provider = "answers"

    def __init__(self, route: Route, queue: deque[ChatResponse | BaseException]) -> None:
        super().__init__(route, http=None)  # type: ignore[arg-type]  # no HTTP: answers in process
        self.queue = queue

    def chat(self, request: ChatRequest) -> ChatResponse:
        step = self.queue.popleft() if self.queue else SHARED
        if isinstance(step, BaseException):
            raise step
        return step

    async def achat(self, request: ChatRequest) -> ChatResponse:
        return self.chat(request)


class Setup:
    def __init__(self, *, attempts: int = 3) -> None:
        doc = {"version": 1, "retry": {"max_attempts_per_route": attempts},
               "routes": [{"id": rid, "provider": "local", "model": MODEL, "model_id": "m", "jurisdiction": "eu",
                           "endpoint": "http://127.0.0.1:9/v1",
                           "price": {"input_per_mtok": price, "output_per_mtok": price}}
                          for rid, price in (("a", "0.10"), ("b", "0.20"))],
               "tenants": {"acme": {"residency": ["eu"]}}}
        self.policy = load_policy(doc)
        self.latency, self.circuits = LatencyTracker(), CircuitBoard()
        self.queue: deque[ChatResponse | BaseException] = deque()
        self.events: list[UsageEvent] = []
        self.sleeps: list[float] = []
        self.built = 0
        adapters = {r.id: Answers(r, self.queue) for r in self.policy.routes}
        setup = self

        class Pool:
            def get(self, route: Route) -> Answers:
                return adapters[route.id]

        class Meter:
            durable = False

            def record(self, event: UsageEvent) -> None:
                setup.events.append(event)

        async def asleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.executor = Executor(adapters=Pool(), latency=self.latency, circuits=self.circuits, meter=Meter(),
                                 retry=self.policy.retry, sleep=self.sleeps.append, asleep=asleep)
        rule = self.executor.retry
        original: Callable[..., Any] = rule.retrying

        def counted(*args: Any, **kwargs: Any) -> Any:  # counts the tenacity loops the rule builds
            self.built += 1
            return original(*args, **kwargs)

        rule.retrying = counted  # type: ignore[method-assign]
        self.router = Router(self.policy, latency=self.latency, circuits=self.circuits)

    def call(self, mode: str) -> ChatResponse:
        request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        decision = self.router.decide(request, "acme")
        meta = CallMeta(request_id=new_call_id(), tenant="acme", tags={"app": "t"}, policy_version="v")
        if mode == "chat":
            return self.executor.chat(decision, request, meta)
        return asyncio.run(self.executor.achat(decision, request, meta))


@pytest.mark.parametrize("mode", ["chat", "achat"])
def test_a_call_that_succeeds_at_once_builds_no_retry_loop(mode: str) -> None:
    s = Setup()
    replies = [s.call(mode) for _ in range(5)]
    assert s.built == 0 and s.sleeps == []
    assert all(r.route is not None and r.route.id == "a" and r.attempts == 1 for r in replies)
    assert SHARED.decision is None and SHARED.route is None and SHARED.request_id is None  # left as it was
    first = replies[0]
    assert first is not SHARED and first.text == SHARED.text and first.usage == SHARED.usage
    assert first.decision is not None and first.request_id == s.events[0].request_id
    assert first.cost_usd == s.events[0].cost_usd and first.cost_usd is not None
    assert replies[1].route is first.route  # where calls went is built once per route


@pytest.mark.parametrize("mode", ["chat", "achat"])
def test_the_first_failure_builds_the_retry_state_and_the_rule_holds(mode: str) -> None:
    s = Setup()
    s.queue.extend([Throttled("slow down", retry_after=0.75), Unavailable("down")])
    reply = s.call(mode)
    assert reply.attempts == 3 and reply.route is not None and reply.route.id == "a"
    assert s.built == 1  # one retry state for the route, made at its first failure
    assert s.sleeps[0] == 0.75 and len(s.sleeps) == 2  # the provider's hint, then backoff
    assert s.executor.budget.tokens("a") == pytest.approx(10 - 2 + 0.2)  # two retries spent, one success earned
    assert [e.error_kind for e in s.events] == ["Throttled", "Unavailable", None]
    s.queue.extend([Unavailable("down")] * 3)  # three attempts on `a`, then fail over to `b`
    failover = s.call(mode)
    assert failover.route is not None and failover.route.id == "b" and failover.attempts == 4


def test_event_ids_are_one_random_draw_per_call() -> None:
    s = Setup()
    s.queue.extend([Unavailable("down"), Unavailable("down")])
    s.call("chat")
    ids = [e.event_id for e in s.events]
    (request_id,) = {e.request_id for e in s.events}
    assert ids == [event_id(request_id, n) for n in (1, 2, 3)]
    assert len(set(ids)) == 3 and request_id not in ids
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len({new_call_id() for _ in range(1000)}) == 1000
    assert len(event_id("not-hex", 1)) == 32 and event_id("not-hex", 1) != event_id("not-hex", 1)


def _tenacity_run(rule: RetryRule, route_id: str, failures: list[BaseException]) -> tuple[int, int]:
    """Attempts made and tokens left after playing `failures` through tenacity's own loop."""
    attempts = 0
    try:
        for state in rule.retrying(route_id):
            with state:
                attempts += 1
                if attempts <= len(failures):
                    raise failures[attempts - 1]
    except BaseException:
        pass
    return attempts, int(rule.budget.tokens(route_id))


def _executor_run(rule: RetryRule, route_id: str, failures: list[BaseException]) -> tuple[int, int]:
    """The same, through the state the executor builds at a route's first failure."""
    attempts, retries = 0, None
    while True:
        attempts += 1
        if attempts > len(failures):
            break
        retries = retries or rule.on_failure(route_id)
        if retries.after(failures[attempts - 1]) is None:
            break
    return attempts, int(rule.budget.tokens(route_id))


@pytest.mark.parametrize("seed", range(8))
def test_the_retry_state_decides_as_tenacity_does(seed: int) -> None:
    rng = random.Random(seed)
    kinds: list[Callable[[], BaseException]] = [
        lambda: Unavailable("down"), lambda: Throttled("slow", retry_after=0.1),
        lambda: Throttled("too slow", retry_after=60.0), lambda: ValueError("not a provider fault"),
    ]
    for _ in range(20):
        failures = [rng.choice(kinds)() for _ in range(rng.randint(0, 5))]
        settings = RetrySettings(max_attempts_per_route=rng.randint(1, 4), budget_capacity=rng.choice([1, 3, 10]))
        runs = []
        for run in (_tenacity_run, _executor_run):
            rule = RetryRule(settings, circuits=CircuitBoard(), sleep=lambda s: None, asleep=_no_wait)
            runs.append(run(rule, "r", failures))
        assert runs[0] == runs[1], failures


async def _no_wait(seconds: float) -> None:
    return None


def test_latency_percentiles_kept_as_calls_arrive_equal_a_sorted_window() -> None:
    rng = random.Random(4)
    tracker = LatencyTracker(window=10)
    route = Setup().policy.routes[0]
    seen: deque[float] = deque(maxlen=10)
    for _ in range(60):
        total = rng.choice([rng.uniform(10, 500), 120.0])  # repeated values leave the window too
        tracker.observe(route, total_ms=total, output_tokens=5)
        seen.append(total)
        window = sorted(seen)
        est = tracker.estimate(route)
        assert est.p50_ms == window[len(window) // 2]
        assert est.p95_ms == window[min(len(window) - 1, round(0.95 * (len(window) - 1)))]
    held = tracker.snapshot()
    before = held.estimate(route)
    tracker.observe(route, total_ms=9999.0, output_tokens=5)
    assert held.estimate(route) is before and tracker.estimate(route) is not before
