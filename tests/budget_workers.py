"""Bodies of the processes the budget tests start (importable by a spawned interpreter)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from broker import Broker, BudgetExceeded

MSG = [{"role": "user", "content": "Hello, how much does this cost?"}]


def hammer(policy: dict[str, Any], calls: int, concurrency: int, go: Any, out: Any) -> None:
    """`calls` calls of tenant `acme`, `concurrency` at a time, once `go` is set; puts (ok, refused, max cost)."""
    with Broker.from_policy(policy) as broker:
        def one(_: int) -> Decimal | None:
            try:
                reply = broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme", max_tokens=20)
            except BudgetExceeded:
                return None
            return reply.cost_usd or Decimal(0)

        go.wait(60)
        with ThreadPoolExecutor(concurrency) as pool:
            costs = list(pool.map(one, range(calls)))
    made = [c for c in costs if c is not None]
    out.put((len(made), len(costs) - len(made), str(max(made, default=Decimal(0)))))


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
