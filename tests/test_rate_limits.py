"""Tenant and group rate limits, in-process: requests and tokens per minute on a controllable clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import AsyncBroker, Broker
from broker.errors import PolicyError, RateLimited
from broker.limits import MemoryWindows, Refused, Take
from broker.testing import OpenAICompatEmulator

HI = [{"role": "user", "content": "hello there"}]


class Clock:
    """Wall time the test moves by hand; `sleep` moves it too, and remembers how long it slept."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t
        self.slept: list[float] = []

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t, dt.timezone.utc)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as e:
        yield e


def limited_broker(emu: Any, tmp_path: Path, clock: Clock, rate_limit: dict[str, Any] | None = None,
                   cls: type = Broker, **top: Any) -> Any:
    tenants = {"acme": {"residency": ["on-prem"], **({"rate_limit": rate_limit} if rate_limit else {})},
               "beta": {"residency": ["on-prem"]}}
    policy = policy_dict([local_route(emu)], tenants, tmp_path, **top)
    return cls(policy, now=clock.now, sleep=clock.sleep, asleep=clock.asleep)


# --------------------------------------------------------------------------- the window itself


def test_a_window_admits_its_limit_then_says_when_the_oldest_slot_leaves() -> None:
    w, t0 = MemoryWindows(), 1000.0
    for i in range(3):
        assert not isinstance(w.take([Take("k", 3, 1)], (), t0 + i * 10), Refused)
    refused = w.take([Take("k", 3, 1)], (), t0 + 25)
    assert isinstance(refused, Refused) and refused.index == 0
    assert refused.wait_s == pytest.approx(1000 + 1 + 60 - 1025)  # the first slot ends at 1001, counts 60 s more
    assert isinstance(w.take([Take("k", 3, 1)], (), t0 + 60.5), Refused)  # still inside its slot's minute
    assert not isinstance(w.take([Take("k", 3, 1)], (), t0 + 61), Refused)


def test_no_sixty_second_span_ever_admits_more_than_the_limit() -> None:
    w, admitted = MemoryWindows(), []
    t = 0.0
    while t < 400:
        if not isinstance(w.take([Take("k", 50, 1)], (), t), Refused):
            admitted.append(t)
        t += 0.37
    for i, start in enumerate(admitted):
        in_span = [a for a in admitted[i:] if a < start + 60]
        assert len(in_span) <= 50
    assert len(admitted) >= 50 * 400 // 61  # and it gives capacity back as the window slides


def test_a_take_over_several_windows_is_all_or_nothing() -> None:
    w = MemoryWindows()
    assert not isinstance(w.take([Take("rpm", 10, 1), Take("tpm", 100, 90)], (), 0.0), Refused)
    refused = w.take([Take("rpm", 10, 1), Take("tpm", 100, 20)], (), 1.0)
    assert isinstance(refused, Refused) and refused.index == 1
    held = w.take([Take("rpm", 10, 9)], (), 2.0)  # the refused take added nothing to rpm
    assert not isinstance(held, Refused)


def test_settling_gives_back_what_an_estimate_took_too_much_of() -> None:
    w = MemoryWindows()
    held = w.take([Take("tpm", 100, 90)], (), 0.0)
    assert not isinstance(held, Refused)
    assert isinstance(w.take([Take("tpm", 100, 20)], (), 1.0), Refused)
    w.adjust(held[0], -80, 1.5)  # the call used 10 tokens, not 90
    assert not isinstance(w.take([Take("tpm", 100, 20)], (), 2.0), Refused)


def test_an_amount_larger_than_the_limit_is_refused_as_never_fitting() -> None:
    refused = MemoryWindows().take([Take("tpm", 100, 101)], (), 0.0)
    assert isinstance(refused, Refused) and refused.never


# --------------------------------------------------------------------------- through the broker


def test_a_tenant_over_its_rpm_is_refused_with_the_retry_time_and_no_provider_call(
    emu: OpenAICompatEmulator, tmp_path: Path
) -> None:
    clock = Clock()
    with limited_broker(emu, tmp_path, clock, {"rpm": 3}) as broker:
        for _ in range(3):
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
            clock.t += 5
        with pytest.raises(RateLimited) as info:
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        err = info.value
        assert (err.limit, err.scope) == ("rpm", "tenant:acme")
        assert err.retry_after == pytest.approx(61 - 15, abs=1.0)
        assert len(emu.requests) == 3
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="beta")  # another tenant is not limited
        clock.t += err.retry_after
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")  # admitted once the window moved
        assert len(emu.requests) == 5


def test_tokens_are_reserved_from_the_estimate_and_settled_to_the_actual_usage(
    emu: OpenAICompatEmulator, tmp_path: Path
) -> None:
    clock = Clock()
    with limited_broker(emu, tmp_path, clock, {"tpm": 1000}) as broker:
        # estimate ~ 900 output + the prompt: a second such call would not fit, unless the first is settled
        first = broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme", max_tokens=900)
        assert first.usage.total_tokens < 100
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme", max_tokens=900)
        with pytest.raises(RateLimited) as info:
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme", max_tokens=999)
        assert info.value.limit == "tpm"
        with pytest.raises(RateLimited, match="exceed the whole tpm limit"):
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme", max_tokens=5000)
    assert len(emu.requests) == 2


def test_a_call_over_the_limit_waits_up_to_wait_s_then_goes(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    clock = Clock()
    with limited_broker(emu, tmp_path, clock, {"rpm": 1, "wait_s": 90}) as broker:
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        clock.t += 10
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
    assert sum(clock.slept) == pytest.approx(51, abs=1.0)  # queued until the first call's slot left the window
    assert len(emu.requests) == 2


def test_a_wait_longer_than_wait_s_is_refused_at_once(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    clock = Clock()
    with limited_broker(emu, tmp_path, clock, {"rpm": 1, "wait_s": 5}) as broker:
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        with pytest.raises(RateLimited, match="waited 5 s at most"):
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
    assert clock.slept == []


async def test_async_calls_wait_off_the_event_loop_and_are_limited_alike(
    emu: OpenAICompatEmulator, tmp_path: Path
) -> None:
    clock = Clock()
    async with limited_broker(emu, tmp_path, clock, {"rpm": 2, "wait_s": 120}, cls=AsyncBroker) as broker:
        assert broker._core.limits.blocking  # a hook that may sleep runs in a worker thread
        for _ in range(3):
            await broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
    assert len(emu.requests) == 3 and sum(clock.slept) == pytest.approx(61, abs=1.0)


def test_a_call_that_reaches_no_route_gives_its_request_back(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    clock = Clock()
    policy = policy_dict([local_route(emu, rpm=1)], {"acme": {"residency": ["on-prem"], "rate_limit": {"rpm": 2}}},
                         tmp_path)
    with Broker(policy, now=clock.now, sleep=clock.sleep) as broker:
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        for _ in range(3):  # the only route is at its quota: refused before any provider call
            with pytest.raises(RateLimited) as info:
                broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
            assert info.value.scope == "route:local-a"
        limits = broker._core.limits
        # the tenant's window holds the one call that went out, not the three refused ones
        assert not isinstance(limits.windows.take([Take(limits.key("tenant:acme", "rpm"), 2, 1)], (), clock.t),
                              Refused)
    assert len(emu.requests) == 1


def test_group_members_share_the_groups_limit(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    clock = Clock()
    tenants = {"a": {"residency": ["on-prem"]}, "b": {"residency": ["on-prem"]}, "c": {"residency": ["on-prem"]}}
    groups = {"team": {"tenants": ["a", "b"], "rate_limit": {"rpm": 2}}}
    policy = policy_dict([local_route(emu)], tenants, tmp_path, groups=groups)
    with Broker(policy, now=clock.now, sleep=clock.sleep) as broker:
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="a")
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="b")
        with pytest.raises(RateLimited) as info:
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="a")
        assert info.value.scope == "group:team"
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="c")  # not a member


def test_a_policy_without_limits_adds_no_hook(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    with Broker(policy_dict([local_route(emu)], tmp=tmp_path)) as broker:
        assert broker._core.limits is None


@pytest.mark.parametrize(
    ("tenant", "top", "message"),
    [
        ({"rate_limit": {"wait_s": 3}}, {}, "needs rpm or tpm"),
        ({"rate_limit": {"rpm": 0}}, {}, "greater than 0"),
        ({"rate_limit": {"rpm": 10, "burst": 3}}, {}, "burst"),
        ({}, {"limits": {"store": "memcached://x"}}, "limits.store must be"),
    ],
)
def test_bad_limits_in_a_policy_are_policy_errors(tenant: dict[str, Any], top: dict[str, Any], message: str,
                                                  tmp_path: Path) -> None:
    policy = policy_dict([local_route(type("E", (), {"url": "http://127.0.0.1:9"})())],
                         {"acme": {"residency": ["on-prem"], **tenant}}, tmp_path, **top)
    with pytest.raises(PolicyError, match=message):
        Broker(policy)
