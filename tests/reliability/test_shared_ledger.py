"""Four processes, each with its own emulator, metering into one ledger: totals exact, in both modes.

SQLite always; PostgreSQL on the test session's real server (skipped only where no server
binaries exist, as in the ledger tests).
"""

from __future__ import annotations

import pytest
import reliability
from ledger_fixtures import *  # noqa: F403  (fixtures: pg_server, pg_url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_one_ledger_exact_totals(backend: str, request: pytest.FixtureRequest) -> None:
    pg_url = str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None
    figures = reliability.shared(calls=100, pg_url=pg_url, sqlite=backend == "sqlite")
    for mode in ("batched", "durable"):
        run = figures[f"{backend} {mode}"]
        assert run["errors"] == []
        assert run["expected"]["events"] > 4 * 100  # retried 429s are events too
        assert run["exact"], run
