"""Streaming conformance: deltas as they come, then one final event with usage and the whole answer."""

from __future__ import annotations

from decimal import Decimal

from conformance_cases import MESSAGES, Case, expected_cost, ledger_totals

from broker import Broker
from broker.reports import ReportFilters, report_rows
from broker.testing import Reply


def test_stream_yields_deltas_then_a_final_event_with_reported_usage(case: Case, broker: Broker) -> None:
    events = list(broker.stream(model=case.model, messages=MESSAGES))

    deltas = [e.text for e in events if e.text]
    assert len(deltas) > 1
    final = events[-1]
    assert final.is_final and sum(e.is_final for e in events) == 1
    reported = case.emulator.reported
    assert reported.calls == 1
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        reported.input_tokens,
        reported.output_tokens,
    )
    assert not final.usage.estimated
    response = final.response
    assert response.text == "".join(deltas)
    assert response.text.startswith(f"Hello from the {case.provider} emulator")
    assert response.usage == final.usage
    assert response.finish_reason == "stop"
    assert response.route.provider == case.provider and response.route.model_id == case.model_id
    assert len(case.emulator.requests) == 1


def test_only_the_final_event_carries_usage(case: Case, broker: Broker) -> None:
    events = list(broker.stream(model=case.model, messages=MESSAGES))

    assert [e.usage is not None for e in events] == [False] * (len(events) - 1) + [True]
    assert any(e.finish_reason == "stop" for e in events[:-1])


def test_streamed_cost_is_price_times_reported_tokens(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(
        Reply(text="one two three four five six seven", input_tokens=777_777, output_tokens=55_555)
    )

    final = list(broker.stream(model=case.model, messages=MESSAGES))[-1]

    assert (final.usage.input_tokens, final.usage.output_tokens) == (777_777, 55_555)
    assert isinstance(final.response.cost_usd, Decimal)
    assert final.response.cost_usd == expected_cost(case.provider, broker, 777_777, 55_555)


def test_stream_measures_time_to_first_token_and_meters_one_event(case: Case, broker: Broker) -> None:
    final = list(broker.stream(model=case.model, messages=MESSAGES))[-1]

    assert final.response.ttft_ms is not None and final.response.ttft_ms >= 0
    assert final.response.attempts == 1 and final.response.request_id
    totals = ledger_totals(broker)
    assert totals["calls"] == 1 and totals["error_calls"] == 0
    assert (totals["input_tokens"], totals["output_tokens"]) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )


def test_stream_honours_max_tokens(case: Case, broker: Broker) -> None:
    events = list(broker.stream(model=case.model, messages=MESSAGES, max_tokens=4))

    final = events[-1]
    assert final.response.finish_reason == "length"
    assert final.usage.output_tokens == case.emulator.reported.output_tokens <= 4
    assert final.response.text == "".join(e.text for e in events[:-1])


def test_non_ascii_deltas_join_to_the_whole_text(case: Case, broker: Broker) -> None:
    text = "Grüße aus Köln — 你好, мир 🌍 ñandú und noch ein paar Wörter"
    case.emulator.enqueue(Reply(text=text))

    events = list(broker.stream(model=case.model, messages=MESSAGES))

    assert len([e for e in events if e.text]) > 1
    assert "".join(e.text for e in events[:-1]) == events[-1].response.text == text


def test_abandoned_stream_is_metered_and_the_route_stays_usable(case: Case, broker: Broker) -> None:
    events = broker.stream(model=case.model, messages=MESSAGES)
    first = next(e for e in events if e.text)
    events.close()  # the caller stops reading after the first delta

    assert first.text
    reply = broker.chat(model=case.model, messages=MESSAGES)
    assert reply.text and reply.attempts == 1
    assert len(case.emulator.requests) == 2
    broker.meter.flush()
    kinds = {
        row["error_kind"]: row["attempts"]
        for row in report_rows(broker.meter.ledger, ["error_kind"], ReportFilters())
    }
    assert kinds == {"Abandoned": 1, None: 1}
