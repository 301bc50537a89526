"""The ledger columns the audit trail reads: request needs, decision id, energy; older ledgers migrate."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers import local_route, policy_dict
from ledger_fixtures import *  # noqa: F403  (the ledger fixtures)
from ledger_fixtures import make_event

from broker import Broker
from broker.metering import open_ledger
from broker.metering.sqlite import SCHEMA_VERSION
from broker.testing import OpenAICompatEmulator

_V2_TABLE = """
CREATE TABLE usage_events (
    event_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, attempt INTEGER NOT NULL, tenant TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}', model TEXT NOT NULL, provider TEXT NOT NULL, region TEXT,
    jurisdiction TEXT NOT NULL, model_id TEXT NOT NULL, route_id TEXT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cached_input_tokens INTEGER NOT NULL, usage_estimated INTEGER NOT NULL,
    cost_picousd INTEGER, price_version TEXT, latency_ms REAL, ttft_ms REAL, status TEXT NOT NULL,
    error_kind TEXT, ts TEXT NOT NULL, policy_version TEXT NOT NULL, prompt_text TEXT, completion_text TEXT
)
"""


def _old_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(_V2_TABLE)
    db.execute(
        "CREATE TABLE usage_dead_letter (event_id TEXT PRIMARY KEY, event TEXT NOT NULL, reason TEXT NOT NULL, "
        "ts TEXT NOT NULL)"
    )
    db.execute(
        "INSERT INTO usage_events VALUES ('old-1', 'r0', 1, 'acme', '{}', 'llama-3.3-70b', 'bedrock', "
        "'us-east-1', 'us', 'm', 'r', 10, 5, 0, 0, 1000000, 'p', 1.0, NULL, 'ok', NULL, "
        "'2024-01-01T00:00:00.000000Z', 'v0', NULL, NULL)"
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()


def test_a_v2_sqlite_ledger_gains_the_new_columns_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_sqlite(path)
    ledger = open_ledger(f"sqlite://{path}")
    try:
        event = make_event(needs='{"tools":true}', decision_id="d-1", energy_j=1.5, energy_attributed=True)
        assert ledger.write([event]) == 1
        assert ledger.count() == 2
        rows = ledger.aggregate(group_by=["tenant"], filters=None)
        assert rows[0]["calls"] == 2
    finally:
        ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    got = db.execute(
        "SELECT needs, decision_id, energy_j, energy_attributed FROM usage_events WHERE event_id = ?",
        (event.event_id,),
    ).fetchone()
    old = db.execute("SELECT needs, decision_id, energy_j FROM usage_events WHERE event_id = 'old-1'").fetchone()
    db.close()
    assert got == ('{"tools":true}', "d-1", 1.5, 1)
    assert old == (None, None, None)


def test_a_postgres_ledger_made_before_versions_migrates(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE usage_events (event_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
            " tenant TEXT NOT NULL, tags JSONB NOT NULL DEFAULT '{}'::jsonb, model TEXT NOT NULL,"
            " provider TEXT NOT NULL, region TEXT, jurisdiction TEXT NOT NULL, model_id TEXT NOT NULL,"
            " route_id TEXT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,"
            " cached_input_tokens BIGINT NOT NULL, usage_estimated BOOLEAN NOT NULL, cost_usd NUMERIC(38, 12),"
            " price_version TEXT, latency_ms DOUBLE PRECISION, ttft_ms DOUBLE PRECISION, status TEXT NOT NULL,"
            " error_kind TEXT, ts TIMESTAMPTZ NOT NULL, policy_version TEXT NOT NULL, prompt_text TEXT,"
            " completion_text TEXT)"
        )
    ledger = open_ledger(pg_url)
    try:
        ledger.write([make_event(decision_id="d-2", needs="{}", energy_j=None, energy_attributed=False)])
    finally:
        ledger.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM ledger_schema").fetchone() == (2,)
        row = conn.execute("SELECT decision_id, needs, energy_j, energy_attributed FROM usage_events").fetchone()
    assert row == ("d-2", "{}", None, False)


def test_a_newer_postgres_schema_is_refused(pg_url: str) -> None:
    import psycopg

    from broker.errors import MeteringError

    open_ledger(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE ledger_schema SET version = 99")
    with pytest.raises(MeteringError, match="schema v99"):
        open_ledger(pg_url)


def test_each_call_meters_its_needs_and_decision_id_never_its_text(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    policy = policy_dict([local_route(local_emulator)], tmp=tmp_path)
    with Broker.from_policy(policy, durable=True) as broker:
        broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "secret words"}], max_tokens=7,
                    response_format={"type": "json_object"})
        list(broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "more"}]))
    db = sqlite3.connect(tmp_path / "usage.db")
    rows = db.execute("SELECT needs, decision_id, request_id FROM usage_events ORDER BY ts").fetchall()
    db.close()
    assert len(rows) == 2
    first, second = (json.loads(r[0]) for r in rows)
    assert first == {"json": True, "max_tokens": 7, "stream": False, "tools": False, "vision": False}
    assert second["stream"] is True and second["max_tokens"] is None
    assert all(r[1] and len(r[1]) == 32 for r in rows) and rows[0][1] != rows[1][1]
    assert "secret" not in rows[0][0]
