"""The HTML report and the tenant statement opened in headless Chromium: drawn, in stable colours, printable.

Screenshots are decoded here (PNG: zlib and the five scanline filters) and searched for the exact
fill colours of the series: the unpriced series, the budget chart, the savings chart and a
provider's colour, which must be the same in two reports over different data.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import struct
import subprocess
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from broker.cli.report_cmd import report
from broker.metering import UsageEvent, new_event_id, open_ledger
from broker.reports.html import CHART_IDS
from broker.reports.palette import UNPRICED_COLOUR, colour_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

if CHROMIUM is None and os.environ.get("CI") != "true":
    pytest.skip("no Chromium on this machine (CI installs it: .ci/run)", allow_module_level=True)

ROUTES = {  # route -> provider, region, jurisdiction, $/Mtok (None: unpriced)
    "bedrock-us-70b": ("bedrock", "us-east-1", "us", Decimal("0.72")),
    "groq-us-8b": ("groq", "us", "us", Decimal("0.05")),
    "azure-se-70b": ("azure", "swedencentral", "eu", Decimal("0.71")),
    "local-a100": ("local", None, "on-prem", None),
}


def _events(routes: list[str], tenants: list[str], n: int, start: dt.datetime) -> list[UsageEvent]:
    events = []
    for i in range(n):
        route = routes[i % len(routes)]
        provider, region, jurisdiction, price = ROUTES[route]
        tin, tout = 20_000 + 500 * i, 5_000 + 100 * i
        events.append(UsageEvent(
            event_id=new_event_id(), request_id=f"r{i}", attempt=1, tenant=tenants[i % len(tenants)],
            tags={"app": "x"}, model="llama-3.3-70b" if "70b" in route else "llama-3.1-8b", provider=provider,
            region=region, jurisdiction=jurisdiction, model_id="m", route_id=route, input_tokens=tin,
            output_tokens=tout, cached_input_tokens=0, usage_estimated=False,
            cost_usd=None if price is None else price * (tin + tout) / Decimal(1_000_000), price_version="p",
            latency_ms=10.0, ttft_ms=None, status="ok", error_kind=None,
            timestamp=start + dt.timedelta(hours=9 * i), policy_version="v",
        ))
    return events


def _policy(tmp_path: Path, ledger: Path) -> Path:
    price = {"input_per_mtok": "0.72", "output_per_mtok": "0.72"}
    doc = {
        "version": 1, "ledger": f"sqlite:///{ledger}",
        "routes": [
            {"id": "bedrock-us-70b", "provider": "bedrock", "model": "llama-3.3-70b", "region": "us-east-1",
             "price": price},
            {"id": "vertex-us-70b", "provider": "vertex", "model": "llama-3.3-70b", "region": "us-central1",
             "price": {"input_per_mtok": "2.5", "output_per_mtok": "4"}, "options": {"project": "p"}},
            {"id": "groq-us-8b", "provider": "groq", "model": "llama-3.1-8b", "jurisdiction": "us",
             "lifecycle": {"status": "ga"}, "price": {"input_per_mtok": "0.05", "output_per_mtok": "0.08"}},
            {"id": "local-a100", "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
             "endpoint": "${RUNNER_HOST}/v1", "jurisdiction": "on-prem"},
        ],
        "tenants": {"acme": {"residency": ["us", "on-prem"], "budget": {"monthly_usd": "0.05"}},
                    "globex": {"residency": ["us", "on-prem"], "budget": {"monthly_usd": 100}}},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("report")(report)
    return app


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "Chromium is required in CI"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--force-color-profile=srgb", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _png_colours(path: Path) -> set[str]:
    """Every colour of a PNG screenshot as ``#rrggbb`` (8-bit RGB or RGBA, not interlaced)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = colour_type = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos: pos + 8])
        body = data[pos + 8: pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = 4 if colour_type == 6 else 3
    raw, stride = zlib.decompress(idat), width * (4 if colour_type == 6 else 3)
    previous, colours, offset = bytearray(stride), set(), 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1: offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        colours.update(f"#{line[i]:02x}{line[i + 1]:02x}{line[i + 2]:02x}" for i in range(0, stride, channels * 3))
        previous = line
    return colours


def _report(tmp_path: Path, name: str, events: list[UsageEvent]) -> tuple[Path, str, set[str]]:
    folder = tmp_path / name
    folder.mkdir()
    ledger = open_ledger(f"sqlite:///{folder / 'usage.db'}")
    ledger.write(events)
    ledger.close()
    page = folder / "report.html"
    out = CliRunner().invoke(_cli(), ["report", "-p", str(_policy(folder, folder / "usage.db")), "--format", "html",
                                      "--month", "2026-11", "-o", str(page)])
    assert out.exit_code == 0, out.output
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), profile=folder / "p1").stdout
    shot = folder / "shot.png"
    _chromium("--window-size=1400,4200", f"--screenshot={shot}", page.as_uri(), profile=folder / "p2")
    return page, dom, _png_colours(shot)


def _section(dom: str, chart_id: str) -> str:
    start = dom.index(f'id="{chart_id}"')
    end = dom.find("</svg>", start)
    return dom[start:end]


def test_report_charts_render_in_stable_colours(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RUNNER_HOST", raising=False)  # the report needs only the ledger setting
    nov = dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc)
    first = _events(["bedrock-us-70b", "groq-us-8b", "local-a100"], ["acme", "globex"], 45, nov)
    second = _events(["azure-se-70b", "bedrock-us-70b"], ["globex", "initech", "umbrella"], 20, nov)
    page, dom, pixels = _report(tmp_path, "first", first)
    assert page.stat().st_size < 1_500_000 and not re.search(r"<script", page.read_text())
    for chart_id in CHART_IDS:
        assert 'class="bar"' in _section(dom, chart_id), f"{chart_id} drew no bars"
    tokens = _section(dom, "chart-tokens-per-model")
    assert 'data-series="unpriced tokens"' in tokens and 'class="legend-item" data-series="unpriced tokens"' in tokens
    assert 'data-series="unpriced attempts"' in _section(dom, "chart-attempts-per-day")
    budgets = _section(dom, "chart-budgets")
    assert 'class="marker"' in budgets and ">OVER<" in budgets  # acme spent more than $0.05
    assert 'id="savings-figure"' in dom and "Routing saved" in dom
    saved = Decimal(re.search(r'data-saved-usd="([^"]+)"', dom).group(1))
    assert saved > 0  # vertex at $2.5/$4 is eligible and dearer than what was used
    # drawn, as the screenshot shows: the unpriced hatch, budgets, savings, providers
    for colour in (UNPRICED_COLOUR, "#3b4cc0", "#7a0019", "#1b7f3b", "#a4262c", colour_for("provider", "bedrock"),
                   colour_for("provider", "groq")):
        assert colour in pixels, colour
    _, dom2, pixels2 = _report(tmp_path, "second", second)
    bedrock = colour_for("provider", "bedrock")
    fill = re.compile(r'class="bar" data-series="bedrock"[^>]*fill="(#[0-9a-f]{6})"')
    assert set(fill.findall(_section(dom, "chart-spend-per-day"))) == {bedrock}
    assert set(fill.findall(_section(dom2, "chart-spend-per-day"))) == {bedrock}
    assert bedrock in pixels2 and colour_for("provider", "azure") in pixels2
    assert colour_for("provider", "groq") not in pixels2  # no groq traffic in the second report


def test_statement_prints_to_pdf(tmp_path: Path) -> None:
    nov = dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc)
    ledger_path = tmp_path / "usage.db"
    ledger = open_ledger(f"sqlite:///{ledger_path}")
    ledger.write(_events(["bedrock-us-70b", "groq-us-8b", "local-a100"], ["acme", "globex"], 30, nov))
    ledger.close()
    page = tmp_path / "statement.html"
    out = CliRunner().invoke(_cli(), ["report", "-p", str(_policy(tmp_path, ledger_path)), "--statement", "acme",
                                      "--month", "2026-11", "-o", str(page)], env={"RUNNER_HOST": "http://127.0.0.1:9"})
    assert out.exit_code == 0, out.output
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), profile=tmp_path / "p1").stdout
    assert "Usage statement: acme, 2026-11" in dom and "globex" not in dom
    assert 'id="statement-usage"' in dom and "bedrock-us-70b" in dom and "local-a100" in dom
    assert 'class="bar"' in _section(dom, "chart-statement-daily")
    assert 'data-series="unpriced tokens"' in _section(dom, "chart-statement-unpriced")
    assert 'id="budget-table"' in dom and 'class="over"' in dom and 'id="savings-figure"' in dom
    pdf = tmp_path / "statement.pdf"
    _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri(), profile=tmp_path / "p2")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 5_000
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 1
