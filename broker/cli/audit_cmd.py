"""`llama-broker audit`: the stored decisions of a tenant, and `audit residency` over every event.

`audit residency` exits 0 when no checked event broke its residency, 1 when one did; events
whose policy version was never stored are listed apart as unverifiable, never as compliant.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer

__all__ = ["audit_app"]

audit_app = typer.Typer(add_completion=False, invoke_without_command=True)

LedgerOpt = typer.Option(None, "--ledger", help="Ledger URL (default: the policy's, else the data dir).")
PolicyOpt = typer.Option(None, "--policy", "-p", help="Policy file whose ledger to read.")


def _store(ledger: str | None, policy: Path | None) -> Any:
    from broker.audit.store import open_store
    from broker.errors import MeteringError
    from broker.metering.location import default_ledger_url, ledger_kind, sqlite_path_from_url

    if ledger is None and policy is not None:
        from broker.policy.loader import load_policy

        ledger = load_policy(policy).ledger
    url = ledger or default_ledger_url()
    if ledger_kind(url) == "sqlite":
        path = sqlite_path_from_url(url) if "://" in url else url
        if path != ":memory:" and not Path(path).exists():
            raise MeteringError(f"no ledger at {path}")
    return open_store(url)


def _when(value: str | None, flag: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"error: {flag}: not an ISO 8601 date or time: {value!r}", err=True)
        raise typer.Exit(2) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _removed(doc: dict[str, Any]) -> str:
    removed = [f"{c['route']} ({c['removed_by']})" for c in doc.get("candidates", []) if not c.get("eligible")]
    return ", ".join(removed) or "-"


@audit_app.callback()
def audit(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's decisions."),
    since: str | None = typer.Option(None, "--since", help="From this ISO date or time (UTC unless given)."),
    until: str | None = typer.Option(None, "--until", help="Before this ISO date or time."),
    limit: int | None = typer.Option(None, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the decisions as JSON."),
    ledger: str | None = LedgerOpt,
    policy: Path | None = PolicyOpt,
) -> None:
    """List stored decisions: candidates, the filter that removed each, scores, the route chosen."""
    if ctx.invoked_subcommand is not None:
        return
    store = _store(ledger, policy)
    try:
        rows = store.decisions(tenant=tenant, since=_when(since, "--since"), until=_when(until, "--until"),
                               limit=limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))
        return
    if not rows:
        typer.echo("no decisions")
        return
    for r in rows:
        typer.echo(f"{r['ts'].isoformat()} {r['tenant']} {r['model']} -> {r['chosen_route'] or '-'} "
                   f"[{r['outcome']}{': ' + r['error_kind'] if r['error_kind'] else ''}] "
                   f"policy {r['policy_version']} decision {r['decision_id']} removed: {_removed(r['document'])}")


@audit_app.command("residency")
def residency(
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Only this tenant's events."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ledger: str | None = LedgerOpt,
    policy: Path | None = PolicyOpt,
) -> None:
    """Check every event against the residency of the policy version it ran under."""
    store = _store(ledger, policy)
    try:
        report = store.residency(tenant=tenant)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({
            "checked": report.checked,
            "violations": [{**v.__dict__, "timestamp": v.timestamp.isoformat()} for v in report.violations],
            "unverifiable": report.unverifiable,
        }, indent=2, sort_keys=True))
    else:
        typer.echo(f"checked {report.checked} events against the policy version each ran under")
        if report.violations:
            typer.echo(f"{len(report.violations)} violations:")
            for v in report.violations:
                typer.echo(f"  {v.timestamp.isoformat()} tenant {v.tenant}: {v.provider}/{v.region or '-'} "
                           f"[{v.jurisdiction}] route {v.route_id}, policy {v.policy_version}, event {v.event_id}")
        else:
            typer.echo("violations: none")
        if report.unverifiable:
            typer.echo(f"unverifiable (policy version not stored): {report.unverifiable_total} events")
            for name, n in sorted(report.unverifiable.items()):
                typer.echo(f"  {name}: {n}")
    if report.violations:
        raise typer.Exit(1)
