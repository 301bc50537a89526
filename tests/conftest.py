"""Shared fixtures: a private data directory per test session, emulators, policy builders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def local_route(emu: Any, route_id: str = "local-a", **extra: Any) -> dict[str, Any]:
    """A policy route entry aimed at an OpenAI-compatible emulator."""
    return {
        "id": route_id,
        "provider": "local",
        "model": "llama-3.1-8b",
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "endpoint": f"{emu.url}/v1",
        "jurisdiction": "on-prem",
        **extra,
    }


def policy_dict(routes: list[dict[str, Any]], tenants: dict[str, Any] | None = None, tmp: Path | None = None,
                **top: Any) -> dict[str, Any]:
    """A minimal policy mapping; the ledger goes to `tmp` when given."""
    policy: dict[str, Any] = {
        "version": 1,
        "routes": routes,
        "tenants": tenants or {"default": {"objective": "cost", "residency": ["us", "eu", "on-prem"]}},
        **top,
    }
    if tmp is not None:
        policy["ledger"] = f"sqlite:///{tmp / 'usage.db'}"
    return policy
