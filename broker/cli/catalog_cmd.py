"""`llama-broker catalog`: models x providers x regions, with prices, licences and end-of-life dates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import PolicyError
from ..policy import builtin_catalog, load_policy
from ..policy.licence import licence_for

__all__ = ["catalog"]


def catalog(
    model: Annotated[str | None, typer.Option(help="Only this model (any alias).")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="Use this policy's catalog (overrides merged) "
                                                "and its lifecycle_warning_days.")] = None,
    today: Annotated[str | None, typer.Option(help="Date for lifecycle flags (YYYY-MM-DD; default today).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Print the catalog: each deployment's model id, jurisdiction, price and its source, licence, end of life.

    A deployment retired by the date is marked retired; one retiring within the policy's
    `lifecycle_warning_days` (90 without a policy) is marked with the days left.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    warn_days = 90
    cat = builtin_catalog()
    if policy is not None:
        try:
            loaded = load_policy(policy)
        except PolicyError as exc:
            for issue in exc.issues:
                err.print(str(issue), markup=False)
            raise typer.Exit(code=1) from None
        cat, warn_days = loaded.catalog, loaded.lifecycle_warning_days
    day = dt.date.fromisoformat(today) if today else dt.date.today()
    try:
        entries = cat.entries_for(model, provider=provider)
    except PolicyError as exc:  # an unknown model name
        err.print(str(exc), markup=False)
        raise typer.Exit(code=1) from None
    rows = [_row(e, cat, day, warn_days) for e in entries]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"catalog (as of {cat.as_of}; lifecycle on {day})")
    for column in ("provider", "model", "region", "jurisdiction", "model_id", "$/Mtok in", "$/Mtok out",
                   "lifecycle", "licence", "price source"):
        table.add_column(column, overflow="fold")
    for row in rows:
        life = row["lifecycle"]
        if row["retired"]:
            life = f"[red]{life}[/red]"
        elif row["days_left"] is not None and row["days_left"] <= warn_days:
            life = f"[yellow]{life} ({row['days_left']} days left)[/yellow]"
        table.add_row(row["provider"], row["model"], row["region"] or "-", row["jurisdiction"] or "unknown",
                      row["model_id"], _money(row["input_per_mtok"]), _money(row["output_per_mtok"]), life,
                      row["licence"] or "-", row["price_source"] or "unknown")
    Console().print(table)


def _row(e: Any, cat: Any, day: dt.date, warn_days: int) -> dict[str, Any]:
    terms = licence_for(e.model)
    jurisdiction, _ = cat.jurisdictions.derive(e.provider, e.region, e.model_id)
    life = e.lifecycle
    return {
        "provider": e.provider, "model": e.model, "region": e.region, "jurisdiction": jurisdiction,
        "model_id": e.model_id,
        "input_per_mtok": e.price.input_per_mtok if e.price else None,
        "output_per_mtok": e.price.output_per_mtok if e.price else None,
        "price_source": e.price.source if e.price else None,
        "lifecycle": f"{life.status} {life.retires_on}" if life.retires_on else life.status,
        "retires_on": life.retires_on, "retired": life.is_retired(day), "days_left": life.days_left(day),
        "warn": not life.is_retired(day) and life.days_left(day) is not None and life.days_left(day) <= warn_days,
        "licence": terms.name if terms else None,
        "attribution": terms.attribution if terms else None,
    }


def _money(value: object) -> str:
    return "unknown" if value is None else str(value)
