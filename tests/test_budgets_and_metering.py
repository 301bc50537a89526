"""Budgets enforced from the ledger, and metering that adds up across retries and failovers."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route
from ledger_fixtures import *  # noqa: F403  (ledger_url: an empty ledger on SQLite, then on PostgreSQL)

from broker import Broker, BudgetExceeded, ProtocolError
from broker.metering import UsageEvent, new_event_id, open_ledger
from broker.reports import ReportFilters, report_rows
from broker.testing import OpenAICompatEmulator

MSG = [{"role": "user", "content": "Hello, how much does this cost?"}]
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def pair() -> Iterator[tuple[OpenAICompatEmulator, OpenAICompatEmulator]]:
    with OpenAICompatEmulator() as a, OpenAICompatEmulator() as b:
        yield a, b


def spend_event(tenant: str, cost: str, when: dt.datetime = NOW) -> UsageEvent:
    return UsageEvent(
        event_id=new_event_id(), request_id="seed", attempt=1, tenant=tenant, tags={}, model="llama-3.1-8b",
        provider="local", region=None, jurisdiction="on-prem", model_id="m", route_id="seed",
        input_tokens=1000, output_tokens=1000, cached_input_tokens=0, usage_estimated=False,
        cost_usd=Decimal(cost), price_version="seed", latency_ms=1.0, ttft_ms=None, status="ok",
        error_kind=None, timestamp=when, policy_version="seed",
    )


def budget_policy(emu: OpenAICompatEmulator, ledger_url: str, budget: dict[str, Any]) -> dict[str, Any]:
    big = local_route(emu, "big", model="llama-3.3-70b", model_id="big",
                      price={"input_per_mtok": "1", "output_per_mtok": "1"})
    small = local_route(emu, "small", price={"input_per_mtok": "0.1", "output_per_mtok": "0.1"})
    return {
        "version": 1,
        "ledger": ledger_url,
        "routes": [big, small],
        "tenants": {"acme": {"objective": "cost", "residency": ["on-prem"], "budget": budget}},
    }


def test_blocked_tenant_is_refused_before_any_provider_is_called(ledger_url: str, local_emulator: OpenAICompatEmulator) -> None:
    policy = budget_policy(local_emulator, ledger_url, {"monthly_usd": 5, "on_exceed": "block"})
    ledger = open_ledger(policy["ledger"])
    ledger.write([spend_event("acme", "5.00")])
    ledger.close()
    with Broker.from_policy(policy, now=lambda: NOW) as broker:
        with pytest.raises(BudgetExceeded) as info:
            broker.chat(model="llama-3.3-70b", messages=MSG, tenant="acme")
    assert info.value.tenant == "acme"
    assert (info.value.spent_usd, info.value.limit_usd) == (Decimal("5.00"), Decimal("5"))
    assert local_emulator.requests == []


def test_last_months_spend_does_not_count(ledger_url: str, local_emulator: OpenAICompatEmulator) -> None:
    policy = budget_policy(local_emulator, ledger_url, {"monthly_usd": 5, "on_exceed": "block"})
    ledger = open_ledger(policy["ledger"])
    ledger.write([spend_event("acme", "50.00", when=NOW - dt.timedelta(days=40))])
    ledger.close()
    with Broker.from_policy(policy, now=lambda: NOW) as broker:
        assert broker.chat(model="llama-3.3-70b", messages=MSG, tenant="acme").route.id == "big"


def test_block_refuses_the_call_that_could_pass_the_limit(ledger_url: str, local_emulator: OpenAICompatEmulator) -> None:
    # each call costs about 3e-5 USD and reserves its upper bound (about 7e-5): a budget of 2e-4
    # lets calls through while settled spend + that bound fits, then refuses, never overspending
    policy = budget_policy(local_emulator, ledger_url, {"monthly_usd": "0.0002", "on_exceed": "block"})
    with Broker.from_policy(policy, now=lambda: NOW) as broker:
        made = 0
        with pytest.raises(BudgetExceeded) as info:
            for _ in range(50):
                broker.chat(model="llama-3.3-70b", messages=MSG, tenant="acme", max_tokens=20)
                made += 1
        broker.meter.flush()
        spent = broker.meter.month_to_date("acme", NOW)
    refused = info.value
    assert 1 < made < 50
    assert spent <= Decimal("0.0002") and refused.spent_usd == spent
    assert (refused.limit_usd, refused.period, refused.scope, refused.reserved_usd) == (
        Decimal("0.0002"), "month", "tenant:acme", Decimal(0))
    assert refused.estimate_usd is not None and spent + refused.estimate_usd > Decimal("0.0002")


def test_downgrade_moves_the_tenant_to_its_cheaper_model(ledger_url: str, local_emulator: OpenAICompatEmulator) -> None:
    policy = budget_policy(local_emulator, ledger_url,
                           {"monthly_usd": 5, "on_exceed": "downgrade", "downgrade_to": "llama-3.1-8b"})
    ledger = open_ledger(policy["ledger"])
    ledger.write([spend_event("acme", "6.00")])
    ledger.close()
    with Broker.from_policy(policy, now=lambda: NOW) as broker:
        reply = broker.chat(model="llama-3.3-70b", messages=MSG, tenant="acme")
    assert reply.route.id == "small" and reply.decision.downgraded_from == "llama-3.3-70b"


def test_alert_lets_the_call_through_and_warns(ledger_url: str, local_emulator: OpenAICompatEmulator,
                                               caplog: pytest.LogCaptureFixture) -> None:
    policy = budget_policy(local_emulator, ledger_url, {"monthly_usd": 5, "on_exceed": "alert"})
    ledger = open_ledger(policy["ledger"])
    ledger.write([spend_event("acme", "7.50")])
    ledger.close()
    with caplog.at_level(logging.WARNING, logger="llama_broker"), Broker.from_policy(policy, now=lambda: NOW) as broker:
        reply = broker.chat(model="llama-3.3-70b", messages=MSG, tenant="acme")
    assert reply.route.id == "big"
    assert any("budget exceeded" in w for w in reply.decision.warnings)
    assert any("budget exceeded" in r.getMessage() for r in caplog.records)


def test_ledger_totals_equal_emulator_reports_across_retries_and_failover(
    ledger_url: str, pair: tuple[OpenAICompatEmulator, OpenAICompatEmulator]
) -> None:
    cheap, dear = pair
    policy = {
        "version": 1,
        "ledger": ledger_url,
        "routes": [
            local_route(cheap, "cheap", price={"input_per_mtok": "0.2", "output_per_mtok": "0.4"}),
            local_route(dear, "dear", price={"input_per_mtok": "0.9", "output_per_mtok": "1.1"}),
        ],
        "tenants": {"default": {"objective": "cost", "residency": ["on-prem"]}},
    }
    with Broker.from_policy(policy, sleep=lambda s: None) as broker:
        cheap.fail(429, retry_after=0.01)            # retried on the same route
        broker.chat(model="llama-3.1-8b", messages=MSG)
        cheap.fail(503, times=3)                     # exhausts the route: fails over
        broker.chat(model="llama-3.1-8b", messages=MSG)
        list(broker.stream(model="llama-3.1-8b", messages=MSG))
        cheap.fail(503, times=3)
        list(broker.stream(model="llama-3.1-8b", messages=MSG))
        for _ in range(5):
            broker.chat(model="llama-3.1-8b", messages=MSG, tags={"feature": "bulk"})
    ledger = open_ledger(policy["ledger"])
    try:
        rows = report_rows(ledger, ["provider"], ReportFilters())
        assert sum(int(r["input_tokens"]) for r in rows) == cheap.reported.input_tokens + dear.reported.input_tokens
        assert sum(int(r["output_tokens"]) for r in rows) == cheap.reported.output_tokens + dear.reported.output_tokens
        by_route = {r["route_id"]: r for r in report_rows(ledger, ["route_id"], ReportFilters())}
        assert ledger.count() == len(cheap.requests) + len(dear.requests)  # one event per attempt
        expected = sum(
            (Decimal(e.reported.input_tokens) * Decimal(pi) + Decimal(e.reported.output_tokens) * Decimal(po))
            / Decimal(1_000_000)
            for e, pi, po in ((cheap, "0.2", "0.4"), (dear, "0.9", "1.1"))
        )
        assert sum(Decimal(str(r["cost_usd"])) for r in rows) == expected
        assert set(by_route) == {"cheap", "dear"}
        assert by_route["cheap"]["error_calls"] == 7  # one 429 and twice three 503s, each metered
    finally:
        ledger.close()


def test_cut_stream_meters_an_estimate_flagged_as_such(ledger_url: str, local_emulator: OpenAICompatEmulator) -> None:
    policy = {
        "version": 1,
        "ledger": ledger_url,
        "routes": [local_route(local_emulator, "a", price={"input_per_mtok": "1", "output_per_mtok": "1"})],
        "tenants": {"default": {"objective": "cost", "residency": ["on-prem"]}},
    }
    with Broker.from_policy(policy, sleep=lambda s: None) as broker:
        local_emulator.cut_stream(after=3)
        with pytest.raises(ProtocolError):
            list(broker.stream(model="llama-3.1-8b", messages=MSG))
    ledger = open_ledger(policy["ledger"])
    try:
        rows = report_rows(ledger, ["tenant"], ReportFilters())
        assert rows[0]["estimated_calls"] == 1 and int(rows[0]["output_tokens"]) > 0
    finally:
        ledger.close()


def test_prompts_stay_out_of_the_ledger_unless_the_policy_opts_in(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    import sqlite3

    secret = "my card number is 4111 1111 1111 1111"
    for opt_in, name in ((False, "plain.db"), (True, "opted.db")):
        policy = {
            "version": 1,
            "ledger": f"sqlite:///{tmp_path / name}",
            "routes": [local_route(local_emulator, "a")],
            "tenants": {"default": {"objective": "cost", "residency": ["on-prem"], "store_text": opt_in}},
        }
        with Broker.from_policy(policy, durable=True) as broker:
            broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": secret}])
        dump = "\n".join(sqlite3.connect(tmp_path / name).iterdump())
        assert (secret in dump) is opt_in


class _ThreadNotingLedger:
    """The real SQLite ledger, noting which thread each write runs on."""

    def __init__(self, url: str) -> None:
        self.inner = open_ledger(url)
        self.write_threads: list[int] = []

    def write(self, events: Any) -> int:
        import threading

        self.write_threads.append(threading.get_ident())
        return self.inner.write(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_async_durable_commits_before_returning_without_blocking_the_loop(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    import threading

    from broker import AsyncBroker

    ledger = _ThreadNotingLedger(f"sqlite:///{tmp_path / 'durable.db'}")
    policy = {"version": 1, "routes": [local_route(local_emulator, "a")],
              "tenants": {"default": {"objective": "cost", "residency": ["on-prem"]}}}
    async with AsyncBroker.from_policy(policy, ledger=ledger, durable=True) as broker:
        await broker.chat(model="llama-3.1-8b", messages=MSG)
        assert ledger.inner.count() == 1  # committed before chat() returned
        [e async for e in broker.stream(model="llama-3.1-8b", messages=MSG)]
        assert ledger.inner.count() == 2
    assert ledger.write_threads and threading.get_ident() not in ledger.write_threads
    ledger.inner.close()
