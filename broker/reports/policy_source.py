"""What a report reads from a policy file: the ledger setting first, the rest only if it loads.

`policy_ledger` reads the ``ledger:`` value alone, expanding ``${VAR}`` in that value only, so
a report never fails on a variable the policy uses elsewhere (an endpoint, a key name); a file
that is not YAML, or names top-level keys no policy has, is still a `PolicyError`.
Budgets and savings need the whole policy: `policy_for_report` loads it, and where a variable
is unset it loads it again with unset variables empty; when even that fails it returns the
reason, and the report says budgets and savings could not be read, instead of failing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from broker.errors import PolicyError, PolicyIssue

if TYPE_CHECKING:
    from broker.policy.loaded import Policy

__all__ = ["policy_for_report", "policy_ledger"]


def policy_ledger(path: str | os.PathLike[str]) -> str | None:
    """The policy's ``ledger:`` URL (``${VAR}`` expanded in it alone); None when it sets none."""
    from broker.policy.loader import _read_text
    from broker.policy.yaml_source import LineIndex, expand_env, read_yaml

    file = Path(path)
    issues: list[PolicyIssue] = []
    data = read_yaml(_read_text(file), str(file), LineIndex(), issues, env=None)
    if not issues and data is not None and not isinstance(data, dict):
        issues.append(PolicyIssue(str(file), 1, "a policy is a mapping of settings"))
    if not issues and isinstance(data, dict):  # a file with unknown top-level keys is no policy at all
        from broker.policy.schema import PolicyDoc

        unknown = sorted(str(k) for k in data if k not in PolicyDoc.model_fields)
        if unknown:
            issues.append(PolicyIssue(str(file), 0, f"unknown top-level key(s): {', '.join(unknown)}"))
    if issues:
        raise PolicyError(issues)
    value = data.get("ledger") if isinstance(data, dict) else None
    if value is None:
        return None
    text, problems = expand_env(str(value), os.environ)
    if problems:
        raise PolicyError([PolicyIssue(str(file), 0, f"ledger: {p}") for p in problems])
    return text or None


class _UnsetIsEmpty(Mapping[str, str]):
    """The environment, with every unset variable read as empty."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, "")

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def policy_for_report(path: str | os.PathLike[str]) -> tuple[Policy | None, str]:
    """The loaded policy, or None and why not (for the budget and savings sections)."""
    from broker.policy.loader import load_policy

    try:
        return load_policy(path), ""
    except PolicyError:
        pass
    try:
        return load_policy(path, env=_UnsetIsEmpty()), ""
    except PolicyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid policy"
        return None, f"budgets and savings need the whole policy, which did not load: {first}"
