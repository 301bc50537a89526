"""One self-contained HTML cost report with plotly charts (needs the ``reports`` extra).

The page inlines plotly.js (as ``include_plotlyjs=True`` does), so it opens offline and can
be mailed as one file.  Four charts, each in ``<section class="chart" id="section-NAME">``
around a plotly div with the stable id ``chart-NAME`` (see `CHART_IDS`):

* ``chart-spend-per-day``    spend per UTC day, stacked by provider
* ``chart-spend-per-tenant`` spend per tenant
* ``chart-tokens-per-model`` input and output tokens per model
* ``chart-cost-per-mtok``    cost per million tokens (input + output) per route

then the report rows as ``<table class="report-table" id="report-table">``.  A chart with no
data still renders its div, with a "no data" note.  Output is deterministic: the same rows
and chart data give byte-identical files (no timestamps, no random ids).
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from broker.errors import MissingDependency
from broker.reports.query import ReportFilters, report_rows
from broker.reports.render import HEADERS, cell_text, columns, format_cost, totals

__all__ = [
    "CHART_IDS",
    "ReportCharts",
    "chart_data",
    "chart_data_from_rows",
    "render_html",
    "write_html_report",
]

CHART_IDS = (
    "chart-spend-per-day",
    "chart-spend-per-tenant",
    "chart-tokens-per-model",
    "chart-cost-per-mtok",
)


@dataclass
class ReportCharts:
    """Pre-aggregated data for the four charts (rows in `report_rows` shape)."""

    spend_by_day_provider: list[dict[str, Any]] = field(default_factory=list)
    spend_by_tenant: list[dict[str, Any]] = field(default_factory=list)
    tokens_by_model: list[dict[str, Any]] = field(default_factory=list)
    cost_by_route: list[dict[str, Any]] = field(default_factory=list)


def chart_data(ledger: Any, filters: ReportFilters | None = None) -> ReportCharts:
    """Run the four chart aggregations against the ledger (each a SQL GROUP BY)."""
    return ReportCharts(
        spend_by_day_provider=report_rows(ledger, ["day", "provider"], filters),
        spend_by_tenant=report_rows(ledger, ["tenant"], filters),
        tokens_by_model=report_rows(ledger, ["model"], filters),
        cost_by_route=report_rows(ledger, ["route_id"], filters),
    )


def _regroup(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if any(k not in row or row[k] == "*" for k in keys):
            return []
        group = tuple(row[k] for k in keys)
        acc = sums.setdefault(
            group,
            {
                **dict(zip(keys, group, strict=True)),
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": None,
                "calls": 0,
                "unknown_cost_calls": 0,
            },
        )
        for k in ("input_tokens", "output_tokens", "calls", "unknown_cost_calls"):
            acc[k] += row.get(k, 0)
        if row.get("cost_usd") is not None:
            acc["cost_usd"] = (acc["cost_usd"] or Decimal(0)) + Decimal(row["cost_usd"])
    return [sums[g] for g in sorted(sums, key=lambda g: tuple("" if v is None else str(v) for v in g))]


def chart_data_from_rows(rows: Sequence[dict[str, Any]]) -> ReportCharts:
    """Chart data derived from report rows alone (a chart whose dimension is not grouped stays empty)."""
    return ReportCharts(
        spend_by_day_provider=_regroup(rows, ["day", "provider"]),
        spend_by_tenant=_regroup(rows, ["tenant"]),
        tokens_by_model=_regroup(rows, ["model"]),
        cost_by_route=_regroup(rows, ["route_id"]),
    )


def _money(row: dict[str, Any]) -> float:
    return float(row["cost_usd"]) if row.get("cost_usd") is not None else 0.0


def _label(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _plotly() -> Any:
    try:
        import plotly.graph_objects
        import plotly.io
        import plotly.offline
    except ImportError as exc:
        err = MissingDependency("reports", "plotly", "reports")
        err.args = ("HTML reports need plotly: pip install 'llama-broker[reports]'",)
        raise err from exc
    return plotly


def _figures(charts: ReportCharts) -> list[tuple[str, str, Any]]:
    go = _plotly().graph_objects

    figures = []

    by_provider: dict[str, dict[str, float]] = defaultdict(dict)
    days = sorted({str(r["day"]) for r in charts.spend_by_day_provider})
    for r in charts.spend_by_day_provider:
        by_provider[_label(r["provider"])][str(r["day"])] = _money(r)
    fig = go.Figure(
        [go.Bar(name=p, x=days, y=[by_provider[p].get(d, 0.0) for d in days]) for p in sorted(by_provider)]
    )
    fig.update_layout(barmode="stack", yaxis_title="USD", xaxis_title="day (UTC)")
    fig.update_xaxes(type="category")  # one bar per day, labelled by date (not a time axis)
    figures.append(("chart-spend-per-day", "Spend per day by provider", fig))

    tenants = charts.spend_by_tenant
    fig = go.Figure(
        [go.Bar(x=[_label(r["tenant"]) for r in tenants], y=[_money(r) for r in tenants], name="spend")]
    )
    fig.update_layout(yaxis_title="USD", xaxis_title="tenant")
    figures.append(("chart-spend-per-tenant", "Spend per tenant", fig))

    models = charts.tokens_by_model
    names = [_label(r["model"]) for r in models]
    fig = go.Figure(
        [
            go.Bar(name="input tokens", x=names, y=[r["input_tokens"] for r in models]),
            go.Bar(name="output tokens", x=names, y=[r["output_tokens"] for r in models]),
        ]
    )
    fig.update_layout(barmode="stack", yaxis_title="tokens", xaxis_title="model")
    figures.append(("chart-tokens-per-model", "Tokens per model", fig))

    priced = [
        r
        for r in charts.cost_by_route
        if r.get("cost_usd") is not None and (r["input_tokens"] + r["output_tokens"]) > 0
    ]
    fig = go.Figure(
        [
            go.Bar(
                x=[_label(r["route_id"]) for r in priced],
                y=[
                    float(Decimal(r["cost_usd"]) * 1_000_000 / (r["input_tokens"] + r["output_tokens"]))
                    for r in priced
                ],
                name="USD per Mtok",
            )
        ]
    )
    fig.update_layout(yaxis_title="USD per million tokens", xaxis_title="route")
    figures.append(("chart-cost-per-mtok", "Cost per million tokens by route", fig))

    for (_, _, fig), data in zip(figures, (charts.spend_by_day_provider, tenants, models, priced), strict=True):
        fig.update_layout(template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 20, "b": 60})
        if not data:
            fig.add_annotation(
                text="no data for this selection", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
            )
    return figures


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1f2933; }
h1 { margin-bottom: .2rem; } .subtitle { color: #52606d; margin-top: 0; }
.summary span { margin-right: 1.5rem; } .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5rem; }
.chart { border: 1px solid #e4e7eb; border-radius: 6px; padding: .5rem 1rem; }
.chart h2, .tables h2 { font-size: 1.05rem; }
table.report-table { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.report-table th, table.report-table td { border-bottom: 1px solid #e4e7eb; padding: .3rem .6rem; }
table.report-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.report-table tfoot td { font-weight: 600; }
@media (max-width: 1000px) { .grid { grid-template-columns: 1fr; } }
"""


def _table(rows: Sequence[dict[str, Any]]) -> str:
    from broker.metering.query import METRIC_KEYS

    cols = columns(rows)
    head = "".join(
        f'<th scope="col" data-key="{html.escape(c)}">{html.escape(HEADERS.get(c, c))}</th>' for c in cols
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"num" if c in METRIC_KEYS else "dim"}">{html.escape(cell_text(c, row.get(c)))}</td>'
            for c in cols
        )
        body.append(f"<tr>{cells}</tr>")
    total = totals(rows)
    foot = "".join(
        f'<td class="num">{html.escape(cell_text(c, total[c]))}</td>'
        if c in METRIC_KEYS
        else f'<td class="dim">{"total" if i == 0 else ""}</td>'
        for i, c in enumerate(cols)
    )
    return (
        '<table class="report-table" id="report-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        f"<tfoot><tr>{foot}</tr></tfoot></table>"
    )


def render_html(
    rows: Sequence[dict[str, Any]],
    *,
    charts: ReportCharts | None = None,
    title: str = "llama-broker cost report",
    subtitle: str | None = None,
) -> str:
    """The report page as a string (see the module docstring for its structure)."""
    plotly = _plotly()
    pio, get_plotlyjs = plotly.io, plotly.offline.get_plotlyjs

    charts = charts if charts is not None else chart_data_from_rows(rows)
    total = totals(rows)
    cost = format_cost(total["cost_usd"]) or "unknown"
    sections = []
    for chart_id, heading, fig in _figures(charts):
        div = pio.to_html(
            fig,
            include_plotlyjs=False,
            full_html=False,
            div_id=chart_id,
            default_height="380px",
            default_width="100%",
            config={"displaylogo": False, "responsive": True},
        )
        name = chart_id.removeprefix("chart-")
        sections.append(
            f'<section class="chart" id="section-{name}"><h2>{html.escape(heading)}</h2>{div}</section>'
        )
    summary = (
        f'<p class="summary" id="report-summary"><span>calls: {total["calls"]:,}</span>'
        f"<span>input tokens: {total['input_tokens']:,}</span>"
        f"<span>output tokens: {total['output_tokens']:,}</span>"
        f"<span>cost: <strong>${html.escape(cost)}</strong></span>"
        f"<span>unpriced calls: {total['unknown_cost_calls']:,}</span></p>"
    )
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<header><h1>{html.escape(title)}</h1>{sub}{summary}</header>\n"
        f'<div class="grid">{"".join(sections)}</div>\n'
        f'<section class="tables" id="section-table"><h2>Usage</h2>{_table(rows)}</section>\n'
        "</body>\n</html>\n"
    )


def write_html_report(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    charts: ReportCharts | None = None,
    title: str = "llama-broker cost report",
    subtitle: str | None = None,
) -> Path:
    """Write the self-contained report page to `path` and return the path."""
    path = Path(path)
    path.write_text(render_html(rows, charts=charts, title=title, subtitle=subtitle), encoding="utf-8")
    return path
