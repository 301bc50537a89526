"""`llama-broker serve`: the OpenAI-compatible gateway (`broker.gateway`) on granian."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["serve"]


def serve(
    policy: Path = typer.Option(..., "--policy", "-p", help="Policy file; its tenants' api_keys say who may call."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes; they share the ledger and limits."),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", min=0, help="Seconds to let calls in flight "
                                        "finish on shutdown."),
    log_level: str = typer.Option("info", "--log-level", help="The server's log level (debug, info, warning, error)."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log one line per request."),
) -> None:
    """Serve OpenAI's chat-completions API over the broker: every call routed and metered by the policy."""
    from broker.gateway.server import serve as run

    run(str(policy), host=host, port=port, workers=workers, drain_timeout_s=drain_timeout, log_level=log_level,
        access_log=access_log)
