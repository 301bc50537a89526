"""`llama-broker demo`: the embedded default policy against loopback emulators of all five providers.

It starts the emulators, points the default policy at them, sends chat, streaming and tool
calls for three tenants (US/EU, EU-only, and one that accepts any jurisdiction), throttles one provider to show retries and
failover, prints per call the route taken and the usage, and ends with the cost report of
those calls (a table, and an HTML page written to disk).
"""

from __future__ import annotations

import tempfile
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


def _call(broker: Any, suite: Any, tenant: str, model: str, kind: str, prompt: str) -> Any:
    from broker.testing import Reply

    messages = [{"role": "user", "content": prompt}]
    if kind == "stream":
        final = None
        for event in broker.stream(model=model, messages=messages, tenant=tenant, tags={"app": "demo"}):
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
    return broker.chat(model=model, messages=messages, tenant=tenant, max_tokens=200, tags={"app": "demo"})


def demo(
    ledger: str | None = typer.Option(
        None, "--ledger", help="Ledger URL for the demo's usage (default: a fresh SQLite file in a temp folder)."
    ),
    html: Path = typer.Option(
        Path("llama-broker-report.html"), "--html", help="Where to write the HTML cost report."
    ),
) -> None:
    """Run calls for three tenants through the embedded default policy against loopback emulators."""
    from broker import Broker, BrokerError
    from broker.metering import open_ledger
    from broker.reports import ReportFilters, chart_data, render_table, report_rows, write_html_report
    from broker.testing import EmulatorSuite

    console = Console(width=None if Console().is_terminal else 150)
    workdir = Path(tempfile.mkdtemp(prefix="llama-broker-demo-"))
    ledger_url = ledger or f"sqlite:///{workdir / 'usage.db'}"
    table = Table(title="llama-broker demo: every call, where it went, what it used")
    for col in ("tenant", "model", "call", "route", "provider/region", "jurisdiction", "tries", "in", "out", "cost USD"):
        table.add_column(col, justify="right" if col in ("tries", "in", "out", "cost USD") else "left")

    with EmulatorSuite() as suite, suite.applied():
        console.print("[bold]emulators[/bold] on loopback: " + ", ".join(f"{n}={e.url}" for n, e in suite.emulators.items()))
        with Broker(ledger=ledger_url, durable=True) as broker:
            for tenant, model, kind, prompt in _CALLS:
                try:
                    reply = _call(broker, suite, tenant, model, kind, prompt)
                except BrokerError as exc:
                    table.add_row(tenant, model, kind, "-", f"[red]{type(exc).__name__}[/red]", "-", "-", "-", "-", str(exc)[:40])
                    continue
                r = reply.route
                cost = f"{reply.cost_usd:.6f}" if reply.cost_usd is not None else "unknown"
                label = kind + (f" -> {reply.tool_calls[0].name}()" if reply.tool_calls else "")
                table.add_row(
                    tenant, model, label, r.id, f"{r.provider}/{r.region or '-'}", r.jurisdiction,
                    str(reply.attempts), str(reply.usage.input_tokens), str(reply.usage.output_tokens), cost,
                )
            console.print(table)
            console.print("[bold]why acme-eu went where it went[/bold]")
            console.print(
                broker.route(model="llama-3.3-70b", messages=[{"role": "user", "content": "hi"}], tenant="acme-eu").explain()
            )
        reported_in, reported_out = suite.reported_tokens()

    store = open_ledger(ledger_url)
    try:
        rows = report_rows(store, group_by=["tenant", "provider", "model", "region"], filters=ReportFilters())
        console.print(render_table(rows, title="cost report (from the ledger)"))
        metered_in = sum(int(r["input_tokens"]) for r in rows)
        metered_out = sum(int(r["output_tokens"]) for r in rows)
        console.print(
            f"ledger tokens {metered_in} in / {metered_out} out; emulators reported {reported_in} in / {reported_out} out"
        )
        write_html_report(rows, html, charts=chart_data(store, ReportFilters()), subtitle="llama-broker demo")
        console.print(f"HTML cost report written to [bold]{html.resolve()}[/bold]; ledger at {ledger_url}")
    finally:
        store.close()
