"""The report command's file outputs: the HTML page, the FOCUS export and the tenant statement.

Each reads the ledger in as few SQL passes as it can (the page: one fine-grained pass the
charts and the table are regrouped from, plus one per budget period and one for savings),
under a progress display that appears when the work takes more than a second.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

from broker.metering.query import ReportFilters
from broker.reports.progress import report_progress

__all__ = ["budgets_and_savings", "write_focus", "write_page", "write_statement"]


def budgets_and_savings(
    store: Any, url: str | None, policy_path: Path | None, filters: ReportFilters, month: str | None,
    *, now: dt.datetime | None = None,
) -> tuple[list[Any], list[Any], list[str]]:
    """Budget lines and savings lines from the policy (empty, with a note, when there is none)."""
    from broker.reports.budgets_view import budget_limits, budget_lines, read_reserved
    from broker.reports.policy_source import policy_for_report
    from broker.reports.query import month_bounds
    from broker.reports.savings import catalog_alternatives, savings_lines

    if policy_path is None:
        return [], [], ["Budgets and savings need the policy: pass -p policy.yaml."]
    policy, why = policy_for_report(policy_path)
    if policy is None:
        return [], [], [why]
    now = now or dt.datetime.now(dt.timezone.utc)
    when = month_bounds(month)[0] if month else now
    notes = []
    limits = budget_limits(policy, when)
    reserved = read_reserved(url, [limit.key for limit in limits])
    if limits and reserved is None:
        notes.append("Reserved amounts are not shown: no shared reservation store could be read beside this ledger.")
    lines = budget_lines(policy, store, now=now, when=when, reserved=reserved)
    if month:
        lines = [b for b in lines if b.period == month]
    if filters.tenant:
        lines = [b for b in lines if filters.tenant in b.tenants]
    savings = savings_lines(store, catalog_alternatives(policy), filters)
    if savings:
        notes.append("Savings are estimated from the policy's catalog prices for each tenant's eligible routes "
                     "(residency and allowed providers), not from the decisions made at the time.")
    return lines, savings, notes


def write_page(
    store: Any, url: str | None, policy_path: Path | None, dims: list[str], filters: ReportFilters,
    target: Path, *, subtitle: str, month: str | None,
) -> None:
    """The HTML report: charts, budgets, savings and the rows grouped by `dims`."""
    from broker.reports.html import chart_data, fine_rows, rows_from_fine, write_html_report
    from broker.reports.query import report_rows

    with report_progress("aggregating the ledger") as step:
        fine = fine_rows(store, filters)
        rows = rows_from_fine(fine, dims)
        if rows is None:
            step("aggregating the requested grouping")
            rows = report_rows(store, dims, filters)
        step("budgets and savings")
        budgets, savings, notes = budgets_and_savings(store, url, policy_path, filters, month)
        step("drawing the page")
        charts = chart_data(store, filters, fine=fine, budgets=budgets, savings=savings)
        charts.notes = notes
        write_html_report(rows, target, charts=charts, subtitle=subtitle)


def write_focus(store: Any, filters: ReportFilters, output: Path | None, *, legacy: bool) -> None:
    """The FOCUS dataset: Parquet when `output` ends in ``.parquet``, else CSV (stdout without `output`)."""
    from broker.reports.focus import focus_rows, write_focus_csv, write_focus_parquet

    with report_progress("writing the FOCUS dataset"):
        rows = focus_rows(store, filters)
        if output is not None and output.suffix.lower() == ".parquet":
            write_focus_parquet(rows, output)
        elif output is not None:
            with open(output, "w", encoding="utf-8", newline="") as fh:
                write_focus_csv(rows, fh, legacy_columns=legacy)
        else:
            write_focus_csv(rows, sys.stdout, legacy_columns=legacy)


def write_statement(
    store: Any, url: str | None, policy_path: Path | None, tenant: str, month: str, filters: ReportFilters,
    target: Path,
) -> None:
    """The printable statement of one tenant's month."""
    from broker.reports.statement import render_statement, statement_data

    assert filters.since is not None and filters.until is not None
    with report_progress(f"statement for {tenant}"):
        budgets, savings, notes = budgets_and_savings(store, url, policy_path, filters, month)
        data = statement_data(store, tenant, month, filters.since, filters.until, budgets=budgets,
                              savings=savings, notes=notes)
        target.write_text(render_statement(data), encoding="utf-8")
