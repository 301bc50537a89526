"""Budgets shared by processes: four processes hammering one budget, and one killed while holding it.

Both run on a shared SQLite file and on a real PostgreSQL server started by the tests; the
processes are real interpreters (spawned), calling a loopback emulator over HTTP.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from budget_workers import MSG, hammer, hold
from helpers import local_route
from ledger_fixtures import *  # noqa: F403  (ledger_url: an empty ledger on SQLite, then on PostgreSQL)

from broker import Broker, BudgetExceeded
from broker.metering import open_ledger
from broker.testing import OpenAICompatEmulator

PRICE = {"input_per_mtok": "400", "output_per_mtok": "400"}  # $0.0112 a call, $0.03 reserved
LEASE_S = 2.0
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as server:
        yield server


def shared_policy(emu: OpenAICompatEmulator, ledger_url: str, limit: str, lease_s: float = 30) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": ledger_url,
        "budgets": {"lease_s": lease_s},
        "routes": [local_route(emu, "a", price=PRICE)],
        "tenants": {"acme": {"residency": ["on-prem"], "budget": {"monthly_usd": limit, "on_exceed": "block"}}},
    }


def month_key() -> str:
    return "tenant:acme@" + dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")


def test_four_processes_at_concurrency_50_stay_within_one_budget(ledger_url: str, emu: OpenAICompatEmulator) -> None:
    emu.latency_s = 0.02  # calls overlap: reservations are open while others decide
    policy = shared_policy(emu, ledger_url, "1.00")
    go, out = SPAWN.Event(), SPAWN.Queue()
    workers = [SPAWN.Process(target=hammer, args=(policy, 50, go, out)) for _ in range(4)]
    for w in workers:
        w.start()
    go.set()
    results = [out.get(timeout=35) for _ in workers]
    for w in workers:
        w.join(10)
        assert w.exitcode == 0
    made = sum(r[0] for r in results)
    largest = max(Decimal(r[2]) for r in results)
    ledger = open_ledger(ledger_url)
    try:
        month = dt.datetime.now(dt.timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        total = ledger.spend("acme", month)
    finally:
        ledger.close()
    overshoot = total - Decimal("1.00")
    print(f"\n{ledger_url.split(':')[0]}: {made} calls made, {sum(r[1] for r in results)} refused; "
          f"settled ${total} against $1.00; overshoot ${max(overshoot, Decimal(0))} "
          f"(${overshoot}); largest call ${largest}")
    assert total <= Decimal("1.00") + largest
    assert total > Decimal("1.00") - Decimal("0.03")  # every caller stopped only once the budget was spent
    with Broker.from_policy(policy) as broker:  # the store agrees with the ledger to the picodollar
        standing = broker._core.budgets.store.standing([month_key()])[month_key()]
    assert standing.settled == total and standing.reserved == 0


def test_a_killed_process_releases_its_reservations_within_the_lease(
    ledger_url: str, emu: OpenAICompatEmulator
) -> None:
    emu.latency_s = 30  # the held calls are never answered in time
    policy = shared_policy(emu, ledger_url, "0.10", LEASE_S)  # room for three $0.03 reservations
    holder = SPAWN.Process(target=hold, args=(policy, 5))
    holder.start()
    with Broker.from_policy(policy) as broker:
        store, key = broker._core.budgets.store, month_key()
        deadline = time.monotonic() + 25
        while not (key in store.standing([key]) and store.standing([key])[key].reserved == Decimal("0.09")):
            assert time.monotonic() < deadline, "the holder never reserved"
            time.sleep(0.05)
        time.sleep(LEASE_S * 2)  # renewed while the process lives: still held
        with pytest.raises(BudgetExceeded) as info:
            broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme", max_tokens=20)
        assert info.value.reserved_usd == Decimal("0.09")
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        killed = time.monotonic()
        holder.join(5)
        while store.standing([key])[key].reserved != 0:
            assert time.monotonic() - killed < LEASE_S + 1, "reservations outlived their lease"
            time.sleep(0.02)
        released_after = time.monotonic() - killed
        emu.latency_s = 0
        reply = broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme", max_tokens=20)
    print(f"\n{ledger_url.split(':')[0]}: reservations released {released_after:.2f} s after kill -9 "
          f"(lease {LEASE_S} s)")
    assert reply.cost_usd is not None and reply.cost_usd > 0
