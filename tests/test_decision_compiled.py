"""The compiled decision agrees with the filters and the ranking rule it was compiled from.

The explanation of a decision runs every filter of `broker/policy/filters.py` in order on every
route, so checking the compiled routes against it (and against the ranking rule applied to the
explained candidates) checks the compiled path against the eager rule, over generated policies,
request shapes and health states.  The explanation is built when first read, from the figures
the call was decided with: later observations, opened circuits and a new day do not change it.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest

from broker.errors import NoEligibleRoute
from broker.health import CircuitBoard, LatencyTracker
from broker.policy import load_policy
from broker.policy.engine import Router
from broker.policy.ranking import rank
from broker.types import ChatRequest

MODEL = "llama-3.1-70b"
JURISDICTIONS = ["us", "eu", "uk", "jp", "global", "on-prem"]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
TODAY = dt.date(2030, 6, 1)
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def _now(day: dt.date = TODAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)


def generated(rng: random.Random, n_routes: int = 12, n_tenants: int = 20) -> dict[str, Any]:
    routes = []
    for i in range(n_routes):
        route: dict[str, Any] = {
            "id": f"r{i:02d}", "provider": "local", "model": MODEL, "model_id": f"m{i}",
            "endpoint": f"http://127.0.0.1:9/{i}/v1", "jurisdiction": rng.choice(JURISDICTIONS),
            "options": {"latency_prior": {"ttft_ms": rng.choice([100.0, 250.0, 250.0, 700.0]),
                                          "per_token_ms": rng.choice([2.0, 5.0, 5.0, 20.0])}},
        }
        if rng.random() < 0.9:  # a few routes have no known price
            route["price"] = {"input_per_mtok": rng.choice(["0.10", "0.20", "0.30", "0.15", "0.72", "0.1234567"]),
                              "output_per_mtok": rng.choice(["0.10", "0.20", "0.30", "0.45", "0.99"])}
        caps: dict[str, Any] = {}
        for key, value, p in (("tools", False, 0.2), ("vision", True, 0.3), ("json_mode", False, 0.2),
                              ("streaming", False, 0.15), ("streaming_tools", False, 0.2),
                              ("max_output_tokens", 300, 0.2), ("context_window", 60, 0.1),
                              ("max_temperature", 1.0, 0.2), ("seed", False, 0.15),
                              ("required_tool_choice", False, 0.15), ("named_tool_choice", False, 0.15)):
            if rng.random() < p:
                caps[key] = value
        if caps:
            route["capabilities"] = caps
        if rng.random() < 0.15:
            route["options"]["stream_fallback"] = False
        roll = rng.random()
        if roll < 0.1:
            route["lifecycle"] = {"status": "deprecated", "retires_on": "2030-06-02"}  # retires tomorrow
        elif roll < 0.15:
            route["lifecycle"] = {"status": "retired"}
        elif roll < 0.2:
            route["lifecycle"] = {"retires_on": "2030-07-15"}  # within the end-of-life warning
        routes.append(route)
    tenants: dict[str, Any] = {}
    for t in range(n_tenants):
        spec: dict[str, Any] = {"objective": rng.choice(["cost", "latency", "weighted"])}
        spec["residency"] = "any" if rng.random() < 0.3 else rng.sample(JURISDICTIONS, rng.randint(1, 4))
        if rng.random() < 0.3:
            spec["max_price_per_mtok"] = {"input": rng.choice(["0.15", "0.30"]), "output": "0.50"}
        if rng.random() < 0.3:
            spec["latency_slo_ms"] = rng.choice([{"p50": 1500}, {"p95": 1200}, {"p50": 3000, "p95": 2500}])
        if spec["objective"] == "weighted" and rng.random() < 0.5:
            spec["weights"] = {"cost": 0.8, "latency": 0.2}
        tenants[f"t{t:02d}"] = spec
    return {"version": 1, "routes": routes, "tenants": tenants}


def request_shapes(rng: random.Random) -> tuple[ChatRequest, bool]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "x" * rng.choice([10, 100, 300])}]
    if rng.random() < 0.2:
        messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, IMAGE]}]
    if rng.random() < 0.1:
        messages += [
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    params: dict[str, Any] = {}
    if rng.random() < 0.4:
        params["max_tokens"] = rng.choice([16, 64, 200, 400])
    if rng.random() < 0.3:
        params["tools"] = [TOOL]
        params["tool_choice"] = rng.choice(["auto", "required", "none",
                                            {"type": "function", "function": {"name": "lookup"}}])
    if rng.random() < 0.2:
        params["response_format"] = "json_object"
    if rng.random() < 0.2:
        params["temperature"] = rng.choice([0.5, 1.5])
    if rng.random() < 0.15:
        params["seed"] = 3
    return ChatRequest(model=MODEL, messages=messages, **params), rng.random() < 0.4


def disturb(rng: random.Random, policy: Any, latency: LatencyTracker, circuits: CircuitBoard) -> None:
    """Observe some calls and fail some routes, so live health differs from the priors."""
    for route in policy.routes:
        if rng.random() < 0.4:
            for _ in range(rng.randint(1, 12)):
                latency.observe(route, total_ms=rng.uniform(50, 4000), output_tokens=rng.randint(1, 300),
                                ttft_ms=rng.choice([None, rng.uniform(20, 400)]))
        if rng.random() < 0.2:
            for _ in range(circuits.failure_threshold):
                circuits.failure(route.id)


def check_agrees(decision: Any) -> None:
    explained = decision.candidates
    eligible = [c for c in explained if c.eligible]
    assert {c.route.id for c in eligible} == {r.id for r in decision.routes}
    reference = sorted((c for c in rank(explained, decision.objective, decision.tenant_policy.weights)
                        if c.eligible), key=lambda c: c.rank)
    assert [c.route.id for c in reference] == [r.id for r in decision.routes]
    assert [c.rank for c in sorted(eligible, key=lambda c: c.rank)] == list(range(1, len(eligible) + 1))
    assert all(c.rank is None for c in explained if not c.eligible)


@pytest.mark.parametrize("seed", range(12))
def test_compiled_routes_match_the_filters_and_the_ranking_rule(seed: int) -> None:
    rng = random.Random(seed)
    policy = load_policy(generated(rng))
    latency, circuits = LatencyTracker(), CircuitBoard(clock=lambda: 0.0)
    router = Router(policy, latency=latency, circuits=circuits, now=lambda: _now())
    refused = decided = 0
    for step in range(150):
        if step % 50 == 0:
            disturb(rng, policy, latency, circuits)
        request, stream = request_shapes(rng)
        tenant = rng.choice(sorted(policy.tenants))
        try:
            decision = router.decide(request, tenant, stream=stream)
        except NoEligibleRoute as exc:
            refused += 1
            assert exc.decision is not None and not exc.decision.routes
            assert exc.reasons == exc.decision.removed and all(c.removed_by for c in exc.decision.candidates)
            continue
        decided += 1
        check_agrees(decision)
    assert decided > 20 and refused > 5  # both outcomes were exercised


def test_the_explanation_says_what_was_seen_when_the_call_was_decided() -> None:
    rng = random.Random(99)
    doc = generated(rng, n_routes=10, n_tenants=5)
    for t in doc["tenants"].values():
        t.pop("max_price_per_mtok", None)
        t.pop("latency_slo_ms", None)
    doc["tenants"]["t00"]["residency"] = "any"
    doc["tenants"]["t00"]["latency_slo_ms"] = {"p50": 2500}

    def fresh() -> tuple[Router, LatencyTracker, CircuitBoard, Any]:
        policy = load_policy(doc)
        latency, circuits = LatencyTracker(), CircuitBoard(clock=lambda: 0.0)
        disturb(random.Random(5), policy, latency, circuits)
        return Router(policy, latency=latency, circuits=circuits, now=lambda: _now()), latency, circuits, policy

    request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=64)
    eager_router, *_ = fresh()
    eager = eager_router.decide(request, "t00").to_dict()  # explained at once
    lazy_router, latency, circuits, policy = fresh()
    decision = lazy_router.decide(request, "t00")
    for route in policy.routes:  # health moves on before anyone asks why
        latency.observe(route, total_ms=9000.0, output_tokens=10)
        if rng.random() < 0.5:
            circuits.success(route.id)
        else:
            for _ in range(5):
                circuits.failure(route.id)
    assert decision.to_dict() == eager
    assert "removed by" in decision.explain() and decision.routes


def test_a_route_retiring_tomorrow_is_dropped_when_the_day_changes() -> None:
    doc = {"version": 1, "routes": [
        {"id": "old", "provider": "local", "model": MODEL, "model_id": "m", "endpoint": "http://127.0.0.1:9/v1",
         "jurisdiction": "eu", "price": {"input_per_mtok": "0.01", "output_per_mtok": "0.01"},
         "lifecycle": {"status": "deprecated", "retires_on": "2030-06-02"}},
        {"id": "new", "provider": "local", "model": MODEL, "model_id": "m", "endpoint": "http://127.0.0.1:9/v1",
         "jurisdiction": "eu", "price": {"input_per_mtok": "0.50", "output_per_mtok": "0.50"}},
    ], "tenants": {"acme": {"residency": ["eu"]}}}
    day = [TODAY]
    router = Router(load_policy(doc), latency=LatencyTracker(), circuits=CircuitBoard(), now=lambda: _now(day[0]))
    request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    today = router.decide(request, "acme")
    assert [r.id for r in today.routes] == ["old", "new"]
    assert today.candidates[0].warnings == ("end of life 2030-06-02",)
    day[0] = TODAY + dt.timedelta(days=1)
    tomorrow = router.decide(request, "acme")
    assert [r.id for r in tomorrow.routes] == ["new"]
    assert {c.route.id: c.reason for c in tomorrow.candidates}["old"] == "retired (2030-06-02)"
    assert [r.id for r in today.routes] == ["old", "new"]  # an earlier decision keeps its own day


def test_exact_ties_in_cents_fall_to_latency_as_with_decimal_costs() -> None:
    """0.1 x n + 0.3 x n and 0.2 x n + 0.2 x n are equal; naive float sums can tell them apart."""
    def route(rid: str, price_in: str, price_out: str, ttft: float) -> dict[str, Any]:
        return {"id": rid, "provider": "local", "model": MODEL, "model_id": "m", "endpoint": "http://127.0.0.1:9/v1",
                "jurisdiction": "eu", "price": {"input_per_mtok": price_in, "output_per_mtok": price_out},
                "options": {"latency_prior": {"ttft_ms": ttft, "per_token_ms": 1.0}}}

    doc = {"version": 1, "routes": [route("a-slow", "0.1", "0.3", 500.0), route("b-fast", "0.2", "0.2", 100.0),
                                    route("c-dear", "0.2", "0.21", 50.0)],
           "tenants": {"acme": {"residency": ["eu"]}}}
    router = Router(load_policy(doc), latency=LatencyTracker(), circuits=CircuitBoard(), now=lambda: _now())
    for chars in (1, 8, 16, 20, 32, 48, 52, 76, 80, 128):  # prompts of 4 to 36 tokens
        messages = [{"role": "user", "content": "x" * chars}]
        tokens = ChatRequest(model=MODEL, messages=messages).estimated_input_tokens()
        request = ChatRequest(model=MODEL, messages=messages, max_tokens=tokens)
        decision = router.decide(request, "acme")
        costs = {c.route.id: c.estimated_cost_usd for c in decision.candidates}
        assert costs["a-slow"] == costs["b-fast"] < costs["c-dear"]
        assert [r.id for r in decision.routes] == ["b-fast", "a-slow", "c-dear"]
        assert all(isinstance(c, Decimal) for c in costs.values())


def test_a_circuit_that_opens_removes_its_route_and_says_so() -> None:
    doc = generated(random.Random(3), n_routes=4, n_tenants=1)
    doc["tenants"] = {"acme": {"residency": "any"}}
    for r in doc["routes"]:
        r.pop("capabilities", None)
        r.pop("lifecycle", None)
        r["price"] = {"input_per_mtok": "0.1", "output_per_mtok": "0.1"}
    now = [0.0]
    circuits = CircuitBoard(clock=lambda: now[0], cooldown_s=10.0)
    router = Router(load_policy(doc), latency=LatencyTracker(), circuits=circuits, now=lambda: _now())
    request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert not circuits.troubled and len(router.decide(request, "acme").routes) == 4
    for _ in range(circuits.failure_threshold):
        circuits.failure("r01")
    assert circuits.troubled
    decision = router.decide(request, "acme")
    assert "r01" not in [r.id for r in decision.routes]
    assert decision.removed == {"r01": "health: circuit open"}
    now[0] = 11.0  # past the cooldown: half-open, one probe allowed
    assert "r01" in [r.id for r in router.decide(request, "acme").routes]
    circuits.success("r01")
    assert not circuits.troubled
