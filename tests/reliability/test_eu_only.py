"""An EU-only tenant whose EU routes all fail, beside cheaper healthy US, global, unknown and on-prem routes."""

from __future__ import annotations

from typing import Any

import pytest
import reliability


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return reliability.eu()


def test_cheaper_routes_were_removed_by_residency_alone(figures: dict[str, Any]) -> None:
    assert set(figures["removed_before_calls"].values()) == {"residency"}
    assert len(figures["removed_before_calls"]) == 4
    assert figures["eligible_routes"] == ["azure-eu-70b", "local-eu-70b"]


def test_failing_eu_routes_never_widen_to_other_jurisdictions(figures: dict[str, Any]) -> None:
    assert figures["wire_requests_outside_eu"] == 0
    assert figures["ledger"]["outside_residency"] == 0
    assert figures["wire_requests"]["azure-eu"] > 0 and figures["wire_requests"]["local-eu"] > 0
    assert figures["ok"] == 0


def test_every_call_ends_in_a_broker_error(figures: dict[str, Any]) -> None:
    assert figures["lost"] == 0, figures["lost_detail"]
    assert sum(figures["failed_by_error"].values()) == figures["calls"]
    assert figures["ledger"]["duplicate_events"] == 0
