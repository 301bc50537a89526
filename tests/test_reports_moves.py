"""Retries and failovers: recorded when written (schema v4), windowed for rows that lack the record.

Every figure is checked against a reference worked out in Python from the events themselves:
an attempt after the first is a retry when the attempt before it (by number) ran on the same
route, a failover when it ran on another.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from ledger_fixtures import make_event

from broker.metering import UsageEvent
from broker.metering.sqlite import SCHEMA_VERSION, SQLiteLedger
from broker.reports import ReportFilters, report_rows

UTC = dt.timezone.utc
ROUTES = [("bedrock-us", "bedrock"), ("azure-se", "azure"), ("groq-us", "groq")]


def requests(n: int, seed: int) -> list[UsageEvent]:
    """`n` requests of one to three attempts; attempts before the last fail (the ok ones only in odd cases)."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        tenant = rng.choice(["acme", "globex"])
        tries = rng.choice([1, 1, 2, 3])
        route = rng.randrange(len(ROUTES))
        for attempt in range(1, tries + 1):
            if attempt > 1 and rng.random() < 0.5:
                route = (route + 1) % len(ROUTES)
            route_id, provider = ROUTES[route]
            last = attempt == tries
            status = "ok" if last or rng.random() < 0.2 else "error"
            events.append(make_event(
                request_id=f"r{seed}-{i}", attempt=attempt, tenant=tenant, route_id=route_id, provider=provider,
                status=status, error_kind=None if status == "ok" else "Throttled",
                timestamp=dt.datetime(2026, 11, 1 + i % 3, 12, tzinfo=UTC),
            ))
    return events


def reference(events: list[UsageEvent], keys: list[str], keep: Any = lambda e: True) -> dict[tuple, tuple]:
    """(calls, attempts, retries, failovers) per group, from the events in Python."""
    routes = {(e.request_id, e.attempt): e.route_id for e in events}
    out: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e in events:
        if not keep(e):
            continue
        group = tuple(e.timestamp.date().isoformat() if k == "day" else getattr(e, k) for k in keys)
        acc = out[group]
        acc[0] += e.attempt == 1
        acc[1] += 1
        before = routes.get((e.request_id, e.attempt - 1))
        if e.attempt > 1 and before is not None:
            acc[2 if before == e.route_id else 3] += 1
    return {g: tuple(v) for g, v in out.items()}


def reported(ledger: SQLiteLedger, keys: list[str], filters: ReportFilters | None = None) -> dict[tuple, tuple]:
    return {tuple(r[k] for k in keys): (r["calls"], r["attempts"], r["retries"], r["failovers"])
            for r in report_rows(ledger, keys, filters)}


def moves_on_file(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT coalesce(move, 'unknown'), COUNT(*) FROM usage_events WHERE attempt > 1 "
                          "GROUP BY 1").fetchall()
    finally:
        db.close()
    return dict(rows)


def as_v3(path: Path) -> None:
    """Turn a ledger file back into schema v3: no `move` column, no v4 indexes."""
    db = sqlite3.connect(path)
    db.execute("DROP INDEX usage_events_failed")
    db.execute("DROP INDEX usage_events_unsettled")
    db.execute("ALTER TABLE usage_events DROP COLUMN move")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()


GROUPINGS = [[], ["tenant"], ["provider"], ["route_id", "day"], ["tenant", "provider", "model", "region"]]


@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_moves_recorded_at_write_match_the_reference(tmp_path: Path, batch: int) -> None:
    events = requests(120, seed=batch)
    ledger = SQLiteLedger(tmp_path / "usage.db")
    for start in range(0, len(events), batch):
        ledger.write(events[start : start + batch])
    on_file = moves_on_file(tmp_path / "usage.db")
    later = sum(e.attempt > 1 for e in events)
    # in one batch every move is known; across batches only those after an ok attempt are not
    after_ok = sum(1 for e in events if e.attempt > 1 and any(
        p.request_id == e.request_id and p.attempt == e.attempt - 1 and p.status == "ok" for p in events))
    assert on_file.get("unknown", 0) <= (0 if batch == 10_000 else after_ok)
    assert on_file.get("retry", 0) + on_file.get("failover", 0) + on_file.get("unknown", 0) == later
    for keys in GROUPINGS:
        assert reported(ledger, keys) == reference(events, keys), keys
    only_azure = ReportFilters(provider="azure")
    assert reported(ledger, ["tenant"], only_azure) == reference(events, ["tenant"], lambda e: e.provider == "azure")
    ledger.close()


def test_a_v3_ledger_migrates_and_reports_the_same(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    old, new = requests(150, seed=3), requests(150, seed=4)
    ledger = SQLiteLedger(path)
    ledger.write(old)
    ledger.close()
    as_v3(path)  # the old rows as a v3 broker left them: no move recorded
    ledger = SQLiteLedger(path)
    assert moves_on_file(path) == {"unknown": sum(e.attempt > 1 for e in old)}
    ledger.write(new)  # written by v4: moves recorded; the old rows keep theirs unknown
    assert moves_on_file(path)["unknown"] == sum(e.attempt > 1 for e in old)
    assert sum(moves_on_file(path).values()) == sum(e.attempt > 1 for e in old + new)
    for keys in GROUPINGS:
        assert reported(ledger, keys) == reference(old + new, keys), keys
    since = ReportFilters(since=dt.datetime(2026, 11, 2, tzinfo=UTC), tenant="acme")
    assert reported(ledger, ["provider"], since) == reference(
        old + new, ["provider"], lambda e: e.tenant == "acme" and e.timestamp.day >= 2)
    ledger.close()


def test_migration_keeps_rows_and_adds_the_column(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    events = requests(40, seed=5)
    ledger = SQLiteLedger(path)
    ledger.write(events)
    ledger.close()
    as_v3(path)
    ledger = SQLiteLedger(path)
    assert ledger.count() == len(events)
    for keys in GROUPINGS:
        assert reported(ledger, keys) == reference(events, keys), keys  # every old row windowed
    ledger.close()
    db = sqlite3.connect(path)
    columns = {row[1] for row in db.execute("PRAGMA table_info(usage_events)")}
    indexes = {row[1] for row in db.execute("PRAGMA index_list(usage_events)")}
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    db.close()
    assert "move" in columns and {"usage_events_failed", "usage_events_unsettled"} <= indexes


def test_the_attempt_before_found_in_an_earlier_batch(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "usage.db")
    first = make_event(request_id="q", attempt=1, route_id="bedrock-us", status="error", error_kind="Throttled")
    ledger.write([first])
    ledger.write([make_event(request_id="q", attempt=2, route_id="bedrock-us", status="error",
                             error_kind="Throttled")])
    ledger.write([make_event(request_id="q", attempt=3, route_id="azure-se", provider="azure")])
    assert moves_on_file(tmp_path / "usage.db") == {"retry": 1, "failover": 1}
    # an attempt before that answered and came in another batch is not looked up: windowed instead
    ledger.write([make_event(request_id="p", attempt=1, route_id="groq-us", provider="groq")])
    ledger.write([make_event(request_id="p", attempt=2, route_id="azure-se", provider="azure")])
    assert moves_on_file(tmp_path / "usage.db") == {"retry": 1, "failover": 1, "unknown": 1}
    total = report_rows(ledger, [])[0]
    assert (total["calls"], total["attempts"], total["retries"], total["failovers"]) == (2, 5, 1, 2)
    ledger.close()
