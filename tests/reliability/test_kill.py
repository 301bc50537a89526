"""`kill -9` of a process under load: durable metering loses nothing, batched stays within its bound.

The child process calls one after another through `Broker` (every 4th request a 429, retried)
and notes, after each call returns, how many events that call recorded; the parent kills it with
SIGKILL mid-run and counts the events the SQLite ledger holds.  Batched metering may lose what was
recorded since the last write began: at most the events of the last `flush_interval_s` plus two
ledger writes (the batch in flight and the one before it), and never more than `2 * max_buffer`.
"""

from __future__ import annotations

from typing import Any

import pytest
import reliability


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return reliability.kill()


def test_the_child_was_killed_under_load(figures: dict[str, Any]) -> None:
    for mode in ("durable", "batched"):
        (run,) = figures[mode]
        assert run["alive_at_kill"]
        assert run["calls_returned"] > 50
        assert run["events_recorded"] > run["calls_returned"]  # the 429s were retried, each attempt an event


def test_durable_metering_loses_no_event(figures: dict[str, Any]) -> None:
    (run,) = figures["durable"]
    assert run["events_lost"] == 0
    assert run["in_flight_committed"] <= 3  # at most the call that was running at the kill


def test_batched_metering_loses_at_most_the_stated_bound(figures: dict[str, Any]) -> None:
    (run,) = figures["batched"]
    assert run["within_bound"], run
    assert run["events_committed"] > 0  # the background writer did write while the process ran
