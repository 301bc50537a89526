"""`policy diff` and `policy test`: a change that sends an EU tenant to a US route is shown and caught."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from broker.cli.main import app
from broker.policy import load_policy
from broker.policy.diff import diff_policies
from broker.policy.expectations import check_expectations, load_expectations

runner = CliRunner()
TODAY = "2026-12-01"


def _policy(tmp: Path, name: str, *, eu_residency: list[str], budget: float = 10.0) -> Path:
    doc = {
        "version": 1,
        "routes": [
            {"id": "azure-sweden", "provider": "azure", "model": "llama-3.3-70b", "region": "swedencentral",
             "endpoint": "https://example.services.ai.azure.com/models"},
            {"id": "bedrock-us", "provider": "bedrock", "model": "llama-3.3-70b", "region": "us-east-1"},
            {"id": "groq", "provider": "groq", "model": "llama-3.3-70b"},
        ],
        "tenants": {
            "acme-eu": {"residency": eu_residency, "budget": {"monthly_usd": budget, "on_exceed": "block"}},
            "us-team": {"residency": ["us", "unknown"], "objective": "cost"},
        },
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


EXPECTATIONS = """\
expectations:
  - name: acme-eu stays in the EU
    tenant: acme-eu
    model: llama-3.3-70b
    needs: {tools: true}
    only_jurisdictions: [eu]
    never_providers: [groq]
    refused_when_budget_spent: true
  - tenant: us-team
    model: llama-3.3-70b
    routes_include: [bedrock-us]
    routes_exclude: [azure-sweden, groq]        # Groq's 3.3 70B row is retired by the test's date
"""


def test_diff_shows_the_us_route_an_eu_tenant_gains(tmp_path: Path) -> None:
    old = _policy(tmp_path, "old.yaml", eu_residency=["eu"])
    new = _policy(tmp_path, "new.yaml", eu_residency=["eu", "us"], budget=5.0)

    result = diff_policies(load_policy(old), load_policy(new), today=dt.date.fromisoformat(TODAY))
    reach = {(r.tenant, r.model): r for r in result.reach}
    change = reach[("acme-eu", "llama-3.3-70b")]
    assert change.routes_gained == ("bedrock-us",) and change.jurisdictions_gained == ("us",)
    assert change.routes_lost == () and ("us-team", "llama-3.3-70b") not in reach
    paths = {(c.tenant, c.path): (c.old, c.new) for c in result.settings}
    assert paths[("acme-eu", "residency")] == (["eu"], ["eu", "us"])
    assert paths[("acme-eu", "budget.monthly_usd")] == ("10.0", "5.0")

    shown = runner.invoke(app, ["policy", "diff", str(old), str(new), "--today", TODAY])
    assert shown.exit_code == 1, shown.output
    assert "+ jurisdiction us" in shown.output and "+ route bedrock-us" in shown.output
    same = runner.invoke(app, ["policy", "diff", str(old), str(old), "--today", TODAY, "--json"])
    assert same.exit_code == 0 and json.loads(same.output)["reach"] == []


def test_policy_test_passes_then_fails_naming_the_expectation_and_route(tmp_path: Path) -> None:
    exp = tmp_path / "expect.yaml"
    exp.write_text(EXPECTATIONS, encoding="utf-8")
    good = _policy(tmp_path, "good.yaml", eu_residency=["eu"])
    ok = runner.invoke(app, ["policy", "test", str(good), str(exp), "--today", TODAY])
    assert ok.exit_code == 0, ok.output
    assert "2 passed, 0 failed" in ok.output

    bad = _policy(tmp_path, "bad.yaml", eu_residency=["eu", "us"])
    failed = runner.invoke(app, ["policy", "test", str(bad), str(exp), "--today", TODAY])
    assert failed.exit_code == 1
    assert f"FAIL {exp}:2: acme-eu stays in the EU" in failed.output
    assert "route bedrock-us is in jurisdiction us, outside [eu]" in failed.output
    assert "1 passed, 1 failed" in failed.output


def test_a_budget_that_does_not_block_fails_the_budget_expectation(tmp_path: Path) -> None:
    exp = tmp_path / "expect.yaml"
    exp.write_text(EXPECTATIONS, encoding="utf-8")
    path = _policy(tmp_path, "alert.yaml", eu_residency=["eu"])
    doc = yaml.safe_load(path.read_text())
    doc["tenants"]["acme-eu"]["budget"]["on_exceed"] = "alert"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    results = check_expectations(load_policy(path), load_expectations(exp), file=str(exp))
    assert not results[0].passed
    assert any("expected a refusal once the budget is spent" in f for f in results[0].failures)


def test_bad_expectations_are_reported_with_their_lines(tmp_path: Path) -> None:
    exp = tmp_path / "expect.yaml"
    exp.write_text("expectations:\n  - tenant: a\n    model: m\n    only_jurisdiction: [eu]\n"
                   "  - tenant: b\n    needs: {tool: true}\n", encoding="utf-8")
    result = runner.invoke(app, ["policy", "test", str(_policy(tmp_path, "p.yaml", eu_residency=["eu"])), str(exp)])
    assert result.exit_code == 1
    assert f"{exp}:4:" in result.output and "only_jurisdiction" in result.output and "did you mean" in result.output
    assert f"{exp}:5:" in result.output and "missing required key 'model'" in result.output


def test_catalog_and_validate_warn_ahead_of_end_of_life_by_the_policys_days(tmp_path: Path) -> None:
    path = _policy(tmp_path, "p.yaml", eu_residency=["eu"])
    doc = yaml.safe_load(path.read_text())
    args = ["catalog", "--model", "llama-3.3-70b", "--provider", "bedrock", "--json", "--today", TODAY]

    def bedrock_row(*extra: str) -> dict[str, Any]:
        rows = json.loads(runner.invoke(app, [*args, *extra]).output)
        return next(r for r in rows if r["region"] == "us-east-1")

    row = bedrock_row()
    assert row["licence"] == "Llama 3.3 Community License Agreement" and row["attribution"] == "Built with Llama"
    days = row["days_left"]
    assert row["lifecycle"].startswith("deprecated") and days > 90 and row["warn"] is False
    for setting, warned in ((days - 1, False), (days, True)):
        doc["lifecycle_warning_days"] = setting
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        assert bedrock_row("--policy", str(path))["warn"] is warned
        validate = runner.invoke(app, ["policy", "validate", str(path), "--today", TODAY])
        assert ("'bedrock-us' (us.meta.llama3-3-70b-instruct-v1:0) retires on" in validate.output) is warned, \
            validate.output
        decision = load_policy(path)
        from broker.policy.probe import Needs, Probe

        outcome = Probe(decision, today=dt.date.fromisoformat(TODAY)).decide("us-team", "llama-3.3-70b", Needs())
        bedrock = next(c for c in outcome.candidates if c.route.id == "bedrock-us")  # type: ignore[union-attr]
        assert any("end of life" in w for w in bedrock.warnings)  # deprecated routes are always flagged
