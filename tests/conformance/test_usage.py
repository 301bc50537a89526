"""Usage conformance: the ledger counts one event per attempt, with the tokens the provider reported."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conformance_cases import MESSAGES, WEATHER_TOOL, Case, expected_cost, ledger_totals

from broker import Broker, Throttled
from broker.reports import ReportFilters, report_rows
from broker.testing import EmulatorSuite, Reply


def _mixed_traffic(case: Case, broker: Broker) -> int:
    """Chat, stream, a tool call, scripted counts and a retried throttle; returns the attempts made."""
    broker.chat(model=case.model, messages=MESSAGES)
    list(broker.stream(model=case.model, messages=MESSAGES))
    case.emulator.enqueue(Reply(tool_calls=[("get_weather", {"city": "Kyiv"})]))
    broker.chat(model=case.model, messages=MESSAGES, tools=[WEATHER_TOOL])
    case.emulator.enqueue(Reply(text="Counted by the provider.", input_tokens=40_000, output_tokens=3_000))
    list(broker.stream(model=case.model, messages=MESSAGES))
    case.emulator.fail(429, retry_after=0.5)
    broker.chat(model=case.model, messages=MESSAGES)
    return 6


def test_ledger_tokens_equal_what_the_emulators_reported(
    case: Case, broker: Broker, suite: EmulatorSuite
) -> None:
    attempts = _mixed_traffic(case, broker)

    totals = ledger_totals(broker)
    assert totals["attempts"] == attempts == len(case.emulator.requests)
    assert totals["error_calls"] == 1 and totals["estimated_calls"] == 0
    assert case.emulator.reported.calls == attempts - 1
    assert (totals["input_tokens"], totals["output_tokens"]) == suite.reported_tokens()
    reported = case.emulator.reported
    assert (totals["input_tokens"], totals["output_tokens"]) == (
        reported.input_tokens,
        reported.output_tokens,
    )


def test_ledger_cost_is_price_times_reported_tokens_exactly(case: Case, broker: Broker) -> None:
    _mixed_traffic(case, broker)

    totals = ledger_totals(broker)
    reported = case.emulator.reported
    assert isinstance(totals["cost_usd"], Decimal)
    assert totals["cost_usd"] == expected_cost(
        case.provider, broker, reported.input_tokens, reported.output_tokens
    )
    assert totals["unknown_cost_calls"] == 0


def test_ledger_rows_name_the_provider_model_and_region(case: Case, broker: Broker) -> None:
    reply = broker.chat(model=case.model, messages=MESSAGES, tags={"app": "conformance"})

    broker.meter.flush()
    (row,) = report_rows(
        broker.meter.ledger,
        [
            "tenant",
            "provider",
            "model",
            "model_id",
            "region",
            "jurisdiction",
            "route_id",
            "status",
            "tag:app",
        ],
        ReportFilters(provider=case.provider),
    )
    assert row["tenant"] == "default" and row["provider"] == case.provider
    assert row["model"] == case.model and row["model_id"] == case.model_id
    assert row["region"] == reply.route.region and row["jurisdiction"] == reply.route.jurisdiction
    assert row["route_id"] == reply.route.id and row["status"] == "ok" and row["tag:app"] == "conformance"
    assert (row["input_tokens"], row["output_tokens"]) == (
        reply.usage.input_tokens,
        reply.usage.output_tokens,
    )
    assert row["cost_usd"] == reply.cost_usd


def test_failed_attempts_are_metered_with_zero_tokens_and_their_kind(case: Case) -> None:
    broker = case.broker(max_attempts=2)
    case.emulator.fail(429, times=2, retry_after=0.1)

    with pytest.raises(Throttled):
        broker.chat(model=case.model, messages=MESSAGES)

    broker.meter.flush()
    (row,) = report_rows(broker.meter.ledger, ["status", "error_kind"], ReportFilters())
    assert (row["status"], row["error_kind"], row["calls"], row["attempts"]) == ("error", "Throttled", 1, 2)
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)
    assert row["cost_usd"] == 0
    assert len(case.emulator.requests) == 2 and case.emulator.reported.calls == 0
