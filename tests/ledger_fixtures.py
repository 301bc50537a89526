"""Fixtures for the ledger, meter and report tests: an event factory and ledgers on both backends.

PostgreSQL is a real server started for the test session from the installed binaries
(`pg_ctl` on PATH, else Debian's /usr/lib/postgresql/<version>/bin).  As an ordinary user
the server comes from pytest-postgresql's `postgresql_proc` factory.  As root (containers),
`initdb` refuses to run, so the server is started as the `postgres` system user that
Debian's `postgresql` package creates, in a private temporary directory; each test then
gets a fresh database from pytest-postgresql's `DatabaseJanitor` either way.  The
PostgreSQL parameters are skipped, with the reason, only when no server binaries exist.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from broker.metering import Ledger, UsageEvent, open_ledger

__all__ = ["FlakyLedger", "any_ledger", "ledger_url", "make_event", "pg_server", "pg_url", "sqlite_url"]


def find_pg_ctl() -> str | None:
    """`pg_ctl` on PATH, else the newest Debian/Ubuntu install under /usr/lib/postgresql."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")

    def version(path: str) -> tuple[int, ...]:
        raw = Path(path).parent.parent.name
        return tuple(int(p) for p in raw.split(".") if p.isdigit())

    return max(candidates, key=version) if candidates else None


PG_CTL = find_pg_ctl()
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

_counter = itertools.count()


def _skip_unless_ci(reason: str) -> None:
    """Skip on a developer machine without PostgreSQL; in CI (which installs it) that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the PostgreSQL ledger tests: see .ci/run)")
    pytest.skip(reason)


def make_event(**overrides: Any) -> UsageEvent:
    """A valid event with unique ids; any field can be overridden."""
    n = next(_counter)
    values: dict[str, Any] = {
        "event_id": f"ev-{uuid.uuid4().hex}",
        "request_id": f"req-{n}",
        "attempt": 1,
        "tenant": "acme",
        "tags": {},
        "model": "llama-3.3-70b",
        "provider": "bedrock",
        "region": "us-east-1",
        "jurisdiction": "us",
        "model_id": "meta.llama3-3-70b-instruct-v1:0",
        "route_id": "bedrock-us-70b",
        "input_tokens": 100,
        "output_tokens": 20,
        "cached_input_tokens": 0,
        "usage_estimated": False,
        "cost_usd": Decimal("0.0000864"),
        "price_version": "2025-01",
        "latency_ms": 120.5,
        "ttft_ms": 40.0,
        "status": "ok",
        "error_kind": None,
        "timestamp": datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc),
        "policy_version": "v1",
    }
    values.update(overrides)
    return UsageEvent(**values)


def write_from_process(url: str, worker: int, batches: int, per_batch: int) -> None:
    """Body of a writer process: batches of own events plus one id that every worker writes."""
    ledger = open_ledger(url)
    for b in range(batches):
        events = [
            make_event(event_id=f"w{worker}-{b}-{i}", cost_usd=Decimal("0.001")) for i in range(per_batch)
        ]
        events.append(make_event(event_id=f"shared-{b}", cost_usd=Decimal("0.001")))
        ledger.write(events)
    ledger.close()


# --------------------------------------------------------------------------- PostgreSQL server


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_as_postgres_user(pg_ctl: str) -> Iterator[PgServer]:
    """Run initdb and the server as the `postgres` system user (initdb refuses root)."""
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        _skip_unless_ci("running as root and no 'postgres' system user exists to run the PostgreSQL server")
    bindir = Path(pg_ctl).resolve().parent
    workdir = Path(tempfile.mkdtemp(prefix="llama-broker-pg-"))
    os.chown(workdir, account.pw_uid, account.pw_gid)
    datadir, port = workdir / "data", _free_port()
    as_postgres: dict[str, Any] = {
        "user": account.pw_uid,
        "group": account.pw_gid,
        "extra_groups": [],
        "cwd": workdir,
        "capture_output": True,
        "text": True,
        "env": {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args], **as_postgres, timeout=120)

    try:
        done = run(
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = run(
            pg_ctl, "start", "-D", str(datadir), "-w", "-l", str(workdir / "server.log"), "-o", options
        )
        if done.returncode:
            log = (workdir / "server.log").read_text() if (workdir / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{log}")
        yield PgServer(host="127.0.0.1", port=port, user="postgres")
    finally:
        run(pg_ctl, "stop", "-D", str(datadir), "-m", "immediate", "-w")
        shutil.rmtree(workdir, ignore_errors=True)


if PG_CTL is not None and not RUNNING_AS_ROOT:
    from pytest_postgresql import factories

    ledger_pg_proc = factories.postgresql_proc(
        executable=PG_CTL, host="127.0.0.1", port=None, user="postgres"
    )
    __all__ += ["ledger_pg_proc"]  # test modules import it with the fixtures that use it

    @pytest.fixture(scope="session")
    def pg_server(ledger_pg_proc: Any) -> PgServer:
        return PgServer(
            host=ledger_pg_proc.host,
            port=int(ledger_pg_proc.port),
            user=ledger_pg_proc.user,
            password=ledger_pg_proc.password or None,
        )

else:

    @pytest.fixture(scope="session")
    def pg_server() -> Iterator[PgServer]:
        if PG_CTL is None:
            _skip_unless_ci("no PostgreSQL server binaries (pg_ctl) found on PATH or under /usr/lib/postgresql")
        yield from _start_as_postgres_user(PG_CTL)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    from pytest_postgresql.janitor import DatabaseJanitor

    dbname = f"ledger_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(
        user=pg_server.user,
        host=pg_server.host,
        port=pg_server.port,
        dbname=dbname,
        password=pg_server.password,
    )
    janitor.init()
    auth = pg_server.user + (f":{pg_server.password}" if pg_server.password else "")
    try:
        yield f"postgresql://{auth}@{pg_server.host}:{pg_server.port}/{dbname}"
    finally:
        janitor.drop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'usage.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty ledger on each backend."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def any_ledger(ledger_url: str) -> Iterator[Ledger]:
    """An open, empty ledger on each backend."""
    ledger = open_ledger(ledger_url)
    try:
        yield ledger
    finally:
        ledger.close()


class FlakyLedger:
    """Wraps a real ledger; the first `failures` writes fail (before or after committing)."""

    def __init__(self, inner: Ledger, *, failures: int = 1, commit_then_fail: bool = False) -> None:
        self.inner = inner
        self.url = inner.url
        self.failures = failures
        self.commit_then_fail = commit_then_fail
        self.calls: list[int] = []

    def write(self, events: Any) -> int:
        self.calls.append(len(events))
        if self.failures > 0:
            self.failures -= 1
            if self.commit_then_fail:
                self.inner.write(events)
            raise ConnectionError("ledger unavailable (injected)")
        return self.inner.write(events)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return getattr(self.inner, name)
