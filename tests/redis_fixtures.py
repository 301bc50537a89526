"""A real Redis server for the tests that share rate windows between broker instances.

`redis_server` starts `redis-server` (Debian's package; `.ci/run` installs it) for the test
session on a free loopback port, with no persistence, in a private temporary directory.
`redis_url` hands each test a database of its own, emptied first.  Without the binary the
tests skip, with the reason; with `CI=true` a missing server is a failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

__all__ = ["REDIS_SERVER", "free_port", "redis_server", "redis_url"]

REDIS_SERVER = shutil.which("redis-server")
_databases = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The base URL (`redis://127.0.0.1:PORT`) of a Redis server started for the session."""
    if REDIS_SERVER is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Redis tests: see .ci/run")
        pytest.skip(reason)
    import redis

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="llama-broker-redis-")
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--databases", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A database of the session's server for this test alone, emptied."""
    import redis

    url = f"{redis_server}/{next(_databases) % 64}"
    redis.Redis.from_url(url).flushdb()
    return url
