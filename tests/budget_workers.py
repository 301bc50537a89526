"""Bodies of the processes the budget tests start (importable by a spawned interpreter)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from broker import Broker, BudgetExceeded

MSG = [{"role": "user", "content": "Hello, how much does this cost?"}]


def hammer(policy: dict[str, Any], concurrency: int, go: Any, out: Any) -> None:
    """`concurrency` threads calling as tenant `acme` once `go` is set, each until the budget refuses it
    on settled spend alone (not on other calls' open reservations); puts (made, refused, largest cost)."""
    with Broker.from_policy(policy) as broker:
        def caller(_: int) -> tuple[list[Decimal], int]:
            costs, refused = [], 0
            for _ in range(200):
                try:
                    reply = broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme", max_tokens=20)
                except BudgetExceeded as exc:
                    refused += 1
                    if exc.spent_usd + exc.estimate_usd > exc.limit_usd:  # type: ignore[operator]
                        break
                    time.sleep(0.005)  # refused on others' open reservations: try again shortly
                    continue
                costs.append(reply.cost_usd or Decimal(0))
            return costs, refused

        go.wait(60)
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(caller, range(concurrency)))
    made = [c for costs, _ in results for c in costs]
    out.put((len(made), sum(r for _, r in results), str(max(made, default=Decimal(0)))))


def hold(policy: dict[str, Any], calls: int) -> None:
    """Start `calls` calls that the (slowed) provider does not answer; the test kills this process."""
    with Broker.from_policy(policy) as broker:
        def one(_: int) -> None:
            try:
                broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme", max_tokens=20)
            except BudgetExceeded:
                pass

        with ThreadPoolExecutor(calls) as pool:
            list(pool.map(one, range(calls)))
