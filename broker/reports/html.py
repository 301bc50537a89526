"""One self-contained HTML cost report: inline SVG charts (`broker.reports.svg`), no script.

Charts, each in ``<section class="chart" id="section-NAME">`` around an ``<svg id="chart-NAME">``
(see `CHART_IDS`):

* ``chart-spend-per-day``     spend per UTC day, stacked by provider
* ``chart-spend-per-tenant``  spend per tenant
* ``chart-tokens-per-model``  priced input and output tokens per model, and unpriced tokens as
  their own hatched series (never as $0)
* ``chart-attempts-per-day``  priced and unpriced attempts per day
* ``chart-cost-per-mtok``     cost per million tokens per priced route
* ``chart-budgets``           budgets: spent, reserved and forecast against each limit
* ``chart-savings``           actual cost against the median and the most expensive route

then the savings figure (``id="savings-figure"``), the budget table and the report rows as
``<table class="report-table" id="report-table">``.  Colours come from `broker.reports.palette`
(the same provider or tenant is the same colour in every report).  Output is deterministic:
the same data give byte-identical files.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from broker.metering.query import METRIC_KEYS
from broker.reports.budgets_view import BudgetLine
from broker.reports.money import format_usd, usd_decimals
from broker.reports.palette import UNPRICED_COLOUR, colour_for
from broker.reports.query import ReportFilters, report_rows
from broker.reports.render import HEADERS, cell_text, columns, totals
from broker.reports.savings import SavingsLine, total_saved
from broker.reports.svg import Marker, Series, bar_chart

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
    "chart-attempts-per-day",
    "chart-cost-per-mtok",
    "chart-budgets",
    "chart-savings",
)
#: The dimensions of the one fine-grained pass every chart is regrouped from.
FINE_GRAIN = ("day", "tenant", "provider", "model", "region", "route_id")
_SUMMED = ("calls", "attempts", "retries", "failovers", "input_tokens", "output_tokens", "cached_input_tokens",
           "unknown_cost_calls", "estimated_calls", "error_calls", "unpriced_input_tokens", "unpriced_output_tokens")


@dataclass
class ReportCharts:
    """Pre-aggregated chart data (rows in `report_rows` shape), budget lines and savings lines."""

    spend_by_day_provider: list[dict[str, Any]] = field(default_factory=list)
    spend_by_tenant: list[dict[str, Any]] = field(default_factory=list)
    tokens_by_model: list[dict[str, Any]] = field(default_factory=list)
    cost_by_route: list[dict[str, Any]] = field(default_factory=list)
    attempts_by_day: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[BudgetLine] = field(default_factory=list)
    savings: list[SavingsLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def regroup(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Sum rows into coarser groups (empty when a key is not among the rows' dimensions)."""
    sums: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if any(k not in row or row[k] == "*" for k in keys):
            return []
        group = tuple(row[k] for k in keys)
        acc = sums.get(group)
        if acc is None:
            acc = sums[group] = {**dict(zip(keys, group, strict=True)), **dict.fromkeys(_SUMMED, 0), "cost_usd": None}
        for k in _SUMMED:
            acc[k] += row.get(k) or 0
        if row.get("cost_usd") is not None:
            acc["cost_usd"] = (acc["cost_usd"] or Decimal(0)) + Decimal(row["cost_usd"])
        if row.get("energy_j") is not None:
            acc["energy_j"] = (acc.get("energy_j") or 0.0) + float(row["energy_j"])
            acc["energy_output_tokens"] = acc.get("energy_output_tokens", 0) + int(row.get("energy_output_tokens") or 0)
    return [sums[g] for g in sorted(sums, key=lambda g: tuple("" if v is None else str(v) for v in g))]


def rows_from_fine(fine: Sequence[dict[str, Any]], group_by: Sequence[str]) -> list[dict[str, Any]] | None:
    """Report rows for `group_by` regrouped from the fine-grained pass; None when it lacks a dimension."""
    from broker.metering.query import unit_rates
    from broker.reports.query import IDENTITY_KEYS, _sort_key

    if not set(group_by) <= set(FINE_GRAIN):
        return None
    out = []
    for acc in regroup(fine, list(group_by)) if fine else []:
        row = {k: acc[k] for k in group_by}
        for k in IDENTITY_KEYS:
            row.setdefault(k, "*")
        for k in METRIC_KEYS:
            row[k] = acc[k]
        row.update(unit_rates(acc))
        out.append(row)
    out.sort(key=lambda row: _sort_key(row, group_by))
    return out


def chart_data_from_rows(rows: Sequence[dict[str, Any]]) -> ReportCharts:
    """Chart data derived from rows alone (a chart whose dimension is not among them stays empty)."""
    return ReportCharts(
        spend_by_day_provider=regroup(rows, ["day", "provider"]),
        spend_by_tenant=regroup(rows, ["tenant"]),
        tokens_by_model=regroup(rows, ["model"]),
        cost_by_route=regroup(rows, ["route_id"]),
        attempts_by_day=regroup(rows, ["day"]),
    )


def fine_rows(ledger: Any, filters: ReportFilters | None = None) -> list[dict[str, Any]]:
    """The one SQL pass the charts (and most tables) are regrouped from."""
    return report_rows(ledger, FINE_GRAIN, filters)


def chart_data(ledger: Any, filters: ReportFilters | None = None, *, fine: list[dict[str, Any]] | None = None,
               budgets: list[BudgetLine] | None = None, savings: list[SavingsLine] | None = None) -> ReportCharts:
    """Chart data from one fine-grained ledger pass (`fine`, when the caller ran it already)."""
    charts = chart_data_from_rows(fine if fine is not None else fine_rows(ledger, filters))
    charts.budgets = budgets or []
    charts.savings = savings or []
    return charts


def _label(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _money(row: dict[str, Any]) -> float:
    return float(row["cost_usd"]) if row.get("cost_usd") is not None else 0.0


def _charts(c: ReportCharts) -> list[tuple[str, str, str]]:
    out = []
    days = sorted({str(r["day"]) for r in c.spend_by_day_provider})
    by_provider: dict[str, dict[str, float]] = defaultdict(dict)
    for r in c.spend_by_day_provider:
        by_provider[_label(r["provider"])][str(r["day"])] = _money(r)
    series = [Series(p, colour_for("provider", p), [by_provider[p].get(d) for d in days]) for p in sorted(by_provider)]
    out.append(("chart-spend-per-day", "Spend per day by provider (USD)",
                bar_chart("chart-spend-per-day", days, series, label="spend per day by provider")))

    tenants = c.spend_by_tenant
    names = [_label(r["tenant"]) for r in tenants]
    series = [Series(n, colour_for("tenant", n), [_money(r) if i == j else None for j, r in enumerate(tenants)])
              for i, n in enumerate(names)]
    out.append(("chart-spend-per-tenant", "Spend per tenant (USD)",
                bar_chart("chart-spend-per-tenant", names, series, label="spend per tenant")))

    models = c.tokens_by_model
    names = [_label(r["model"]) for r in models]
    series = [
        Series("input tokens", "#2f6fdb", [r["input_tokens"] - r["unpriced_input_tokens"] for r in models]),
        Series("output tokens", "#84b0f0", [r["output_tokens"] - r["unpriced_output_tokens"] for r in models]),
        Series("unpriced tokens", UNPRICED_COLOUR,
               [r["unpriced_input_tokens"] + r["unpriced_output_tokens"] for r in models], hatched=True),
    ]
    out.append(("chart-tokens-per-model", "Tokens per model, unpriced shown apart",
                bar_chart("chart-tokens-per-model", names, series, unit="count", label="tokens per model")))

    per_day = c.attempts_by_day
    names = [_label(r["day"]) for r in per_day]
    series = [
        Series("priced attempts", "#4c9f70", [r["attempts"] - r["unknown_cost_calls"] for r in per_day]),
        Series("unpriced attempts", UNPRICED_COLOUR, [r["unknown_cost_calls"] for r in per_day], hatched=True),
    ]
    out.append(("chart-attempts-per-day", "Attempts per day: priced and unpriced",
                bar_chart("chart-attempts-per-day", names, series, unit="count", label="attempts per day")))

    priced = [r for r in c.cost_by_route if r.get("cost_usd") is not None
              and r["input_tokens"] + r["output_tokens"] - r["unpriced_input_tokens"] - r["unpriced_output_tokens"] > 0]
    names = [_label(r["route_id"]) for r in priced]
    rates = [float(Decimal(r["cost_usd"]) * 1_000_000 / (r["input_tokens"] + r["output_tokens"]
                   - r["unpriced_input_tokens"] - r["unpriced_output_tokens"])) for r in priced]
    out.append(("chart-cost-per-mtok", "Cost per million tokens by route (priced routes)",
                bar_chart("chart-cost-per-mtok", names, [Series("USD per Mtok", "#e8871e", rates)],
                          unit="usd_per_mtok", label="cost per million tokens")))

    lines = c.budgets
    names = [f"{b.name} {b.period}" for b in lines]
    series = [
        Series("spent", "#3b4cc0", [float(b.spent_usd) for b in lines]),
        Series("reserved", "#f0b429", [float(b.reserved_usd or 0) for b in lines]),
        Series("forecast to period end", "#b8cdf5",
               [max(float(b.forecast_usd - b.spent_usd - (b.reserved_usd or 0)), 0.0) for b in lines]),
    ]
    markers = [Marker("limit", "#7a0019", [float(b.limit_usd) for b in lines])]
    flags = ["OVER" if b.status == "over" else "NEAR" if b.status == "near" else "" for b in lines]
    out.append(("chart-budgets", "Budgets against actuals",
                bar_chart("chart-budgets", names, series, markers=markers, flags=flags, label="budgets")))

    saved = c.savings
    names = [f"{s.tenant} {s.period}" for s in saved]
    series = [
        Series("actual", "#1b7f3b", [float(s.actual_usd) for s in saved]),
        Series("median eligible route", "#d4a017", [float(s.median_usd) for s in saved]),
        Series("most expensive eligible route", "#a4262c", [float(s.max_usd) for s in saved]),
    ]
    out.append(("chart-savings", "What routing saved (estimate)",
                bar_chart("chart-savings", names, series, stacked=False, label="savings")))
    return out


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1f2933; }
h1 { margin-bottom: .2rem; } .subtitle { color: #52606d; margin-top: 0; }
.summary span { margin-right: 1.5rem; } .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5rem; }
.chart { border: 1px solid #e4e7eb; border-radius: 6px; padding: .5rem 1rem; break-inside: avoid; }
.chart h2, .tables h2 { font-size: 1.05rem; } .chart-svg { width: 100%; height: auto; }
.savings-figure { font-size: 1.15rem; margin: 1rem 0; } .note { color: #52606d; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; margin-bottom: 1rem; }
th, td { border-bottom: 1px solid #e4e7eb; padding: .3rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tfoot td { font-weight: 600; }
tr.over td { background: #fde8e8; } tr.near td { background: #fff6db; }
@media (max-width: 1000px) { .grid { grid-template-columns: 1fr; } }
@media print { body { margin: 1cm; } .grid { grid-template-columns: 1fr 1fr; } }
"""


def usage_table(rows: Sequence[dict[str, Any]], *, table_id: str = "report-table") -> str:
    """The report rows as an HTML table with a totals line (money as ``$`` with aligned decimals)."""
    cols = columns(rows)
    places = usd_decimals([r.get("cost_usd") for r in rows])
    head = "".join(
        f'<th scope="col" data-key="{html.escape(c)}">{html.escape(HEADERS.get(c, c))}</th>' for c in cols
    )

    def text(c: str, value: Any) -> str:
        return format_usd(value, places) if c == "cost_usd" else cell_text(c, value)

    body = []
    for row in rows:
        cells = "".join(f'<td class="{"num" if c in METRIC_KEYS else "dim"}">{html.escape(text(c, row.get(c)))}</td>'
                        for c in cols)
        body.append(f"<tr>{cells}</tr>")
    total = totals(rows)
    foot = "".join(
        f'<td class="num">{html.escape(text(c, total[c]))}</td>' if c in METRIC_KEYS and c in total
        else f'<td class="dim">{"total" if i == 0 else ""}</td>'
        for i, c in enumerate(cols)
    )
    return (f'<table class="report-table" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody><tfoot><tr>{foot}</tr></tfoot></table>")


def budget_table(lines: Sequence[BudgetLine]) -> str:
    """Budgets as a table: over and near-limit rows marked."""
    if not lines:
        return '<p class="note" id="budget-table">No budgets in the policy (or no policy given).</p>'
    places = usd_decimals([b.limit_usd for b in lines])
    rows = []
    for b in lines:
        reserved = "n/a" if b.reserved_usd is None else format_usd(b.reserved_usd, places)
        cells = [b.name, b.period, format_usd(b.limit_usd, places), format_usd(b.spent_usd, places), reserved,
                 format_usd(b.remaining_usd, places), format_usd(b.forecast_usd, places), b.status]
        tds = "".join(f'<td class="{"num" if 1 < i < 7 else "dim"}">{html.escape(v)}</td>' for i, v in enumerate(cells))
        rows.append(f'<tr class="{b.status}" data-scope="{html.escape(b.scope)}">{tds}</tr>')
    head = "".join(f"<th>{h}</th>" for h in ("scope", "period", "limit", "spent", "reserved", "remaining",
                                             "forecast", "status"))
    return f'<table id="budget-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def savings_figure(lines: Sequence[SavingsLine]) -> str:
    """The headline: what the policy saved against the most expensive eligible route."""
    if not lines:
        return '<p class="savings-figure" id="savings-figure">No savings to show (no policy or no priced calls).</p>'
    saved = total_saved(list(lines))
    median = sum((s.saved_vs_median_usd for s in lines), Decimal(0))
    estimate = " (estimate)" if any(s.estimate for s in lines) else ""
    notes = sorted({s.note for s in lines if s.note})
    extra = f'<span class="note"> {html.escape("; ".join(notes))}</span>' if notes else ""
    return (f'<p class="savings-figure" id="savings-figure" data-saved-usd="{saved}">Routing saved '
            f"<strong>{html.escape(format_usd(saved))}</strong> against the most expensive eligible route and "
            f"{html.escape(format_usd(median))} against the median one{estimate}.{extra}</p>")


def render_html(
    rows: Sequence[dict[str, Any]],
    *,
    charts: ReportCharts | None = None,
    title: str = "llama-broker cost report",
    subtitle: str | None = None,
) -> str:
    """The report page as a string (see the module docstring for its structure)."""
    charts = charts if charts is not None else chart_data_from_rows(rows)
    total = totals(rows)
    sections = [
        f'<section class="chart" id="section-{cid.removeprefix("chart-")}"><h2>{html.escape(heading)}</h2>{svg}'
        "</section>"
        for cid, heading, svg in _charts(charts)
    ]
    unpriced = total.get("unpriced_input_tokens", 0) + total.get("unpriced_output_tokens", 0)
    summary = (
        f'<p class="summary" id="report-summary"><span>requests: {total["calls"]:,}</span>'
        f"<span>attempts: {total['attempts']:,}</span><span>retries: {total['retries']:,}</span>"
        f"<span>failovers: {total['failovers']:,}</span>"
        f"<span>input tokens: {total['input_tokens']:,}</span>"
        f"<span>output tokens: {total['output_tokens']:,}</span>"
        f"<span>cost: <strong>{html.escape(format_usd(total['cost_usd']))}</strong></span>"
        f"<span>unpriced: {total['unknown_cost_calls']:,} attempts, {unpriced:,} tokens</span></p>"
    )
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in charts.notes)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1>{sub}{summary}</header>\n{savings_figure(charts.savings)}{notes}\n"
        f'<div class="grid">{"".join(sections)}</div>\n'
        f'<section class="tables" id="section-budgets-table"><h2>Budgets</h2>{budget_table(charts.budgets)}</section>\n'
        f'<section class="tables" id="section-table"><h2>Usage</h2>{usage_table(rows)}</section>\n'
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
