"""Route quotas: a route at its provider quota is passed over before the provider has to say 429."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from test_rate_limits import HI, Clock

from broker import Broker
from broker.errors import RateLimited
from broker.testing import OpenAICompatEmulator

PRICE = {"cheapest": 0.05, "eu-quota": 0.1, "eu-next": 0.3}


@pytest.fixture
def emus() -> Iterator[dict[str, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as us, OpenAICompatEmulator() as quota, OpenAICompatEmulator() as nxt:
        yield {"cheapest": us, "eu-quota": quota, "eu-next": nxt}


def quota_policy(emus: dict[str, OpenAICompatEmulator], tmp: Path, **quota: Any) -> dict[str, Any]:
    def route(rid: str, jurisdiction: str, **extra: Any) -> dict[str, Any]:
        price = {"input_per_mtok": PRICE[rid], "output_per_mtok": PRICE[rid]}
        return local_route(emus[rid], rid, jurisdiction=jurisdiction, price=price, **extra)

    routes = [
        route("cheapest", "us"),  # the cheapest of all, but outside the tenant's residency
        route("eu-quota", "eu", **quota),
        route("eu-next", "eu"),
    ]
    return policy_dict(routes, {"acme": {"residency": ["eu"]}}, tmp, retry={"max_attempts_per_route": 1})


@pytest.mark.parametrize("step_s", [0.1, 0.3])  # 500 calls in 50 s (one minute), or in 150 s (2.5 minutes)
def test_a_burst_spills_past_a_route_at_its_quota_without_a_single_429(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path, step_s: float
) -> None:
    clock = Clock()
    emus["eu-quota"].quota(rpm=100, clock=lambda: clock.t)  # the provider's own count, on the same clock
    sent: list[tuple[float, str]] = []
    with Broker(quota_policy(emus, tmp_path, rpm=100), now=clock.now, sleep=clock.sleep) as broker:
        for _ in range(500):
            response = broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
            sent.append((clock.t, response.route.id))
            if response.route.id == "eu-next":
                failure = response.decision.failures[0]
                assert failure.route_id == "eu-quota" and "rpm quota of 100" in failure.reason
            clock.t += step_s
    by_route = Counter(rid for _, rid in sent)
    print(f"\n500 calls: {dict(by_route)}; emulator 429s: {emus['eu-quota'].quota_429s}")
    assert emus["eu-quota"].quota_429s == 0
    assert len(emus["cheapest"].requests) == 0  # nothing outside the tenant's residency
    quota_times = [t for t, rid in sent if rid == "eu-quota"]
    for i, start in enumerate(quota_times):  # at most 100 in any minute
        assert len([t for t in quota_times[i:] if t < start + 60]) <= 100
    if step_s == 0.1:  # all in one minute: exactly the quota to the route, the rest to the next
        assert by_route == {"eu-quota": 100, "eu-next": 400}
    else:  # its quota is used again each minute
        assert 200 <= by_route["eu-quota"] <= 300
    assert by_route["eu-quota"] + by_route["eu-next"] == 500
    assert len(emus["eu-quota"].requests) == by_route["eu-quota"]


@pytest.mark.parametrize(("quota", "expected_429s"), [({}, 5), ({"rpm": 1000}, 1)])
def test_without_the_right_quota_the_same_burst_meets_the_providers_429s(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path, quota: dict[str, int], expected_429s: int
) -> None:
    """No quota: the calls past 100 meet 429s until the route's circuit opens (5 failures).  A quota set
    too high: the provider's first 429 and its hint mark the route saturated, so it is the only one."""
    clock = Clock()
    emus["eu-quota"].quota(rpm=100, clock=lambda: clock.t)
    with Broker(quota_policy(emus, tmp_path, **quota), now=clock.now, sleep=clock.sleep) as broker:
        routes = Counter(broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme").route.id for _ in range(150))
    assert emus["eu-quota"].quota_429s == expected_429s
    assert routes == {"eu-quota": 100, "eu-next": 50}
    assert len(emus["cheapest"].requests) == 0


def test_a_429_with_a_hint_saturates_the_route_for_that_long(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    clock = Clock()
    with Broker(quota_policy(emus, tmp_path, rpm=1000), now=clock.now, sleep=clock.sleep) as broker:
        emus["eu-quota"].fail(429, retry_after=20)
        assert broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme").route.id == "eu-next"
        clock.t += 19
        passed = broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        assert passed.route.id == "eu-next" and "saturated" in passed.decision.failures[0].reason
        clock.t += 1.5
        assert broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme").route.id == "eu-quota"
    assert len(emus["eu-quota"].requests) == 2


def test_a_route_tpm_quota_counts_the_estimate_then_the_actual_tokens(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    clock = Clock()
    with Broker(quota_policy(emus, tmp_path, tpm=600), now=clock.now, sleep=clock.sleep) as broker:
        picks = [broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme", max_tokens=250).route.id
                 for _ in range(6)]
        # ~260 tokens reserved each, ~30 used: settled calls leave room for more than two
        assert picks.count("eu-quota") > 2
        big = broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme", max_tokens=700)
        assert big.route.id == "eu-next" and "exceed" not in big.decision.failures[0].reason
        assert "whole tpm quota" in big.decision.failures[0].reason


def test_when_every_eligible_route_is_at_its_quota_the_caller_gets_rate_limited(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    clock = Clock()
    policy = quota_policy(emus, tmp_path, rpm=1)
    policy["routes"][2]["rpm"] = 1
    with Broker(policy, now=clock.now) as broker:
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        with pytest.raises(RateLimited) as info:
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        assert info.value.scope == "route:eu-quota" and 0 < info.value.retry_after <= 61
    assert len(emus["cheapest"].requests) == 0
