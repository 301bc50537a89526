"""Report aggregation over a million usage events in a SQLite ledger.

    python benchmarks/report_million.py [--events 1000000] [--ledger PATH] [--runs 5] [--html-runs 3]

Generates the events (seeded, so every run builds the same ledger) through the ledger's
bulk path (`write()`: one ``executemany`` per transaction of 50,000 rows), then times
`report_rows` for several group-bys and prints the median of `--runs` runs of each, then the
whole `report` command's table and HTML page (`--html-runs` runs each; targets on 2 cores:
table <= 1 s over 1M events, HTML <= 3 s over 1M and <= 15 s over 10M).  About 3% of requests
take a second attempt (a retry or a failover) after a throttled first one.  An existing ledger file
with the requested number of events is reused.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from broker.metering import UsageEvent, open_ledger
from broker.reports import ReportFilters, report_rows

ROUTES = [  # (route id, provider, model, region, jurisdiction, $/Mtok in, $/Mtok out); None = unpriced
    ("bedrock-us-70b", "bedrock", "llama-3.3-70b", "us-east-1", "us", "0.72", "0.72"),
    ("bedrock-us-8b", "bedrock", "llama-3.1-8b", "us-west-2", "us", "0.22", "0.22"),
    ("vertex-us-70b", "vertex", "llama-3.3-70b", "us-central1", "us", "0.72", "0.72"),
    ("azure-se-70b", "azure", "llama-3.3-70b", "swedencentral", "eu", "0.71", "0.71"),
    ("groq-us-70b", "groq", "llama-3.3-70b", "us", "us", "0.59", "0.79"),
    ("groq-us-8b", "groq", "llama-3.1-8b", "us", "us", "0.05", "0.08"),
    ("local-a100", "local", "llama-3.1-8b", None, "on-prem", None, None),
]
TENANTS = [f"tenant-{i:02d}" for i in range(40)]
TEAMS = ["search", "ads", "support", "risk", "growth", "infra"]
GROUP_BYS = [
    ["tenant", "provider", "model", "region"],
    ["tenant"],
    ["day", "provider"],
    ["month"],
    ["route_id"],
    ["jurisdiction", "month"],
    ["tag:team"],
    ["tag"],
]


def generate(n: int, seed: int = 7):
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    million = Decimal(1_000_000)
    prices = {r[0]: (Decimal(r[5]) / million, Decimal(r[6]) / million) if r[5] else None for r in ROUTES}
    i = 0
    while i < n:
        route_id, provider, model, region, jurisdiction, _, _ = ROUTES[rng.randrange(len(ROUTES))]
        tin, tout = rng.randint(50, 4000), rng.randint(10, 800)
        price = prices[route_id]
        error = rng.random() < 0.02
        second = rng.random() < 0.03 and i + 1 < n
        error = error or second  # a request tries again after a failed (throttled) attempt
        yield UsageEvent(
            event_id=f"bench-{i:08d}",
            request_id=f"req-{i:08d}",
            attempt=1,
            tenant=rng.choice(TENANTS),
            tags={"team": rng.choice(TEAMS)} if rng.random() < 0.8 else {},
            model=model,
            provider=provider,
            region=region,
            jurisdiction=jurisdiction,
            model_id=f"{model}-instruct",
            route_id=route_id,
            input_tokens=tin,
            output_tokens=0 if error else tout,
            cached_input_tokens=0,
            usage_estimated=rng.random() < 0.05,
            cost_usd=None if price is None else price[0] * tin + price[1] * (0 if error else tout),
            price_version="2025-01",
            latency_ms=rng.uniform(80, 3000),
            ttft_ms=rng.uniform(20, 400),
            status="error" if error else "ok",
            error_kind="Throttled" if error else None,
            timestamp=start + timedelta(seconds=rng.randrange(90 * 86400)),
            policy_version="bench",
        )
        if second:  # the same request again: a retry on the route, or a failover to the next one
            i += 1
            other = ROUTES[(ROUTES.index(next(r for r in ROUTES if r[0] == route_id)) + rng.randrange(2)) % len(ROUTES)]
            yield UsageEvent(
                event_id=f"bench-{i:08d}", request_id=f"req-{i - 1:08d}", attempt=2, tenant=TENANTS[0], tags={},
                model=other[2], provider=other[1], region=other[3], jurisdiction=other[4], model_id="m",
                route_id=other[0], input_tokens=tin, output_tokens=tout, cached_input_tokens=0, usage_estimated=False,
                cost_usd=None if prices[other[0]] is None else prices[other[0]][0] * tin + prices[other[0]][1] * tout,
                price_version="2025-01", latency_ms=500.0, ttft_ms=50.0, status="ok", error_kind=None,
                timestamp=start + timedelta(seconds=rng.randrange(90 * 86400)), policy_version="bench",
            )
        i += 1


def _time_commands(url: str, folder: Path, runs: int) -> None:
    """The `report` command end to end, as a user runs it: table, HTML page, FOCUS export."""
    import io
    from contextlib import redirect_stdout

    from typer.testing import CliRunner

    from broker.cli.main import app

    cases = [
        ("table (default group-by)", ["report", "--ledger", url]),
        ("html page", ["report", "--ledger", url, "-f", "html", "-o", str(folder / "report.html")]),
        ("focus csv", ["report", "--ledger", url, "-f", "focus", "-o", str(folder / "focus.csv")]),
    ]
    print(f"{'command':<34} {'median s':>9} {'min s':>7}")
    for name, argv in cases:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                result = CliRunner().invoke(app, argv)
            times.append(time.perf_counter() - t0)
            if result.exit_code != 0:
                raise SystemExit(f"{name} failed: {result.output}")
        print(f"{name:<34} {statistics.median(times):>9.3f} {min(times):>7.3f}")
    size = (folder / "report.html").stat().st_size
    print(f"html page: {size / 1e3:,.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ledger", type=Path, default=None, help="SQLite file (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--html-runs", type=int, default=3)
    args = parser.parse_args()

    path = args.ledger or Path(tempfile.mkdtemp(prefix="llama-broker-bench-")) / "usage.db"
    ledger = open_ledger(f"sqlite://{path.resolve()}")
    have = ledger.count()
    if have != args.events:
        if have:
            raise SystemExit(f"{path} holds {have} events, not {args.events}; use another --ledger")
        t0 = time.perf_counter()
        batch: list[UsageEvent] = []
        for event in generate(args.events):
            batch.append(event)
            if len(batch) >= args.batch:
                ledger.write(batch)
                batch = []
        ledger.write(batch)
        took = time.perf_counter() - t0
        print(
            f"generated and wrote {args.events:,} events in {took:.1f} s "
            f"({args.events / took:,.0f} events/s, batches of {args.batch:,})"
        )
    size_mb = path.stat().st_size / 1e6
    print(f"ledger: {path} ({size_mb:,.0f} MB, {ledger.count():,} events)\n")

    cases = [(g, ReportFilters()) for g in GROUP_BYS]
    cases.append((["day"], ReportFilters(tenant="tenant-07")))
    cases.append(
        (["tenant", "provider"], ReportFilters(since=datetime(2025, 3, 1), until=datetime(2025, 3, 8)))
    )
    print(f"{'group by':<34} {'filter':<22} {'rows':>6} {'median s':>9} {'min s':>7}")
    for group_by, filters in cases:
        times, rows = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            rows = report_rows(ledger, group_by, filters)
            times.append(time.perf_counter() - t0)
        described = ("tenant=" + filters.tenant) if filters.tenant else ("one week" if filters.since else "-")
        print(
            f"{','.join(group_by):<34} {described:<22} {len(rows):>6} {statistics.median(times):>9.3f} "
            f"{min(times):>7.3f}"
        )
    print()
    _time_commands(f"sqlite://{path.resolve()}", path.parent, args.html_runs)
    total = report_rows(ledger, [], ReportFilters())[0]
    print(
        f"\ntotal known cost ${total['cost_usd']} over {total['calls']:,} calls "
        f"({total['unknown_cost_calls']:,} unpriced)"
    )
    ledger.close()


if __name__ == "__main__":
    main()
