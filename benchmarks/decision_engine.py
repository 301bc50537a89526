"""The routing decision and the executor's own per-call work, with no I/O.

    python benchmarks/decision_engine.py [--routes 50] [--tenants 1000] [--calls 20000] [--runs 5]
                                         [--clock wall|cpu] [--json FILE]

decision   `Router.decide` over a generated policy: `--routes` routes of one model across
           providers, jurisdictions, prices, capabilities and lifecycles, and `--tenants`
           tenants with mixed residency, provider rules, price ceilings, latency SLOs and
           objectives; requests vary (plain, max_tokens, tools, JSON, streaming).  Per call,
           p50 and p99 over all calls of a run, median of runs.
explain    building the full explanation (`Decision.to_dict()`) of a decision, per call.
executor   `Executor.chat` / `achat` with an in-process adapter that answers at once and a
           meter that keeps nothing: the executor's overhead per call, with the adapter's
           own time (measured in the same run) subtracted.

The machine is noisy: each figure is the median of `--runs` runs.  `--clock cpu` times the
decisions by the thread's CPU time instead of the wall clock, which a shared machine's other
work (time spent descheduled) does not inflate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.adapter import AdapterBase
from broker.errors import NoEligibleRoute
from broker.execute import CallMeta, Executor
from broker.health import CircuitBoard, LatencyTracker
from broker.metering.events import UsageEvent
from broker.policy import load_policy
from broker.policy.engine import Router
from broker.policy.schema import RetrySettings
from broker.routes import Route
from broker.types import ChatRequest, ChatResponse, Usage

MODEL = "llama-3.1-70b"
JURISDICTIONS = ["us", "eu", "uk", "ca", "jp", "au", "in", "ch", "global", "on-prem"]
PROVIDERS = ["bedrock", "vertex", "azure", "groq", "local"]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def generated_policy(n_routes: int, n_tenants: int, seed: int = 7) -> dict[str, Any]:
    """A policy of `n_routes` routes serving one model and `n_tenants` tenants, from a fixed seed."""
    rng = random.Random(seed)
    routes = []
    for i in range(n_routes):
        provider = PROVIDERS[i % len(PROVIDERS)]
        route: dict[str, Any] = {
            "id": f"{provider}-{i:02d}",
            "provider": "local",  # one adapter kind keeps the policy free of cloud credentials
            "model": MODEL,
            "model_id": f"meta-llama/{MODEL}-{provider}",
            "endpoint": f"http://127.0.0.1:{9000 + i}/v1",
            "jurisdiction": JURISDICTIONS[rng.randrange(len(JURISDICTIONS))],
            "price": {
                "input_per_mtok": f"{rng.choice([0.1, 0.2, 0.35, 0.59, 0.72, 0.9, 1.2]):.2f}",
                "output_per_mtok": f"{rng.choice([0.3, 0.6, 0.72, 0.79, 0.99, 1.5]):.2f}",
            },
            "options": {"latency_prior": {"ttft_ms": rng.uniform(80, 900), "per_token_ms": rng.uniform(2, 25)}},
        }
        caps: dict[str, Any] = {}
        if rng.random() < 0.2:
            caps["tools"] = False
        if rng.random() < 0.15:
            caps["json_mode"] = False
        if rng.random() < 0.2:
            caps["streaming_tools"] = False
        if rng.random() < 0.2:
            caps["max_output_tokens"] = 2048
        if caps:
            route["capabilities"] = caps
        if rng.random() < 0.08:
            route["lifecycle"] = {"status": "deprecated", "retires_on": "2031-01-01"}
        elif rng.random() < 0.04:
            route["lifecycle"] = {"status": "retired"}
        routes.append(route)
    tenants: dict[str, Any] = {}
    for t in range(n_tenants):
        spec: dict[str, Any] = {"objective": rng.choice(["cost", "cost", "latency", "weighted"])}
        roll = rng.random()
        if roll < 0.3:
            spec["residency"] = "any"
        else:
            spec["residency"] = rng.sample(JURISDICTIONS, rng.randint(2, 6))
        if rng.random() < 0.3:
            spec["providers"] = {"deny": []}
        if rng.random() < 0.25:
            spec["max_price_per_mtok"] = {"input": "0.80", "output": "1.00"}
        if rng.random() < 0.2:
            spec["latency_slo_ms"] = {"p50": rng.choice([2000, 4000, 8000])}
        if spec["objective"] == "weighted":
            spec["weights"] = {"cost": 0.7, "latency": 0.3}
        tenants[f"t{t:04d}"] = spec
    tenants["default"] = {"objective": "cost", "residency": "any"}
    return {"version": 1, "routes": routes, "tenants": tenants}


def requests() -> list[tuple[ChatRequest, bool]]:
    """A small mix of call shapes: plain, bounded output, tools, JSON, streaming."""
    plain = [{"role": "user", "content": "How far is the moon, roughly, in kilometres?"}]
    return [
        (ChatRequest(model=MODEL, messages=plain), False),
        (ChatRequest(model=MODEL, messages=plain, max_tokens=400), False),
        (ChatRequest(model=MODEL, messages=plain, tools=[TOOL]), False),
        (ChatRequest(model=MODEL, messages=plain, response_format="json_object"), False),
        (ChatRequest(model=MODEL, messages=plain), True),
        (ChatRequest(model=MODEL, messages=plain, tools=[TOOL]), True),
    ]


def time_decisions(router: Router, tenants: list[str], calls: int, seed: int, cpu: bool = False) -> list[float]:
    rng = random.Random(seed)
    shapes = requests()
    plan = [(shapes[rng.randrange(len(shapes))], tenants[rng.randrange(len(tenants))]) for _ in range(calls)]
    decide, clock = router.decide, (time.thread_time_ns if cpu else time.perf_counter_ns)
    samples = []
    for (request, stream), tenant in plan:
        start = clock()
        with suppress(NoEligibleRoute):  # nothing eligible for this shape: refused, which is also a decision
            decide(request, tenant, stream=stream)
        samples.append((clock() - start) / 1000)
    return samples


def time_explain(router: Router, tenants: list[str], calls: int) -> float:
    request = requests()[0][0]
    decisions = []
    for tenant in tenants[: max(1, calls)]:
        with suppress(NoEligibleRoute):
            decisions.append(router.decide(request, tenant))
    start = time.perf_counter()
    for d in decisions:
        d.to_dict()
    return (time.perf_counter() - start) / max(1, len(decisions)) * 1e6


class _InstantAdapter(AdapterBase):
    provider = "instant"

    def chat(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(text="ok", finish_reason="stop", usage=Usage(input_tokens=12, output_tokens=3))

    async def achat(self, request: ChatRequest) -> ChatResponse:
        return self.chat(request)


class _Adapters:
    def __init__(self) -> None:
        self.adapters: dict[str, _InstantAdapter] = {}

    def get(self, route: Route) -> _InstantAdapter:
        found = self.adapters.get(route.id)
        if found is None:
            found = self.adapters[route.id] = _InstantAdapter(route, http=None)  # type: ignore[arg-type]
        return found


class _NullMeter:
    durable = False

    def record(self, event: UsageEvent) -> None:
        return None


def executor_figures(policy: Any, calls: int) -> tuple[float, float, float]:
    """(sync overhead us, async overhead us, adapter's own us) per call."""
    latency, circuits = LatencyTracker(), CircuitBoard()
    router = Router(policy, latency=latency, circuits=circuits)
    adapters = _Adapters()
    executor = Executor(adapters=adapters, latency=latency, circuits=circuits, meter=_NullMeter(),
                        retry=RetrySettings())
    request = requests()[0][0]
    decision = router.decide(request, "default")
    meta = CallMeta(request_id="0" * 32, tenant="default", tags={"app": "bench"}, policy_version=policy.version)
    adapter = adapters.get(decision.routes[0])

    def own() -> None:
        adapter.chat(request)

    def sync() -> None:
        executor.chat(decision, request, meta)

    async def async_loop(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await executor.achat(decision, request, meta)
        return (time.perf_counter() - start) / n * 1e6

    async def own_async(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await adapter.achat(request)
        return (time.perf_counter() - start) / n * 1e6

    def per_call(fn: Callable[[], None], n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    per_call(sync, 200)
    base = per_call(own, calls)
    sync_us = per_call(sync, calls) - base
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(async_loop(200))
        abase = loop.run_until_complete(own_async(calls))
        async_us = loop.run_until_complete(async_loop(calls)) - abase
    finally:
        loop.close()
    return sync_us, async_us, base


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    policy = load_policy(generated_policy(args.routes, args.tenants))
    load_s = time.perf_counter() - started
    tenants = [t for t in policy.tenants if t != "default"]
    router = Router(policy, latency=LatencyTracker(), circuits=CircuitBoard())
    time_decisions(router, tenants, min(args.calls, 5000), seed=0)  # warm: first calls of each tenant

    p50s, p99s, explains, sync_ex, async_ex, own = [], [], [], [], [], []
    for run in range(args.runs):
        samples = time_decisions(router, tenants, args.calls, seed=run + 1, cpu=args.clock == "cpu")
        p50s.append(percentile(samples, 0.50))
        p99s.append(percentile(samples, 0.99))
        explains.append(time_explain(router, tenants, 500))
        s, a, b = executor_figures(policy, max(2000, args.calls // 4))
        sync_ex.append(s)
        async_ex.append(a)
        own.append(b)
    figures = {
        "routes": args.routes,
        "tenants": args.tenants,
        "runs": args.runs,
        "calls_per_run": args.calls,
        "clock": args.clock,
        "policy_load_s": round(load_s, 3),
        "decision_p50_us": round(statistics.median(p50s), 2),
        "decision_p99_us": round(statistics.median(p99s), 2),
        "explain_us": round(statistics.median(explains), 2),
        "executor_sync_overhead_us": round(statistics.median(sync_ex), 2),
        "executor_async_overhead_us": round(statistics.median(async_ex), 2),
        "adapter_own_us": round(statistics.median(own), 2),
    }
    print(f"decision over {args.routes} routes x {args.tenants} tenants, median of {args.runs} runs "
          f"x {args.calls} calls, {args.clock} clock (policy loaded in {load_s:.2f} s)")
    print(f"  decide          p50 {figures['decision_p50_us']:8.1f} us   p99 {figures['decision_p99_us']:8.1f} us")
    print(f"  explanation         {figures['explain_us']:8.1f} us per decision (to_dict)")
    print("executor per call, no I/O (instant adapter, null meter; adapter's own time subtracted)")
    print(f"  chat                {figures['executor_sync_overhead_us']:8.1f} us")
    print(f"  achat               {figures['executor_async_overhead_us']:8.1f} us")
    print(f"  (adapter's own      {figures['adapter_own_us']:8.1f} us)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
