"""`policy test POLICY EXPECTATIONS.yaml`: a platform team's promises about a policy, checked by its engine.

    expectations:
      - name: the EU tenant stays in the EU, tools or not
        tenant: acme-eu
        model: llama-4-scout
        needs: {tools: true}                  # tools, vision, json, stream, max_tokens
        only_jurisdictions: [eu]              # every route a call could take
        never_providers: [groq]
        only_providers: [bedrock, azure]
        routes_include: [bedrock-eu]          # these stay reachable
        routes_exclude: [groq-us]
        first_route: bedrock-eu               # the route tried first
        refused: false                        # true: the call must be refused outright
        refused_when_budget_spent: true       # refused once the tenant's budget is used up

Each expectation passes or fails with what broke it (the route, its jurisdiction or provider,
or the error the engine gave).  Every problem in the file is reported with its line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broker.errors import BudgetExceeded, PolicyError, PolicyIssue

from .decision import Decision
from .loaded import Policy
from .probe import Needs, Probe
from .yaml_source import LineIndex, issues_from_validation, read_yaml

__all__ = ["Expectation", "ExpectationResult", "check_expectations", "load_expectations"]


class Expectation(BaseModel):
    """One promise about where a tenant's calls for a model may go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    tenant: str
    model: str
    needs: dict[str, object] = Field(default_factory=dict)
    only_jurisdictions: list[str] | None = None
    never_providers: list[str] = Field(default_factory=list)
    only_providers: list[str] | None = None
    routes_include: list[str] = Field(default_factory=list)
    routes_exclude: list[str] = Field(default_factory=list)
    first_route: str | None = None
    refused: bool | None = None
    refused_when_budget_spent: bool | None = None

    @field_validator("needs")
    @classmethod
    def _needs(cls, value: dict[str, object]) -> dict[str, object]:
        Needs.parse(value)
        return value

    @property
    def title(self) -> str:
        return self.name or f"{self.tenant} / {self.model} ({Needs.parse(self.needs).label()})"


@dataclass(frozen=True)
class ExpectationResult:
    expectation: Expectation
    file: str
    line: int
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}:{self.line}: {self.expectation.title}"
        return "\n".join([head, *(f"    {f}" for f in self.failures)])


def load_expectations(path: str | Path) -> list[tuple[Expectation, int]]:
    """The expectations of a file with their lines; a `PolicyError` lists every problem."""
    file = str(path)
    issues: list[PolicyIssue] = []
    index = LineIndex()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(PolicyIssue(file, 0, f"cannot read expectations: {exc}")) from None
    doc = read_yaml(text, file, index, issues)
    if issues:
        raise PolicyError(issues)
    items = doc.get("expectations") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise PolicyError(PolicyIssue(file, 1, "an expectations file holds a non-empty `expectations:` list"))
    out: list[tuple[Expectation, int]] = []
    for i, item in enumerate(items):
        where = index.where_of(items, i) or (file, 1)
        try:
            out.append((Expectation.model_validate(item), where[1]))
        except ValidationError as exc:
            issues += issues_from_validation(exc, root=doc, prefix=("expectations", i), index=index, default=where,
                                             known_keys=Expectation.model_fields)
    if issues:
        raise PolicyError(issues)
    return out


def check_expectations(
    policy: Policy, expectations: list[tuple[Expectation, int]], *, file: str, today: dt.date | None = None
) -> list[ExpectationResult]:
    """Check each expectation against `policy` on `today`."""
    probe = Probe(policy, today=today)
    results = []
    for expectation, line in expectations:
        results.append(ExpectationResult(expectation, file, line, tuple(_failures(policy, probe, expectation,
                                                                                    today))))
    return results


def _failures(policy: Policy, probe: Probe, exp: Expectation, today: dt.date | None) -> list[str]:
    needs = Needs.parse(exp.needs)
    outcome = probe.decide(exp.tenant, exp.model, needs)
    failures: list[str] = []
    if exp.refused is True:
        if isinstance(outcome, Decision):
            failures.append(f"expected the call to be refused; it would go to {outcome.routes[0].id}")
        return failures
    if not isinstance(outcome, Decision):
        failures.append(f"the call is refused: {type(outcome).__name__}: {outcome}")
        return failures
    routes = outcome.routes
    ids = [r.id for r in routes]
    for route in routes:
        if exp.only_jurisdictions is not None and route.jurisdiction not in exp.only_jurisdictions:
            failures.append(f"route {route.id} is in jurisdiction {route.jurisdiction}, outside "
                            f"[{', '.join(exp.only_jurisdictions)}]")
        if route.provider in exp.never_providers:
            failures.append(f"route {route.id} is on provider {route.provider}, which is never to be used")
        if exp.only_providers is not None and route.provider not in exp.only_providers:
            failures.append(f"route {route.id} is on provider {route.provider}, outside "
                            f"[{', '.join(exp.only_providers)}]")
    failures += [f"route {rid} is not reachable" for rid in exp.routes_include if rid not in ids]
    failures += [f"route {rid} is reachable" for rid in exp.routes_exclude if rid in ids]
    if exp.first_route is not None and ids[0] != exp.first_route:
        failures.append(f"the first route is {ids[0]}, not {exp.first_route}")
    if exp.refused_when_budget_spent is not None:
        failures += _budget_failures(policy, exp, needs, today)
    return failures


def _budget_failures(policy: Policy, exp: Expectation, needs: Needs, today: dt.date | None) -> list[str]:
    tenant = policy.tenant(exp.tenant)
    budget = tenant.budget
    limits = [Decimal(v) for v in (budget.monthly_usd, budget.daily_usd) if v is not None] if budget else []
    if not limits:
        return ["the tenant has no budget"] if exp.refused_when_budget_spent else []
    spent = Probe(policy, today=today, spent_usd=max(limits)).decide(exp.tenant, exp.model, needs)
    refused = isinstance(spent, BudgetExceeded)
    if exp.refused_when_budget_spent and not refused:
        got = f"it would go to {spent.routes[0].id}" if isinstance(spent, Decision) else f"{type(spent).__name__}"
        return [f"expected a refusal once the budget is spent; {got}"]
    if not exp.refused_when_budget_spent and refused:
        return ["the call is refused once the budget is spent"]
    return []
