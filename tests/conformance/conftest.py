"""Fixtures of the cross-provider conformance suite.

Every test here runs once per provider: the real adapter and the provider's real SDK client,
driven through the public `Broker` / `AsyncBroker`, against that provider's loopback emulator.
Each module starts one `EmulatorSuite`; each test resets the emulators and builds a broker from
a one-route policy aimed at the provider under test, each broker with its own SQLite ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance_cases import PROVIDERS, Case

from broker import Broker
from broker.testing import EmulatorSuite


@pytest.fixture(scope="module")
def suite() -> Iterator[EmulatorSuite]:
    with EmulatorSuite() as emulators:
        yield emulators


@pytest.fixture(params=PROVIDERS)
def case(
    request: pytest.FixtureRequest, suite: EmulatorSuite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Case]:
    for name, value in suite.env.items():
        monkeypatch.setenv(name, value)
    for emulator in suite.emulators.values():
        emulator.reset()
    provider = request.param
    emulator = suite[provider]
    saved = {k: getattr(emulator, k) for k in ("served_models", "known_models") if hasattr(emulator, k)}
    case = Case(provider, emulator, emulator.url, tmp_path)
    try:
        yield case
    finally:
        case.close()
        for key, value in saved.items():
            setattr(emulator, key, value)
        emulator.reset()


@pytest.fixture
def broker(case: Case) -> Broker:
    """A broker with the policy's default retries (3 attempts per route)."""
    return case.broker()


@pytest.fixture
def strict_broker(case: Case) -> Broker:
    """A broker that tries each route once, so a provider error reaches the caller as it came."""
    return case.broker(max_attempts=1)
