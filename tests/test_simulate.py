"""`simulate`: recorded calls replayed under a new policy, checked against a hand computation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from helpers import local_route
from typer.testing import CliRunner

from broker import Broker
from broker.cli.main import app
from broker.testing import OpenAICompatEmulator

runner = CliRunner()
DEAR = {"input_per_mtok": 2.0, "output_per_mtok": 4.0}
CHEAP = {"input_per_mtok": 0.5, "output_per_mtok": 1.0}


def _write(path: Path, routes: list[dict[str, Any]], tenants: dict[str, Any], ledger: Path) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "routes": routes, "tenants": tenants,
                                    "ledger": f"sqlite:///{ledger}"}, sort_keys=False), encoding="utf-8")
    return path


def test_a_cost_first_policy_saves_exactly_what_the_prices_say(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    with OpenAICompatEmulator() as dear, OpenAICompatEmulator() as cheap, OpenAICompatEmulator() as eu:
        dear_route = local_route(dear, "dear", price=DEAR, jurisdiction="us")
        cheap_route = local_route(cheap, "cheap", price=CHEAP, jurisdiction="us")
        eu_route = local_route(eu, "eu-dear", price=DEAR, jurisdiction="eu")
        old = _write(tmp_path / "old.yaml", [dear_route, eu_route],
                     {"app": {"residency": ["us"]}, "eu-app": {"residency": ["eu"]}, "gone": {"residency": ["us"]}},
                     ledger)
        with Broker.from_policy(str(old), durable=True) as broker:
            for i in range(12):
                words = " ".join(["word"] * (5 + 7 * i))
                broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": words}], tenant="app",
                            max_tokens=64, tools=[{"type": "function", "function": {"name": "f"}}] if i % 3 else None)
            for _ in range(3):
                broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "bonjour"}], tenant="eu-app")
            broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], tenant="gone")
        served = dear.reported
    mtok = Decimal(1_000_000)
    # hand computation from what the emulator served the `app` tenant (the `gone` call was the 13th on `dear`)
    gone_in, gone_out = _last_call_tokens(ledger, "gone")
    tin, tout = served.input_tokens - gone_in, served.output_tokens - gone_out
    before = (tin * Decimal("2.0") + tout * Decimal("4.0")) / mtok
    after = (tin * Decimal("0.5") + tout * Decimal("1.0")) / mtok
    new = _write(tmp_path / "new.yaml", [dear_route, cheap_route, eu_route],
                 {"app": {"residency": ["us"], "objective": "cost", "budget": {"monthly_usd": float(after / 2)}},
                  "eu-app": {"residency": ["eu", "us"], "objective": "cost"}}, ledger)

    shown = runner.invoke(app, ["simulate", "--policy", str(new), "--ledger", f"sqlite:///{ledger}", "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    tenants = {t["tenant"]: t for t in report["tenants"]}
    app_t = tenants["app"]
    assert app_t["calls"] == 12
    assert Decimal(app_t["cost_before_usd"]) == before and Decimal(app_t["cost_after_usd"]) == after
    assert Decimal(app_t["saving_usd"]) == before - after
    assert round(before - after, 2) == round(Decimal(app_t["saving_usd"]), 2)
    assert app_t["routes_before"] == {"dear": 12} and app_t["routes_after"] == {"cheap": 12}
    assert len(app_t["budget_breaches"]) == 1 and "block would act" in app_t["budget_breaches"][0]
    assert tenants["eu-app"]["jurisdiction_changes"] == {"eu -> us": 3}
    assert tenants["gone"]["refused"] == {"UnknownTenant": 1}

    again = runner.invoke(app, ["simulate", "--policy", str(new), "--ledger", f"sqlite:///{ledger}"])
    twice = runner.invoke(app, ["simulate", "--policy", str(new), "--ledger", f"sqlite:///{ledger}"])
    assert again.exit_code == 0 and again.output == twice.output
    assert "tenant app: 12 calls" in again.output and "routes after:  cheap 12 (100%)" in again.output


def test_a_period_that_ends_before_it_starts_is_an_error(tmp_path: Path) -> None:
    policy = _write(tmp_path / "p.yaml", [{"id": "a", "provider": "local", "model": "llama-3.1-8b",
                                           "jurisdiction": "on-prem", "endpoint": "http://127.0.0.1:9/v1"}],
                    {"default": {"residency": ["on-prem"]}}, tmp_path / "u.db")
    result = runner.invoke(app, ["simulate", "--policy", str(policy), "--ledger", f"sqlite:///{tmp_path / 'u.db'}",
                                 "--since", "2026-11-10", "--until", "2026-11-01"])
    assert result.exit_code == 2 and "--until must be after --since" in result.output


def _last_call_tokens(ledger: Path, tenant: str) -> tuple[int, int]:
    import sqlite3

    with sqlite3.connect(ledger) as db:
        row = db.execute("SELECT input_tokens, output_tokens FROM usage_events WHERE tenant = ?", (tenant,)).fetchone()
    return int(row[0]), int(row[1])
