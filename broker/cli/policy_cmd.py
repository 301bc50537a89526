"""`llama-broker policy ...`: check a policy file before it ships, and show what it resolves to."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import PolicyError
from ..policy import Policy, load_policy
from ..policy.lint import lint_policy
from ..policy.loader import load_policy_document

__all__ = ["policy_app"]

policy_app = typer.Typer(
    name="policy",
    help="Validate policy files and show the routes and tenants they resolve to.",
    no_args_is_help=True,
    add_completion=False,
)


@policy_app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="Policy files to check.", show_default=False)],
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
    today: Annotated[str | None, typer.Option(help="Date for lifecycle checks (YYYY-MM-DD; default today).")] = None,
) -> None:
    """Check policy files: errors as FILE:LINE: message, warnings as FILE:LINE: warning: message.

    Exits 1 if any file has an error (or, with --strict, a warning).
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    day = dt.date.fromisoformat(today) if today else None
    failed = False
    for file in files:
        try:
            loaded = load_policy_document(file)
        except PolicyError as exc:
            failed = True
            for issue in exc.issues:
                err.print(str(issue), markup=False)
            continue
        findings = lint_policy(loaded, today=day)
        for finding in findings:
            shown = f"{finding.file}:{finding.line}: {finding.message}" if strict else str(finding)
            err.print(shown, markup=False)
        if strict and findings:
            failed = True
            continue
        policy = loaded.policy
        counts = f"{len(policy.routes)} routes, {len(policy.tenants)} tenants"
        warned = f"; {len(findings)} warning{'s' if len(findings) != 1 else ''}" if findings else ""
        out.print(f"ok: {file} ({counts}{warned})", markup=False)
    if failed:
        raise typer.Exit(code=1)


@policy_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="Policy file.", show_default=False)],
    today: Annotated[str | None, typer.Option(help="Date for lifecycle flags (YYYY-MM-DD; default today).")] = None,
) -> None:
    """Print the effective routes (catalog defaults merged) and tenants of a policy."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        raise typer.Exit(code=1) from None
    day = dt.date.fromisoformat(today) if today else dt.date.today()
    console = Console()
    console.print(f"[bold]{file}[/bold]  version {policy.version}  ledger {policy.ledger or '(default location)'}")
    console.print(_routes_table(policy, day))
    console.print(_tenants_table(policy))


def _load_or_exit(file: Path, err: Console) -> Policy:
    try:
        return load_policy(file)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        raise typer.Exit(code=1) from None


@policy_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The policy in force.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="The changed policy.", show_default=False)],
    today: Annotated[str | None, typer.Option(help="Date for lifecycle checks (YYYY-MM-DD; default today).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
) -> None:
    """What a change does: per tenant and model, routes and jurisdictions gained and lost; changed settings.

    Exits 0 when nothing changed, 1 when something did (2 on a bad file).
    """
    import json

    from ..policy.diff import diff_policies

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    day = dt.date.fromisoformat(today) if today else None
    before, after = _load_or_exit(old, err), _load_or_exit(new, err)
    result = diff_policies(before, after, today=day)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        out = Console(highlight=False, soft_wrap=True)
        for line in result.lines():
            out.print(line, markup=False)
    raise typer.Exit(code=0 if result.empty else 1)


@policy_app.command("test")
def test(
    file: Annotated[Path, typer.Argument(help="Policy file.", show_default=False)],
    expectations: Annotated[Path, typer.Argument(help="Expectations file (YAML).", show_default=False)],
    today: Annotated[str | None, typer.Option(help="Date for lifecycle checks (YYYY-MM-DD; default today).")] = None,
) -> None:
    """Check a policy against a file of expectations; each is reported PASS or FAIL with what broke it.

    Exits 1 if any expectation fails or a file has an error.
    """
    from ..policy.expectations import check_expectations, load_expectations

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    policy = _load_or_exit(file, err)
    try:
        loaded = load_expectations(expectations)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        raise typer.Exit(code=1) from None
    day = dt.date.fromisoformat(today) if today else None
    results = check_expectations(policy, loaded, file=str(expectations), today=day)
    out = Console(highlight=False, soft_wrap=True)
    for result in results:
        out.print(str(result), markup=False)
    failed = sum(not r.passed for r in results)
    out.print(f"{len(results) - failed} passed, {failed} failed", markup=False)
    if failed:
        raise typer.Exit(code=1)


def _routes_table(policy: Policy, today: dt.date) -> Table:
    table = Table(title="routes")
    for column in ("id", "provider", "model", "model_id", "region", "jurisdiction", "$/Mtok in", "$/Mtok out",
                   "lifecycle", "endpoint"):
        table.add_column(column, overflow="fold")
    for r in policy.routes:
        status = _lifecycle(r.lifecycle.status, r.lifecycle.retires_on)
        if r.lifecycle.is_retired(today):
            status = f"[red]{status}[/red]"
        elif (r.lifecycle.days_left(today) or 999) < 90:
            status = f"[yellow]{status}[/yellow]"
        table.add_row(
            r.id, r.provider, r.model, r.model_id, r.region or "-", r.jurisdiction,
            _money(r.price.input_per_mtok if r.price else None), _money(r.price.output_per_mtok if r.price else None),
            status, r.endpoint or "(provider default)",
        )
    return table


def _tenants_table(policy: Policy) -> Table:
    table = Table(title="tenants")
    for column in ("tenant", "objective", "residency", "providers", "budget", "latency SLO (ms)"):
        table.add_column(column, overflow="fold")
    for name, t in policy.tenants.items():
        providers = []
        if t.providers.allow is not None:
            providers.append("allow " + ", ".join(t.providers.allow))
        if t.providers.deny:
            providers.append("deny " + ", ".join(t.providers.deny))
        budget = "-"
        if t.budget is not None:
            limits = [f"${t.budget.monthly_usd}/month" if t.budget.monthly_usd is not None else "",
                      f"${t.budget.daily_usd}/day" if t.budget.daily_usd is not None else ""]
            budget = " ".join(x for x in limits if x) + f" -> {t.budget.on_exceed}"
            if t.budget.downgrade_to:
                budget += f" {t.budget.downgrade_to}"
        slo = "-"
        if t.latency_slo_ms is not None:
            slo = " ".join(f"{k} {v:g}" for k, v in (("p50", t.latency_slo_ms.p50), ("p95", t.latency_slo_ms.p95)) if v)
        table.add_row(name, t.objective, "any" if t.residency is None else ", ".join(t.residency),
                      "; ".join(providers) or "any", budget, slo)
    return table


def _money(value: object) -> str:
    return "unknown" if value is None else str(value)


def _lifecycle(status: str, retires_on: dt.date | None) -> str:
    return f"{status} {retires_on}" if retires_on else status
