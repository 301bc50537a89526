"""What a limit's new period row starts from: the ledger's spend of the tenants (and provider) it covers."""

from __future__ import annotations

from decimal import Decimal

from broker.metering.ledger import Ledger
from broker.metering.query import ReportFilters
from broker.policy.budget import BudgetLimit

__all__ = ["ledger_spend"]


def ledger_spend(ledger: Ledger, limit: BudgetLimit) -> Decimal:
    """Spend the ledger holds for `limit`'s tenants (and provider) within its period (SQL sums)."""
    total = Decimal(0)
    for tenant in limit.tenants:
        if limit.provider is None:
            total += ledger.spend(tenant, limit.start, limit.end)
            continue
        filters = ReportFilters(tenant=tenant, provider=limit.provider, since=limit.start, until=limit.end)
        for row in ledger.aggregate(group_by=[], filters=filters):
            if row.get("cost_usd") is not None:
                total += Decimal(str(row["cost_usd"]))
    return total
