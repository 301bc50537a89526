"""`llama-broker report`: cost per tenant, provider, model, region, day... from the usage ledger.

Formats: table, csv, json, html (charts, budgets, savings), focus (a FOCUS 1.2 dataset: CSV, or
Parquet when the output ends in ``.parquet``); ``--statement TENANT --month YYYY-MM`` writes a
printable statement.  With ``-p policy.yaml`` only the policy's ``ledger:`` is needed; budgets
and savings use the rest when it loads.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

__all__ = ["ReportFormat", "report"]

DEFAULT_HTML = "llama-broker-report.html"


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    html = "html"
    focus = "focus"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _ledger_url(ledger: str | None, policy: Path | None) -> str | None:
    """The ledger to read: ``--ledger``, else the policy's ``ledger:`` alone (a bad file is its `PolicyError`)."""
    if ledger:
        from broker.errors import MeteringError
        from broker.metering.location import ledger_kind

        try:
            ledger_kind(ledger)  # the URL's form only: an unsupported or malformed one is a usage error
        except MeteringError as exc:
            raise _fail(f"{type(exc).__name__}: {exc}") from None
        return ledger
    if policy is not None:
        from broker.reports.policy_source import policy_ledger

        return policy_ledger(policy)
    return None


def _describe(filters: Any, group_by: list[str]) -> str:
    """The page's subtitle: the filters set and the grouping (whole minutes, no microseconds)."""
    parts = [
        f"{k}={v}"
        for k in ("tenant", "provider", "model", "region", "jurisdiction", "route_id")
        if (v := getattr(filters, k)) is not None
    ]
    parts += [f"tag {k}={v}" for k, v in filters.tags]
    for bound in ("since", "until"):
        value = getattr(filters, bound)
        if value is not None:
            parts.append(f"{bound} {value.strftime('%Y-%m-%d %H:%M')} UTC")
    if group_by:
        parts.append("by " + ", ".join(group_by))
    return " · ".join(parts) or "all usage"


def _tags(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values or []:
        key, sep, tag = value.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--tag takes KEY=VALUE, got {value!r}")
        pairs.append((key.strip(), tag.strip()))
    return tuple(pairs)


def _period(
    since: str | None, until: str | None, month: str | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    from broker.reports.query import month_bounds, parse_time

    start, end = parse_time(since), parse_time(until, end=True)
    if month:
        if since or until:
            raise typer.BadParameter("--month replaces --since/--until; give one or the other")
        start, end = month_bounds(month)
    if start is not None and end is not None and start >= end:
        raise _fail(f"the period ends before it starts: --since {start:%Y-%m-%d %H:%M} is after "
                    f"--until {end:%Y-%m-%d %H:%M} (UTC)")
    return start, end


def report(
    ledger: str | None = typer.Option(
        None,
        "--ledger",
        help="Ledger URL (sqlite:///PATH or postgresql://...); default: the policy's, else the data dir.",
    ),
    policy: Path | None = typer.Option(
        None, "--policy", "-p", help="Policy file: its ledger setting; budgets and savings use the rest."
    ),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant."),
    since: str | None = typer.Option(
        None, "--since", help="From (inclusive): YYYY-MM-DD, ISO datetime, today, 7d."
    ),
    until: str | None = typer.Option(
        None, "--until", help="To: a date includes that whole day; a datetime is exclusive."
    ),
    month: str | None = typer.Option(None, "--month", help="One UTC month, YYYY-MM (instead of --since/--until)."),
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this logical model."),
    region: str | None = typer.Option(None, "--region", help="Only this region."),
    jurisdiction: str | None = typer.Option(None, "--jurisdiction", help="Only this jurisdiction."),
    route: str | None = typer.Option(None, "--route", help="Only this route id."),
    tag: list[str] | None = typer.Option(None, "--tag", help="Only events with this tag, KEY=VALUE (repeatable)."),
    group_by: list[str] | None = typer.Option(
        None,
        "--group-by",
        "-g",
        help="Repeatable or comma list: tenant, provider, model, model_id, route_id, region, jurisdiction, "
        "status, error_kind, day, month, policy_version, price_version, tag, tag:KEY.  "
        "Default: tenant,provider,model,region.",
    ),
    fmt: ReportFormat = typer.Option(
        ReportFormat.table, "--format", "-f", help="table, csv, json, html or focus (FOCUS 1.2 CSV / Parquet)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help=f"Write here (html default: {DEFAULT_HTML}; focus: .parquet for Parquet)."
    ),
    statement: str | None = typer.Option(
        None, "--statement", help="Write a printable HTML statement for this tenant (needs --month)."
    ),
    focus_legacy: bool = typer.Option(
        False, "--focus-legacy-columns", help="FOCUS CSV: add the 1.0-preview column names too."
    ),
    licences: bool = typer.Option(
        False, "--licences", help="The licence duties (attribution, acceptable use) of each product, per model used."
    ),
) -> None:
    """Cost report from the usage ledger, aggregated in SQL."""
    from broker.metering import LedgerNotFound, open_ledger, parse_group_by
    from broker.reports import ReportFilters
    from broker.reports.query import DEFAULT_GROUP_BY

    if statement is not None and not month:
        raise typer.BadParameter("--statement needs --month YYYY-MM")
    try:
        dims = [d.key for d in parse_group_by(group_by or DEFAULT_GROUP_BY)]
        start, end = _period(since, until, month)
        filters = ReportFilters(
            tenant=statement or tenant, since=start, until=end, provider=provider, model=model, region=region,
            jurisdiction=jurisdiction, route_id=route, tags=_tags(tag),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    url = _ledger_url(ledger, policy)
    try:  # any other MeteringError (a server that cannot be reached) is one line, from the CLI's handler
        store = open_ledger(url, create=False)
    except LedgerNotFound as exc:
        raise _fail(f"{exc} (nothing metered yet, or pass --ledger / --policy)", 1) from None
    from broker.reports.pages import write_focus, write_page, write_statement

    try:
        if statement is not None:
            assert month is not None
            target = output or Path(f"statement-{statement}-{month}.html")
            write_statement(store, url, policy, statement, month, filters, target)
            typer.echo(f"wrote {target}", err=True)
            return
        if licences:
            from broker.reports.licences import licence_duties, print_duties

            duties = licence_duties(store.aggregate(group_by=["tenant", "model"], filters=filters), policy)
            if fmt is ReportFormat.json:
                sys.stdout.write(json.dumps(duties, indent=2) + "\n")
            else:
                print_duties(duties)
            return
        if fmt is ReportFormat.focus:
            write_focus(store, filters, output, legacy=focus_legacy)
            if output is not None:
                typer.echo(f"wrote {output}", err=True)
            return
        if fmt is ReportFormat.html:
            target = output or Path(DEFAULT_HTML)
            write_page(store, url, policy, dims, filters, target, subtitle=_describe(filters, dims),
                       month=month)
            typer.echo(f"wrote {target}", err=True)
            return
        from broker.reports import report_rows
        from broker.reports.progress import report_progress

        with report_progress("aggregating the ledger"):
            rows = report_rows(store, dims, filters)
    finally:
        store.close()

    if fmt is ReportFormat.table:
        from broker.reports.render import print_table

        if output is not None:
            with open(output, "w", encoding="utf-8") as fh:
                print_table(rows, title=_describe(filters, dims), file=fh)
        else:
            print_table(rows, title=_describe(filters, dims))
        return
    from broker.reports import to_csv, to_json

    text = to_csv(rows) if fmt is ReportFormat.csv else to_json(rows) + "\n"
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
