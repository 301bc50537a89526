"""Rate windows in a real Redis server: the same rules as in-process, atomic across clients and brokers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from redis_fixtures import *  # noqa: F403  (the Redis server fixtures)
from test_rate_limits import HI, Clock

from broker import Broker
from broker.errors import RateLimited
from broker.limits import MemoryWindows, Refused, Take, Windows
from broker.limits.redis_store import RedisWindows
from broker.testing import OpenAICompatEmulator


@pytest.fixture(params=["memory", "redis"])
def windows(request: pytest.FixtureRequest) -> Iterator[Windows]:
    if request.param == "memory":
        yield MemoryWindows()
        return
    store = RedisWindows(request.getfixturevalue("redis_url"))
    yield store
    store.close()


def test_both_stores_admit_the_limit_and_name_the_same_wait(windows: Windows) -> None:
    t0 = 5000.0
    for i in range(3):
        assert not isinstance(windows.take([Take("{t}:k", 3, 1)], (), t0 + i * 10), Refused)
    refused = windows.take([Take("{t}:k", 3, 1)], (), t0 + 25)
    assert isinstance(refused, Refused) and refused.key == "{t}:k"
    assert refused.wait_s == pytest.approx(36.0, abs=0.01)
    assert isinstance(windows.take([Take("{t}:k", 3, 1)], (), t0 + 60.5), Refused)
    assert not isinstance(windows.take([Take("{t}:k", 3, 1)], (), t0 + 61), Refused)


def test_both_stores_take_all_or_nothing_and_settle(windows: Windows) -> None:
    held = windows.take([Take("{t}:rpm", 10, 1), Take("{t}:tpm", 100, 90)], (), 0.0)
    assert not isinstance(held, Refused)
    refused = windows.take([Take("{t}:rpm", 10, 1), Take("{t}:tpm", 100, 20)], (), 1.0)
    assert isinstance(refused, Refused) and refused.index == 1
    assert not isinstance(windows.take([Take("{t}:rpm", 10, 9)], (), 2.0), Refused)  # rpm still had 9 free
    windows.adjust(held[1], -80, 2.5)
    assert not isinstance(windows.take([Take("{t}:tpm", 100, 20)], (), 3.0), Refused)
    never = windows.take([Take("{t}:tpm", 100, 101)], (), 3.0)
    assert isinstance(never, Refused) and never.never


def test_both_stores_keep_a_saturation_mark_until_its_time_and_never_shorten_it(windows: Windows) -> None:
    windows.mark("{t}:sat", 130.0, 100.0)
    windows.mark("{t}:sat", 110.0, 101.0)  # a shorter hint does not shorten the mark
    refused = windows.take([Take("{t}:k", 5, 1)], ("{t}:sat",), 120.0)
    assert isinstance(refused, Refused) and refused.index == -1 and refused.wait_s == pytest.approx(10.0)
    assert not isinstance(windows.take([Take("{t}:k", 5, 1)], ("{t}:sat",), 130.5), Refused)


def test_many_clients_at_once_never_take_more_than_the_limit(redis_url: str) -> None:
    admitted: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        store = RedisWindows(redis_url)  # each thread its own connection, as separate processes have
        mine = 0
        for _ in range(60):
            if not isinstance(store.take([Take("{t}:race", 100, 1), Take("{t}:race-tpm", 10_000, 7)], (), 1.0),
                              Refused):
                mine += 1
        with lock:
            admitted.append(mine)
        store.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 100  # 480 tries, exactly the limit admitted: no read-modify-write race


@pytest.fixture
def two_routes() -> Iterator[tuple[OpenAICompatEmulator, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as cheap, OpenAICompatEmulator() as dear:
        yield cheap, dear


def _policy(cheap: Any, dear: Any, url: str, tmp: Path, **tenant: Any) -> dict[str, Any]:
    routes = [
        local_route(cheap, "cheap", price={"input_per_mtok": 0.1, "output_per_mtok": 0.1}, rpm=1000),
        local_route(dear, "dear", price={"input_per_mtok": 0.5, "output_per_mtok": 0.5}),
    ]
    tenants = {"acme": {"residency": ["on-prem"], **tenant}}
    return policy_dict(routes, tenants, tmp, limits={"store": url, "key_prefix": "test"},
                       retry={"max_attempts_per_route": 1})


def test_a_429_hint_seen_by_one_broker_saturates_the_route_for_every_broker(
    two_routes: tuple[OpenAICompatEmulator, OpenAICompatEmulator], redis_url: str, tmp_path: Path
) -> None:
    cheap, dear = two_routes
    clock = Clock()
    policy = _policy(cheap, dear, redis_url, tmp_path)
    with Broker(policy, now=clock.now, sleep=clock.sleep) as one, \
            Broker(policy, now=clock.now, sleep=clock.sleep, ledger=f"sqlite:///{tmp_path / 'b.db'}") as two:
        cheap.fail(429, retry_after=30)
        first = one.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        assert first.route.id == "dear"  # the 429 failed over
        clock.t += 5
        second = two.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        assert second.route.id == "dear" and len(cheap.requests) == 1  # the other broker never tried it
        failure = second.decision.failures[0]
        assert failure.route_id == "cheap" and "saturated" in failure.reason
        assert isinstance(failure.error, RateLimited) and failure.error.retry_after == pytest.approx(25, abs=0.01)
        clock.t += 26
        assert two.chat(model="llama-3.1-8b", messages=HI, tenant="acme").route.id == "cheap"


def test_two_brokers_share_one_tenant_limit(
    two_routes: tuple[OpenAICompatEmulator, OpenAICompatEmulator], redis_url: str, tmp_path: Path
) -> None:
    cheap, dear = two_routes
    clock = Clock()
    policy = _policy(cheap, dear, redis_url, tmp_path, rate_limit={"rpm": 4})
    with Broker(policy, now=clock.now) as one, Broker(policy, now=clock.now,
                                                      ledger=f"sqlite:///{tmp_path / 'b.db'}") as two:
        for broker in (one, two, one, two):
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        with pytest.raises(RateLimited):
            two.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
        with pytest.raises(RateLimited):
            one.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
    assert len(cheap.requests) == 4
