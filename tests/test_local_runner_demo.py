"""`llama-broker demo` answers its on-prem calls from the real llama.cpp server when the `runner` extra is installed."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from broker.cli.main import app
from broker.testing.llamacpp import MODEL_NAME, require_runner

cli = CliRunner()


def metered_equals_reported(output: str) -> bool:
    line = next(ln for ln in output.splitlines() if ln.startswith("ledger tokens"))
    ledger_part, reported_part = line.split(";")
    return ledger_part.split("tokens ")[1] == reported_part.split("reported ")[1]


def test_demo_on_prem_answers_come_from_the_real_model(tmp_path: Path) -> None:
    require_runner()
    result = cli.invoke(app, ["demo", "--ledger", f"sqlite:///{tmp_path / 'demo.db'}", "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert f"on-prem runner: {MODEL_NAME} on llama.cpp server" in result.output
    answered = [ln for ln in result.output.splitlines() if ln.startswith(f"{MODEL_NAME} answered ")]
    assert {ln.split()[2].rstrip(":") for ln in answered} == {"default", "acme-eu"}  # both on-prem calls
    assert "emulators and llama.cpp reported" in result.output and metered_equals_reported(result.output)


def test_demo_without_the_runner_uses_the_emulator(tmp_path: Path) -> None:
    result = cli.invoke(app, ["demo", "--no-runner", "--ledger", f"sqlite:///{tmp_path / 'demo.db'}",
                              "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "on-prem runner: the local emulator (--no-runner)" in result.output
    assert " answered " not in result.output and metered_equals_reported(result.output)
