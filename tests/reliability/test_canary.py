"""A canary credential and a canary prompt through every outcome, searched for everywhere they must not be.

Every provider, plain and streamed: success, 400/401/403/404/422 (the 4xx and 5xx answers echo
the request's credential headers back, as some providers do), 429 and 503 then success (a
retry), 429 and 500 on every attempt, a hang past the route timeout, a cut stream and every
malformed kind; every logger at DEBUG.  No tenant opts in to storing text.
"""

from __future__ import annotations

from typing import Any

import pytest
import reliability


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return reliability.canary()


def test_every_outcome_was_reached(figures: dict[str, Any]) -> None:
    outcomes = figures["outcomes"]
    assert not [k for k in outcomes if k.startswith("raw ")], outcomes
    for kind in ("ok", "InvalidRequest", "AuthError", "ModelNotAvailable", "Throttled", "Unavailable", "Timeout",
                 "ProtocolError"):
        assert outcomes.get(kind, 0) > 0, kind
    assert "NoEligibleRoute" not in outcomes  # each provider's route stayed callable, so every case reached it
    assert figures["log_bytes"] > 10_000  # the DEBUG records were captured


CLEAN_PLACES = ("logs (every logger at DEBUG)", "ledger bytes (open: db, -wal, -shm)", "ledger bytes (closed)",
                "reports (rows, JSON, CSV)", "broker error: message, repr, attributes",
                "cause chain: messages, reprs, traceback")


@pytest.mark.parametrize("place", CLEAN_PLACES)
def test_the_canary_key_is_nowhere(figures: dict[str, Any], place: str) -> None:
    assert figures["key_hits"][place] == 0


@pytest.mark.parametrize("place", CLEAN_PLACES[:-1])
def test_the_canary_prompt_is_nowhere(figures: dict[str, Any], place: str) -> None:
    assert figures["prompt_hits"][place] == 0


def test_the_canary_key_is_not_in_chained_sdk_exception_attributes(figures: dict[str, Any]) -> None:
    assert figures["key_hits"]["cause chain: attributes of SDK exceptions"] == 0


def test_the_canary_prompt_is_not_in_the_cause_chain(figures: dict[str, Any]) -> None:
    assert figures["prompt_hits"]["cause chain: messages, reprs, traceback"] == 0
