"""The batching meter: buffering, durability, retries without double counts, spills, budgets."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_fixtures import *  # noqa: F403  (fixtures: any_ledger, ledger_url, pg_url, sqlite_url, ...)
from ledger_fixtures import FlakyLedger, make_event

from broker.errors import MeteringError
from broker.metering import Meter, event_from_json, open_ledger, replay_spill

UTC = timezone.utc
NOW = datetime(2025, 3, 14, 18, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingLedger(FlakyLedger):
    """A real ledger that counts `spend` queries."""

    def __init__(self, inner) -> None:
        super().__init__(inner, failures=0)
        self.spend_queries = 0

    def spend(self, *args, **kwargs):
        self.spend_queries += 1
        return self.inner.spend(*args, **kwargs)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# --------------------------------------------------------------------------- buffering


def test_records_are_buffered_until_a_flush(any_ledger) -> None:
    meter = Meter(any_ledger, background=False, flush_interval_s=60)
    for _ in range(5):
        meter.record(make_event())
    assert meter.pending == 5 and any_ledger.count() == 0
    meter.flush()
    assert meter.pending == 0 and any_ledger.count() == 5
    meter.record(make_event())
    meter.close()
    assert any_ledger.count() == 6
    meter.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        meter.record(make_event())


def test_durable_mode_commits_before_record_returns(ledger_url) -> None:
    writer, reader = open_ledger(ledger_url), open_ledger(ledger_url)
    meter = Meter(writer, durable=True)
    try:
        for n in range(1, 4):
            meter.record(make_event())
            assert reader.count() == n  # a second connection already sees it
            assert meter.pending == 0
    finally:
        meter.close()
        writer.close()
        reader.close()


def test_a_failed_flush_keeps_the_events_and_the_retry_counts_them_once(ledger_url) -> None:
    inner = open_ledger(ledger_url)
    flaky = FlakyLedger(inner, failures=1)
    meter = Meter(flaky, background=False, flush_interval_s=60)
    events = [make_event(cost_usd=Decimal("0.25")) for _ in range(4)]
    for e in events:
        meter.record(e)
    with pytest.raises(MeteringError) as info:
        meter.flush()
    assert isinstance(info.value.__cause__, ConnectionError)
    assert meter.pending == 4 and inner.count() == 0
    meter.record(make_event(cost_usd=Decimal("0.25")))
    meter.flush()
    assert meter.pending == 0 and inner.count() == 5
    assert flaky.calls == [4, 5]  # the retry resends the kept events, in order, with the new one
    meter.close()
    inner.close()


def test_a_write_that_committed_but_reported_failure_is_not_double_counted(ledger_url) -> None:
    inner = open_ledger(ledger_url)
    flaky = FlakyLedger(inner, failures=1, commit_then_fail=True)
    meter = Meter(flaky, background=False, flush_interval_s=60)
    for _ in range(3):
        meter.record(make_event(cost_usd=Decimal("1.1")))
    with pytest.raises(MeteringError) as info:
        meter.flush()
    assert isinstance(info.value.__cause__, ConnectionError)
    assert meter.pending == 3  # the meter cannot know it committed
    meter.flush()
    assert inner.count() == 3
    assert inner.spend("acme", NOW - timedelta(days=30)) == Decimal("3.3")
    meter.close()
    inner.close()


def test_overflow_flushes_on_the_calling_thread(any_ledger) -> None:
    meter = Meter(any_ledger, background=False, max_buffer=3, flush_interval_s=60)
    meter.record(make_event())
    meter.record(make_event())
    assert any_ledger.count() == 0 and meter.pending == 2
    meter.record(make_event())  # reaches max_buffer: written before record() returns
    assert any_ledger.count() == 3 and meter.pending == 0
    meter.close()


def test_overflow_with_a_failing_ledger_spills_instead_of_dropping(tmp_path: Path, sqlite_url) -> None:
    inner = open_ledger(sqlite_url)
    flaky = FlakyLedger(inner, failures=10**6)
    meter = Meter(flaky, background=False, max_buffer=3, flush_interval_s=60, spill_dir=tmp_path / "spill")
    events = [make_event() for _ in range(3)]
    for e in events:
        meter.record(e)
    assert meter.pending == 0  # memory stays bounded
    spill = meter.spilled_to
    assert spill is not None and spill.parent == tmp_path / "spill"
    kept = [event_from_json(json.loads(line)) for line in spill.read_text().splitlines()]
    assert [e.event_id for e in kept] == [e.event_id for e in events]
    assert kept[0] == events[0]
    assert replay_spill(inner, spill, remove=False) == 3
    assert replay_spill(inner, spill) == 0  # idempotent
    assert not spill.exists() and inner.count() == 3
    meter.close()
    inner.close()


def test_hold_time_is_measured_on_the_injected_clock(any_ledger) -> None:
    clock = FakeClock()
    meter = Meter(any_ledger, background=False, flush_interval_s=1.0, clock=clock)
    meter.record(make_event())
    clock.now = 0.5
    meter.record(make_event())
    meter.tick()
    assert any_ledger.count() == 0
    clock.now = 1.0  # the first event has now waited flush_interval_s
    meter.tick()
    assert any_ledger.count() == 2
    clock.now = 1.2
    meter.record(make_event())
    clock.now = 2.3
    meter.record(make_event())  # a record() past the hold time flushes too
    assert any_ledger.count() == 4
    meter.close()


def test_background_thread_honours_the_hold_time(sqlite_url) -> None:
    ledger = open_ledger(sqlite_url)
    clock = FakeClock()
    meter = Meter(ledger, flush_interval_s=0.05, clock=clock)
    meter.record(make_event())
    time.sleep(0.25)  # real time passes, the meter's clock does not: nothing is due
    assert ledger.count() == 0 and meter.pending == 1
    clock.now = 0.05
    assert wait_for(lambda: ledger.count() == 1)
    assert meter.pending == 0
    meter.close()
    ledger.close()


def test_background_thread_retries_a_failing_ledger(sqlite_url) -> None:
    inner = open_ledger(sqlite_url)
    flaky = FlakyLedger(inner, failures=2)
    meter = Meter(flaky, flush_interval_s=0.02)
    for _ in range(10):
        meter.record(make_event())
    assert wait_for(lambda: inner.count() == 10)
    assert len(flaky.calls) == 3 and meter.pending == 0
    meter.close()
    inner.close()


def test_many_threads_recording_lose_nothing(sqlite_url) -> None:
    ledger = open_ledger(sqlite_url)
    meter = Meter(ledger, max_buffer=64, flush_interval_s=0.01)

    def work() -> None:
        for _ in range(250):
            meter.record(make_event(cost_usd=Decimal("0.001")))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meter.close()
    assert ledger.count() == 2000
    assert ledger.spend("acme", NOW - timedelta(days=30)) == Decimal("2.000")
    ledger.close()


def test_close_with_a_failing_ledger_spills_the_pending_events(sqlite_url, caplog) -> None:
    inner = open_ledger(sqlite_url)
    meter = Meter(FlakyLedger(inner, failures=10**6), flush_interval_s=60)
    events = [make_event() for _ in range(4)]
    for e in events:
        meter.record(e)
    meter.close()
    assert meter.pending == 0
    spill = meter.spilled_to
    assert spill is not None and spill.parent == Path(inner.spill_dir)  # next to the ledger file
    assert "usage ledger unavailable at close" in caplog.text and str(spill) in caplog.text
    assert replay_spill(inner, spill) == 4
    inner.close()


def test_interpreter_exit_flushes(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from ledger_fixtures import make_event
        from broker.metering import Meter, open_ledger
        meter = Meter(open_ledger("sqlite://{db}"), flush_interval_s=3600)
        for _ in range(7):
            meter.record(make_event())
        assert meter.pending == 7
        dropped = Meter(open_ledger("sqlite://{db}"), background=False, flush_interval_s=3600)
        for _ in range(3):
            dropped.record(make_event())
        del dropped
    """)  # no close(): the atexit hook must flush both, even the one no longer referenced
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    ledger = open_ledger(f"sqlite://{db}")
    assert ledger.count() == 10
    ledger.close()


# --------------------------------------------------------------------------- budgets


def test_month_and_day_to_date_read_the_ledger_once(ledger_url) -> None:
    inner = open_ledger(ledger_url)
    inner.write(
        [
            make_event(cost_usd=Decimal("1.5"), timestamp=NOW.replace(day=2)),
            make_event(cost_usd=Decimal("0.5"), timestamp=NOW - timedelta(hours=1)),
            make_event(cost_usd=Decimal("100"), timestamp=NOW.replace(month=2)),  # last month
            make_event(cost_usd=Decimal("7"), tenant="globex", timestamp=NOW),
        ]
    )
    ledger = CountingLedger(inner)
    meter = Meter(ledger, background=False, flush_interval_s=60)
    assert meter.month_to_date("acme", NOW) == Decimal("2.0")
    assert meter.day_to_date("acme", NOW) == Decimal("0.5")
    assert ledger.spend_queries == 2
    meter.record(make_event(cost_usd=Decimal("0.25"), timestamp=NOW))
    meter.record(make_event(cost_usd=None, timestamp=NOW))  # unknown price adds nothing
    meter.record(make_event(cost_usd=Decimal("3"), tenant="globex", timestamp=NOW))
    for _ in range(50):
        assert meter.month_to_date("acme", NOW) == Decimal("2.25")
        assert meter.day_to_date("acme", NOW) == Decimal("0.75")
    assert ledger.spend_queries == 2  # running totals, no query per call
    assert meter.month_to_date("globex", NOW) == Decimal("10")  # ledger 7 + buffered 3, counted once
    meter.flush()
    assert meter.month_to_date("globex", NOW) == Decimal("10")
    assert meter.day_to_date("acme", NOW + timedelta(days=1)) == Decimal(0)  # a new day: one new query
    assert ledger.spend_queries == 4
    meter.close()
    inner.close()
    check = open_ledger(ledger_url)
    assert check.spend("acme", NOW.replace(day=1)) == Decimal("2.25")
    check.close()
