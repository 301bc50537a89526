"""A tenant name the policy does not have: refused, or served under `default` only when the policy opts in."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from typer.testing import CliRunner

from broker import Broker, InvalidRequest, PolicyError, UnknownTenant
from broker.cli.main import app
from broker.policy import load_policy
from broker.reports import ReportFilters, report_rows
from broker.testing import OpenAICompatEmulator

MSG = [{"role": "user", "content": "Hello, broker"}]
TENANTS: dict[str, Any] = {
    "default": {"objective": "cost", "residency": ["on-prem"]},
    "acme-eu": {"objective": "cost", "residency": ["eu"]},
}


def routes(emu: OpenAICompatEmulator) -> list[dict[str, Any]]:
    """A cheap route outside the EU, and a dear one inside it."""
    price = {"input_per_mtok": "0.1", "output_per_mtok": "0.1"}
    dear = {"input_per_mtok": "9", "output_per_mtok": "9"}
    return [
        local_route(emu, "box-onprem", jurisdiction="on-prem", price=price),
        local_route(emu, "box-eu", jurisdiction="eu", price=dear),
    ]


def broker_for(emu: OpenAICompatEmulator, tmp: Path, **top: Any) -> Broker:
    return Broker.from_policy(policy_dict(routes(emu), TENANTS, tmp=tmp, **top), durable=True)


def tenants_metered(broker: Broker) -> list[str]:
    """Each tenant name in the ledger, once per call metered under it."""
    broker.meter.flush()
    rows = report_rows(broker.meter.ledger, ["tenant"], ReportFilters())
    return sorted(name for row in rows for name in [row["tenant"]] * int(row["calls"]))


def test_a_mistyped_tenant_is_refused_with_a_hint_and_nothing_is_sent(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    with broker_for(local_emulator, tmp_path) as broker:
        for call in (broker.chat, broker.route, lambda **kw: list(broker.stream(**kw))):
            with pytest.raises(UnknownTenant, match=r"'acme-ue'.*did you mean 'acme-eu'\?"):
                call(model="llama-3.1-8b", messages=MSG, tenant="acme-ue")
        assert local_emulator.requests == [] and tenants_metered(broker) == []
        # no tenant named: the `default` tenant, as always
        assert broker.chat(model="llama-3.1-8b", messages=MSG).route.id == "box-onprem"


async def test_async_calls_refuse_an_unknown_tenant_too(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    from broker import AsyncBroker

    async with AsyncBroker.from_policy(policy_dict(routes(local_emulator), TENANTS, tmp=tmp_path)) as broker:
        with pytest.raises(UnknownTenant):
            await broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-ue")
        with pytest.raises(UnknownTenant):
            [e async for e in broker.stream(model="llama-3.1-8b", messages=MSG, tenant="acme-ue")]
    assert local_emulator.requests == []


def test_opt_in_serves_default_rules_meters_the_given_name_and_warns_once(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llama_broker")
    with broker_for(local_emulator, tmp_path, unknown_tenants="default") as broker:
        replies = [broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-ue") for _ in range(3)]
        streamed = list(broker.stream(model="llama-3.1-8b", messages=MSG, tenant="other"))[-1].response
        named = broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-eu")
        metered = tenants_metered(broker)
    for reply in (*replies, streamed):
        assert reply.route.id == "box-onprem"  # the default tenant's residency, never wider
        assert reply.decision.rules_tenant == "default" and reply.decision.tenant in ("acme-ue", "other")
        assert "served under tenant 'default'" in reply.decision.explain()
        assert reply.decision.to_dict()["rules_tenant"] == "default"
    assert named.route.id == "box-eu" and named.decision.rules_tenant == named.decision.tenant == "acme-eu"
    assert metered == ["acme-eu", "acme-ue", "acme-ue", "acme-ue", "other"]
    warnings = [r.getMessage() for r in caplog.records if "not in the policy" in r.getMessage()]
    assert len(warnings) == 2 and "'acme-ue'" in warnings[0] and "'other'" in warnings[1]


def test_the_warning_is_once_per_name_per_broker(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llama_broker")
    for _ in range(2):
        with broker_for(local_emulator, tmp_path, unknown_tenants="default") as broker:
            broker.route(model="llama-3.1-8b", messages=MSG, tenant="acme-ue")
            broker.route(model="llama-3.1-8b", messages=MSG, tenant="acme-ue")
    assert sum("not in the policy" in r.getMessage() for r in caplog.records) == 2


def test_opt_in_needs_a_default_tenant(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    text = (
        "unknown_tenants: default\n"
        f"routes:\n  - {{id: a, provider: local, model: llama-3.1-8b, model_id: m, endpoint: '{local_emulator.url}/v1',"
        " jurisdiction: on-prem}\n"
        "tenants:\n  team: {residency: [on-prem]}\n"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, env={})
    assert f"{path}:1: " in str(info.value) and "needs a tenant named `default`" in str(info.value)
    with pytest.raises(PolicyError, match="refuse"):
        load_policy({**policy_dict(routes(local_emulator), TENANTS), "unknown_tenants": "anyone"}, env={})


def test_policy_tenant_lookup_and_version(local_emulator: OpenAICompatEmulator) -> None:
    strict = load_policy(policy_dict(routes(local_emulator), TENANTS), env={})
    lenient = load_policy({**policy_dict(routes(local_emulator), TENANTS), "unknown_tenants": "default"}, env={})
    assert strict.tenant("acme-eu").name == "acme-eu" and lenient.tenant("nobody").name == "default"
    with pytest.raises(UnknownTenant, match="'nobody'"):
        strict.tenant("nobody")
    assert strict.version != lenient.version  # the setting is part of what the decision depended on


def test_tenant_must_be_a_non_empty_string(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    with broker_for(local_emulator, tmp_path, unknown_tenants="default") as broker:
        for bad in ("", 5, None):
            with pytest.raises(InvalidRequest, match="tenant must be a non-empty string"):
                broker.chat(model="llama-3.1-8b", messages=MSG, tenant=bad)  # type: ignore[arg-type]
    assert local_emulator.requests == []


def test_route_cli_refuses_a_mistyped_tenant_in_one_line(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    import yaml

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy_dict(routes(local_emulator), TENANTS, tmp=tmp_path)))
    runner = CliRunner()
    refused = runner.invoke(app, ["route", "--policy", str(path), "-m", "llama-3.1-8b", "-t", "acme-ue"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "UnknownTenant" in refused.output and "did you mean 'acme-eu'" in refused.output
    shown = runner.invoke(app, ["route", "--policy", str(path), "-m", "llama-3.1-8b", "-t", "acme-eu"])
    assert shown.exit_code == 0 and "box-eu" in shown.output
    chat = runner.invoke(app, ["chat", "hello", "--policy", str(path), "-m", "llama-3.1-8b", "-t", "acme-eu"])
    assert chat.exit_code == 0 and "local emulator" in chat.output


def test_an_unknown_name_gets_the_default_budget_counted_on_its_own_spend(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    from broker import BudgetExceeded

    tenants = {"default": {"residency": ["on-prem"], "budget": {"monthly_usd": "0.00001", "on_exceed": "block"}}}
    policy = policy_dict(routes(local_emulator)[:1], tenants, tmp=tmp_path, unknown_tenants="default")
    with Broker.from_policy(policy, durable=True) as broker:
        with pytest.raises(BudgetExceeded) as info:
            for _ in range(50):  # each call costs about $0.000002: the limit is reached within a few
                broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-ue", max_tokens=10)
        assert info.value.tenant == "acme-ue" and 1 < len(local_emulator.requests) < 50
        # the `default` tenant's own spend is untouched by what `acme-ue` spent
        assert broker.chat(model="llama-3.1-8b", messages=MSG, max_tokens=10).decision.tenant == "default"
