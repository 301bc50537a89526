"""Ledger write rate (SQLite, PostgreSQL) and the cost report's time over 1 million (10 million) events.

- writes: `ledger.write` in batches of 1,000 fresh events (the row building included), and the
  same events through a `Meter` (batched, its background writer), as events per second;
- report: a SQLite ledger filled with 1,000,000 events (10,000,000 with `--ten-million`; 200,000
  with `--quick`) over 100 tenants, 5 providers and 90 days, then the default report
  (`report_rows`, grouped by tenant, provider, model, region) and a per-day report, timed.

PostgreSQL runs in a temporary server (see `_postgres.py`); without its binaries the rows say so.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from ._common import Figure, Settings, median_of
from ._postgres import temporary_server

SECTION = "ledger"
BATCH = 1_000
_ids = itertools.count()
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
_PROVIDERS = ["local", "bedrock", "vertex", "azure", "groq"]
_TAGS: list[dict[str, str]] = [{}, {"team": "search"}, {"team": "ads", "env": "prod"}]


def events(n: int, *, days: int = 1) -> list[Any]:
    """`n` fresh events; `days=1`: in time order, as a broker meters them; else spread over `days`."""
    from broker.metering import UsageEvent

    out = []
    for i in range(n):
        k = next(_ids)
        provider = _PROVIDERS[k % 5]
        out.append(UsageEvent(
            event_id=f"bench-{k:012d}", request_id=f"req-{k}", attempt=1, tenant=f"tenant-{k % 100}",
            tags=_TAGS[k % 3], model="llama-3.3-70b", provider=provider, region="us-east-1", jurisdiction="us",
            model_id="meta.llama3-3-70b-instruct-v1:0", route_id=f"{provider}-70b", input_tokens=100 + i % 50,
            output_tokens=20, cached_input_tokens=0, usage_estimated=False, cost_usd=Decimal("0.0000864"),
            price_version="2026-01", latency_ms=120.5, ttft_ms=40.0, status="ok", error_kind=None,
            timestamp=_EPOCH + (timedelta(milliseconds=k) if days == 1
                                else timedelta(seconds=(k * 7919) % (days * 86400))),
            policy_version="v1",
        ))
    return out


def _direct_rate(ledger: Any, n: int) -> float:
    batches = [events(BATCH) for _ in range(n // BATCH)]
    start = time.perf_counter()
    for batch in batches:
        ledger.write(batch)
    return n / (time.perf_counter() - start)


def _meter_rate(ledger: Any, n: int) -> float:
    from broker.metering import Meter

    todo = events(n)
    meter = Meter(ledger)
    start = time.perf_counter()
    for event in todo:
        meter.record(event)
    meter.flush()
    rate = n / (time.perf_counter() - start)
    meter.close()
    return rate


def _rates(open_ledger: Any, settings: Settings, label: str, note: str) -> list[Figure]:
    n = settings.size(100_000, 20_000)
    direct, metered = [], []
    for _ in range(settings.reps):
        ledger = open_ledger()
        try:
            direct.append(_direct_rate(ledger, n))
            metered.append(_meter_rate(ledger, n))
        finally:
            ledger.close()
    target = 50_000 if label == "SQLite" else 30_000
    return [
        Figure(SECTION, f"{label} ledger.write, batches of {BATCH}", median_of(direct), "events/s",
               target=f">= {target:,}", met=median_of(direct) >= target, samples=direct, note=note),
        Figure(SECTION, f"{label} through the Meter (batched)", median_of(metered), "events/s",
               baseline=f"{label} ledger.write", baseline_value=median_of(direct),
               ratio=median_of(metered) / median_of(direct), samples=metered, note=note),
    ]


def _report_times(path: Path, total: int, reps: int) -> list[Figure]:
    from broker.metering import open_ledger
    from broker.reports.query import report_rows

    ledger = open_ledger(f"sqlite:///{path}")
    fill_start = time.perf_counter()
    for _ in range(total // 10_000):
        ledger.write(events(10_000, days=90))
    fill_s = time.perf_counter() - fill_start
    timings: dict[str, list[float]] = {"tenant,provider,model,region": [], "day": []}
    for _ in range(reps):
        for group in timings:
            start = time.perf_counter()
            rows = report_rows(ledger, group_by=group.split(","))
            timings[group].append(time.perf_counter() - start)
            assert rows, "the report over a filled ledger has rows"
    ledger.close()
    label = f"{total / 1e6:g}M"
    out = []
    for group, runs in timings.items():
        fig = Figure(SECTION, f"report over {label} events, by {group}", median_of(runs), "s", samples=runs,
                     note=f"filled in {fill_s:.0f} s")
        if total >= 10_000_000:
            fig.target, fig.met = "<= 5 s", median_of(runs) <= 5
        out.append(fig)
    return out


def run(settings: Settings) -> list[Figure]:
    from broker.metering import open_ledger

    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="llama-broker-bench-ledger-") as tmp:
        counter = itertools.count()
        figures += _rates(lambda: open_ledger(f"sqlite:///{Path(tmp) / f'w{next(counter)}.db'}"), settings,
                          "SQLite", "WAL, synchronous=FULL")
        with temporary_server() as (url, note):
            if url is None:
                figures.append(Figure(SECTION, "PostgreSQL ledger.write", float("nan"), "events/s",
                                      note=f"skipped: {note}"))
            else:
                figures += _rates(lambda: open_ledger(url), settings, "PostgreSQL", note)
        sizes = [settings.size(1_000_000, 200_000)] + ([10_000_000] if settings.ten_million else [])
        for total in sizes:
            figures += _report_times(Path(tmp) / f"report-{total}.db", total, settings.reps)
    return figures
