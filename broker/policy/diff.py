"""`policy diff OLD NEW`: what a policy change does, per tenant and logical model.

Reachability is asked of each policy's own router (`broker/policy/probe.py`), so a diff shows
the routes and jurisdictions calls would really gain or lose; tenant settings (budgets, limits,
objective, residency, providers, models...) are compared field by field, so a setting added to
the schema is diffed without a change here.  Keys of the gateway are compared by count only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .loaded import Policy
from .probe import Probe

__all__ = ["PolicyDiff", "ReachDiff", "SettingChange", "diff_policies"]

_NOT_DIFFED = {"name", "api_keys"}


@dataclass(frozen=True)
class ReachDiff:
    """Routes and jurisdictions one tenant gains or loses for one model."""

    tenant: str
    model: str
    routes_gained: tuple[str, ...]
    routes_lost: tuple[str, ...]
    jurisdictions_gained: tuple[str, ...]
    jurisdictions_lost: tuple[str, ...]


@dataclass(frozen=True)
class SettingChange:
    tenant: str
    path: str
    old: Any
    new: Any


@dataclass
class PolicyDiff:
    tenants_added: list[str] = field(default_factory=list)
    tenants_removed: list[str] = field(default_factory=list)
    reach: list[ReachDiff] = field(default_factory=list)
    settings: list[SettingChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.tenants_added or self.tenants_removed or self.reach or self.settings)

    def lines(self) -> list[str]:
        """The diff as text, one change a line, grouped by tenant."""
        out = [f"+ tenant {name}" for name in self.tenants_added]
        out += [f"- tenant {name}" for name in self.tenants_removed]
        for change in self.settings:
            out.append(f"~ tenant {change.tenant}: {change.path}: {_show(change.old)} -> {_show(change.new)}")
        for reach in self.reach:
            head = f"  tenant {reach.tenant}, model {reach.model}:"
            out.append(head)
            out += [f"    + jurisdiction {j}" for j in reach.jurisdictions_gained]
            out += [f"    - jurisdiction {j}" for j in reach.jurisdictions_lost]
            out += [f"    + route {r}" for r in reach.routes_gained]
            out += [f"    - route {r}" for r in reach.routes_lost]
        return out or ["no change in what any tenant can reach or in any tenant setting"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenants_added": self.tenants_added,
            "tenants_removed": self.tenants_removed,
            "settings": [vars(c) for c in self.settings],
            "reach": [vars(r) for r in self.reach],
        }


def diff_policies(old: Policy, new: Policy, *, today: dt.date | None = None) -> PolicyDiff:
    """The semantic difference between two loaded policies on `today` (lifecycles are dated)."""
    result = PolicyDiff()
    old_names, new_names = set(old.tenants), set(new.tenants)
    result.tenants_added = sorted(new_names - old_names)
    result.tenants_removed = sorted(old_names - new_names)
    before, after = Probe(old, today=today), Probe(new, today=today)
    models = sorted(set(before.models()) | set(after.models()))
    for tenant in sorted(old_names | new_names):
        if tenant in old_names and tenant in new_names:
            result.settings += _setting_changes(tenant, _settings(old, tenant), _settings(new, tenant))
        for model in models:
            was = before.reachable(tenant, model) if tenant in old_names else {}
            now = after.reachable(tenant, model) if tenant in new_names else {}
            if was == now:
                continue
            result.reach.append(ReachDiff(
                tenant=tenant,
                model=model,
                routes_gained=tuple(sorted(set(now) - set(was))),
                routes_lost=tuple(sorted(set(was) - set(now))),
                jurisdictions_gained=tuple(sorted(set(now.values()) - set(was.values()))),
                jurisdictions_lost=tuple(sorted(set(was.values()) - set(now.values()))),
            ))
    return result


def _settings(policy: Policy, tenant: str) -> dict[str, Any]:
    dumped = policy.tenants[tenant].model_dump(mode="json")
    settings = {k: v for k, v in dumped.items() if k not in _NOT_DIFFED}
    settings["api_keys"] = len(dumped.get("api_keys") or [])
    return settings


def _setting_changes(tenant: str, old: Any, new: Any, path: str = "") -> list[SettingChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[SettingChange] = []
        for key in sorted(set(old) | set(new), key=str):
            changes += _setting_changes(tenant, old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return changes
    return [] if old == new else [SettingChange(tenant, path, old, new)]


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
