"""`llama-broker`: chat, route --explain, demo, policy validate/show, report, serve.

Every `BrokerError` that reaches the command line is handled in one place (`BrokerGroup`):
one line on stderr, ``error: <kind>: <message>``, and exit status 2 when the user's input
was wrong (a policy file, a tenant, a request) or 1 for a failure at run time; never a
traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from broker.errors import BrokerError, InvalidRequest, PolicyError, UnknownTenant

from .audit_cmd import audit_app
from .catalog_cmd import catalog
from .demo import demo
from .policy_cmd import policy_app
from .provenance_cmd import provenance_app
from .report_cmd import report
from .serve_cmd import serve
from .simulate_cmd import simulate

__all__ = ["BrokerGroup", "app", "error_line", "main"]

#: Errors in what the user gave (exit 2); every other `BrokerError` is a run-time failure (exit 1).
USAGE_ERRORS: tuple[type[BrokerError], ...] = (PolicyError, UnknownTenant, InvalidRequest)


def error_line(exc: BrokerError) -> str:
    """``error: <kind>: <first line>``, with a count of the lines left out (a policy's other issues)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()] or [""]
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return f"error: {type(exc).__name__}: {lines[0].strip()}{more}"


class BrokerGroup(TyperGroup):
    """The command group: turns a `BrokerError` from any command into one line and an exit status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokerError as exc:
            typer.echo(error_line(exc), err=True)
            raise typer.Exit(2 if isinstance(exc, USAGE_ERRORS) else 1) from None


app = typer.Typer(
    name="llama-broker",
    help="Route Llama chat calls across Bedrock, Vertex AI, Azure AI Foundry, Groq and local runners.",
    no_args_is_help=True,
    add_completion=False,
    cls=BrokerGroup,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("llama-broker")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown"
        typer.echo(f"llama-broker {number}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Route Llama chat calls across Bedrock, Vertex AI, Azure AI Foundry, Groq and local runners."""


app.add_typer(policy_app, name="policy", help="Validate and inspect policy files.")
app.add_typer(provenance_app, name="provenance", help="Verify the signed provenance record of an answer.")
app.add_typer(audit_app, name="audit", help="Stored decisions, and the residency audit of every event.")
app.command("report", help="Cost report from the usage ledger.")(report)
app.command("catalog", help="Models x providers x regions: prices, licences, end-of-life dates.")(catalog)
app.command("simulate", help="Replay the ledger's calls under another policy: cost, routes, refusals.")(simulate)
app.command("demo", help="Run calls for three tenants against loopback emulators of all five providers.")(demo)
app.command("serve", help="Serve an OpenAI-compatible HTTP gateway over the broker.")(serve)

PolicyOpt = typer.Option(None, "--policy", "-p", help="Policy file (default: the embedded default).")


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


@app.command()
def chat(
    prompt: str = typer.Argument(..., help="The user message."),
    model: str = typer.Option("llama-3.3-70b", "--model", "-m"),
    tenant: str = typer.Option("default", "--tenant", "-t"),
    system: str | None = typer.Option(None, "--system"),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they arrive."),
    policy: Path | None = PolicyOpt,
) -> None:
    """Send one chat call through the broker and print the answer and where it went."""
    from broker import Broker

    params: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    with Broker(str(policy) if policy else None) as broker:
        if stream:
            final = None
            for event in broker.stream(model=model, messages=_messages(prompt, system), tenant=tenant, **params):
                sys.stdout.write(event.text)
                sys.stdout.flush()
                final = event.response or final
            sys.stdout.write("\n")
            reply = final
        else:
            reply = broker.chat(model=model, messages=_messages(prompt, system), tenant=tenant, **params)
            typer.echo(reply.text)
    if reply is not None and reply.route is not None:
        cost = f"${reply.cost_usd:.6f}" if reply.cost_usd is not None else "cost unknown"
        typer.echo(
            f"-- {reply.route.provider}/{reply.route.region} [{reply.route.jurisdiction}] {reply.route.model_id}: "
            f"{reply.usage.input_tokens} in / {reply.usage.output_tokens} out, {cost}",
            err=True,
        )


@app.command()
def route(
    prompt: str = typer.Argument("Hello", help="The user message the decision is made for."),
    model: str = typer.Option("llama-3.3-70b", "--model", "-m"),
    tenant: str = typer.Option("default", "--tenant", "-t"),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    stream: bool = typer.Option(False, "--stream"),
    explain: bool = typer.Option(True, "--explain/--no-explain", help="Print every candidate and why."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    policy: Path | None = PolicyOpt,
) -> None:
    """Show where a call would go, and why, without calling any provider."""
    from broker import Broker, NoEligibleRoute
    from broker.policy.decision import Decision

    params: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
    try:
        with Broker(str(policy) if policy else None) as broker:
            decision = broker.route(
                model=model, messages=[{"role": "user", "content": prompt}], tenant=tenant, stream=stream, **params
            )
    except NoEligibleRoute as exc:
        if isinstance(exc.decision, Decision):  # show every candidate and why, then the error line
            typer.echo(json.dumps(exc.decision.to_dict(), indent=2) if as_json else exc.decision.explain())
        raise
    if as_json:
        typer.echo(json.dumps(decision.to_dict(), indent=2))
    elif explain:
        typer.echo(decision.explain())
    else:
        typer.echo(decision.routes[0].id)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
