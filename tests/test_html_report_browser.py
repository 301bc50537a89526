"""The HTML cost report opened in headless Chromium: its charts must actually render."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from broker.metering import UsageEvent, new_event_id, open_ledger
from broker.reports import ReportFilters, chart_data, report_rows, write_html_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHART_IDS = ("chart-spend-per-day", "chart-spend-per-tenant", "chart-tokens-per-model", "chart-cost-per-mtok")

if CHROMIUM is None and os.environ.get("CI") != "true":
    pytest.skip("no Chromium on this machine (CI installs it: .ci/run)", allow_module_level=True)


def _events() -> list[UsageEvent]:
    start = dt.datetime(2026, 11, 1, 9, tzinfo=dt.timezone.utc)
    events = []
    for i in range(60):
        provider, route, price = [("bedrock", "bedrock-us", "0.72"), ("azure", "azure-eu", "0.71"),
                                  ("groq", "groq-8b", "0.05")][i % 3]
        events.append(UsageEvent(
            event_id=new_event_id(), request_id=f"r{i}", attempt=1, tenant=["acme", "globex"][i % 2], tags={"app": "x"},
            model=["llama-3.3-70b", "llama-3.1-8b"][i % 2], provider=provider, region="us-east-1",
            jurisdiction="us", model_id="m", route_id=route, input_tokens=100 + i, output_tokens=50 + i,
            cached_input_tokens=0, usage_estimated=False,
            cost_usd=Decimal(price) * (150 + 2 * i) / Decimal(1_000_000), price_version="p", latency_ms=10.0,
            ttft_ms=None, status="ok", error_kind=None, timestamp=start + dt.timedelta(hours=8 * i),
            policy_version="v",
        ))
    return events


def _dump_dom(page: Path, profile: Path) -> str:
    assert CHROMIUM is not None, "Chromium is required in CI"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_every_chart_renders_in_a_headless_browser(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'usage.db'}")
    try:
        ledger.write(_events())
        rows = report_rows(ledger, ["tenant", "provider", "model"], ReportFilters())
        page = write_html_report(rows, tmp_path / "report.html", charts=chart_data(ledger, ReportFilters()))
    finally:
        ledger.close()
    assert not re.search(r"<script[^>]+src=", page.read_text()), "the page must be self-contained"
    dom = _dump_dom(page, tmp_path / "profile")
    for chart_id in CHART_IDS:
        start = dom.index(f'id="{chart_id}"')
        section = dom[start: start + 200_000]
        end = section.find('<section class="chart"', 1)
        section = section if end < 0 else section[:end]
        assert 'class="main-svg"' in section, f"{chart_id} did not render"
        assert section.count('class="point"') > 0, f"{chart_id} has no bars"
    assert 'id="report-table"' in dom and "acme" in dom and "globex" in dom
