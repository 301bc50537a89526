"""Throughput on the mock at concurrency 8 / 64 / 256: raw aiohttp, raw httpx, `AsyncBroker`, LiteLLM.

Every contender sends the same small chat completion to the same mock (its own process, its
own CPU) and parses the answer.  The broker runs five local routes with cost routing, metered
in batches to SQLite, as by default.  LiteLLM (`acompletion`, and its `Router` over the same five
deployments with cost-based routing) runs in `.bench/venv` in a subprocess, on the client CPUs.
Ratios are against raw aiohttp at the same concurrency in the same run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import _venv
from ._clients import AsyncBrokerCall, RawAiohttp, RawHttpx, budget_store_available
from ._common import Figure, Settings, median_of
from ._server import BenchServer

CONCURRENCY = (8, 64, 256)
SECTION = "throughput"


async def _measure(make: Any, url: str, conc: int, total: int) -> tuple[float, int]:
    client = make(url)
    try:
        for _ in range(50):  # warm the pool and the caches
            await client.call()
        gate = asyncio.Semaphore(conc)
        errors = 0

        async def one() -> None:
            nonlocal errors
            async with gate:
                try:
                    await client.call()
                except Exception:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return total / (time.perf_counter() - start), errors
    finally:
        await client.aclose()


def _litellm(url: str, settings: Settings, total: int) -> dict[str, Any] | str:
    try:
        python = _venv.ensure("litellm", "aiohttp")
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"LiteLLM could not be installed into {_venv.VENV}: {exc}"
    driver = Path(__file__).with_name("_litellm_driver.py")
    done = subprocess.run(
        [str(python), str(driver), "--url", url, "--conc", ",".join(map(str, CONCURRENCY)),
         "--total", str(total), "--sequential", str(settings.size(500, 150)), "--reps", str(settings.reps)],
        capture_output=True, text=True, env=_venv.offline_env(), timeout=3600,
    )
    if done.returncode:
        return f"LiteLLM driver failed: {done.stderr.strip().splitlines()[-1:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(settings: Settings) -> list[Figure]:
    total = settings.size(3000, 600)
    contenders: dict[str, Any] = {"raw aiohttp": RawAiohttp, "raw httpx": RawHttpx, "AsyncBroker": AsyncBrokerCall}
    budget_row = budget_store_available()
    if budget_row:
        contenders["AsyncBroker, block budget"] = lambda url: AsyncBrokerCall(url, budget=True)
    figures: list[Figure] = []
    with BenchServer() as server:
        results: dict[tuple[str, int], list[tuple[float, int]]] = {}
        for _ in range(settings.reps):
            for conc in CONCURRENCY:
                for name, make in contenders.items():  # interleaved: all see the same noise
                    results.setdefault((name, conc), []).append(asyncio.run(_measure(make, server.url, conc, total)))
            print(".", end="", file=sys.stderr, flush=True)
        litellm = _litellm(server.url, settings, total)
        sequential_litellm: dict[str, list[float]] = {}
        if isinstance(litellm, dict):
            for kind in ("acompletion", "router"):
                for conc in CONCURRENCY:
                    results[(f"LiteLLM {kind}", conc)] = [tuple(x) for x in litellm[f"{kind}/throughput/{conc}"]]
                sequential_litellm[kind] = [median_of([r[0] for r in litellm[f"{kind}/sequential"]]),
                                            median_of([r[1] for r in litellm[f"{kind}/sequential"]])]
    names = [*contenders, "LiteLLM acompletion", "LiteLLM router"]
    for conc in CONCURRENCY:
        base = median_of([r[0] for r in results[("raw aiohttp", conc)]])
        for name in names:
            runs = results.get((name, conc))
            if runs is None:
                continue
            rps = median_of([r[0] for r in runs])
            errors = max(r[1] for r in runs)
            fig = Figure(SECTION, f"{name} @ {conc}", rps, "req/s", baseline="raw aiohttp", baseline_value=base,
                         ratio=rps / base, samples=[r[0] for r in runs], note=f"errors {errors}" if errors else "")
            if name == "AsyncBroker" and conc == 64:
                fig.target, fig.met = ">= 0.8x raw aiohttp", rps / base >= 0.8
            if name == "AsyncBroker" and conc == 256:
                fig.target, fig.met = "0 errors", errors == 0
            figures.append(fig)
    if not isinstance(litellm, dict):
        figures.append(Figure(SECTION, "LiteLLM", float("nan"), "", note=litellm))
    else:
        for kind, (p50, p99) in sequential_litellm.items():
            figures.append(Figure("latency", f"LiteLLM {kind} sequential p50 (absolute)", p50, "ms",
                                  note=f"p99 {p99:.2f} ms; LiteLLM {litellm.get('version')}, same mock"))
    if not budget_row:
        figures.append(Figure(SECTION, "TODO AsyncBroker, block budget @ 64", float("nan"), "",
                              note="left out: the broker has no budget reservation store yet"))
    return figures
