"""The PostgreSQL batch write (COPY into a session's staging table, then one INSERT ... SELECT)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ledger_fixtures import *  # noqa: F403  (the ledger fixtures)
from ledger_fixtures import make_event

from broker.errors import MeteringError
from broker.metering.postgres import PostgresLedger


def test_a_new_session_after_a_lost_connection_gets_its_own_stage(pg_url: str) -> None:
    import psycopg

    ledger = PostgresLedger(pg_url)
    try:
        assert ledger.write([make_event()]) == 1
        pid = ledger._connection().info.backend_pid
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(MeteringError):  # the first call after the kill finds the connection gone
            ledger.write([make_event()])
        assert ledger.write([make_event(), make_event()]) == 2  # a reopened session: the stage is made again
        assert ledger.count() == 3
    finally:
        ledger.close()


def test_a_split_batch_counts_each_event_once_and_leaves_the_stage_empty(pg_url: str) -> None:
    ledger = PostgresLedger(pg_url)
    try:
        good = [make_event(cost_usd=Decimal("0.000000000001") * (i + 1)) for i in range(9)]
        bad = make_event(input_tokens=2**63 - 1, output_tokens=0)  # in bounds for Python, not for the rule
        huge = make_event(cost_usd=Decimal("1e30"))  # beyond NUMERIC(38, 12): refused by the server
        batch = [*good[:4], huge, good[4], good[4], *good[5:], good[0]]
        assert ledger.write([*batch, bad]) == 9
        assert ledger.write(good) == 0
        (row,) = ledger.aggregate(group_by=[], filters=None)
        assert row["attempts"] == 9 and row["cost_usd"] == Decimal("0.000000000045")
        assert {d.event_id for d in ledger.dead_letters()} == {huge.event_id, bad.event_id}
        left = ledger._connection().execute("SELECT COUNT(*) FROM usage_events_incoming").fetchone()[0]
        assert left == 0
    finally:
        ledger.close()
