"""Finance figures: requests vs attempts, filters and periods, budgets, savings, money, colours, progress."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
import typer
import yaml
from ledger_fixtures import *  # noqa: F403  (fixtures: any_ledger, sqlite_url, ...)
from ledger_fixtures import make_event
from rich.console import Console
from typer.testing import CliRunner

from broker.cli.main import app as main_app
from broker.cli.report_cmd import report
from broker.metering import open_ledger
from broker.policy.loader import load_policy
from broker.reports import ReportFilters, report_rows
from broker.reports.budgets_view import budget_lines
from broker.reports.html import fine_rows, rows_from_fine
from broker.reports.money import format_usd, usd_decimals
from broker.reports.palette import UNPRICED_COLOUR, colour_for
from broker.reports.progress import report_progress
from broker.reports.savings import catalog_alternatives, savings_lines, total_saved

UTC = dt.timezone.utc
NOV = dt.datetime(2026, 11, 10, 12, tzinfo=UTC)


def retried_request(rid: str, **kw):
    """One request: a throttled attempt and a retry on route A, then a failover to route B that answers."""
    base = dict(request_id=rid, timestamp=NOV, tenant="acme", **kw)
    return [
        make_event(attempt=1, route_id="bedrock-us-70b", status="error", error_kind="Throttled", output_tokens=0,
                   cost_usd=Decimal("0.0001"), **base),
        make_event(attempt=2, route_id="bedrock-us-70b", status="error", error_kind="Throttled", output_tokens=0,
                   cost_usd=Decimal("0.0001"), **base),
        make_event(attempt=3, route_id="azure-se-70b", provider="azure", region="swedencentral", **base),
    ]


def test_requests_attempts_retries_and_failovers_are_apart(any_ledger) -> None:
    any_ledger.write([*retried_request("r1"), make_event(request_id="r2", timestamp=NOV, tenant="acme"),
                      make_event(request_id="r3", timestamp=NOV, tenant="globex")])
    total = report_rows(any_ledger, [])[0]
    assert (total["calls"], total["attempts"], total["retries"], total["failovers"]) == (3, 5, 1, 1)
    by_provider = {r["provider"]: r for r in report_rows(any_ledger, ["provider"])}
    assert by_provider["azure"]["failovers"] == 1 and by_provider["azure"]["calls"] == 0
    assert by_provider["bedrock"]["retries"] == 1 and by_provider["bedrock"]["calls"] == 3
    # a filter that leaves out the attempt before still sees the move for what it was
    only_azure = report_rows(any_ledger, [], ReportFilters(provider="azure"))[0]
    assert (only_azure["attempts"], only_azure["failovers"], only_azure["retries"]) == (1, 1, 0)


def test_tag_and_route_filters(any_ledger) -> None:
    any_ledger.write([
        make_event(tags={"team": "search", "env": "prod"}, cost_usd=Decimal("1")),
        make_event(tags={"team": "search", "env": "dev"}, cost_usd=Decimal("2")),
        make_event(tags={"team": "ads"}, route_id="groq-us", provider="groq", cost_usd=Decimal("4")),
    ])
    one = report_rows(any_ledger, [], ReportFilters(tags=(("team", "search"), ("env", "prod"))))[0]
    assert one["cost_usd"] == Decimal("1")
    assert report_rows(any_ledger, [], ReportFilters(tags=(("team", "search"),)))[0]["cost_usd"] == Decimal("3")
    assert report_rows(any_ledger, [], ReportFilters(route_id="groq-us"))[0]["cost_usd"] == Decimal("4")


def test_fine_pass_regroups_to_the_same_rows(any_ledger) -> None:
    any_ledger.write([*retried_request("r1"), make_event(provider="local", route_id="loc", cost_usd=None),
                      make_event(tenant="globex", cost_usd=Decimal("0.5"))])
    for dims in (["tenant", "provider", "model", "region"], ["day", "provider"], ["route_id"], []):
        direct = report_rows(any_ledger, dims)
        again = rows_from_fine(fine_rows(any_ledger), dims)
        assert again == direct, dims


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("report")(report)
    return app


def _policy(tmp_path: Path, ledger_url: str, **extra) -> Path:
    doc = {
        "version": 1,
        "ledger": "sqlite:///" + ledger_url[len("sqlite://"):].lstrip("/"),
        "routes": [{"id": "local-a", "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
                    "endpoint": "${GPU_HOST_UNSET_FOR_TEST}/v1", "jurisdiction": "on-prem"},
                   {"id": "bedrock-us-70b", "provider": "bedrock", "model": "llama-3.3-70b", "region": "us-east-1",
                    "price": {"input_per_mtok": "0.72", "output_per_mtok": "0.72"}},
                   {"id": "groq-us-70b", "provider": "groq", "model": "llama-3.3-70b", "jurisdiction": "us",
                    "lifecycle": {"status": "ga"},
                    "price": {"input_per_mtok": "0.59", "output_per_mtok": "0.79"}},
                   {"id": "azure-se-70b", "provider": "azure", "model": "llama-3.3-70b", "region": "swedencentral",
                    "endpoint": "https://x.services.ai.azure.com/models",
                    "price": {"input_per_mtok": "0.99", "output_per_mtok": "0.99"}}],
        "tenants": {"acme": {"residency": ["us", "on-prem"], "budget": {"monthly_usd": 10}},
                    "globex": {"residency": ["us"], "budget": {"monthly_usd": 1}}},
        **extra,
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_cli_periods_filters_and_errors(cli, sqlite_url, tmp_path, monkeypatch) -> None:
    ledger = open_ledger(sqlite_url)
    ledger.write([make_event(timestamp=NOV, tags={"team": "a"}, cost_usd=Decimal("1")),
                  make_event(timestamp=NOV + dt.timedelta(days=30), cost_usd=Decimal("2"))])
    ledger.close()
    run = CliRunner()
    out = run.invoke(cli, ["report", "--ledger", sqlite_url, "--month", "2026-11", "-f", "json", "-g", "tenant"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert rows[0]["cost_usd"] == "1" and rows[0]["attempts"] == 1 and rows[0]["calls"] == 1
    tagged = run.invoke(cli, ["report", "--ledger", sqlite_url, "--tag", "team=a", "-f", "json", "-g", "tenant"])
    assert json.loads(tagged.stdout)[0]["cost_usd"] == "1"
    backwards = run.invoke(cli, ["report", "--ledger", sqlite_url, "--since", "2026-11-20", "--until", "2026-11-01"])
    assert backwards.exit_code == 2 and "ends before it starts" in backwards.output
    bad = run.invoke(cli, ["report", "--ledger", sqlite_url, "--month", "2026-13"])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output
    empty_group = run.invoke(cli, ["report", "--ledger", sqlite_url, "-g", ""])
    assert empty_group.exit_code == 0 and "grouped by" not in empty_group.output
    monkeypatch.delenv("GPU_HOST_UNSET_FOR_TEST", raising=False)
    policy = _policy(tmp_path, sqlite_url)
    by_policy = run.invoke(cli, ["report", "-p", str(policy), "-f", "json", "-g", "tenant"])
    assert by_policy.exit_code == 0, by_policy.output  # an unset ${VAR} outside `ledger:` does not matter
    assert sum(Decimal(r["cost_usd"]) for r in json.loads(by_policy.stdout)) == Decimal("3")


def test_seven_day_header_has_no_microseconds(cli, sqlite_url) -> None:
    ledger = open_ledger(sqlite_url)
    ledger.write([make_event(timestamp=dt.datetime.now(UTC) - dt.timedelta(days=1))])
    ledger.close()
    out = CliRunner().invoke(cli, ["report", "--ledger", sqlite_url, "--since", "7d", "-g", "tenant"])
    assert out.exit_code == 0, out.output
    title = out.stdout.splitlines()[0]
    assert "since" in title and "UTC" in title and "." not in title.split("since")[1]


def test_version_option() -> None:
    out = CliRunner().invoke(main_app, ["--version"])
    assert out.exit_code == 0 and out.stdout.startswith("llama-broker ")


def test_budgets_against_actuals_and_forecast(sqlite_url, tmp_path) -> None:
    ledger = open_ledger(sqlite_url)
    ledger.write([make_event(tenant="acme", timestamp=NOV, cost_usd=Decimal("3")),
                  make_event(tenant="globex", timestamp=NOV, cost_usd=Decimal("0.9"))])
    policy = load_policy(_policy(tmp_path, sqlite_url, groups={"team": {"tenants": ["acme", "globex"],
                                                                         "budget": {"monthly_usd": 5}}}),
                         env={"GPU_HOST_UNSET_FOR_TEST": "http://127.0.0.1:9"})
    now = dt.datetime(2026, 11, 16, tzinfo=UTC)  # half of November gone
    lines = {b.scope: b for b in budget_lines(policy, ledger, now=now)}
    ledger.close()
    acme, globex, team = lines["tenant:acme"], lines["tenant:globex"], lines["group:team"]
    assert (acme.limit_usd, acme.spent_usd, acme.remaining_usd) == (Decimal(10), Decimal(3), Decimal(7))
    assert acme.forecast_usd == Decimal("6.000000") and acme.status == "ok"
    assert globex.status == "near"  # 90% of its limit spent
    assert team.spent_usd == Decimal("3.9") and team.status == "near"  # forecast 7.8 > 5
    assert acme.reserved_usd is None  # no reservation store given


def test_savings_from_catalog_prices(sqlite_url, tmp_path) -> None:
    ledger = open_ledger(sqlite_url)
    # 1M input tokens on the cheapest route the catalog has for the model
    ledger.write([make_event(tenant="acme", model="llama-3.3-70b", input_tokens=1_000_000, output_tokens=0,
                             timestamp=NOV, cost_usd=Decimal("0.10"))])
    policy = load_policy(_policy(tmp_path, sqlite_url), env={"GPU_HOST_UNSET_FOR_TEST": "http://127.0.0.1:9"})
    costs = catalog_alternatives(policy)("acme", "llama-3.3-70b", 1_000_000, 0)
    known = sorted(c for c in costs if c is not None)
    assert known == [Decimal("0.59"), Decimal("0.72")]  # acme may not use the EU route: residency us,on-prem
    lines = savings_lines(ledger, catalog_alternatives(policy))
    ledger.close()
    (line,) = lines
    assert (line.max_usd, line.median_usd, line.actual_usd) == (Decimal("0.72"), Decimal("0.655"), Decimal("0.10"))
    assert line.estimate
    assert total_saved(lines) == line.max_usd - Decimal("0.10")
    eu_only = catalog_alternatives(policy)("nobody", "llama-3.3-70b", 1, 1)
    assert eu_only == []  # an unknown tenant has no eligible routes


def test_money_and_colours() -> None:
    assert format_usd(Decimal("1234.5678")) == "$1,234.57"
    assert format_usd(Decimal("0.000864")) == "$0.000864"
    assert format_usd(None) == "unknown" and format_usd(Decimal("-3.1"), 2) == "-$3.10"
    assert usd_decimals([Decimal("0.0031"), Decimal("0.0002")]) == 5
    assert colour_for("provider", "bedrock") == colour_for("provider", "bedrock") != colour_for("provider", "groq")
    assert colour_for("tenant", "acme") == "#" + colour_for("tenant", "acme")[1:]
    assert UNPRICED_COLOUR not in {colour_for("tenant", f"t{i}") for i in range(200)}


def test_progress_appears_only_for_slow_work() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with report_progress("quick", delay_s=0.5, console=console):
        pass
    assert "quick" not in out.getvalue()
    with report_progress("slow work", delay_s=0.05, console=console) as step:
        time.sleep(0.3)
        step("second step")
        time.sleep(0.2)
    assert "slow work" in out.getvalue() or "second step" in out.getvalue()
    quiet = io.StringIO()
    with report_progress("piped", delay_s=0.0, console=Console(file=quiet)):
        time.sleep(0.1)
    assert quiet.getvalue() == ""
