"""The client end to end: policy -> decision -> execution -> adapter -> emulator -> metering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import (
    AsyncBroker,
    Broker,
    InvalidRequest,
    NoEligibleRoute,
    ProtocolError,
    ResidencyViolation,
    Unavailable,
    UnknownTenant,
)
from broker.execute import Executor
from broker.testing import OpenAICompatEmulator, Reply


@pytest.fixture
def two() -> Iterator[tuple[OpenAICompatEmulator, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        yield a, b


def priced(emu: OpenAICompatEmulator, rid: str, price: float, jurisdiction: str = "on-prem", **kw: Any) -> dict[str, Any]:
    return local_route(emu, rid, jurisdiction=jurisdiction,
                       price={"input_per_mtok": price, "output_per_mtok": price}, **kw)


class Sleeps(list):  # type: ignore[type-arg]
    """An injected sleep that records its waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(policy: dict[str, Any], **kw: Any) -> Broker:
    kw.setdefault("sleep", Sleeps())
    return Broker.from_policy(policy, durable=True, **kw)


MSG = [{"role": "user", "content": "Hello, broker"}]


def test_chat_fills_route_cost_decision_and_meters(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    policy = policy_dict([priced(local_emulator, "local-a", 1.0)], tmp=tmp_path)
    with make(policy) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=MSG, tags={"app": "test"})
        assert "local emulator" in reply.text
        assert reply.route.provider == "local" and reply.route.id == "local-a"
        assert reply.route.jurisdiction == "on-prem"
        assert reply.usage.input_tokens == local_emulator.reported.input_tokens
        expected = (reply.usage.input_tokens + reply.usage.output_tokens) * 1.0 / 1_000_000
        assert float(reply.cost_usd) == pytest.approx(expected)
        assert reply.decision.routes[0].id == "local-a" and reply.request_id
        assert broker.meter.ledger.count() == 1


def test_stream_ends_with_usage_and_the_whole_response(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    with make(policy_dict([priced(local_emulator, "local-a", 1.0)], tmp=tmp_path)) as broker:
        events = list(broker.stream(model="llama-3.1-8b", messages=MSG))
    assert events[-1].is_final and events[-1].usage.output_tokens == local_emulator.reported.output_tokens
    assert events[-1].response.text == "".join(e.text for e in events[:-1])
    assert events[-1].response.ttft_ms is not None


async def test_async_broker_chat_and_stream(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    async with AsyncBroker.from_policy(policy_dict([priced(local_emulator, "local-a", 1.0)], tmp=tmp_path)) as broker:
        reply = await broker.chat(model="llama-3.1-8b", messages=MSG)
        events = [e async for e in broker.stream(model="llama-3.1-8b", messages=MSG)]
    assert reply.text and events[-1].response.text
    assert local_emulator.reported.calls == 2


def test_throttled_route_is_retried_with_the_providers_wait_hint(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    local_emulator.fail(429, retry_after=1.5)
    sleeps = Sleeps()
    with make(policy_dict([priced(local_emulator, "local-a", 1.0)], tmp=tmp_path), sleep=sleeps) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=MSG)
        assert reply.attempts == 2 and sleeps == [1.5]
        broker.meter.flush()
        assert broker.meter.ledger.count() == 2  # the throttled attempt is metered too


def test_failing_route_fails_over_to_the_next(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    cheap, dear = two
    cheap.fail(429, times=10)
    policy = policy_dict([priced(cheap, "cheap", 0.1), priced(dear, "dear", 0.9)], tmp=tmp_path)
    with make(policy) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=MSG)
    assert reply.route.id == "dear"
    assert len(cheap.requests) == 3 and len(dear.requests) == 1  # 3 tries on the first route, then failover
    assert reply.attempts == 4


def test_non_failover_errors_stop_at_the_first_route(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    first, second = two
    first.fail(400, message="temperature must be <= 1")
    with make(policy_dict([priced(first, "a", 0.1), priced(second, "b", 0.9)], tmp=tmp_path)) as broker:
        with pytest.raises(InvalidRequest):
            broker.chat(model="llama-3.1-8b", messages=MSG)
    assert len(second.requests) == 0


def test_stream_fails_over_before_the_first_token_only(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    first, second = two
    first.fail(503, times=5)
    with make(policy_dict([priced(first, "a", 0.1), priced(second, "b", 0.9)], tmp=tmp_path)) as broker:
        events = list(broker.stream(model="llama-3.1-8b", messages=MSG))
        assert events[-1].response.route.id == "b"
        first.reset()
        second.reset()
        first.cut_stream(after=3)
        received = []
        with pytest.raises(ProtocolError):
            for event in broker.stream(model="llama-3.1-8b", messages=MSG):
                received.append(event)
        assert any(e.text for e in received) and len(second.requests) == 0


def test_cost_objective_picks_the_cheapest(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    a, b = two
    with make(policy_dict([priced(a, "dear", 0.9), priced(b, "cheap", 0.2)], tmp=tmp_path)) as broker:
        assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "cheap"


def test_latency_objective_follows_observed_latency(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    a, b = two
    tenants = {"default": {"objective": "latency", "residency": ["on-prem"]}}
    with make(policy_dict([priced(a, "a", 0.5), priced(b, "b", 0.5)], tenants, tmp=tmp_path)) as broker:
        for _ in range(3):  # learn both routes (equal priors: route id breaks the tie, so warm b explicitly)
            broker.chat(model="llama-3.1-8b", messages=MSG)
        broker._core.latency.observe(broker.policy.routes[1], total_ms=5, output_tokens=10)
        first_choice = broker.chat(model="llama-3.1-8b", messages=MSG).route.id
        slow, fast = (a, b) if first_choice == "a" else (b, a)
        slow.latency_s = 0.4
        chosen = [broker.chat(model="llama-3.1-8b", messages=MSG).route.id for _ in range(6)]
    assert chosen[-1] != first_choice  # the choice moved away from the emulator that slowed down


def test_eu_tenant_never_leaves_the_eu_even_when_every_eu_route_fails(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    eu, us = two
    eu.fail(503, times=50)
    tenants = {"eu-only": {"objective": "cost", "residency": ["eu"]}}
    policy = policy_dict([priced(eu, "eu-box", 0.9, jurisdiction="eu"), priced(us, "us-box", 0.1, jurisdiction="us")],
                         tenants, tmp=tmp_path)
    with make(policy) as broker:
        with pytest.raises(Unavailable):
            broker.chat(model="llama-3.1-8b", messages=MSG, tenant="eu-only")
        with pytest.raises(Unavailable):
            list(broker.stream(model="llama-3.1-8b", messages=MSG, tenant="eu-only"))
    assert len(us.requests) == 0


def test_no_eligible_route_names_the_constraint(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    tenants = {"eu-only": {"objective": "cost", "residency": ["eu"]}}
    with make(policy_dict([priced(local_emulator, "us-box", 0.1, jurisdiction="us")], tenants, tmp=tmp_path)) as broker:
        with pytest.raises(NoEligibleRoute, match="residency") as info:
            broker.chat(model="llama-3.1-8b", messages=MSG, tenant="eu-only")
    assert "us-box" in info.value.reasons and len(local_emulator.requests) == 0


def test_call_arguments_cannot_widen_residency(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    with make(policy_dict([priced(local_emulator, "a", 0.1)], tmp=tmp_path)) as broker:
        with pytest.raises(InvalidRequest, match="residency"):
            broker.chat(model="llama-3.1-8b", messages=MSG, residency=["us"])


def test_the_last_guard_refuses_a_route_the_filters_removed(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    eu, us = two
    tenants = {"default": {"objective": "cost", "residency": ["eu"]}}
    policy = policy_dict([priced(eu, "eu-box", 0.9, jurisdiction="eu"), priced(us, "us-box", 0.1, jurisdiction="us")],
                         tenants, tmp=tmp_path)
    with make(policy) as broker:
        decision = broker.route(model="llama-3.1-8b", messages=MSG)
        us_route = next(r for r in broker.policy.routes if r.id == "us-box")
        with pytest.raises(ResidencyViolation):
            Executor.guard(us_route, decision)


def test_unknown_tenant_is_refused_and_no_tenant_means_default(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    with make(policy_dict([priced(local_emulator, "a", 0.1)], tmp=tmp_path)) as broker:
        with pytest.raises(UnknownTenant, match="'stranger'"):
            broker.chat(model="llama-3.1-8b", messages=MSG, tenant="stranger")
        assert local_emulator.requests == []
        reply = broker.chat(model="llama-3.1-8b", messages=MSG)
        assert reply.route.id == "a" and reply.decision.tenant == reply.decision.rules_tenant == "default"
    tenants = {"team": {"objective": "cost", "residency": ["on-prem"]}}
    with make(policy_dict([priced(local_emulator, "a", 0.1)], tenants, tmp=tmp_path)) as broker:
        with pytest.raises(UnknownTenant):
            broker.chat(model="llama-3.1-8b", messages=MSG, tenant="stranger")


def test_open_circuit_removes_a_route_and_recovers(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    a, b = two
    now = [1000.0]
    policy = policy_dict([priced(a, "a", 0.1), priced(b, "b", 0.9)], tmp=tmp_path,
                         circuit={"failure_threshold": 3, "window_s": 60, "cooldown_s": 30},
                         retry={"max_attempts_per_route": 1})
    with make(policy, clock=lambda: now[0]) as broker:
        a.fail(503, times=3)
        for _ in range(3):
            assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "b"
        decision = broker.route(model="llama-3.1-8b", messages=MSG)
        assert decision.removed["a"].startswith("health")
        requests_before = len(a.requests)
        assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "b"
        assert len(a.requests) == requests_before  # open: not even tried
        now[0] += 31  # cooldown passed: half-open, one probe goes through and closes it
        assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "a"
        assert "a" not in broker.route(model="llama-3.1-8b", messages=MSG).removed


def test_retry_budget_stops_retry_storms(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    a, b = two
    a.fail(503, times=1000)
    policy = policy_dict([priced(a, "a", 0.1), priced(b, "b", 0.9)], tmp=tmp_path,
                         circuit={"failure_threshold": 1000, "window_s": 60, "cooldown_s": 30})
    with make(policy) as broker:
        for _ in range(20):
            broker.chat(model="llama-3.1-8b", messages=MSG)
    # without a budget: 20 calls x 3 tries = 60 requests; the budget caps retries near its capacity
    assert len(a.requests) < 20 + 12


def test_scripted_tool_call_through_the_broker(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    local_emulator.enqueue(Reply(tool_calls=[("lookup", {"q": "x"})]))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with make(policy_dict([priced(local_emulator, "a", 0.1)], tmp=tmp_path)) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=MSG, tools=[tool])
    assert reply.tool_calls[0].parsed_arguments() == {"q": "x"}
    assert reply.message["tool_calls"][0]["function"]["name"] == "lookup"


def test_unpriced_route_meters_unknown_cost(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    with make(policy_dict([local_route(local_emulator, "free")], tmp=tmp_path)) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=MSG)
    assert reply.cost_usd is None


def test_route_explain_lists_every_candidate(tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]) -> None:
    eu, us = two
    tenants = {"default": {"objective": "cost", "residency": ["eu"]}}
    policy = policy_dict([priced(eu, "eu-box", 0.9, jurisdiction="eu"), priced(us, "us-box", 0.1, jurisdiction="us")],
                         tenants, tmp=tmp_path)
    with make(policy) as broker:
        text = broker.route(model="llama-3.1-8b", messages=MSG).explain()
    assert "#1 eu-box" in text and "us-box" in text and "removed by residency" in text


def test_a_half_open_probe_refused_for_its_request_still_closes_the_circuit(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    a, b = two
    now = [0.0]
    policy = policy_dict([priced(a, "a", 0.1), priced(b, "b", 0.9)], tmp=tmp_path,
                         circuit={"failure_threshold": 2, "window_s": 60, "cooldown_s": 10},
                         retry={"max_attempts_per_route": 1})
    with make(policy, clock=lambda: now[0]) as broker:
        a.fail(503, times=2)
        broker.chat(model="llama-3.1-8b", messages=MSG)
        broker.chat(model="llama-3.1-8b", messages=MSG)
        assert "a" in broker.route(model="llama-3.1-8b", messages=MSG).removed
        now[0] += 11
        a.fail(400, message="bad request")  # the probe reaches a and is refused for the request itself
        with pytest.raises(InvalidRequest):
            broker.chat(model="llama-3.1-8b", messages=MSG)
        assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "a"  # not stuck half-open
