"""A seeded storm through `AsyncBroker` over all five providers' emulators, with one provider down a while.

300 calls at concurrency 50, 30% streamed; the emulators answer 30% of requests with 429 (wait
hints as retry-after seconds, an HTTP date, retry-after-ms, x-amz-retry-after, retryDelay and
x-ratelimit-reset), 5% with 5xx, 2% hang past the route timeout, 2% cut streams, 1% malformed.
"""

from __future__ import annotations

from typing import Any

import pytest
import reliability


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return reliability.storm()


def test_every_fault_kind_was_served(figures: dict[str, Any]) -> None:
    queued = figures["faults_queued"]
    for kind in ("429 retry-after http-date", "429 retry-after s", "429 retry-after-ms + Retry-After",
                 "429 retryDelay", "429 x-amz-retry-after ms", "429 x-ratelimit-reset", "hang", "cut stream"):
        assert queued.get(kind, 0) > 0, kind
    assert any(k.startswith("malformed ") for k in queued)
    assert any(k.startswith("5") for k in queued)
    kinds = figures["ledger"]["failed_attempts_by_kind"]
    assert {"Throttled", "Unavailable", "Timeout", "ProtocolError"} <= set(kinds)
    assert figures["wire_requests"]["bedrock (before down)"] > 0 and figures["wire_requests"]["bedrock"] > 0


def test_no_call_is_lost(figures: dict[str, Any]) -> None:
    assert figures["lost"] == 0, figures["lost_detail"]
    assert figures["ok"] + sum(figures["failed_by_error"].values()) == figures["calls"]
    assert figures["ok"] >= 0.9 * figures["calls"]  # retries and failover carry most calls through


def test_accepted_answers_are_metered_with_exactly_the_served_tokens(figures: dict[str, Any]) -> None:
    served = figures["emulator_reported"]
    accepted = figures["ledger"]["accepted_exact"]
    assert figures["tokens_exact"]
    assert (accepted["events"], accepted["input_tokens"], accepted["output_tokens"]) == (
        served["answers"], served["input_tokens"], served["output_tokens"])
    assert accepted["events"] + figures["ledger"]["accepted_estimated"]["events"] == figures["ok"]


def test_one_event_per_attempt_and_no_absurd_usage(figures: dict[str, Any]) -> None:
    ledger = figures["ledger"]
    assert ledger["duplicate_events"] == 0
    assert ledger["bad_usage_events"] == 0
    assert ledger["dead_letters"] == 0
    # every request an emulator read is metered once; an attempt may also be metered that timed out
    # or failed to connect before the emulator read it (a busy machine), never the other way round
    late = ledger["timeouts_and_unavailable_by_provider"]
    for provider, extra in figures["events_without_wire_request"].items():
        assert 0 <= extra <= late.get(provider, 0), (provider, extra)


def test_no_attempt_outside_residency(figures: dict[str, Any]) -> None:
    assert figures["ledger"]["outside_residency"] == 0
    assert figures["answers_outside_residency"] == 0
    assert figures["wire_requests"]["azure-eu"] == 0  # the cheapest 70B route is in the EU: never called
    assert figures["removed_before_calls"] == {"azure-eu-70b": "residency", "azure-global-scout": "residency"}


def test_no_malformed_answer_is_returned_as_success(figures: dict[str, Any]) -> None:
    assert figures["malformed_returned_as_success"] == 0
