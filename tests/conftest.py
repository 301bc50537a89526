"""Shared fixtures: a private data directory per test session, and an emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from broker.testing import OpenAICompatEmulator


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Default ledgers go to a temporary folder, never the user's data directory."""
    path = tmp_path_factory.mktemp("llama-broker-data")
    os.environ["LLAMA_BROKER_DATA_DIR"] = str(path)
    yield


@pytest.fixture
def local_emulator() -> Iterator[OpenAICompatEmulator]:
    with OpenAICompatEmulator() as emu:
        yield emu
