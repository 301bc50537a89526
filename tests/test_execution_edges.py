"""Edges of execution and policy: cancellation, retry-budget accounting, budgets near their limit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import AsyncBroker, Broker, PolicyError
from broker.policy import load_policy
from broker.testing import OpenAICompatEmulator

MSG = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def two() -> Iterator[tuple[OpenAICompatEmulator, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        yield a, b


def priced(emu: OpenAICompatEmulator, rid: str, price: float, **kw: Any) -> dict[str, Any]:
    return local_route(emu, rid, price={"input_per_mtok": price, "output_per_mtok": price}, **kw)


class FixedSpend:
    """A spend source with a set month- and day-to-date figure."""

    def __init__(self, value: str) -> None:
        self.value = Decimal(value)

    def month_to_date(self, tenant: str, now: object) -> Decimal:
        return self.value

    def day_to_date(self, tenant: str, now: object) -> Decimal:
        return self.value


async def test_a_cancelled_call_is_metered_and_frees_a_half_open_probe(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    a, _ = two
    now = [0.0]
    policy = policy_dict([priced(a, "a", 1.0)], tmp=tmp_path,
                         circuit={"failure_threshold": 1, "window_s": 60, "cooldown_s": 10},
                         retry={"max_attempts_per_route": 1})
    async with AsyncBroker.from_policy(policy, durable=True, clock=lambda: now[0]) as broker:
        a.fail(503)
        with pytest.raises(Exception):
            await broker.chat(model="llama-3.1-8b", messages=MSG)
        now[0] += 11  # half-open: the next call is the probe
        a.delay(0.5)
        task = asyncio.create_task(broker.chat(model="llama-3.1-8b", messages=MSG))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert broker.meter.ledger.count() == len(a.requests) == 2  # the cancelled attempt is metered
        await asyncio.sleep(0.4)
        reply = await broker.chat(model="llama-3.1-8b", messages=MSG)  # the probe was given back
        assert reply.route.id == "a"


def test_the_retry_budget_is_spent_only_on_retries_that_happen(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    a, b = two
    a.fail(503, times=100)
    policy = policy_dict([priced(a, "a", 0.1), priced(b, "b", 0.9)], tmp=tmp_path,
                         circuit={"failure_threshold": 1000, "window_s": 60, "cooldown_s": 30})
    with Broker.from_policy(policy, sleep=lambda s: None) as broker:
        broker.chat(model="llama-3.1-8b", messages=MSG)
        assert len(a.requests) == 3
        assert broker._core.executor.budget.tokens("a") == 10 - 2


def test_retries_stop_once_the_failures_open_the_circuit(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    a, b = two
    a.fail(503, times=100)
    policy = policy_dict([priced(a, "a", 0.1), priced(b, "b", 0.9)], tmp=tmp_path,
                         circuit={"failure_threshold": 2, "window_s": 60, "cooldown_s": 30},
                         retry={"max_attempts_per_route": 5})
    with Broker.from_policy(policy, sleep=lambda s: None) as broker:
        assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "b"
    assert len(a.requests) == 2  # not 5: the second failure opened the circuit


@pytest.mark.parametrize("on_exceed", ["alert", "downgrade"])
def test_alert_and_downgrade_tenants_are_not_refused_near_their_limit(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator], on_exceed: str
) -> None:
    a, _ = two
    budget: dict[str, Any] = {"monthly_usd": 1, "on_exceed": on_exceed}
    if on_exceed == "downgrade":
        budget["downgrade_to"] = "llama-3.1-8b"
    tenants = {"default": {"residency": ["on-prem"], "budget": budget}}
    with Broker.from_policy(policy_dict([priced(a, "a", 100.0)], tenants, tmp=tmp_path)) as broker:
        broker._core.router.spend = FixedSpend("0.9999")  # $0.0001 left, the call would cost more
        assert [r.id for r in broker.route(model="llama-3.1-8b", messages=MSG, max_tokens=1000).routes] == ["a"]


@pytest.mark.parametrize("written", [False, "false", "no", 0, "${A_ENABLED:-false}"])
def test_a_route_can_be_disabled_however_false_is_written(
    tmp_path: Path, two: tuple[OpenAICompatEmulator, OpenAICompatEmulator], written: object
) -> None:
    a, b = two
    policy = load_policy(policy_dict([priced(a, "a", 0.1, enabled=written), priced(b, "b", 0.9)]), env={})
    assert [r.id for r in policy.routes] == ["b"]


def test_a_downgrade_target_outside_the_tenants_models_is_refused_at_load(
    two: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    a, b = two
    big = priced(a, "big", 1.0, model="llama-3.3-70b", model_id="m70")
    tenants = {"default": {"residency": ["on-prem"], "models": {"allow": ["llama-3.3-70b"]},
                           "budget": {"monthly_usd": 1, "on_exceed": "downgrade", "downgrade_to": "llama-3.1-8b"}}}
    with pytest.raises(PolicyError, match="not in the tenant's models.allow"):
        load_policy(policy_dict([big, priced(b, "small", 0.1)], tenants))
