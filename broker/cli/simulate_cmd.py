"""`llama-broker simulate`: the ledger's recorded calls replayed under a new policy."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import BrokerError, PolicyError
from ..policy import load_policy

__all__ = ["simulate"]


def _day(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option) from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def simulate(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="The policy to replay the calls under.")],
    ledger: Annotated[str, typer.Option("--ledger", help="Ledger URL (sqlite:///PATH or postgresql://...).")],
    since: Annotated[str | None, typer.Option(help="First day replayed (YYYY-MM-DD, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Day after the last one replayed (YYYY-MM-DD, UTC).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replay recorded calls (tenant, model, tokens, needs; never text) under POLICY: per tenant, the cost
    before and after, route shares, refusals, jurisdiction changes and budget breaches."""
    from ..metering import open_ledger
    from ..policy.simulate import simulate as run

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    start, end = _day(since, "--since"), _day(until, "--until")
    if start is not None and end is not None and end <= start:
        raise typer.BadParameter("--until must be after --since", param_hint="--until")
    try:
        new = load_policy(policy)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        raise typer.Exit(code=1) from None
    try:
        store = open_ledger(ledger)
        try:
            rows = store.attempts(start, end)
        finally:
            store.close()
    except BrokerError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(code=1) from None
    report = run(new, rows)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    out = Console(highlight=False, soft_wrap=True)
    for line in report.lines():
        out.print(line, markup=False)
