"""`report --licences`: what each product owes the licences of the Llama models it used.

One row per tenant and logical model seen in the ledger's period: the product the tenant
declares in the policy (`licence.product`; "(not declared)" otherwise), the model's licence,
its attribution duty with the clause it rests on, and its acceptable-use policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from broker.policy.licence import licence_for

from .policy_source import policy_for_report

__all__ = ["licence_duties", "print_duties"]

NOT_DECLARED = "(not declared)"


def licence_duties(rows: Iterable[Mapping[str, Any]], policy: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    """Duties per (tenant, model) of the aggregate `rows` (grouped by tenant and model)."""
    loaded = policy_for_report(policy)[0] if policy is not None else None
    out = []
    for row in sorted(rows, key=lambda r: (str(r["tenant"]), str(r["model"]))):
        tenant, model = str(row["tenant"]), str(row["model"])
        declared = None
        if loaded is not None and tenant in loaded.tenants:
            declared = loaded.tenants[tenant].licence
        terms = licence_for(model)
        out.append({
            "tenant": tenant,
            "product": declared.product if declared is not None else NOT_DECLARED,
            "model": model,
            "calls": int(row.get("calls") or 0),
            "licence": terms.name if terms else None,
            "attribution": terms.attribution if terms else None,
            "attribution_clause": terms.attribution_clause if terms else None,
            "acceptable_use_policy": terms.acceptable_use_policy if terms else None,
        })
    return out


def print_duties(duties: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="licence duties per product")
    for column in ("product", "tenant", "model", "calls", "licence", "attribution", "acceptable use policy"):
        table.add_column(column, overflow="fold")
    for d in duties:
        table.add_row(d["product"], d["tenant"], d["model"], str(d["calls"]), d["licence"] or "unknown",
                      f'"{d["attribution"]}"' if d["attribution"] else "-", d["acceptable_use_policy"] or "-")
    console = Console()
    console.print(table)
    clauses = sorted({d["attribution_clause"] for d in duties if d["attribution_clause"]})
    for clause in clauses:
        console.print(clause, markup=False, highlight=False)
