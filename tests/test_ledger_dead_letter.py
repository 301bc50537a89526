"""Bad events on both ledger backends: set aside with the reason, never blocking the rest of a batch."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from ledger_fixtures import *  # noqa: F403  (fixtures: any_ledger, ledger_url, pg_url, sqlite_url, ...)
from ledger_fixtures import make_event

from broker.errors import MeteringError
from broker.metering import MAX_TOKENS_PER_EVENT, event_to_json, open_ledger, replay_spill
from broker.metering.events import dumps_event
from broker.metering.sqlite import SCHEMA_VERSION, SQLiteLedger
from broker.reports import ReportFilters

MARCH = datetime(2025, 3, 1, tzinfo=timezone.utc)
GOOD_COST = Decimal("0.0000864")


def refused_up_front() -> dict[str, object]:
    """Events whose usage is out of bounds: refused before the database sees them."""
    return {
        "int64": make_event(input_tokens=2**63),
        "negative": make_event(input_tokens=-1000, output_tokens=-1000),
        "too-many": make_event(output_tokens=MAX_TOKENS_PER_EVENT + 1),
        "float": make_event(input_tokens=1e300),
        "negative-cost": make_event(cost_usd=Decimal("-1.00")),
        "cached": make_event(cached_input_tokens=-5),
    }


def refused_by_the_database(url: str) -> dict[str, object]:
    """Events in bounds whose values the database itself refuses (found by splitting the batch)."""
    events: dict[str, object] = {
        "cost-overflow": make_event(cost_usd=Decimal(10) ** 27),  # int64 picodollars / NUMERIC(38,12)
        "unencodable": make_event(tenant="acme\ud800"),  # a lone surrogate cannot be UTF-8
        "unencodable-tag": make_event(model="m\udcff"),
    }
    if url.startswith("postgresql"):
        events["nul"] = make_event(tenant="ac\x00me")  # PostgreSQL text cannot hold NUL
    return events


def test_a_batch_commits_around_its_bad_events(any_ledger) -> None:
    bad = {**refused_up_front(), **refused_by_the_database(any_ledger.url)}
    good = [make_event() for _ in range(5)]
    batch = [good[0], *list(bad.values())[:4], good[1], good[2], *list(bad.values())[4:], good[3], good[4]]
    assert any_ledger.write(batch) == 5
    assert any_ledger.count() == 5
    assert any_ledger.spend("acme", MARCH) == GOOD_COST * 5  # the -$1.00 event is not counted
    letters = {d.event_id: d for d in any_ledger.dead_letters()}
    assert len(letters) == len(bad)
    for name, event in bad.items():
        letter = letters[event.event_id]
        assert letter.reason, name
        stored = json.loads(letter.event)
        assert stored["event_id"] == event.event_id and stored["request_id"] == event.request_id, name
        assert letter.timestamp.tzinfo is not None
    assert "input_tokens" in letters[bad["int64"].event_id].reason
    assert "negative" in letters[bad["negative-cost"].event_id].reason
    assert "refused by the database" in letters[bad["cost-overflow"].event_id].reason
    assert "refused by the database" in letters[bad["unencodable"].event_id].reason


def test_every_later_write_still_commits(any_ledger) -> None:
    poison = make_event(input_tokens=2**63)
    overflow = make_event(cost_usd=Decimal(10) ** 27)
    for n in range(1, 6):
        assert any_ledger.write([poison, overflow, make_event()]) == 1  # the same bad events every time
        assert any_ledger.count() == n
    ids = [d.event_id for d in any_ledger.dead_letters()]
    assert sorted(ids) == sorted([poison.event_id, overflow.event_id])  # set aside once, not five times


def test_a_large_batch_isolates_scattered_bad_rows(any_ledger) -> None:
    events = [make_event(input_tokens=i % 50) for i in range(1000)]
    bad_at = (0, 377, 999)
    for i in bad_at:
        events[i] = make_event(cost_usd=Decimal(10) ** 27)
    assert any_ledger.write(events) == 1000 - len(bad_at)
    assert {d.event_id for d in any_ledger.dead_letters()} == {events[i].event_id for i in bad_at}
    assert any_ledger.write(events) == 0  # idempotent by event id, the good and the set-aside alike
    assert any_ledger.count() == 1000 - len(bad_at) and len(any_ledger.dead_letters()) == len(bad_at)


def test_a_dead_lettered_id_written_again_is_not_counted(any_ledger) -> None:
    poison = make_event(output_tokens=-1, cost_usd=Decimal("-1"))
    any_ledger.write([poison])
    any_ledger.write([poison, poison])
    assert any_ledger.count() == 0 and len(any_ledger.dead_letters()) == 1
    assert any_ledger.aggregate(group_by=["tenant"], filters=ReportFilters()) == []
    assert any_ledger.spend("acme", MARCH) == Decimal(0)


def test_dead_letters_are_ascii_and_hold_no_more_than_the_event(any_ledger) -> None:
    event = make_event(tenant="acme\ud800", prompt_text=None, completion_text=None)
    any_ledger.write([event])
    (letter,) = any_ledger.dead_letters()
    assert letter.event.isascii() and letter.reason.isascii() and "\n" not in letter.reason
    assert json.loads(letter.event)["tenant"] == "acme\ud800"  # the value survives, escaped


def _refuse_dead_letters(url: str) -> None:
    """Make the dead-letter table refuse every row (a trigger), as a table that cannot take them."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite://") :])
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_dead_letter BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        db.commit()
        db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END $$ LANGUAGE plpgsql"
        )
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON usage_dead_letter FOR EACH ROW EXECUTE FUNCTION refuse()")


def test_dead_letters_go_to_a_file_when_the_table_refuses_them(
    ledger_url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_BROKER_DATA_DIR", str(tmp_path / "data"))  # PostgreSQL's spill folder
    ledger = open_ledger(ledger_url)
    _refuse_dead_letters(ledger_url)
    poison, good = make_event(input_tokens=2**63), make_event()
    try:
        assert ledger.write([poison, good]) == 1
        assert ledger.count() == 1 and ledger.dead_letters() == []
    finally:
        ledger.close()
    folder = tmp_path if ledger_url.startswith("sqlite") else tmp_path / "data"
    (spilled,) = folder.glob("usage-dead-letter-*.jsonl")
    (record,) = [json.loads(line) for line in spilled.read_text().splitlines()]
    assert record["event_id"] == poison.event_id and "input_tokens" in record["reason"]
    assert record["event"]["input_tokens"] == 2**63


def test_replay_spill_sets_aside_what_the_ledger_refuses(any_ledger, tmp_path: Path) -> None:
    good = [make_event() for _ in range(3)]
    poison = make_event(input_tokens=2**63)
    naive = event_to_json(make_event())
    naive["timestamp"] = "2025-03-14T12:00:00"  # no zone: not a valid event
    lines = [
        dumps_event(good[0]),
        dumps_event(poison),
        "{not json",
        json.dumps(naive),
        "[1, 2]",
        dumps_event(good[1]),
        "",
        dumps_event(good[2]),
    ]
    spill = tmp_path / "usage-spill-x.jsonl"
    spill.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert replay_spill(any_ledger, spill, batch=2) == 3
    assert not spill.exists() and any_ledger.count() == 3
    letters = any_ledger.dead_letters()
    assert len(letters) == 4
    ids = {d.event_id for d in letters}
    assert poison.event_id in ids and naive["event_id"] in ids
    assert sum("unreadable spill line" in d.reason for d in letters) == 3


def test_replay_spill_can_run_twice(any_ledger, tmp_path: Path) -> None:
    spill = tmp_path / "s.jsonl"
    events = [make_event(), make_event(output_tokens=-3)]
    spill.write_text("".join(dumps_event(e) + "\n" for e in events))
    assert replay_spill(any_ledger, spill, remove=False) == 1
    assert replay_spill(any_ledger, spill) == 0
    assert any_ledger.count() == 1 and len(any_ledger.dead_letters()) == 1


def test_a_ledger_failure_is_not_mistaken_for_a_bad_event(sqlite_url) -> None:
    path = sqlite_url[len("sqlite://") :]
    ledger = SQLiteLedger(path, busy_timeout_s=0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
    try:
        with pytest.raises(MeteringError, match="could not write") as info:
            ledger.write([make_event(), make_event(input_tokens=2**63)])
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ledger.count() == 0 and ledger.dead_letters() == []  # nothing committed, nothing set aside
    assert ledger.write([make_event()]) == 1
    ledger.close()


def test_schema_v1_files_gain_the_dead_letter_table(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    SQLiteLedger(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE usage_dead_letter")
    db.execute("PRAGMA user_version = 1")  # as a file written before dead letters existed
    db.commit()
    db.close()
    ledger = SQLiteLedger(path)
    assert ledger.write([make_event(), make_event(input_tokens=-1)]) == 1
    assert len(ledger.dead_letters()) == 1
    ledger.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_an_event_whose_row_cannot_be_built_is_set_aside(any_ledger) -> None:
    odd = make_event(tags={"team": object()})  # tags that no database column can hold
    assert any_ledger.write([odd, make_event()]) == 1
    (letter,) = any_ledger.dead_letters()
    assert letter.event_id == odd.event_id and "not JSON serializable" in letter.reason
