"""Spreading: near-best routes share a tenant's calls, picked the same way every time for the same request."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import Broker
from broker.limits.spreading import near_best, pick
from broker.testing import OpenAICompatEmulator

#: route id -> (price per Mtok, rpm quota); `far` is well outside the tolerance
ROUTES = {"a": (0.100, 100), "b": (0.104, 300), "c": (0.107, None), "far": (0.500, 1000)}


@pytest.fixture
def emus() -> Iterator[dict[str, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b, OpenAICompatEmulator() as c, \
            OpenAICompatEmulator() as far:
        yield {"a": a, "b": b, "c": c, "far": far}


def spread_policy(emus: dict[str, OpenAICompatEmulator], tmp: Path, name: str, spread: Any) -> dict[str, Any]:
    routes = []
    for rid, (price, rpm) in ROUTES.items():
        extra: dict[str, Any] = {"price": {"input_per_mtok": price, "output_per_mtok": price}}
        if rpm:
            extra["rpm"] = rpm
        routes.append(local_route(emus[rid], rid, **extra))
    tenant: dict[str, Any] = {"residency": ["on-prem"]}
    if spread is not None:
        tenant["spread"] = spread
    policy = policy_dict(routes, {"acme": tenant}, tmp)
    policy["ledger"] = f"sqlite:///{tmp / name}"
    return policy


def recorded_requests(tmp: Path, n: int) -> Path:
    """A file of recorded requests, as a replay reads them."""
    path = tmp / "recorded.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"question {i}: how far is {i * 7} km?"}],
                                "max_tokens": 64 + i % 3}) + "\n")
    return path


def replay(policy: dict[str, Any], path: Path) -> list[str]:
    with Broker(policy) as broker:
        picked = []
        for line in path.read_text().splitlines():
            call = json.loads(line)
            response = broker.chat(model="llama-3.1-8b", tenant="acme", **call)
            assert response.decision.routes[0].id == response.route.id
            picked.append(response.route.id)
        return picked


def test_two_replays_of_the_same_recorded_requests_pick_the_same_routes(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    recorded = recorded_requests(tmp_path, 120)
    first = replay(spread_policy(emus, tmp_path, "one.db", {"tolerance": 0.1}), recorded)
    second = replay(spread_policy(emus, tmp_path, "two.db", {"tolerance": 0.1}), recorded)
    assert first == second
    shares = Counter(first)
    print(f"\nspread over 120 recorded requests: {dict(shares)}")
    assert set(shares) == {"a", "b", "c"}  # spread among the near-best; `far` is never first
    assert shares["a"] < shares["b"]  # rpm 100 against 300 (and c counts as 300)


def test_explain_names_the_route_the_call_goes_to_and_why(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    with Broker(spread_policy(emus, tmp_path, "u.db", {"tolerance": 0.1})) as broker:
        for i in range(10):
            messages = [{"role": "user", "content": f"tell me {i}"}]
            explained = broker.route(model="llama-3.1-8b", messages=messages, tenant="acme")
            answer = broker.chat(model="llama-3.1-8b", messages=messages, tenant="acme")
            assert explained.routes[0].id == answer.route.id
            assert explained.spread is not None and explained.spread.startswith(f"spread: {answer.route.id} picked")
            assert "from 3 routes within 0.1" in explained.spread
            assert explained.to_dict()["spread"] == explained.spread and explained.spread in explained.explain()
            assert [c.rank for c in explained.candidates if c.eligible and c.route.id == answer.route.id] == [1]


def test_without_spreading_every_call_goes_to_the_best_route(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    picked = replay(spread_policy(emus, tmp_path, "u.db", None), recorded_requests(tmp_path, 20))
    assert set(picked) == {"a"}


def test_a_zero_tolerance_spreads_only_among_equal_scores(
    emus: dict[str, OpenAICompatEmulator], tmp_path: Path
) -> None:
    picked = replay(spread_policy(emus, tmp_path, "u.db", {"tolerance": 0}), recorded_requests(tmp_path, 20))
    assert set(picked) == {"a"}


def test_the_near_best_group_and_the_weighted_pick() -> None:
    assert near_best([1.0, 1.05, 1.2, float("inf")], 0.1) == [0, 1]
    assert near_best([float("inf"), float("inf")], 0.5) == []
    draws = Counter(pick(i.to_bytes(4, "big"), ["x", "y"], [1.0, 3.0]) for i in range(4000))
    assert 0.2 < draws[0] / 4000 < 0.3  # shares follow the weights
    assert pick(b"seed", ["x", "y"], [1.0, 3.0]) == pick(b"seed", ["x", "y"], [1.0, 3.0])
