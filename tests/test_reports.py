"""Cost reports: rows, renderers (CSV / JSON parse back, table, HTML) and the `report` command."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import typer
import yaml
from ledger_fixtures import *  # noqa: F403  (fixtures: any_ledger, ledger_url, pg_url, sqlite_url, ...)
from ledger_fixtures import make_event
from typer.testing import CliRunner

from broker.cli.report_cmd import report
from broker.metering import open_ledger
from broker.reports import ReportFilters, parse_time, report_rows, to_csv, to_json
from broker.reports.html import CHART_IDS, chart_data, render_html, write_html_report
from broker.reports.render import print_table

UTC = timezone.utc
D1, D2 = datetime(2025, 3, 1, 10, tzinfo=UTC), datetime(2025, 3, 2, 10, tzinfo=UTC)
EVIL = "</script><script>alert(1)</script>"


def seed(ledger) -> None:
    ledger.write(
        [
            make_event(
                tenant="acme",
                provider="bedrock",
                cost_usd=Decimal("0.1"),
                timestamp=D1,
                tags={"team": "search"},
            ),
            make_event(
                tenant="acme",
                provider="bedrock",
                cost_usd=Decimal("0.2"),
                timestamp=D2,
                tags={"team": "ads"},
                usage_estimated=True,
            ),
            make_event(
                tenant="acme",
                provider="azure",
                region="swedencentral",
                jurisdiction="eu",
                route_id="azure-se-70b",
                cost_usd=Decimal("0.3"),
                timestamp=D2,
            ),
            make_event(
                tenant="globex",
                provider="local",
                region=None,
                jurisdiction="on-prem",
                route_id="local-a",
                model="llama-3.1-8b",
                cost_usd=None,
                timestamp=D1,
            ),
            make_event(tenant=EVIL, provider="groq", route_id="groq-us", cost_usd=Decimal("1"), timestamp=D1),
        ]
    )


@pytest.fixture
def seeded(any_ledger):
    seed(any_ledger)
    return any_ledger


def test_default_rows_carry_the_contract_columns(seeded) -> None:
    rows = report_rows(seeded)
    for row in rows:
        assert {
            "tenant",
            "provider",
            "model",
            "region",
            "calls",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "unknown_cost_calls",
            "estimated_calls",
        } <= set(row)
    acme_bedrock = next(r for r in rows if (r["tenant"], r["provider"]) == ("acme", "bedrock"))
    assert acme_bedrock["calls"] == 2 and acme_bedrock["cost_usd"] == Decimal("0.3")
    assert acme_bedrock["estimated_calls"] == 1
    local = next(r for r in rows if r["provider"] == "local")
    assert local["cost_usd"] is None and local["unknown_cost_calls"] == 1 and local["region"] is None
    assert [r["tenant"] for r in rows] == sorted(r["tenant"] for r in rows)  # deterministic order


def test_ungrouped_identity_columns_read_all(seeded) -> None:
    rows = report_rows(seeded, ["day"], ReportFilters(tenant="acme"))
    assert [(r["day"], r["tenant"], r["provider"], r["cost_usd"]) for r in rows] == [
        ("2025-03-01", "*", "*", Decimal("0.1")),
        ("2025-03-02", "*", "*", Decimal("0.5")),
    ]
    assert list(rows[0])[:5] == ["day", "tenant", "provider", "model", "region"]


def test_json_and_csv_parse_back_exactly(seeded) -> None:
    rows = report_rows(seeded, ["tenant", "provider", "tag:team"])
    parsed = json.loads(to_json(rows))
    assert len(parsed) == len(rows)
    for row, back in zip(rows, parsed):
        assert back["calls"] == row["calls"]
        assert (Decimal(back["cost_usd"]) if back["cost_usd"] is not None else None) == row["cost_usd"]
        assert isinstance(back["cost_usd"], (str, type(None)))  # a decimal string, never a float
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["tenant"] for r in table] == [r["tenant"] for r in rows]
    for row, back in zip(rows, table):
        assert int(back["calls"]) == row["calls"]
        assert back["cost_usd"] == ("" if row["cost_usd"] is None else format(row["cost_usd"], "f"))
        assert back["tag:team"] == (row["tag:team"] or "")


def test_table_shows_unknown_cost_and_totals(seeded) -> None:
    out = io.StringIO()
    print_table(report_rows(seeded), file=out)
    text = out.getvalue()
    assert "unknown" in text and "total" in text
    assert "1.6" in text  # 0.1 + 0.2 + 0.3 + 1 over the known costs


def test_html_report_is_self_contained_and_deterministic(seeded, tmp_path: Path) -> None:
    rows = report_rows(seeded)
    charts = chart_data(seeded)
    path = write_html_report(rows, tmp_path / "r.html", charts=charts)
    html = path.read_text()
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in html
        assert f'id="section-{chart_id.removeprefix("chart-")}"' in html
    assert "<script" not in html and len(html) < 1_500_000  # inline SVG: no script, small

    assert 'id="report-table"' in html and 'class="report-table"' in html
    assert EVIL not in html  # escaped in the table and in the chart JSON
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "2025-03-01" in html and "2025-03-02" in html and "azure-se-70b" in html
    again = write_html_report(rows, tmp_path / "again.html", charts=chart_data(seeded))
    assert again.read_bytes() == path.read_bytes()


def test_html_from_rows_alone_marks_missing_charts(seeded) -> None:
    html = render_html(report_rows(seeded, ["tenant"]))
    assert all(f'id="{c}"' in html for c in CHART_IDS)
    assert html.count("no data for this selection") == len(CHART_IDS) - 1  # only spend-per-tenant can be drawn


def test_parse_time() -> None:
    now = datetime(2025, 3, 14, 12, tzinfo=UTC)
    assert parse_time("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_time("2025-03-01", end=True) == datetime(2025, 3, 2, tzinfo=UTC)  # the day is included
    assert parse_time("2025-03-01T08:30:00+02:00") == datetime(2025, 3, 1, 6, 30, tzinfo=UTC)
    assert parse_time("7d", now=now) == datetime(2025, 3, 7, 12, tzinfo=UTC)
    assert parse_time("today", now=now) == datetime(2025, 3, 14, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(ValueError, match="cannot read time"):
        parse_time("last tuesday")


# --------------------------------------------------------------------------- the command


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("report")(report)
    return app


@pytest.fixture
def ledger_file(sqlite_url) -> str:
    ledger = open_ledger(sqlite_url)
    seed(ledger)
    ledger.close()
    return sqlite_url


def invoke(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, ["report", *args], catch_exceptions=False)


def test_cli_json_with_group_by_and_filters(cli, ledger_file) -> None:
    result = invoke(
        cli,
        "--ledger",
        ledger_file,
        "--format",
        "json",
        "--group-by",
        "day,provider",
        "--tenant",
        "acme",
        "--since",
        "2025-03-02",
        "--until",
        "2025-03-02",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["day"], r["provider"], r["cost_usd"], r["tenant"]) for r in rows] == [
        ("2025-03-02", "azure", "0.3", "*"),
        ("2025-03-02", "bedrock", "0.2", "*"),
    ]


def test_cli_csv_to_file_and_repeated_group_by(cli, ledger_file, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    result = invoke(
        cli, "--ledger", ledger_file, "-f", "csv", "-g", "tenant", "-g", "jurisdiction", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(out.open()))
    assert {(r["tenant"], r["jurisdiction"]) for r in table} >= {
        ("acme", "us"),
        ("acme", "eu"),
        ("globex", "on-prem"),
    }


def test_cli_html_default_file_and_policy_ledger(cli, ledger_file, tmp_path: Path, monkeypatch) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "ledger": "sqlite:///" + ledger_file[len("sqlite://") :].lstrip("/"),
                "routes": [
                    {
                        "id": "local-a",
                        "provider": "local",
                        "model": "llama-3.1-8b",
                        "model_id": "m",
                        "endpoint": "http://127.0.0.1:9/v1",
                        "jurisdiction": "on-prem",
                    }
                ],
                "tenants": {"default": {"objective": "cost", "residency": ["on-prem"]}},
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "--policy", str(policy), "--format", "html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "llama-broker-report.html").read_text()
    assert 'id="chart-spend-per-day"' in html and "globex" in html


def test_cli_table_and_errors(cli, ledger_file, tmp_path: Path) -> None:
    result = invoke(cli, "--ledger", ledger_file)
    assert result.exit_code == 0 and "acme" in result.stdout and "total" in result.stdout
    missing = invoke(cli, "--ledger", f"sqlite://{tmp_path / 'none.db'}")
    assert missing.exit_code == 1 and "no ledger" in missing.output
    assert not (tmp_path / "none.db").exists()  # a report never creates a ledger
    bad = invoke(cli, "--ledger", ledger_file, "--group-by", "colour")
    assert bad.exit_code == 2 and "unknown group-by" in bad.output
    worse = invoke(cli, "--ledger", ledger_file, "--format", "pdf")
    assert worse.exit_code == 2
