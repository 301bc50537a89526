"""`simulate`: recorded calls replayed under another policy, per tenant, without calling anyone.

    calls        one per request id in the ledger: its tenant, logical model, the tokens it was
                 billed (the last attempt's), its needs (tools, vision, json, stream, max_tokens)
                 and what all its attempts cost; no text is read, none is needed
    replayed     the new policy's own router decides each call on its day, with healthy routes
                 and a probe request of the recorded size; the first route it ranks is taken
    after        that route's price for the recorded tokens (unknown where it has no price)
    budgets      the new policy's tenant budgets against the simulated spend, per month and day

Reported per tenant: cost before and after, route shares before and after, calls refused (with
the refusal's kind), calls whose jurisdiction changes, and budget breaches.  Calls an input
guardrail blocked are not replayed (their text decided them).  Deterministic: the same ledger
and policy print the same report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .decision import Decision
from .loaded import Policy
from .probe import Needs, Probe

__all__ = ["RecordedCall", "SimulationReport", "TenantSimulation", "recorded_calls", "simulate"]

_SKIPPED_ROUTES = {"guardrail"}


@dataclass(frozen=True)
class RecordedCall:
    request_id: str
    tenant: str
    model: str
    ts: dt.datetime
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: Decimal | None
    route_id: str
    jurisdiction: str
    ok: bool
    needs: Needs


@dataclass
class TenantSimulation:
    tenant: str
    calls: int = 0
    cost_before: Decimal = Decimal(0)
    cost_after: Decimal = Decimal(0)
    unknown_before: int = 0
    unknown_after: int = 0
    routes_before: Counter[str] = field(default_factory=Counter)
    routes_after: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    jurisdiction_changes: Counter[str] = field(default_factory=Counter)
    budget_breaches: list[str] = field(default_factory=list)

    @property
    def saving(self) -> Decimal:
        return self.cost_before - self.cost_after

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant, "calls": self.calls, "cost_before_usd": str(self.cost_before),
            "cost_after_usd": str(self.cost_after), "saving_usd": str(self.saving),
            "unknown_cost_before": self.unknown_before, "unknown_cost_after": self.unknown_after,
            "routes_before": dict(sorted(self.routes_before.items())),
            "routes_after": dict(sorted(self.routes_after.items())),
            "refused": dict(sorted(self.refused.items())),
            "jurisdiction_changes": dict(sorted(self.jurisdiction_changes.items())),
            "budget_breaches": self.budget_breaches,
        }


@dataclass
class SimulationReport:
    tenants: dict[str, TenantSimulation]
    skipped: int = 0

    @property
    def cost_before(self) -> Decimal:
        return sum((t.cost_before for t in self.tenants.values()), Decimal(0))

    @property
    def cost_after(self) -> Decimal:
        return sum((t.cost_after for t in self.tenants.values()), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {"tenants": [t.as_dict() for _, t in sorted(self.tenants.items())], "skipped": self.skipped,
                "cost_before_usd": str(self.cost_before), "cost_after_usd": str(self.cost_after),
                "saving_usd": str(self.cost_before - self.cost_after)}

    def lines(self) -> list[str]:
        out = []
        for name, t in sorted(self.tenants.items()):
            out.append(f"tenant {name}: {t.calls} calls, ${_usd(t.cost_before)} -> ${_usd(t.cost_after)} "
                       f"(saving ${_usd(t.saving)})")
            if t.unknown_before or t.unknown_after:
                out.append(f"  calls of unknown cost: {t.unknown_before} before, {t.unknown_after} after")
            out.append("  routes before: " + _shares(t.routes_before, t.calls))
            out.append("  routes after:  " + _shares(t.routes_after, t.calls))
            for kind, n in sorted(t.refused.items()):
                out.append(f"  refused: {n} ({kind})")
            for change, n in sorted(t.jurisdiction_changes.items()):
                out.append(f"  jurisdiction {change}: {n} calls")
            out += [f"  budget: {b}" for b in t.budget_breaches]
        out.append(f"all tenants: ${_usd(self.cost_before)} -> ${_usd(self.cost_after)} "
                   f"(saving ${_usd(self.cost_before - self.cost_after)})")
        if self.skipped:
            out.append(f"not replayed: {self.skipped} calls an input guardrail blocked")
        return out


def _usd(value: Decimal) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def _shares(counts: Counter[str], total: int) -> str:
    if not counts:
        return "(none)"
    return ", ".join(f"{route} {n} ({100 * n / max(total, 1):.0f}%)" for route, n in sorted(counts.items()))


def _needs(raw: str | None) -> Needs:
    data = json.loads(raw) if raw else {}
    known = {k: data[k] for k in ("tools", "vision", "json", "stream", "max_tokens") if k in data}
    try:
        return Needs.parse(known)
    except ValueError:
        return Needs()


def recorded_calls(rows: Iterable[Mapping[str, Any]]) -> tuple[list[RecordedCall], int]:
    """One call per request id (in the order first seen) from ledger rows; and how many were skipped."""
    by_request: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_request.setdefault(str(row["request_id"]), []).append(row)
    calls, skipped = [], 0
    for request_id, attempts in by_request.items():
        attempts.sort(key=lambda r: int(r["attempt"]))
        last = attempts[-1]
        if last["route_id"] in _SKIPPED_ROUTES:
            skipped += 1
            continue
        costs = [r["cost_usd"] for r in attempts]
        calls.append(RecordedCall(
            request_id=request_id, tenant=str(last["tenant"]), model=str(last["model"]), ts=last["ts"],
            input_tokens=int(last["input_tokens"]), output_tokens=int(last["output_tokens"]),
            cached_input_tokens=int(last["cached_input_tokens"] or 0),
            cost_usd=None if any(c is None for c in costs) else sum(costs, Decimal(0)),
            route_id=str(last["route_id"]), jurisdiction=str(last["jurisdiction"]), ok=last["status"] == "ok",
            needs=_needs(last["needs"]),
        ))
    return calls, skipped


def simulate(policy: Policy, rows: Iterable[Mapping[str, Any]]) -> SimulationReport:
    """Replay the ledger rows under `policy` (see the module docstring)."""
    calls, skipped = recorded_calls(rows)
    report = SimulationReport({}, skipped)
    probes: dict[dt.date, Probe] = {}
    spend: dict[tuple[str, str], Decimal] = {}
    for call in calls:
        sim = report.tenants.setdefault(call.tenant, TenantSimulation(call.tenant))
        sim.calls += 1
        sim.routes_before[call.route_id] += 1
        if call.cost_usd is None:
            sim.unknown_before += 1
        else:
            sim.cost_before += call.cost_usd
        day = call.ts.date()
        probe = probes.get(day) or probes.setdefault(day, Probe(policy, today=day))
        needs = call.needs
        if needs.max_tokens is None:
            needs = Needs(needs.tools, needs.vision, needs.json, needs.stream, max(call.output_tokens, 1))
        outcome = probe.decide(call.tenant, call.model, needs, input_tokens=call.input_tokens)
        if not isinstance(outcome, Decision):
            sim.refused[type(outcome).__name__] += 1
            continue
        route = outcome.routes[0]
        sim.routes_after[route.id] += 1
        if route.jurisdiction != call.jurisdiction:
            sim.jurisdiction_changes[f"{call.jurisdiction} -> {route.jurisdiction}"] += 1
        if route.price is None:
            sim.unknown_after += 1
            continue
        cost = route.price.cost(call.input_tokens, call.output_tokens, call.cached_input_tokens)
        sim.cost_after += cost
        _count_budget(policy, call, cost, spend, sim)
    return report


def _count_budget(policy: Policy, call: RecordedCall, cost: Decimal, spend: dict[tuple[str, str], Decimal],
                  sim: TenantSimulation) -> None:
    budget = policy.tenant(call.tenant).budget  # a tenant the policy refuses never got here
    if budget is None:
        return
    periods = ((budget.monthly_usd, call.ts.strftime("%Y-%m")), (budget.daily_usd, call.ts.date().isoformat()))
    for limit, period in periods:
        if limit is None:
            continue
        key = (call.tenant, period)
        before = spend.get(key, Decimal(0))
        spend[key] = before + cost
        if before <= Decimal(limit) < spend[key]:
            sim.budget_breaches.append(f"{period}: the ${limit} budget is passed at call {call.request_id} "
                                       f"({budget.on_exceed} would act from there)")
