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


# --------------------------------------------------------------------------- errors: one line, no traceback

SECRET = "s3cr3t-Pa55"
UNREACHABLE = f"postgresql://broker:{SECRET}@127.0.0.1:1/usage"  # nothing listens on port 1


def one_error_line(result) -> str:
    """The single stderr line of a failed command; a raw exception would leave result.exception set."""
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    assert SECRET not in result.output
    return lines[0]


def test_report_on_an_unreachable_ledger_prints_one_line() -> None:
    result = runner.invoke(app, ["report", "--ledger", UNREACHABLE])
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("error: MeteringError: ") and "127.0.0.1:1" in line


def test_report_with_an_unsupported_ledger_url_is_a_usage_error() -> None:
    result = runner.invoke(app, ["report", "--ledger", f"mysql://root:{SECRET}@db/usage"])
    assert result.exit_code == 2
    assert "unsupported ledger URL" in one_error_line(result)


def test_report_on_a_missing_folder_names_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--ledger", f"sqlite://{tmp_path / 'gone' / 'u.db'}"])
    assert result.exit_code == 1
    assert "no ledger at" in one_error_line(result)


def test_chat_with_a_ledger_that_cannot_open_prints_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(Path("policies/default.yaml").read_text() + f"ledger: {UNREACHABLE}\n")
    result = runner.invoke(app, ["chat", "hi", "-p", str(policy)])
    assert result.exit_code == 1
    assert one_error_line(result).startswith("error: MeteringError: ")
    routed = runner.invoke(app, ["route", "hi", "-p", str(policy)])
    assert routed.exit_code == 1 and one_error_line(routed).startswith("error: MeteringError: ")


def test_a_bad_policy_file_is_one_line_and_a_usage_error(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nroutes: 5\ntenants: []\nnonsense: true\n")
    for args in (["chat", "hi", "-p", str(policy)], ["report", "-p", str(policy)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert one_error_line(result).startswith("error: PolicyError: ")
