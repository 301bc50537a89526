"""`llama-broker report`: cost per tenant, provider, model, region, day... from the usage ledger."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

__all__ = ["ReportFormat", "report"]

DEFAULT_HTML = "llama-broker-report.html"


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    html = "html"


def _ledger_url(ledger: str | None, policy: Path | None) -> str | None:
    """The ledger to read: ``--ledger``, else the policy's (a bad policy file is its `PolicyError`)."""
    if ledger:
        from broker.errors import MeteringError
        from broker.metering.location import ledger_kind

        try:
            ledger_kind(ledger)  # the URL's form only: an unsupported or malformed one is a usage error
        except MeteringError as exc:
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(2) from None
        return ledger
    if policy is not None:
        from broker.policy.loader import load_policy

        return load_policy(policy).ledger
    return None


def _describe(filters: object, group_by: list[str]) -> str:
    parts = [
        f"{k}={v}"
        for k in ("tenant", "provider", "model", "region", "jurisdiction")
        if (v := getattr(filters, k)) is not None
    ]
    for bound in ("since", "until"):
        value = getattr(filters, bound)
        if value is not None:
            parts.append(f"{bound} {value.isoformat()}")
    parts.append("grouped by " + ", ".join(group_by))
    return " · ".join(parts)


def report(
    ledger: str | None = typer.Option(
        None,
        "--ledger",
        help="Ledger URL (sqlite:///PATH or postgresql://...); default: the policy's, else the data dir.",
    ),
    policy: Path | None = typer.Option(
        None, "--policy", "-p", help="Read the ledger location from this policy file."
    ),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant."),
    since: str | None = typer.Option(
        None, "--since", help="From (inclusive): YYYY-MM-DD, ISO datetime, today, 7d."
    ),
    until: str | None = typer.Option(
        None, "--until", help="To: a date includes that whole day; a datetime is exclusive."
    ),
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this logical model."),
    region: str | None = typer.Option(None, "--region", help="Only this region."),
    jurisdiction: str | None = typer.Option(None, "--jurisdiction", help="Only this jurisdiction."),
    group_by: list[str] | None = typer.Option(
        None,
        "--group-by",
        "-g",
        help="Repeatable or comma list: tenant, provider, model, model_id, route_id, region, jurisdiction, "
        "status, error_kind, day, month, tag, tag:KEY.  Default: tenant,provider,model,region.",
    ),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", "-f", help="table, csv, json or html."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help=f"Write here (html default: {DEFAULT_HTML})."
    ),
) -> None:
    """Cost report from the usage ledger, aggregated in SQL."""
    from broker.metering import LedgerNotFound, open_ledger, parse_group_by
    from broker.reports import ReportFilters, parse_time, report_rows, to_csv, to_json
    from broker.reports.query import DEFAULT_GROUP_BY

    try:
        dims = [d.key for d in parse_group_by(group_by or DEFAULT_GROUP_BY)]
        filters = ReportFilters(
            tenant=tenant,
            since=parse_time(since),
            until=parse_time(until, end=True),
            provider=provider,
            model=model,
            region=region,
            jurisdiction=jurisdiction,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    url = _ledger_url(ledger, policy)
    try:  # any other MeteringError (a server that cannot be reached) is one line, from the CLI's handler
        store = open_ledger(url, create=False)
    except LedgerNotFound as exc:
        typer.echo(f"error: {exc} (nothing metered yet, or pass --ledger / --policy)", err=True)
        raise typer.Exit(1) from None
    try:
        rows = report_rows(store, dims, filters)
        if fmt is ReportFormat.html:
            from broker.reports.html import chart_data, write_html_report

            target = output or Path(DEFAULT_HTML)
            write_html_report(
                rows, target, charts=chart_data(store, filters), subtitle=_describe(filters, dims)
            )
            typer.echo(f"wrote {target}", err=True)
            return
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
    text = to_csv(rows) if fmt is ReportFormat.csv else to_json(rows) + "\n"
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
