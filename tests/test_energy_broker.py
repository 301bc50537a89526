"""Joules on the usage events of a measured local route, and tokens per joule in the report.

Real calls to the loopback runner emulator; the energy counter and its clock are fakes
injected through `Broker(energy_counters=..., energy_clock=...)`, so every figure is a hand
computation: each counter read adds 10 J, each clock read adds 1 s.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from test_energy import Steps

from broker import AsyncBroker, Broker
from broker.metering import open_ledger
from broker.reports.query import report_rows
from broker.testing import OpenAICompatEmulator, Reply

HELLO = [{"role": "user", "content": "count to three"}]


def policy(emu: OpenAICompatEmulator, tmp_path: Any, *, energy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "ledger": f"sqlite:///{tmp_path}/usage.db",
        "retry": {"max_attempts_per_route": 1, "base_delay_s": 0},
        "routes": [{"id": "gpu-box", "provider": "local", "model": "llama-3.1-8b", "model_id": "llama-8b",
                    "endpoint": f"{emu.url}/v1", "jurisdiction": "on-prem",
                    "price": {"input_per_mtok": "0.10", "output_per_mtok": "0.30"}}],
        "tenants": {"acme": {"residency": ["on-prem"]}},
        "energy": {"routes": {"gpu-box": {"counter": "nvml", "device": 0}}} if energy is None else energy,
    }


def events(tmp_path: Any) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"{tmp_path}/usage.db")
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute("SELECT * FROM usage_events ORDER BY output_tokens DESC"))
    finally:
        db.close()


def route_report(tmp_path: Any) -> dict[str, Any]:
    ledger = open_ledger(f"sqlite:///{tmp_path}/usage.db")
    try:
        (row,) = report_rows(ledger, group_by=["route"])
    finally:
        ledger.close()
    return row


@pytest.fixture
def emu() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as e:
        yield e


def test_one_call_alone_gets_the_whole_reading_and_the_report_shows_tokens_per_joule(emu: Any, tmp_path: Any) -> None:
    steps = Steps()
    emu.enqueue(Reply(text="one two three", input_tokens=12, output_tokens=40))
    with Broker(policy(emu, tmp_path), energy_counters={"nvml:0": steps}, energy_clock=steps.clock) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
    (event,) = events(tmp_path)
    assert reply.usage.output_tokens == 40
    assert event["energy_j"] == pytest.approx(10.0) and event["energy_attributed"] == 0  # read 10 J, then 20 J
    row = route_report(tmp_path)
    assert row["route_id"] == "gpu-box" and row["energy_j"] == pytest.approx(10.0)
    assert row["tokens_per_joule"] == pytest.approx(4.0)                    # 40 tokens / 10 J
    # $ per 1M tokens: (12 x 0.10 + 40 x 0.30) / 1e6 USD over 52 tokens
    assert row["usd_per_mtok"] == Decimal("0.253846")


async def test_overlapping_calls_share_the_overlap_by_tokens_and_are_marked_attributed(emu: Any, tmp_path: Any) -> None:
    steps = Steps()
    # the first request (the long call) answers late, so the second runs inside it; replies are
    # taken in the order answers are made
    emu.enqueue(Reply(text="short", input_tokens=10, output_tokens=5),
                Reply(text="long answer", input_tokens=10, output_tokens=30))
    emu.delay(0.6)
    async with AsyncBroker(policy(emu, tmp_path), energy_counters={"nvml:0": steps},
                           energy_clock=steps.clock) as broker:
        long_call = asyncio.create_task(broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme"))
        for _ in range(500):  # until the long call's request reached the runner
            if emu.requests:
                break
            await asyncio.sleep(0.01)
        short = await broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
        assert not long_call.done()
        long = await long_call
    assert (long.usage.output_tokens, short.usage.output_tokens) == (30, 5)
    first, second = events(tmp_path)
    # reads: long begins t=1 10 J; short begins t=2 20 J; short ends t=3 30 J; long ends t=4 40 J.
    # long: 30 tokens over 3 s (10/s); short: 5 tokens over 1 s (5/s): [2,3] is shared 10:5.
    assert first["energy_j"] == pytest.approx(10 + 10 * 10 / 15 + 10) and first["energy_attributed"] == 1
    assert second["energy_j"] == pytest.approx(10 * 5 / 15) and second["energy_attributed"] == 1
    row = route_report(tmp_path)
    assert row["energy_j"] == pytest.approx(30.0, abs=1e-3)
    assert row["tokens_per_joule"] == pytest.approx(35 / 30, abs=1e-4)


def test_a_stream_and_a_failed_attempt_are_measured_too(emu: Any, tmp_path: Any) -> None:
    steps = Steps()
    emu.fail(400)
    emu.enqueue(Reply(text="streamed words", output_tokens=8))
    with Broker(policy(emu, tmp_path), energy_counters={"nvml:0": steps}, energy_clock=steps.clock) as broker:
        with pytest.raises(Exception):
            broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
        final = [e for e in broker.stream(model="llama-3.1-8b", messages=HELLO, tenant="acme") if e.response][-1]
    assert final.response.usage.output_tokens == 8
    rows = events(tmp_path)
    assert [(r["status"], r["energy_j"], r["energy_attributed"]) for r in rows] == [
        ("ok", pytest.approx(10.0), 0), ("error", pytest.approx(10.0), 0)]


def test_without_a_counter_on_this_host_nothing_is_recorded(emu: Any, tmp_path: Any) -> None:
    """No NVIDIA driver here: the NVML route's events carry no figure, and the report no rate."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this host has an NVIDIA driver")
    with Broker(policy(emu, tmp_path)) as broker:
        assert broker._core.energy is None
        broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
    (event,) = events(tmp_path)
    assert event["energy_j"] is None and event["energy_attributed"] is None
    row = route_report(tmp_path)
    assert row["energy_j"] is None and row["tokens_per_joule"] is None and row["usd_per_mtok"] is not None


def test_routes_not_named_in_the_energy_section_are_not_measured(emu: Any, tmp_path: Any) -> None:
    steps = Steps()
    with Broker(policy(emu, tmp_path, energy={}), energy_counters={"nvml:0": steps},
                energy_clock=steps.clock) as broker:
        assert broker._core.energy is None
        broker.chat(model="llama-3.1-8b", messages=HELLO, tenant="acme")
    (event,) = events(tmp_path)
    assert event["energy_j"] is None and steps.j == 0
