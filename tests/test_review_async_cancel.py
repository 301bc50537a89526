"""An async call cancelled while a blocking hook step runs off the event loop gives back what that step took."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path

import pytest
from helpers import local_route, policy_dict

from broker import AsyncBroker
from broker.limits import MemoryWindows
from broker.testing import OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]


class GatedClock:
    """Wall time moved by hand; `sleep` blocks until the gate opens, then moves the time on."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0
        self.sleeping = threading.Event()
        self.gate = threading.Event()
        self.woke = threading.Event()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t, dt.timezone.utc)

    def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        self.gate.wait(10)
        self.t += seconds
        self.woke.set()


def test_a_call_cancelled_while_it_waits_for_its_rate_limit_gives_its_request_back(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    clock = GatedClock()
    tenants = {"acme": {"residency": ["on-prem"], "rate_limit": {"rpm": 1, "wait_s": 100}}}
    policy = policy_dict([local_route(local_emulator, "chat")], tenants, tmp_path)

    async def scenario() -> int:
        async with AsyncBroker(policy, now=clock.now, sleep=clock.sleep) as broker:
            limits = broker._core.limits
            assert limits is not None and isinstance(limits.windows, MemoryWindows)
            await broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
            waiting = asyncio.ensure_future(broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme"))
            assert await asyncio.to_thread(clock.sleeping.wait, 10)
            waiting.cancel()
            clock.gate.set()  # the wait ends: the limit admits the cancelled call's request in its thread
            with pytest.raises(asyncio.CancelledError):
                await waiting
            key = limits.key("tenant:acme", "rpm")
            assert await asyncio.to_thread(clock.woke.wait, 10)
            await asyncio.sleep(0.2)  # the thread's take, right after its wait, has landed
            slots = limits.windows._live(key, 60.0, clock.t)
            return sum(slots.values())

    assert asyncio.run(scenario()) == 0  # no provider saw the cancelled call: its request is not counted
    assert len(local_emulator.requests) == 1
