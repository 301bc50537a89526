"""A printable monthly statement for one tenant: usage by model and route, cost, budget, savings.

One HTML file (no script, inline SVG) laid out for A4 / Letter paper, so a platform team can
send it to the tenant's owner or print it to PDF.  Sections: ``#statement-summary`` (requests,
attempts, tokens, cost, unpriced usage), ``#statement-usage`` (a table by model and route),
``#chart-statement-daily`` (spend per day), ``#statement-budget`` and ``#savings-figure``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.metering.query import ReportFilters
from broker.reports.budgets_view import BudgetLine
from broker.reports.html import budget_table, regroup, savings_figure, usage_table
from broker.reports.money import format_usd
from broker.reports.palette import UNPRICED_COLOUR, colour_for
from broker.reports.query import report_rows
from broker.reports.render import totals
from broker.reports.savings import SavingsLine
from broker.reports.svg import Series, bar_chart

__all__ = ["Statement", "render_statement", "statement_data"]

_CSS = """
@page { size: A4; margin: 16mm; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933; max-width: 190mm;
       margin: 1.5rem auto; font-size: 10.5pt; }
h1 { font-size: 18pt; margin: 0; } h2 { font-size: 12pt; margin: 1.2rem 0 .4rem; }
.meta { color: #52606d; margin: .2rem 0 1rem; } .summary td { padding: .15rem 1rem .15rem 0; }
table { border-collapse: collapse; width: 100%; font-size: 9.5pt; }
th, td { border-bottom: 1px solid #e4e7eb; padding: .25rem .4rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tfoot td { font-weight: 600; }
tr.over td { background: #fde8e8; } tr.near td { background: #fff6db; }
.chart-svg { width: 100%; height: auto; } .note { color: #52606d; font-size: 9pt; }
section { break-inside: avoid; }
"""


@dataclass(frozen=True)
class Statement:
    """Everything one tenant's month shows."""

    tenant: str
    month: str
    rows: list[dict[str, Any]]
    daily: list[dict[str, Any]]
    budgets: list[BudgetLine]
    savings: list[SavingsLine]
    notes: tuple[str, ...] = ()


def statement_data(
    ledger: Any, tenant: str, month: str, since: datetime, until: datetime, *,
    budgets: Sequence[BudgetLine] = (), savings: Sequence[SavingsLine] = (), notes: Sequence[str] = (),
) -> Statement:
    """One ledger pass (day x model x route) for the tenant's month, regrouped for the tables."""
    fine = report_rows(ledger, ["day", "model", "route_id", "provider", "region"],
                       ReportFilters(tenant=tenant, since=since, until=until))
    rows = regroup(fine, ["model", "route_id", "provider", "region"])
    return Statement(
        tenant=tenant, month=month, rows=rows, daily=regroup(fine, ["day"]),
        budgets=[b for b in budgets if tenant in b.tenants],
        savings=[s for s in savings if s.tenant == tenant and s.period == month], notes=tuple(notes),
    )


def render_statement(statement: Statement, *, issuer: str = "llama-broker") -> str:
    """The statement page as a string."""
    s = statement
    total = totals(s.rows) if s.rows else None
    if total is None:
        summary = '<p id="statement-summary">No usage recorded for this tenant in this month.</p>'
    else:
        unpriced = total["unpriced_input_tokens"] + total["unpriced_output_tokens"]
        cells = [
            ("Cost", format_usd(total["cost_usd"])), ("Requests", f"{total['calls']:,}"),
            ("Attempts", f"{total['attempts']:,} ({total['retries']:,} retries, {total['failovers']:,} failovers)"),
            ("Input tokens", f"{total['input_tokens']:,}"), ("Output tokens", f"{total['output_tokens']:,}"),
            ("Unpriced usage", f"{total['unknown_cost_calls']:,} attempts, {unpriced:,} tokens (not in the cost)"),
        ]
        summary = '<table class="summary" id="statement-summary">' + "".join(
            f"<tr><td>{html.escape(k)}</td><td><strong>{html.escape(v)}</strong></td></tr>" for k, v in cells
        ) + "</table>"
    days = [str(r["day"]) for r in s.daily]
    daily = bar_chart("chart-statement-daily", days, [
        Series("spend", colour_for("tenant", s.tenant),
               [float(r["cost_usd"]) if r["cost_usd"] is not None else None for r in s.daily]),
    ], label="spend per day")
    unpriced_daily = bar_chart("chart-statement-unpriced", days, [
        Series("unpriced tokens", UNPRICED_COLOUR,
               [r["unpriced_input_tokens"] + r["unpriced_output_tokens"] for r in s.daily], hatched=True),
    ], unit="count", label="unpriced tokens per day")
    usage = usage_table(s.rows, table_id="statement-usage") if s.rows else '<p id="statement-usage">-</p>'
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in s.notes)
    title = f"Usage statement: {s.tenant}, {s.month}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1 id="statement-title">{html.escape(title)}</h1>'
        f'<p class="meta">Issued from the {html.escape(issuer)} usage ledger · tenant '
        f"<strong>{html.escape(s.tenant)}</strong> · period {html.escape(s.month)} (UTC) · amounts in USD</p>"
        "</header>\n"
        f"<section><h2>Summary</h2>{summary}</section>\n"
        f"<section><h2>Usage by model and route</h2>{usage}</section>\n"
        f"<section><h2>Spend per day</h2>{daily}</section>\n"
        f"<section><h2>Unpriced usage per day</h2>{unpriced_daily}</section>\n"
        f'<section><h2>Budget</h2>{budget_table(s.budgets)}</section>\n'
        f"<section><h2>Savings</h2>{savings_figure(s.savings)}</section>\n{notes}"
        "</body>\n</html>\n"
    )
