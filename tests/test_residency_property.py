"""Property: whatever the policy, tenant and failure pattern, no call lands outside its residency."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import local_route
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import Broker, BrokerError
from broker.testing import OpenAICompatEmulator

JURISDICTIONS = ["us", "eu", "apac", "global", "on-prem", "unknown"]
FAULTS = [None, 429, 500, 503, 400, 404, "cut", "malformed"]


@pytest.fixture(scope="module")
def emulators() -> Iterator[list[OpenAICompatEmulator]]:
    emus = [OpenAICompatEmulator().start() for _ in range(4)]
    yield emus
    for e in emus:
        e.stop()


route_spec = st.tuples(
    st.sampled_from(JURISDICTIONS),
    st.decimals(min_value=0, max_value=5, places=2),
    st.lists(st.sampled_from(FAULTS), max_size=4),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(route_spec, min_size=1, max_size=4),
    residency=st.sets(st.sampled_from(JURISDICTIONS), min_size=1),
    objective=st.sampled_from(["cost", "latency", "weighted"]),
    stream=st.booleans(),
)
def test_no_call_lands_outside_its_tenants_residency(
    emulators: list[OpenAICompatEmulator], specs: list[tuple[str, object, list[object]]],
    residency: set[str], objective: str, stream: bool,
) -> None:
    routes = []
    for i, (jurisdiction, price, faults) in enumerate(specs):
        emu = emulators[i]
        emu.reset()
        for fault in faults:
            if fault == "cut":
                emu.cut_stream(after=1)
            elif fault == "malformed":
                emu.malformed()
            elif fault is not None:
                emu.fail(int(fault), retry_after=0)  # type: ignore[call-overload]
        routes.append(local_route(emu, f"r{i}", jurisdiction=jurisdiction,
                                  price={"input_per_mtok": str(price), "output_per_mtok": str(price)}))
    policy = {
        "version": 1,
        "routes": routes,
        "tenants": {"t": {"objective": objective, "residency": sorted(residency)}},
        "retry": {"max_attempts_per_route": 2},
    }
    with tempfile.TemporaryDirectory() as tmp:
        policy["ledger"] = f"sqlite:///{Path(tmp) / 'u.db'}"
        with Broker.from_policy(policy, sleep=lambda s: None) as broker:
            try:
                if stream:
                    reply = list(broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}], tenant="t"))[-1].response
                else:
                    reply = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}], tenant="t")
            except BrokerError:
                reply = None
    if reply is not None:
        assert reply.route.jurisdiction in residency
    for i, (jurisdiction, _, _) in enumerate(specs):
        if jurisdiction not in residency:
            assert emulators[i].requests == [], f"route r{i} ({jurisdiction}) was called for residency {residency}"
