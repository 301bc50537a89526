"""The benchmark suite: `python -m benchmarks [--quick] [--only SECTION,...] [--json PATH] [--ten-million]`.

Sections (each a module of this package): throughput, latency, decision, footprint, ledger.
Every figure is the median of `--reps` repetitions; every timing that has a baseline is set
beside it as a ratio measured in the same run.  Servers run in their own processes pinned to
the last CPU; this process and its children keep off it.  Prints a table and writes JSON
(default `.bench/results.json`).  LiteLLM is installed on first use into `.bench/venv`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from ._common import Figure, Settings
from ._server import client_cpus, pin_client, server_cpu

SECTIONS = ("throughput", "latency", "decision", "footprint", "ledger")
ROOT = Path(__file__).resolve().parent.parent


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("req/s", "events/s"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def table(figures: list[Figure]) -> str:
    header = ("section", "figure", "median", "unit", "baseline (same run)", "ratio", "target", "met", "note")
    rows = [header]
    for f in figures:
        base = f"{f.baseline} {_fmt(f.baseline_value)}" if f.baseline else ""
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.section, f.name, _fmt(f.value, f.unit), f.unit, base,
                     f"{f.ratio:.2f}x" if f.ratio is not None else "", f.target or "", met, f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sizes and 3 repetitions (a smoke run)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5, quick 3)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--ten-million", action="store_true", help="also time the report over 10M events (slow)")
    parser.add_argument("--json", default=str(ROOT / ".bench" / "results.json"), help="where to write the figures")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    settings = Settings(quick=args.quick, reps=args.reps or (3 if args.quick else 5), ten_million=args.ten_million)
    server = server_cpu()
    pin_client()
    started = time.time()
    figures: list[Figure] = []
    for name in chosen:
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            figures += importlib.import_module(f"benchmarks.{name}").run(settings)
        except Exception as exc:  # one broken section still leaves the others' figures
            figures.append(Figure(name, f"{name} section failed", float("nan"), "",
                                  note=f"{type(exc).__name__}: {exc}"))
        print(f"[{name}] {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    machine = {
        "cpus": os.cpu_count(), "server_cpu": server, "client_cpus": sorted(client_cpus() or []),
        "python": platform.python_version(), "platform": platform.platform(),
    }
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nllama-broker benchmarks, {stamp}, {machine['cpus']} cores (mock on CPU {server}), "
          f"medians of {settings.reps} repetitions{' (quick)' if settings.quick else ''}\n")
    print(table(figures))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": stamp, "machine": machine, "settings": vars(settings),
                               "seconds": round(time.time() - started), "figures": [f.as_json() for f in figures]},
                              indent=2, default=str))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
