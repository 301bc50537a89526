"""A Redis rate-limit store that cannot be reached: a typed broker error naming no password, never redis-py's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from redis_fixtures import free_port

from broker import Broker
from broker.errors import BrokerError, MeteringError
from broker.testing import OpenAICompatEmulator

HI = [{"role": "user", "content": "hi"}]


def _policy(emu: OpenAICompatEmulator, tmp: Path, url: str, **tenant: Any) -> dict[str, Any]:
    routes = [local_route(emu, "quota", rpm=100)]
    return policy_dict(routes, {"acme": {"residency": ["on-prem"], **tenant}}, tmp, limits={"store": url})


@pytest.mark.parametrize("tenant", [{"rate_limit": {"rpm": 10}}, {}], ids=["tenant-limit", "route-quota"])
def test_an_unreachable_redis_store_is_a_metering_error_without_the_password(
    local_emulator: OpenAICompatEmulator, tmp_path: Path, tenant: dict[str, Any]
) -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    with Broker.from_policy(_policy(local_emulator, tmp_path, url, **tenant)) as broker:
        with pytest.raises(BrokerError) as caught:
            broker.chat(model="llama-3.1-8b", messages=HI, tenant="acme")
    assert isinstance(caught.value, MeteringError)
    assert "hunter2secret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert local_emulator.requests == []  # a limit that cannot be checked is not passed
