"""The command line: the demo of the quick start, chat and route against the emulators, report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli.main import app
from broker.testing import EmulatorSuite

runner = CliRunner()


@pytest.fixture
def suite(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorSuite]:
    with EmulatorSuite() as s:
        for key, value in s.env.items():
            monkeypatch.setenv(key, value)
        yield s


def test_demo_runs_every_provider_and_writes_the_report(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["demo", "--ledger", f"sqlite:///{tmp_path / 'demo.db'}", "--html", str(html)])
    assert result.exit_code == 0, result.output
    for provider in ("local", "bedrock", "vertex", "azure", "groq"):
        assert f"{provider}/" in result.output, provider
    assert "removed by residency" in result.output
    assert html.exists() and 'id="chart-spend-per-tenant"' in html.read_text()
    line = next(ln for ln in result.output.splitlines() if ln.startswith("ledger tokens"))
    ledger_part, emulator_part = line.split(";")
    assert ledger_part.split("tokens ")[1] == emulator_part.split("reported ")[1]  # metered == reported


def test_chat_prints_the_answer_and_the_route(suite: EmulatorSuite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BROKER_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["chat", "Bonjour", "-m", "llama-3.3-70b", "-t", "acme-eu"])
    assert result.exit_code == 0, result.output
    assert "azure emulator" in result.output and "azure/swedencentral [eu]" in result.output
    streamed = runner.invoke(app, ["chat", "Hello", "-m", "llama-3.1-8b", "--stream"])
    assert streamed.exit_code == 0 and "local emulator" in streamed.output


def test_route_explain_without_calling(suite: EmulatorSuite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BROKER_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["route", "hi", "-m", "llama-3.3-70b", "-t", "acme-eu", "--json"])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    eligible = [c["route"] for c in decision["candidates"] if c["eligible"]]
    assert eligible == ["azure-eu-70b"]
    assert all(len(e.requests) == 0 for e in suite.emulators.values())


def test_route_with_no_eligible_route_exits_nonzero(suite: EmulatorSuite, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BROKER_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["route", "hi", "-m", "llama-4-maverick", "-t", "acme-eu"])
    assert result.exit_code == 1
    assert "NoEligibleRoute" in result.output and "residency" in result.output


def test_report_json_after_calls(suite: EmulatorSuite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = f"sqlite:///{tmp_path / 'cli.db'}"
    policy = tmp_path / "p.yaml"
    policy.write_text(Path("policies/default.yaml").read_text() + f"ledger: {ledger}\n")
    for tenant in ("default", "acme-eu"):
        assert runner.invoke(app, ["chat", "hi", "-m", "llama-3.3-70b", "-t", tenant, "-p", str(policy)]).exit_code == 0
    result = runner.invoke(app, ["report", "--ledger", ledger, "--format", "json", "--group-by", "tenant,provider"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["tenant"] for r in rows} == {"default", "acme-eu"}
    assert all({"provider", "model", "region", "calls", "input_tokens", "output_tokens", "cost_usd"} <= set(r) for r in rows)
