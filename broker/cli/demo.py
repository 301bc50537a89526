"""`llama-broker demo`: the embedded default policy against loopback emulators of all five providers.

It starts the emulators, points the default policy at them, sends chat, streaming and tool
calls for three tenants (US/EU, EU-only, and one that accepts any jurisdiction), throttles one
provider to show retries and failover, prints per call the route taken and the usage, and ends
with the cost report of those calls (a table, and an HTML page written to disk).

With the `runner` extra installed, the on-prem route (`local-8b`) is served by a real
llama.cpp server on loopback running a small model from PyPI (`broker.testing.llamacpp`),
so those answers come from a real model; without it, by the OpenAI-compatible emulator.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["demo"]

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# (tenant, model, kind, prompt)
_CALLS: list[tuple[str, str, str, str]] = [
    ("default", "llama-3.3-70b", "chat", "Summarise the benefits of routing Llama calls by policy."),
    ("default", "llama-3.3-70b", "stream", "Write a haiku about data residency."),
    ("default", "llama-3.1-8b", "chat", "Classify this ticket: 'my invoice is wrong'."),
    ("default", "llama-4-maverick", "tools", "What is the weather in Lisbon?"),
    ("default", "llama-4-maverick", "throttled", "Retry me: the cheapest provider is throttling."),
    ("labs", "llama-4-scout", "chat", "Fastest answer wins, wherever it runs."),
    ("labs", "llama-3.1-8b", "stream", "Quick: name three Llama models."),
    ("acme-eu", "llama-3.3-70b", "chat", "Draft a GDPR-compliant greeting."),
    ("acme-eu", "llama-3.1-8b", "stream", "Stay on premises, please."),
    ("acme-eu", "llama-3.3-70b", "chat", "Another EU-only call."),
]


#: most tokens an answer of the real on-prem model may take (a CPU runner: keep the demo quick)
_RUNNER_MAX_TOKENS = 48


def _runner_params(broker: Any, runner: Any, tenant: str, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """For a call the real runner will serve: a short answer that ends where the small base model's answer ends."""
    if runner is None or broker.route(model=model, messages=messages, tenant=tenant).routes[0].provider != "local":
        return {}
    from broker.testing.llamacpp import ANSWER_STOP

    return {"max_tokens": _RUNNER_MAX_TOKENS, "stop": [ANSWER_STOP]}


def _call(broker: Any, suite: Any, runner: Any, tenant: str, model: str, kind: str, prompt: str) -> Any:
    from broker.testing import Reply

    messages = [{"role": "user", "content": prompt}]
    on_prem = _runner_params(broker, runner, tenant, model, messages)
    if kind == "stream":
        final = None
        for event in broker.stream(model=model, messages=messages, tenant=tenant, tags={"app": "demo"}, **on_prem):
            final = event.response or final
        return final
    if kind == "tools":
        decision = broker.route(model=model, messages=messages, tenant=tenant, tools=[_WEATHER_TOOL])
        suite[decision.routes[0].provider].enqueue(Reply(tool_calls=[("get_weather", {"city": "Lisbon"})]))
        return broker.chat(model=model, messages=messages, tenant=tenant, tools=[_WEATHER_TOOL], tags={"app": "demo"})
    if kind == "throttled":
        decision = broker.route(model=model, messages=messages, tenant=tenant)
        suite[decision.routes[0].provider].fail(429, retry_after=0.05, times=1)
        if len(decision.routes) > 1:  # throttle twice more so the call fails over to the next route
            suite[decision.routes[0].provider].fail(503, times=2)
    params: dict[str, Any] = {"max_tokens": 200, **on_prem}
    return broker.chat(model=model, messages=messages, tenant=tenant, tags={"app": "demo"}, **params)


@contextmanager
def _real_runner(console: Console, wanted: bool) -> Iterator[Any]:
    """A real llama.cpp server for the on-prem route when the `runner` extra is installed, else None."""
    from broker.testing.llamacpp import LlamaCppServer, RunnerUnavailable, runner_missing

    reason = "--no-runner" if not wanted else runner_missing()
    server = None
    if reason is None:
        try:
            server = LlamaCppServer(n_ctx=1024, max_tokens=_RUNNER_MAX_TOKENS).start()
        except RunnerUnavailable as exc:
            reason = str(exc)
    if server is None:
        console.print(f"[bold]on-prem runner[/bold]: the local emulator ({reason})")
        yield None
        return
    try:
        console.print(f"[bold]on-prem runner[/bold]: {server.description} at {server.endpoint}")
        yield server
    finally:
        server.stop()


def demo(
    ledger: str | None = typer.Option(
        None, "--ledger", help="Ledger URL for the demo's usage (default: a fresh SQLite file in a temp folder)."
    ),
    html: Path = typer.Option(
        Path("llama-broker-report.html"), "--html", help="Where to write the HTML cost report."
    ),
    real_runner: bool = typer.Option(
        True, "--runner/--no-runner",
        help="Serve the on-prem route from a real llama.cpp server when the `runner` extra is installed.",
    ),
) -> None:
    """Run calls for three tenants through the embedded default policy against loopback emulators."""
    from broker import Broker, BrokerError
    from broker.metering import open_ledger
    from broker.reports import ReportFilters, render_table, report_rows
    from broker.reports.html import chart_data, write_html_report
    from broker.testing import EmulatorSuite

    console = Console(width=None if Console().is_terminal else 150)
    workdir = Path(tempfile.mkdtemp(prefix="llama-broker-demo-"))
    ledger_url = ledger or f"sqlite:///{workdir / 'usage.db'}"
    table = Table(title="llama-broker demo: every call, where it went, what it used")
    numeric = ("tries", "in", "out", "cost USD")
    for col in ("tenant", "model", "call", "route", "provider/region", "jurisdiction", *numeric):
        table.add_column(col, justify="right" if col in numeric else "left")

    on_prem_answers: list[tuple[str, str, str]] = []
    with EmulatorSuite() as suite, _real_runner(console, real_runner) as runner:
        urls = ", ".join(f"{n}={e.url}" for n, e in suite.emulators.items())
        console.print(f"[bold]emulators[/bold] on loopback: {urls}")
        aimed = {"LLAMA_BROKER_LOCAL_URL": runner.endpoint, "LLAMA_BROKER_LOCAL_MODEL": runner.model} if runner else {}
        with suite.applied(aimed), Broker(ledger=ledger_url, durable=True) as broker:
            for tenant, model, kind, prompt in _CALLS:
                try:
                    reply = _call(broker, suite, runner, tenant, model, kind, prompt)
                except BrokerError as exc:
                    failed = f"[red]{type(exc).__name__}[/red]"
                    table.add_row(tenant, model, kind, "-", failed, "-", "-", "-", "-", str(exc)[:40])
                    continue
                r = reply.route
                if runner is not None and r.model_id == runner.model:  # answered by the real runner
                    on_prem_answers.append((tenant, prompt, reply.text))
                cost = f"{reply.cost_usd:.6f}" if reply.cost_usd is not None else "unknown"
                label = kind + (f" -> {reply.tool_calls[0].name}()" if reply.tool_calls else "")
                table.add_row(
                    tenant, model, label, r.id, f"{r.provider}/{r.region or '-'}", r.jurisdiction,
                    str(reply.attempts), str(reply.usage.input_tokens), str(reply.usage.output_tokens), cost,
                )
            console.print(table)
            for tenant, prompt, text in on_prem_answers:
                answer = " ".join(text.split())[:100] or "(empty)"
                console.print(f"[bold]{runner.model}[/bold] answered {tenant}: {prompt!r} -> {answer!r}")
            console.print("[bold]why acme-eu went where it went[/bold]")
            hello = [{"role": "user", "content": "hi"}]
            console.print(broker.route(model="llama-3.3-70b", messages=hello, tenant="acme-eu").explain())
        reported_in, reported_out = suite.reported_tokens()
        reporters = "emulators"
        if runner is not None:
            served_in, served_out = runner.reported_tokens()
            reported_in, reported_out = reported_in + served_in, reported_out + served_out
            reporters = "emulators and llama.cpp"

    store = open_ledger(ledger_url)
    try:
        rows = report_rows(store, group_by=["tenant", "provider", "model", "region"], filters=ReportFilters())
        console.print(render_table(rows, title="cost report (from the ledger)"))
        metered_in = sum(int(r["input_tokens"]) for r in rows)
        metered_out = sum(int(r["output_tokens"]) for r in rows)
        console.print(
            f"ledger tokens {metered_in} in / {metered_out} out; "
            f"{reporters} reported {reported_in} in / {reported_out} out"
        )
        write_html_report(rows, html, charts=chart_data(store, ReportFilters()), subtitle="llama-broker demo")
        console.print(f"HTML cost report written to [bold]{html.resolve()}[/bold]; ledger at {ledger_url}")
    finally:
        store.close()
