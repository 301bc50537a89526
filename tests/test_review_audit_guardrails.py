"""The residency audit and guardrail-blocked calls: a call whose text never left the process is no violation."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import local_route, policy_dict

from broker import Broker
from broker.errors import GuardrailBlocked
from broker.testing import OpenAICompatEmulator


def test_a_blocked_input_is_not_a_residency_violation(local_emulator: OpenAICompatEmulator, tmp_path: Path) -> None:
    rails = {"input": [{"deny": {"literals": ["nightingale"]}}]}
    tenants = {"acme": {"residency": ["on-prem"], "guardrails": rails}}
    policy = policy_dict([local_route(local_emulator, "chat")], tenants, tmp_path)
    with Broker.from_policy(policy, durable=True) as broker:
        broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hello"}], tenant="acme")
        with pytest.raises(GuardrailBlocked):
            broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "nightingale"}], tenant="acme")
        audit = broker._core.audit
        assert audit is not None
        report = audit.store.residency()
    assert report.violations == ()
    assert report.compliant
    assert report.checked == 1  # the answered call; the blocked one went nowhere to check
