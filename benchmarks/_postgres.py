"""A throwaway PostgreSQL server for the ledger figures, started as the tests start theirs.

`pg_ctl` comes from PATH, else Debian's /usr/lib/postgresql/<version>/bin.  As root (containers)
`initdb` refuses to run, so the server runs as the `postgres` system user.  `temporary_server()`
yields a URL, or None (with the reason) when no server can be started here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._server import free_port

__all__ = ["temporary_server"]


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def temporary_server() -> Iterator[tuple[str | None, str]]:
    """(url, note): a running server's URL, or (None, why not)."""
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        yield None, "no PostgreSQL server binaries (pg_ctl) found"
        return
    as_user: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="llama-broker-bench-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            yield None, "running as root and there is no 'postgres' user to run the server"
            return
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    bindir, datadir, port = Path(pg_ctl).resolve().parent, workdir / "data", free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), capture_output=True, text=True, cwd=workdir, timeout=120,
                              env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, **as_user)

    try:
        done = run(str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync", "--no-instructions")
        if done.returncode:
            yield None, f"initdb failed: {done.stderr.strip()[:200]}"
            return
        # durable as PostgreSQL ships (fsync on), unlike the tests' server
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1"
        done = run(pg_ctl, "start", "-D", str(datadir), "-w", "-l", str(workdir / "server.log"), "-o", options)
        if done.returncode:
            yield None, f"pg_ctl start failed: {done.stderr.strip()[:200]}"
            return
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", "temporary server, fsync on"
    finally:
        run(pg_ctl, "stop", "-D", str(datadir), "-m", "immediate", "-w")
        shutil.rmtree(workdir, ignore_errors=True)
