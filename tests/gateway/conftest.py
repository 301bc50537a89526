"""Fixtures of the gateway tests: per test module, the emulators and one gateway in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gateway_fixtures import KEY_ENV, Backends, gateway_policy, running, spend_capped_budget

from broker.gateway import Gateway
from broker.testing.suite import FAKE_CREDENTIALS


@dataclass
class Served:
    url: str
    app: Gateway
    backends: Backends
    ledger: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ledger = tmp_path_factory.mktemp("gateway") / "usage.db"
    with Backends() as backends:
        environ = {**FAKE_CREDENTIALS, **KEY_ENV}
        with pytest.MonkeyPatch.context() as mp:
            for name, value in FAKE_CREDENTIALS.items():
                mp.setenv(name, value)
            app = Gateway(gateway_policy(backends, ledger), environ=environ)
            with running(app) as url:
                spend_capped_budget(url)
                yield Served(url, app, backends, ledger)
