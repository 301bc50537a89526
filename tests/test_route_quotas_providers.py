"""Each provider emulator's quota answers 429 in the provider's own wire format, with its own wait hint;
the real adapter reads the hint, and the broker marks the route saturated for that long."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance.conformance_cases import MESSAGES, PROVIDERS, Case
from test_rate_limits import Clock

from broker import Broker
from broker.errors import RateLimited, Throttled
from broker.testing import EmulatorSuite


@pytest.fixture(scope="module")
def suite() -> Iterator[EmulatorSuite]:
    with EmulatorSuite() as emulators:
        yield emulators


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_providers_quota_answers_429_with_its_hint_and_saturates_the_route(
    provider: str, suite: EmulatorSuite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in suite.env.items():
        monkeypatch.setenv(name, value)
    emulator = suite[provider]
    emulator.reset()
    clock = Clock()
    emulator.quota(rpm=2, clock=lambda: clock.t)
    case = Case(provider, emulator, emulator.url, tmp_path)
    policy = case.policy(max_attempts=1, rpm=1000)  # the broker's idea of the quota is too high
    try:
        with Broker(policy, now=clock.now, sleep=clock.sleep) as broker:
            for _ in range(2):
                broker.chat(model=case.model, messages=MESSAGES, tenant="default")
            clock.t += 10
            with pytest.raises(Throttled) as info:
                broker.chat(model=case.model, messages=MESSAGES, tenant="default")
            assert info.value.retry_after == pytest.approx(50, abs=1.0)  # the oldest call leaves at 60 s
            assert emulator.quota_429s == 1
            clock.t += 20
            with pytest.raises(RateLimited, match="saturated") as passed:
                broker.chat(model=case.model, messages=MESSAGES, tenant="default")
            assert passed.value.retry_after == pytest.approx(30, abs=1.0)
            assert emulator.quota_429s == 1 and len(emulator.requests) == 3
            clock.t += 31
            broker.chat(model=case.model, messages=MESSAGES, tenant="default")
    finally:
        emulator.quota()
        emulator.reset()
