"""The usage ledger on both backends: idempotent writes, exact money, spend windows, GROUP BY."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_fixtures import *  # noqa: F403  (fixtures: any_ledger, ledger_url, pg_url, sqlite_url, ...)
from ledger_fixtures import make_event, write_from_process

from broker.errors import MeteringError
from broker.metering import LedgerNotFound, default_ledger_url, open_ledger, parse_group_by
from broker.metering.sqlite import SQLiteLedger
from broker.reports import ReportFilters

UTC = timezone.utc
MARCH = datetime(2025, 3, 1, tzinfo=UTC)
APRIL = datetime(2025, 4, 1, tzinfo=UTC)


def _by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


# --------------------------------------------------------------------------- writes


def test_writes_are_idempotent_by_event_id(any_ledger) -> None:
    events = [make_event() for _ in range(3)]
    assert any_ledger.write(events) == 3
    assert any_ledger.write(events) == 0
    assert any_ledger.write([events[0], make_event(), events[2]]) == 1
    assert any_ledger.count() == 4
    total = any_ledger.aggregate(group_by=[], filters=ReportFilters())[0]
    assert total["calls"] == 4
    assert total["cost_usd"] == Decimal("0.0000864") * 4


def test_a_batch_with_a_repeated_event_counts_it_once(any_ledger) -> None:
    event = make_event()
    assert any_ledger.write([event, event, make_event()]) == 2
    assert any_ledger.count() == 2
    assert any_ledger.write([]) == 0


def test_totals_equal_the_inputs_exactly(any_ledger) -> None:
    costs = [
        Decimal("0.000000123456"),
        Decimal("1.1"),
        Decimal("2.2"),
        Decimal("123456.789012345678"),
        Decimal("0.000000000001"),
        Decimal("7"),
    ]
    costs += [Decimal(n) / Decimal(10**9) for n in range(1, 500, 7)]
    events = [make_event(cost_usd=c, input_tokens=i, output_tokens=2 * i) for i, c in enumerate(costs)]
    any_ledger.write(events)
    expected = sum(costs, Decimal(0))
    assert any_ledger.spend("acme", MARCH, APRIL) == expected
    row = any_ledger.aggregate(group_by=["tenant"], filters=ReportFilters())[0]
    assert row["cost_usd"] == expected and isinstance(row["cost_usd"], Decimal)
    assert row["input_tokens"] == sum(range(len(costs)))
    assert row["output_tokens"] == 2 * sum(range(len(costs)))


def test_large_totals_do_not_overflow(any_ledger) -> None:
    # picodollar integers: each 5M USD cost is 5e18, so two of them exceed int64 if summed naively
    events = [make_event(cost_usd=Decimal("5000000.000000000001")) for _ in range(4)]
    any_ledger.write(events)
    assert any_ledger.spend("acme", MARCH) == Decimal("20000000.000000000004")


def test_spend_per_tenant_and_month(any_ledger) -> None:
    any_ledger.write(
        [
            make_event(
                tenant="acme",
                cost_usd=Decimal("1.25"),
                timestamp=datetime(2025, 2, 28, 23, 59, 59, tzinfo=UTC),
            ),
            make_event(tenant="acme", cost_usd=Decimal("2.50"), timestamp=MARCH),  # since is inclusive
            make_event(
                tenant="acme", cost_usd=Decimal("0.75"), timestamp=datetime(2025, 3, 31, 23, 0, tzinfo=UTC)
            ),
            make_event(tenant="acme", cost_usd=Decimal("9"), timestamp=APRIL),  # until is exclusive
            make_event(tenant="globex", cost_usd=Decimal("100"), timestamp=datetime(2025, 3, 10, tzinfo=UTC)),
            make_event(tenant="acme", cost_usd=None, timestamp=datetime(2025, 3, 10, tzinfo=UTC)),
        ]
    )
    assert any_ledger.spend("acme", MARCH, APRIL) == Decimal("3.25")
    assert any_ledger.spend("acme", MARCH) == Decimal("12.25")
    assert any_ledger.spend("globex", MARCH, APRIL) == Decimal("100")
    assert any_ledger.spend("nobody", MARCH, APRIL) == Decimal(0)
    months = _by(
        any_ledger.aggregate(group_by=["tenant", "month"], filters=ReportFilters()), "tenant", "month"
    )
    assert months[("acme", "2025-03")]["cost_usd"] == Decimal("3.25")
    assert months[("acme", "2025-03")]["unknown_cost_calls"] == 1
    assert months[("acme", "2025-02")]["cost_usd"] == Decimal("1.25")
    assert months[("acme", "2025-04")]["calls"] == 1


def test_timestamps_are_stored_in_utc(any_ledger) -> None:
    minus_two = timezone(timedelta(hours=-2))
    any_ledger.write([make_event(timestamp=datetime(2025, 3, 31, 23, 30, tzinfo=minus_two))])
    rows = any_ledger.aggregate(group_by=["day", "month"], filters=ReportFilters())
    assert [(r["day"], r["month"]) for r in rows] == [("2025-04-01", "2025-04")]
    assert any_ledger.spend("acme", APRIL, APRIL + timedelta(days=1)) == Decimal("0.0000864")


def test_unknown_costs_are_reported_as_unknown_not_zero(any_ledger) -> None:
    any_ledger.write(
        [
            make_event(
                provider="local", route_id="local-a", cost_usd=None, region=None, jurisdiction="on-prem"
            ),
            make_event(
                provider="local", route_id="local-a", cost_usd=None, region=None, jurisdiction="on-prem"
            ),
            make_event(provider="groq", route_id="groq-us", cost_usd=Decimal("0.5")),
            make_event(provider="groq", route_id="groq-us", cost_usd=None),
        ]
    )
    rows = _by(any_ledger.aggregate(group_by=["provider"], filters=ReportFilters()), "provider")
    assert rows["local"]["cost_usd"] is None
    assert rows["local"]["unknown_cost_calls"] == 2 and rows["local"]["calls"] == 2
    assert rows["groq"]["cost_usd"] == Decimal("0.5") and rows["groq"]["unknown_cost_calls"] == 1
    assert any_ledger.spend("acme", MARCH) == Decimal("0.5")


# --------------------------------------------------------------------------- GROUP BY


@pytest.fixture
def mixed(any_ledger):
    day1, day2 = datetime(2025, 3, 1, 9, tzinfo=UTC), datetime(2025, 3, 2, 9, tzinfo=UTC)
    any_ledger.write(
        [
            make_event(
                tenant="acme",
                provider="bedrock",
                jurisdiction="us",
                tags={"team": "search", "env": "prod"},
                cost_usd=Decimal("1"),
                timestamp=day1,
                usage_estimated=True,
            ),
            make_event(
                tenant="acme",
                provider="azure",
                region="swedencentral",
                jurisdiction="eu",
                tags={"team": "search"},
                cost_usd=Decimal("2"),
                timestamp=day2,
            ),
            make_event(
                tenant="acme",
                provider="azure",
                region="swedencentral",
                jurisdiction="eu",
                tags={"env": "prod", "team": "search"},
                cost_usd=Decimal("4"),
                timestamp=day2,
                status="error",
                error_kind="Throttled",
                output_tokens=0,
            ),
            make_event(
                tenant="globex",
                provider="groq",
                jurisdiction="us",
                tags={},
                cost_usd=Decimal("8"),
                timestamp=datetime(2025, 4, 2, tzinfo=UTC),
            ),
        ]
    )
    return any_ledger


def test_group_by_day_and_provider(mixed) -> None:
    rows = _by(mixed.aggregate(group_by=["day", "provider"], filters=ReportFilters()), "day", "provider")
    assert set(rows) == {("2025-03-01", "bedrock"), ("2025-03-02", "azure"), ("2025-04-02", "groq")}
    azure = rows[("2025-03-02", "azure")]
    assert (azure["calls"], azure["cost_usd"], azure["error_calls"]) == (2, Decimal("6"), 1)
    assert rows[("2025-03-01", "bedrock")]["estimated_calls"] == 1


def test_group_by_jurisdiction_and_month(mixed) -> None:
    rows = _by(
        mixed.aggregate(group_by=["jurisdiction", "month"], filters=ReportFilters()), "jurisdiction", "month"
    )
    assert rows[("eu", "2025-03")]["cost_usd"] == Decimal("6")
    assert rows[("us", "2025-03")]["cost_usd"] == Decimal("1")
    assert rows[("us", "2025-04")]["cost_usd"] == Decimal("8")


def test_group_by_one_tag_value(mixed) -> None:
    rows = _by(mixed.aggregate(group_by=["tag:env"], filters=ReportFilters()), "tag:env")
    assert rows["prod"]["calls"] == 2 and rows["prod"]["cost_usd"] == Decimal("5")
    assert rows[None]["calls"] == 2 and rows[None]["cost_usd"] == Decimal("10")


def test_group_by_whole_tag_set_partitions_the_events(mixed) -> None:
    rows = _by(mixed.aggregate(group_by=["tag"], filters=ReportFilters()), "tag")
    assert set(rows) == {"env=prod,team=search", "team=search", ""}
    assert rows["env=prod,team=search"]["calls"] == 2  # same set in any key order
    assert sum(r["cost_usd"] for r in rows.values()) == Decimal("15")


def test_filters_narrow_the_aggregation(mixed) -> None:
    only = mixed.aggregate(group_by=["tenant"], filters=ReportFilters(tenant="acme", provider="azure"))
    assert [(r["tenant"], r["calls"]) for r in only] == [("acme", 2)]
    window = ReportFilters(since=datetime(2025, 3, 2), until=datetime(2025, 4, 1))  # naive = UTC
    assert mixed.aggregate(group_by=[], filters=window)[0]["cost_usd"] == Decimal("6")
    assert mixed.aggregate(group_by=["tenant"], filters=ReportFilters(tenant="nobody")) == []
    eu = mixed.aggregate(group_by=["route_id", "region"], filters=ReportFilters(jurisdiction="eu"))
    assert [(r["region"], r["calls"]) for r in eu] == [("swedencentral", 2)]


def test_group_by_names_are_validated() -> None:
    dims = parse_group_by(["tenant,day", "route", "tag:team", "tenant"])
    assert [d.key for d in dims] == ["tenant", "day", "route_id", "tag:team"]
    with pytest.raises(ValueError, match="unknown group-by"):
        parse_group_by(["tenant; DROP TABLE usage_events"])
    with pytest.raises(ValueError, match="tag key"):
        parse_group_by(["tag:"])


def test_tag_keys_are_bound_not_spliced(any_ledger) -> None:
    odd = "we\"ird'key"
    any_ledger.write([make_event(tags={odd: "x"}), make_event(tags={"other": "y"})])
    rows = _by(any_ledger.aggregate(group_by=[f"tag:{odd}"], filters=ReportFilters()), f"tag:{odd}")
    assert rows["x"]["calls"] == 1 and rows[None]["calls"] == 1


# --------------------------------------------------------------------------- storage


def test_text_is_stored_only_when_the_event_carries_it(sqlite_url) -> None:
    ledger = open_ledger(sqlite_url)
    ledger.write(
        [make_event(event_id="plain"), make_event(event_id="opted", prompt_text="hi", completion_text="yo")]
    )
    ledger.close()
    db = sqlite3.connect(sqlite_url[len("sqlite://") :])
    stored = {
        r[0]: r[1:] for r in db.execute("SELECT event_id, prompt_text, completion_text FROM usage_events")
    }
    db.close()
    assert stored == {"plain": (None, None), "opted": ("hi", "yo")}


def test_sqlite_file_is_in_wal_mode_and_reopens(sqlite_url) -> None:
    ledger = open_ledger(sqlite_url)
    ledger.write([make_event()])
    ledger.close()
    ledger.close()  # idempotent
    path = sqlite_url[len("sqlite://") :]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = open_ledger("sqlite:///" + path.lstrip("/"))
    assert again.count() == 1
    again.close()


def test_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BROKER_DATA_DIR", str(tmp_path / "data"))
    assert default_ledger_url() == f"sqlite://{tmp_path / 'data' / 'usage.db'}"
    ledger = open_ledger(None)
    assert isinstance(ledger, SQLiteLedger) and Path(ledger.path) == tmp_path / "data" / "usage.db"
    ledger.close()
    four = open_ledger(f"sqlite:///{tmp_path / 'four.db'}")  # sqlite:////abs (SQLAlchemy spelling)
    assert Path(four.path) == tmp_path / "four.db"
    four.close()
    with pytest.raises(LedgerNotFound):
        open_ledger(f"sqlite://{tmp_path / 'missing.db'}", create=False)
    with pytest.raises(MeteringError, match="unsupported ledger URL"):
        open_ledger("mysql://x/y")


def test_events_refuse_values_that_would_poison_a_batch() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_event(timestamp=datetime(2025, 3, 1))
    with pytest.raises(ValueError, match="finite"):
        make_event(cost_usd=Decimal("NaN"))
    assert make_event(cost_usd=0.1).cost_usd == Decimal("0.1")  # a float goes through its repr


# --------------------------------------------------------------------------- two processes


def test_two_processes_writing_one_sqlite_ledger_lose_nothing(sqlite_url) -> None:
    open_ledger(sqlite_url).close()  # schema in place; the workers race on writes, not on creation
    ctx = multiprocessing.get_context("spawn")
    workers, batches, per_batch = 3, 40, 25
    procs = [
        ctx.Process(target=write_from_process, args=(sqlite_url, w, batches, per_batch))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = open_ledger(sqlite_url)
    expected = workers * batches * per_batch + batches
    assert ledger.count() == expected
    assert ledger.spend("acme", MARCH) == Decimal("0.001") * expected
    ledger.close()
