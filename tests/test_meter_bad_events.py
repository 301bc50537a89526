"""The meter after a bad event: every later event still reaches the ledger, on both backends."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from ledger_fixtures import *  # noqa: F403  (fixtures: any_ledger, ledger_url, pg_url, sqlite_url, ...)
from ledger_fixtures import make_event

from broker.metering import Meter, open_ledger

NOW = datetime(2025, 3, 14, 18, 0, tzinfo=timezone.utc)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize("durable", [False, True], ids=["batched", "durable"])
def test_after_one_event_with_2_63_tokens_every_later_event_still_reaches_the_ledger(ledger_url, durable) -> None:
    ledger = open_ledger(ledger_url)
    meter = Meter(ledger, durable=durable, background=False, flush_interval_s=3600)
    poison = make_event(input_tokens=2**63, output_tokens=2**63)
    try:
        meter.record(poison)  # durable: returns, the event is set aside rather than raised
        meter.record(make_event(cost_usd=Decimal(10) ** 27))  # in bounds, refused by the database
        for n in range(1, 31):
            meter.record(make_event())
            if durable:
                assert ledger.count() == n and meter.pending == 0
            elif n % 10 == 0:
                meter.flush()  # batched: each flush commits everything but the two bad events
                assert ledger.count() == n and meter.pending == 0
    finally:
        meter.close()
    assert ledger.count() == 30
    assert len(ledger.dead_letters()) == 2 and poison.event_id in {d.event_id for d in ledger.dead_letters()}
    ledger.close()


def test_the_background_thread_keeps_flushing_after_a_bad_event(ledger_url) -> None:
    ledger = open_ledger(ledger_url)
    meter = Meter(ledger, flush_interval_s=0.02)
    meter.record(make_event(input_tokens=2**63))
    meter.record(make_event())
    assert wait_for(lambda: ledger.count() == 1 and meter.pending == 0)
    for _ in range(20):
        meter.record(make_event())
    assert wait_for(lambda: ledger.count() == 21 and meter.pending == 0)
    meter.close()
    assert len(ledger.dead_letters()) == 1
    ledger.close()


def test_a_full_buffer_with_a_bad_event_flushes_instead_of_spilling(sqlite_url, tmp_path) -> None:
    ledger = open_ledger(sqlite_url)
    meter = Meter(ledger, background=False, max_buffer=4, flush_interval_s=3600, spill_dir=tmp_path / "spill")
    for event in [make_event(), make_event(input_tokens=2**63), make_event(), make_event()]:
        meter.record(event)
    assert meter.pending == 0 and meter.spilled_to is None and ledger.count() == 3
    meter.close()
    ledger.close()


def test_budget_totals_leave_out_the_events_the_ledger_refuses(ledger_url) -> None:
    ledger = open_ledger(ledger_url)
    ledger.write([make_event(cost_usd=Decimal("2"), timestamp=NOW)])
    meter = Meter(ledger, background=False, flush_interval_s=3600)
    negative = make_event(input_tokens=-1000, output_tokens=-1000, cost_usd=Decimal("-1.00"), timestamp=NOW)
    meter.record(negative)  # buffered before the first budget read
    assert meter.month_to_date("acme", NOW) == Decimal("2")
    meter.record(make_event(cost_usd=Decimal("-5"), timestamp=NOW))  # after it: the running total
    meter.record(make_event(cost_usd=Decimal("0.5"), timestamp=NOW))
    assert meter.month_to_date("acme", NOW) == Decimal("2.5")
    assert meter.day_to_date("acme", NOW) == Decimal("2.5")
    meter.close()
    assert ledger.spend("acme", NOW.replace(day=1)) == Decimal("2.5")  # the ledger agrees
    ledger.close()
