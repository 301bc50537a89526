"""LiteLLM on the benchmark mock: run by `.bench/venv`'s interpreter, prints one JSON object.

    .bench/venv/bin/python benchmarks/_litellm_driver.py --url URL --conc 8,64,256 --total N --reps R

It never imports the broker.  For each repetition it measures `litellm.acompletion` and a
`litellm.Router` over five deployments with cost-based routing: throughput at each concurrency
(and the errors), and sequential latency p50/p99 of `--sequential` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm

MESSAGES = [{"role": "user", "content": "hello, how fast is this?"}]
PRICES = [0.10, 0.20, 0.05, 0.30, 0.15]  # USD per million tokens, as the broker's five routes


def router(url: str) -> Any:
    model_list = [
        {"model_name": "llama", "model_info": {"id": f"r{i}"},
         "litellm_params": {"model": "openai/bench", "api_base": url, "api_key": "bench",
                            "input_cost_per_token": p / 1e6, "output_cost_per_token": p / 1e6}}
        for i, p in enumerate(PRICES)
    ]
    return litellm.Router(model_list=model_list, routing_strategy="cost-based-routing", num_retries=0)


def caller(kind: str, url: str) -> Any:
    if kind == "acompletion":
        async def call() -> Any:
            return await litellm.acompletion(model="openai/bench", api_base=url, api_key="bench",
                                             messages=MESSAGES, num_retries=0)
        return call
    r = router(url)

    async def routed() -> Any:
        return await r.acompletion(model="llama", messages=MESSAGES)
    return routed


async def throughput(call: Any, conc: int, total: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(conc)
    errors = 0

    async def one() -> None:
        nonlocal errors
        async with gate:
            try:
                await call()
            except Exception:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - start), errors


async def sequential(call: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    result: dict[str, Any] = {"version": getattr(litellm, "__version__", None) or _version()}
    concs = [int(c) for c in args.conc.split(",") if c]
    for kind in ("acompletion", "router"):
        call = caller(kind, args.url)
        for _ in range(20):  # warm up clients and caches
            await call()
        for rep in range(args.reps):
            for conc in concs:
                rps, errors = await throughput(call, conc, args.total)
                result.setdefault(f"{kind}/throughput/{conc}", []).append([rps, errors])
            if args.sequential:
                lat = await sequential(call, args.sequential)
                result.setdefault(f"{kind}/sequential", []).append(
                    [lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]]
                )
            print(f"litellm {kind} rep {rep + 1}/{args.reps} done", file=sys.stderr)
    return result


def _version() -> str | None:
    from importlib.metadata import version

    return version("litellm")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--conc", default="8,64,256")
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
