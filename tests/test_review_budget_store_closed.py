"""A reservation store used after it closed: a typed broker error, never a bare RuntimeError."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from broker.budgets import Hold
from broker.budgets.sqlite import SQLiteReservations
from broker.errors import MeteringError


def test_a_closed_sqlite_store_refuses_with_a_metering_error(tmp_path: Path) -> None:
    store = SQLiteReservations(str(tmp_path / "usage.db"))
    store.ensure("k", lambda: Decimal(0))
    store.close()
    with pytest.raises(MeteringError, match="closed"):
        store.reserve("r1", [Hold("k", Decimal("0.01"), Decimal(1))], 30.0)
    with pytest.raises(MeteringError, match="closed"):
        store.settle("r1", ["k"], Decimal("0.01"))
