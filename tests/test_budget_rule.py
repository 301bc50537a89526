"""The budget rule through a real broker: one comparison for block, downgrade and alert, three scopes,
the tightest limit named, settled spend kept in the store beside the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route

from broker import AsyncBroker, Broker, BudgetExceeded, PolicyError
from broker.metering import UsageEvent, new_event_id, open_ledger
from broker.policy import load_policy
from broker.policy.budget import upper_bound_cost, upper_bound_input_tokens
from broker.testing import OpenAICompatEmulator
from broker.testing.groq import GroqEmulator
from broker.types import ChatRequest

MSG = [{"role": "user", "content": "Hello, how much does this cost?"}]
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)
PRICE = {"input_per_mtok": "400", "output_per_mtok": "400"}  # about $0.011 a call, $0.03 reserved


@pytest.fixture
def emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as server:
        yield server


def policy(emu: OpenAICompatEmulator, tmp: Path, tenants: dict[str, Any], **top: Any) -> dict[str, Any]:
    big = local_route(emu, "big", model="llama-3.3-70b", model_id="big", price=PRICE)
    small = local_route(emu, "small", price={"input_per_mtok": "40", "output_per_mtok": "40"})
    for t in tenants.values():
        t.setdefault("residency", ["on-prem"])
    return {"version": 1, "ledger": f"sqlite:///{tmp / 'usage.db'}", "routes": [big, small], "tenants": tenants, **top}


def chat(broker: Broker, tenant: str = "acme", model: str = "llama-3.3-70b") -> Any:
    return broker.chat(model=model, messages=MSG, tenant=tenant, max_tokens=20)


def spend_event(tenant: str, cost: str, provider: str = "local") -> UsageEvent:
    return UsageEvent(
        event_id=new_event_id(), request_id="seed", attempt=1, tenant=tenant, tags={}, model="llama-3.1-8b",
        provider=provider, region=None, jurisdiction="on-prem", model_id="m", route_id="seed",
        input_tokens=1, output_tokens=1, cached_input_tokens=0, usage_estimated=False,
        cost_usd=Decimal(cost), price_version="seed", latency_ms=1.0, ttft_ms=None, status="ok",
        error_kind=None, timestamp=NOW, policy_version="seed",
    )


# --------------------------------------------------------------------------- the estimate


def test_the_reservation_is_an_upper_bound_of_the_metered_cost(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    p = load_policy(policy(emu, tmp_path, {"acme": {}}))
    route = p.route("big")
    request = ChatRequest(model="llama-3.3-70b", messages=MSG, max_tokens=20)
    with Broker.from_policy(p) as broker:
        reply = chat(broker)
    assert reply.usage.input_tokens <= upper_bound_input_tokens(request)
    assert reply.cost_usd is not None and reply.cost_usd <= upper_bound_cost(route, request)
    unbounded = ChatRequest(model="llama-3.3-70b", messages=MSG)  # no max_tokens: the route's maximum output
    assert upper_bound_cost(route, unbounded) == route.price.cost(  # type: ignore[union-attr]
        upper_bound_input_tokens(unbounded), route.capabilities.max_output_tokens)
    wide = ChatRequest(model="llama-3.3-70b", messages=[{"role": "user", "content": "é" * 10}])
    assert upper_bound_input_tokens(wide) >= 20  # bytes, not characters
    huge = ChatRequest(model="llama-3.3-70b", messages=[{"role": "user", "content": "x" * 300_000}], max_tokens=1)
    assert upper_bound_cost(route, huge) == route.price.cost(route.capabilities.context_window, 1)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- one rule for every mode


@pytest.mark.parametrize("mode", ["block", "downgrade", "alert"])
def test_every_mode_judges_the_first_call_of_a_tiny_budget_alike(
    emu: OpenAICompatEmulator, tmp_path: Path, mode: str
) -> None:
    budget: dict[str, Any] = {"monthly_usd": "0.01", "on_exceed": mode}  # less than one call's $0.03 bound
    if mode == "downgrade":
        budget["downgrade_to"] = "llama-3.1-8b"
    with Broker.from_policy(policy(emu, tmp_path, {"acme": {"budget": budget}})) as broker:
        if mode == "block":
            with pytest.raises(BudgetExceeded) as info:
                chat(broker)
            err = info.value
            assert (err.spent_usd, err.reserved_usd, err.limit_usd) == (Decimal(0), Decimal(0), Decimal("0.01"))
            assert (err.period, err.scope) == ("month", "tenant:acme") and err.estimate_usd > Decimal("0.01")
            assert emu.requests == []
            return
        reply = chat(broker)
    if mode == "downgrade":
        assert reply.route.id == "small" and reply.decision.downgraded_from == "llama-3.3-70b"
    else:
        assert reply.route.id == "big"
    (warning,) = reply.decision.warnings
    assert "budget tenant:acme this month" in warning and "$0.000000 spent" in warning


def test_a_refusal_when_every_route_is_refused_carries_the_figures(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    # the tenant budget fits the cheapest route's bound, so the router lets the call in; a provider
    # budget then refuses the only provider at claim time: the caller gets that refusal with figures
    tenants = {"acme": {"budget": {"monthly_usd": 5, "providers": {"local": {"monthly_usd": "0.02"}}}}}
    with Broker.from_policy(policy(emu, tmp_path, tenants)) as broker, pytest.raises(BudgetExceeded) as info:
        chat(broker)
    err = info.value
    assert err.scope == "tenant:acme/provider:local" and err.period == "month"
    assert (err.spent_usd, err.reserved_usd, err.limit_usd) == (Decimal(0), Decimal(0), Decimal("0.02"))
    assert emu.requests == []


# --------------------------------------------------------------------------- scopes


def test_the_tightest_limit_speaks_and_is_named(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    # the second call exceeds both the group's month ($0.0412 > $0.04) and the tenant's day
    # ($0.0412 > $0.035): the day leaves less, so it speaks
    tenants = {"acme": {"budget": {"monthly_usd": 10, "daily_usd": "0.035"}}, "other": {}}
    groups = {"team-x": {"tenants": ["acme", "other"], "budget": {"monthly_usd": "0.04"}}}
    with Broker.from_policy(policy(emu, tmp_path, tenants, groups=groups), now=lambda: NOW) as broker:
        chat(broker)
        with pytest.raises(BudgetExceeded) as info:
            chat(broker)
    assert info.value.scope == "tenant:acme" and info.value.period == "day"
    assert "budget tenant:acme this day (2026-11-23)" in str(info.value)


def test_a_group_budget_holds_over_its_tenants_together(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    tenants = {"a": {}, "b": {}, "outsider": {}}
    groups = {"team-x": {"tenants": ["a", "b"], "budget": {"monthly_usd": "0.1", "on_exceed": "block"}}}
    p = policy(emu, tmp_path, tenants, groups=groups)
    made = {"a": 0, "b": 0}
    with Broker.from_policy(p, now=lambda: NOW) as broker:
        with pytest.raises(BudgetExceeded) as info:
            for i in range(40):
                who = "ab"[i % 2]
                chat(broker, who)
                made[who] += 1
        for _ in range(12):  # a tenant outside the group is not held by it
            chat(broker, "outsider")
    assert made["a"] >= 3 and made["b"] >= 3
    assert info.value.scope == "group:team-x" and info.value.limit_usd == Decimal("0.1")
    ledger = open_ledger(p["ledger"])
    try:
        team = ledger.spend("a", NOW.replace(day=1)) + ledger.spend("b", NOW.replace(day=1))
        assert team <= Decimal("0.1") < team + info.value.estimate_usd
        assert ledger.spend("outsider", NOW.replace(day=1)) > Decimal("0.1")
    finally:
        ledger.close()


def test_a_provider_budget_passes_that_providers_routes_over(
    emu: OpenAICompatEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_TEST_KEY", "gsk-test")
    with GroqEmulator() as groq:
        routes = [
            local_route(emu, "local-cheap", price={"input_per_mtok": "100", "output_per_mtok": "100"}),
            {"id": "groq-dear", "provider": "groq", "model": "llama-3.1-8b", "endpoint": groq.url,
             "api_key_env": "GROQ_TEST_KEY", "jurisdiction": "us",
             "price": {"input_per_mtok": "200", "output_per_mtok": "200"}},
        ]
        p = {"version": 1, "ledger": f"sqlite:///{tmp_path / 'usage.db'}", "routes": routes,
             "tenants": {"acme": {"residency": ["on-prem", "us"],
                                  "budget": {"monthly_usd": 10, "providers": {"local": {"monthly_usd": "0.02"}}}}}}
        with Broker.from_policy(p, now=lambda: NOW) as broker:
            served = [broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme", max_tokens=20) for _ in range(6)]
    assert served[0].route.id == "local-cheap"
    assert served[-1].route.id == "groq-dear"  # the local share is spent: the call moved on
    (failure,) = served[-1].decision.failures
    assert failure.route_id == "local-cheap" and isinstance(failure.error, BudgetExceeded)
    assert failure.error.scope == "tenant:acme/provider:local"
    local_spend = sum((r.cost_usd or Decimal(0)) for r in served if r.route.id == "local-cheap")
    assert local_spend <= Decimal("0.02")


# --------------------------------------------------------------------------- the store beside the ledger


def test_settled_spend_survives_a_restart_and_counts_spend_from_before(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    p = policy(emu, tmp_path, {"acme": {"budget": {"monthly_usd": "0.2"}}})
    ledger = open_ledger(p["ledger"])
    ledger.write([spend_event("acme", "0.1")])  # spent before the budget's period row existed
    ledger.close()
    with Broker.from_policy(p, now=lambda: NOW) as first:
        chat(first)
        key = "tenant:acme@2026-11"
        settled = first._core.budgets.store.standing([key])[key].settled
    assert Decimal("0.1") < settled < Decimal("0.2")
    with Broker.from_policy(p, now=lambda: NOW) as second:
        assert second._core.budgets.store.standing([key])[key].settled == settled
        made = 0
        with pytest.raises(BudgetExceeded) as info:
            for _ in range(20):
                chat(second)
                made += 1
    assert made < 9 and info.value.spent_usd is not None and info.value.spent_usd <= Decimal("0.2")


def test_failover_settles_each_route_to_its_own_metered_cost(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    p = policy(emu, tmp_path, {"acme": {"budget": {"monthly_usd": 5}}})
    p["routes"].append(local_route(emu, "big-backup", model="llama-3.3-70b", model_id="big2",
                                   price={"input_per_mtok": "800", "output_per_mtok": "800"}))
    with Broker.from_policy(p, now=lambda: NOW, sleep=lambda s: None) as broker:
        emu.fail(503, times=3)  # the first route's attempts fail (metered), the call fails over
        reply = chat(broker)
        list(broker.stream(model="llama-3.3-70b", messages=MSG, tenant="acme", max_tokens=20))
        broker.meter.flush()
        key = "tenant:acme@2026-11"
        standing = broker._core.budgets.store.standing([key])[key]
    assert reply.route.id == "big-backup"
    ledger = open_ledger(p["ledger"])
    try:
        assert standing.settled == ledger.spend("acme", NOW.replace(day=1)) and standing.reserved == 0
    finally:
        ledger.close()


async def test_async_calls_reserve_and_settle_off_the_event_loop(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    import asyncio

    p = policy(emu, tmp_path, {"acme": {"budget": {"monthly_usd": "0.3"}}})
    async with AsyncBroker.from_policy(p, now=lambda: NOW) as broker:
        async def one() -> str:
            try:
                await broker.chat(model="llama-3.3-70b", messages=MSG, tenant="acme", max_tokens=20)
                return "ok"
            except BudgetExceeded:
                return "refused"

        outcomes = await asyncio.gather(*(one() for _ in range(40)))
        key = "tenant:acme@2026-11"
        standing = broker._core.budgets.store.standing([key])[key]
    assert "refused" in outcomes and outcomes.count("ok") >= 5
    assert standing.reserved == 0 and standing.settled <= Decimal("0.3")


# --------------------------------------------------------------------------- the policy file


def test_groups_and_provider_budgets_are_checked_at_load(emu: OpenAICompatEmulator, tmp_path: Path) -> None:
    tenants = {"a": {"budget": {"providers": {"locl": {"monthly_usd": 1}}}}, "b": {"models": {"allow": ["llama-3.3-70b"]}}}
    groups = {"team-x": {"tenants": ["a", "bb"]},
              "team-y": {"tenants": ["b"], "budget": {"monthly_usd": 1, "on_exceed": "downgrade",
                                                       "downgrade_to": "llama-3.1-8b"}},
              "team-z": {"tenants": []}}
    with pytest.raises(PolicyError) as info:
        load_policy(policy(emu, tmp_path, tenants, groups=groups))
    text = str(info.value)
    assert "unknown provider 'locl' in budget.providers" in text
    assert "group 'team-x': unknown tenant 'bb'" in text and "did you mean 'b'" in text
    assert "group 'team-y': budget.downgrade_to 'llama-3.1-8b' is not in the models.allow of 'b'" in text
    assert "groups.team-z.tenants" in text
    only_providers = load_policy(policy(emu, tmp_path, {"a": {"budget": {"providers": {"local": {"daily_usd": 1}}}}}))
    assert only_providers.tenants["a"].budget is not None
