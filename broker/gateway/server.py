"""Run the gateway on uvicorn (uvloop event loop, httptools parser), in one process or several.

One worker serves the `Gateway` made here.  Several workers (`workers > 1`) each build their own
from the policy path in `LLAMA_BROKER_GATEWAY_POLICY` (`worker_app`, uvicorn's factory); they
share the ledger and the shared limits the policy names, and their Prometheus samples through a
`PROMETHEUS_MULTIPROC_DIR` made for the run.  On SIGTERM or SIGINT uvicorn stops accepting,
lets the calls in flight finish (at most `drain_timeout_s`), then the lifespan's shutdown
flushes the ledger.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MissingDependency
from .app import Gateway

__all__ = ["POLICY_ENV", "check_policy", "serve", "worker_app"]

POLICY_ENV = "LLAMA_BROKER_GATEWAY_POLICY"


def worker_app() -> Gateway:
    """The application of one worker process: the policy named in `LLAMA_BROKER_GATEWAY_POLICY`."""
    return Gateway(os.environ[POLICY_ENV])


def check_policy(policy: str) -> int:
    """Load the policy and resolve its keys as a worker would; the number of keys.  Raises what a worker would."""
    from ..policy import load_policy
    from .keys import KeyTable

    return len(KeyTable.from_policy(load_policy(policy)))


def _require_server() -> None:
    """uvicorn with uvloop and httptools, or `MissingDependency` naming the `gateway` extra."""
    try:
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("gateway", exc.name or "uvicorn[standard]", "gateway") from exc


def serve(
    policy: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    drain_timeout_s: float = 30.0,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve `policy` until a signal stops the server."""
    _require_server()
    import uvicorn

    policy = str(Path(policy).resolve())
    options = {
        "host": host, "port": port, "loop": "uvloop", "http": "httptools", "lifespan": "on",
        "log_level": log_level, "access_log": access_log, "timeout_graceful_shutdown": drain_timeout_s,
        "backlog": 4096, "server_header": False,
    }
    if workers <= 1:
        uvicorn.run(Gateway(policy), **options)  # type: ignore[arg-type]
        return
    check_policy(policy)  # one clear error here rather than one per worker
    made_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="llama-broker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    os.environ[POLICY_ENV] = policy
    try:
        uvicorn.run("broker.gateway.server:worker_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
