"""The compiled explanation says exactly what the filters, run in order on every route, say.

`Decision.candidates` is built from the plan's verdicts and the figures the decision ranked by;
`explain_eagerly` runs every filter of `broker/policy/filters.py` on every route and ranks with
`ranking.rank`.  The two are compared field by field (costs by their `Decimal` spelling too) over
generated policies, request shapes, health states, spreading and budgets, and the compiled one
is checked to be built without falling back to the eager rule.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from test_decision_compiled import MODEL, _now, disturb, generated, request_shapes

from broker.audit.decisions import document_json
from broker.errors import NoEligibleRoute
from broker.health import CircuitBoard, LatencyTracker
from broker.policy import load_policy
from broker.policy.compiled import PlanEntry, health_now, survivors
from broker.policy.decision import Candidate, Decision
from broker.policy.engine import Router
from broker.policy.explanation import Explanation, explain_eagerly
from broker.policy.filters import needs_of
from broker.policy.ranking import order_rows
from broker.routes import Price, Route
from broker.types import ChatRequest


def fields(candidates: tuple[Candidate, ...]) -> list[tuple[Any, ...]]:
    return [(c.route.id, c.removed_by, c.reason, str(c.estimated_cost_usd), c.predicted_latency_ms, c.score, c.rank,
             c.warnings) for c in candidates]


EAGER = Explanation.eager  # the rule itself, kept while `no_fallback` takes it away from the compiled path


def same_as_eager(decision: Decision) -> None:
    fast = decision.candidates
    assert isinstance(decision._explain, Explanation)
    eager = EAGER(decision._explain, decision)
    assert fast == eager
    assert fields(fast) == fields(eager)
    assert all(a.route is b.route for a, b in zip(fast, eager, strict=True))


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled explanation is built without the eager rule (it falls back only on a disagreement)."""
    def refuse(self: Explanation, decision: Decision) -> tuple[Candidate, ...]:
        raise AssertionError("the compiled explanation fell back to the eager rule")
    monkeypatch.setattr(Explanation, "eager", refuse)


def with_spreading(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    for spec in doc["tenants"].values():
        if rng.random() < 0.3:
            spec["spread"] = {"tolerance": rng.choice([0.05, 0.5, 2.0])}
    return doc


@pytest.mark.parametrize("seed", range(16))
def test_the_compiled_explanation_equals_the_eager_one(seed: int, no_fallback: None) -> None:
    rng = random.Random(1000 + seed)
    policy = load_policy(with_spreading(generated(rng), rng))
    latency, circuits = LatencyTracker(), CircuitBoard(clock=lambda: 0.0)
    router = Router(policy, latency=latency, circuits=circuits, now=lambda: _now())
    decided = refused = 0
    for step in range(160):
        if step % 40 == 0:
            disturb(rng, policy, latency, circuits)
        request, stream = request_shapes(rng)
        try:
            decision = router.decide(request, rng.choice(sorted(policy.tenants)), stream=stream)
        except NoEligibleRoute as exc:
            assert exc.decision is not None
            same_as_eager(exc.decision)
            refused += 1
            continue
        decided += 1
        same_as_eager(decision)
        assert document_json(decision, None, None).count('"route":') == len(policy.routes)
    assert decided > 20 and refused > 5


def test_temperature_is_judged_before_tool_choice_and_seed() -> None:
    route = {"id": "cool", "provider": "local", "model": MODEL, "model_id": "m", "endpoint": "http://127.0.0.1:9/v1",
             "jurisdiction": "eu", "capabilities": {"max_temperature": 1.0, "seed": False, "vision": False}}
    doc = {"version": 1, "routes": [route, {**route, "id": "warm", "capabilities": {}}],
           "tenants": {"acme": {"residency": ["eu"]}}}
    router = Router(load_policy(doc), latency=LatencyTracker(), circuits=CircuitBoard(), now=lambda: _now())
    said = {}
    for params in ({"temperature": 1.5, "seed": 1}, {"temperature": 0.5, "seed": 1}, {"seed": 1}):
        request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}], **params)
        decision = router.decide(request, "acme")
        same_as_eager(decision)
        assert explain_eagerly(decision) == decision.candidates
        said[str(params)] = decision.removed["cool"]
    assert list(said.values()) == ["capabilities: temperature 1.5 > 1.0", "capabilities: no seed support",
                                   "capabilities: no seed support"]


def test_a_budget_filter_in_the_explanation_says_what_the_budget_filter_says(no_fallback: None) -> None:
    """The router's budget acts at the reservation (its `remaining` is None); an explanation given a
    remaining amount still judges each route as the budget filter does."""
    rng = random.Random(21)
    doc = generated(rng, n_routes=10, n_tenants=6)
    policy = load_policy(doc)
    latency, circuits = LatencyTracker(), CircuitBoard(clock=lambda: 0.0)
    disturb(rng, policy, latency, circuits)
    router = Router(policy, latency=latency, circuits=circuits, now=lambda: _now())
    removed_by_budget = 0
    for step in range(120):
        request, stream = request_shapes(rng)
        tenant = policy.tenant(rng.choice(sorted(policy.tenants)))
        remaining = Decimal(rng.choice(["0.000001", "0.00001", "0.0001", "1"]))
        plan = router._plan(tenant, MODEL, dt.date(2030, 6, 1))
        needs = needs_of(request, stream)
        snapshot = latency.snapshot()
        health = health_now(circuits)
        kept = survivors(plan.for_needs(needs), max_tokens=request.max_tokens, temperature=request.temperature,
                         input_tokens=request.estimated_input_tokens(), health=health, latency=snapshot.published,
                         tenant=tenant, budget_remaining_usd=remaining, latency_first=tenant.objective == "latency")
        best, scores = order_rows(kept, tenant.objective, tenant.weights)
        explanation = Explanation(plan, needs, request, tenant=tenant, stream=stream,
                                  estimated_in=request.estimated_input_tokens(), latency=snapshot, health=health,
                                  remaining=remaining, best=best, scores=scores)
        decision = Decision(tenant=tenant.name, model=MODEL, objective=tenant.objective, tenant_policy=tenant,
                            routes=tuple(row[4] for row in best), explain=explanation)
        same_as_eager(decision)
        removed_by_budget += sum(c.removed_by == "budget" for c in decision.candidates)
    assert removed_by_budget > 10


PRICES = ["0", "1", "2.50", "0.10", "0.1234567", "0.72", "15", "0.000001", "3.0000", "1E+1", "12345.678901"]


@pytest.mark.parametrize("cached", [None, "0.05"])
def test_the_plan_s_decimal_cost_is_price_cost_to_the_last_digit(cached: str | None) -> None:
    rng = random.Random(5)
    for price_in in PRICES:
        for price_out in PRICES:
            price = Price(input_per_mtok=Decimal(price_in), output_per_mtok=Decimal(price_out),
                          cached_input_per_mtok=None if cached is None else Decimal(cached))
            entry = PlanEntry(Route(id="r", provider="local", model=MODEL, model_id="m", jurisdiction="eu",
                                    price=price))
            for tokens_in, tokens_out in [(0, 0), (1, 0), (0, 1), (1, 1), (1_000_000, 10)] + [
                (rng.randrange(0, 10**7), rng.randrange(0, 10**5)) for _ in range(30)
            ]:
                expected = price.cost(tokens_in, tokens_out)
                got = entry.decimal_cost(tokens_in, tokens_out)
                assert got is not None
                assert (str(got), got.as_tuple()) == (str(expected), expected.as_tuple()), (price_in, price_out)


def test_a_route_without_a_price_has_no_decimal_cost() -> None:
    entry = PlanEntry(Route(id="r", provider="local", model=MODEL, model_id="m", jurisdiction="eu"))
    assert entry.decimal_cost(10, 10) is None
