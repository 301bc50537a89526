"""The stored decision document: `document_json` writes exactly the canonical JSON of `Decision.to_dict()`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker import Broker
from broker.audit.decisions import document_json
from broker.errors import CredentialsError
from broker.guardrails.pipeline import GuardOutcome
from broker.policy.decision import Decision

MSG = [{"role": "user", "content": "Où est-ce que je tourne ? \u2603"}]


def _route(route_id: str, jurisdiction: str, price: Any = None, **extra: Any) -> dict[str, Any]:
    route: dict[str, Any] = {"id": route_id, "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
                             "endpoint": "http://127.0.0.1:9/v1", "jurisdiction": jurisdiction, **extra}
    if price is not None:
        route["price"] = {"input_per_mtok": price, "output_per_mtok": price}
    return route


def _policy(tmp: Path, objective: str) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": f"sqlite:///{tmp / 'usage.db'}",
        "audit": {"enabled": False},
        "routes": [
            _route("eu-box", "eu", 1),
            _route("us-box", "us", "0.1"),
            _route("café-box", "on-prem", "0.000001"),
            _route("unpriced", "on-prem"),
            _route("small", "on-prem", 2, capabilities={"max_output_tokens": 8}),
        ],
        "tenants": {
            "default": {"objective": objective, "residency": ["eu", "on-prem"]},
            "anywhere": {"objective": objective, "residency": "any"},
        },
    }


def _expected(decision: Decision, chosen: str | None, error_kind: str | None) -> str:
    doc = decision.to_dict()
    doc["chosen_route"], doc["error_kind"] = chosen, error_kind
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


@pytest.mark.parametrize("objective", ["cost", "latency", "weighted"])
def test_the_document_is_the_canonical_json_of_the_explained_decision(tmp_path: Path, objective: str) -> None:
    with Broker.from_policy(_policy(tmp_path, objective)) as broker:
        plain = broker.route(model="llama-3.1-8b", messages=MSG)
        sized = broker.route(model="llama-3.1-8b", messages=MSG, max_tokens=50, temperature=0.3)
        anywhere = broker.route(model="llama-3.1-8b", messages=MSG, tenant="anywhere", stream=True)
        noted = broker.route(model="llama-3.1-8b", messages=MSG, max_tokens=50)
        noted.add_warning("licence: attribution required ✓")
        noted.record_failure(noted.routes[0], CredentialsError("no key in $SOME_KEY"))
        noted.record_guardrail(GuardOutcome("deny", "input", "redacted", "matched \"x\"", ("pii", "é")))
        for decision, chosen, kind in [
            (plain, plain.routes[0].id, None),
            (sized, None, "Timeout"),
            (anywhere, anywhere.routes[-1].id, None),
            (noted, None, "GuardrailBlocked"),
        ]:
            text = document_json(decision, chosen, kind)
            assert text == _expected(decision, chosen, kind)
            assert json.loads(text)["candidates"]  # every route considered is in it
    removed = {c["route"]: c["removed_by"] for c in json.loads(document_json(sized, None, None))["candidates"]}
    assert removed["us-box"] == "residency" and removed["small"] == "capabilities" and removed["eu-box"] is None


def test_a_route_replaced_by_a_reloaded_policy_is_written_with_its_new_facts(tmp_path: Path) -> None:
    first = _policy(tmp_path, "cost")
    second = _policy(tmp_path, "cost")
    second["routes"][0] = _route("eu-box", "on-prem", 1)  # same id, another jurisdiction
    for policy, jurisdiction in ((first, "eu"), (second, "on-prem")):
        with Broker.from_policy(policy) as broker:
            decision = broker.route(model="llama-3.1-8b", messages=MSG)
            doc = json.loads(document_json(decision, None, None))
            assert {c["route"]: c["jurisdiction"] for c in doc["candidates"]}["eu-box"] == jurisdiction
            assert document_json(decision, None, None) == _expected(decision, None, None)
