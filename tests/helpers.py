"""Builders shared by the test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
