"""Run the gateway on granian: a Rust HTTP server in front of the ASGI app, one or several workers.

granian parses HTTP and does the socket I/O on its own Rust threads, so the Python event loop
spends its time on the broker's work: on the gateway benchmark (`benchmarks/gateway.py --uvicorn`)
one granian worker served 1.3x to 2.7x the requests per second of one uvicorn worker (uvloop,
httptools) at concurrency 64, in each of four runs on a busy 2-core machine, mostly with less CPU
per request.

Every worker process builds its own `Gateway` from the policy path in
`LLAMA_BROKER_GATEWAY_POLICY` (`worker_app`, a factory); workers share the ledger and the shared
limits the policy names, and, with more than one, their Prometheus samples through a
`PROMETHEUS_MULTIPROC_DIR` made for the run.  On SIGTERM or SIGINT granian stops accepting, lets
the calls in flight finish (at most `drain_timeout_s`), then each worker's lifespan shutdown
flushes its ledger.
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
    try:
        from granian import Granian
    except ImportError as exc:
        raise MissingDependency("gateway", "granian", "gateway") from exc
    policy = str(Path(policy).resolve())
    check_policy(policy)  # one clear error here rather than one per worker
    made_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="llama-broker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    os.environ[POLICY_ENV] = policy
    try:
        server = Granian(
            "broker.gateway.server:worker_app", factory=True, interface="asgi", address=host, port=port,  # type: ignore[arg-type]
            workers=workers, loop="uvloop", backlog=4096, log_level=log_level, log_access=access_log,  # type: ignore[arg-type]
            workers_kill_timeout=max(1, round(drain_timeout_s)), websockets=False,
        )
        server.serve()
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
