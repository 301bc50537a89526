"""Budget reservations in a shared store: the store follows the ledger.

    ledger                    reservations                       budgets hold across
    postgresql://...          `PostgresReservations`, same db    every host sharing the database
    sqlite:///path            `SQLiteReservations`, same file    threads and processes of one machine
    sqlite://:memory: / other `MemoryReservations`               this process's threads

The rule is `broker/policy/budget.py`; the hook that applies it to every call is `hook.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.metering.ledger import Ledger
    from broker.policy.loaded import Policy

    from .hook import BudgetHook
    from .memory import MemoryReservations
    from .store import Hold, Outcome, ReservationStore

__all__ = ["BudgetHook", "Hold", "MemoryReservations", "Outcome", "ReservationStore", "open_budget_hook",
           "open_reservations", "policy_has_budgets"]


def __getattr__(name: str) -> Any:
    """The hook and the stores load on first use: a broker whose policy sets no budget never imports them."""
    value: Any
    if name == "BudgetHook":
        from . import hook

        value = hook.BudgetHook
    elif name == "MemoryReservations":
        from . import memory

        value = memory.MemoryReservations
    elif name in ("Hold", "Outcome", "ReservationStore"):
        from . import store

        value = getattr(store, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def open_reservations(ledger_url: str | None) -> ReservationStore:
    """The reservation store beside the ledger at `ledger_url` (in memory when it has no shared place)."""
    from broker.errors import MeteringError
    from broker.metering.location import ledger_kind, sqlite_path_from_url

    from .memory import MemoryReservations

    if not ledger_url:
        return MemoryReservations()
    try:
        kind = ledger_kind(ledger_url)
    except MeteringError:
        return MemoryReservations()
    if kind == "postgresql":
        from .postgres import PostgresReservations

        return PostgresReservations(ledger_url)
    path = sqlite_path_from_url(ledger_url) if "://" in ledger_url else ledger_url
    if path == ":memory:":
        return MemoryReservations()
    from .sqlite import SQLiteReservations

    return SQLiteReservations(path)


def policy_has_budgets(policy: Policy) -> bool:
    return any(t.budget is not None for t in policy.tenants.values()) or any(
        g.budget is not None for g in policy.groups.values()
    )


def open_budget_hook(
    policy: Policy, ledger: Ledger, *, now: Callable[[], dt.datetime] | None = None
) -> BudgetHook | None:
    """The budget hook of a broker whose ledger is `ledger`; None when the policy has no budget."""
    if not policy_has_budgets(policy):
        return None
    from .hook import BudgetHook

    store = open_reservations(getattr(ledger, "url", None))
    if now is None:
        return BudgetHook(policy, store, ledger)
    return BudgetHook(policy, store, ledger, now=now)
