"""Error conformance: the same fault arrives as the same typed broker error on every provider.

Brokers here try a route once (`retry.max_attempts_per_route: 1`) when the test looks at the
error itself, and keep the default three attempts when it checks that the broker retries.
Every attempt is exactly one HTTP request at the emulator (the SDKs' own retries are off),
and the ledger holds one event per attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from conformance_cases import MESSAGES, Case, assert_clean, ledger_totals

from broker import (
    AuthError,
    Broker,
    InvalidRequest,
    ModelNotAvailable,
    ProtocolError,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.reports import ReportFilters, report_rows


@dataclass(frozen=True)
class Fault:
    inject: Callable[[Case], object]
    error: type[ProviderError]
    status: int | None
    status_by_provider: tuple[tuple[str, int], ...] = ()  # where a provider answers with another status


FAULTS = {
    "429": Fault(lambda c: c.emulator.fail(429, retry_after=1.5, message="slow down"), Throttled, 429),
    "503": Fault(lambda c: c.emulator.fail(503, message="overloaded"), Unavailable, 503),
    "400": Fault(
        lambda c: c.emulator.fail(400, message="temperature must be at most 1"), InvalidRequest, 400
    ),
    "401": Fault(lambda c: c.emulator.fail(401, message="bad credentials"), AuthError, 401),
    # Bedrock answers an invalid model id 400 ValidationException "The provided model identifier is invalid."
    "404-unknown-model": Fault(lambda c: c.serve_only("some-other-model"), ModelNotAvailable, 404, (("bedrock", 400),)),
}
RETRYABLE = ("429", "503")
FINAL = ("400", "401", "404-unknown-model")


def _ledger_kinds(broker: Broker) -> dict[str | None, int]:
    broker.meter.flush()
    return {
        row["error_kind"]: row["attempts"]
        for row in report_rows(broker.meter.ledger, ["error_kind"], ReportFilters())
    }


def _check_error(case: Case, exc: ProviderError, fault: Fault) -> None:
    assert type(exc) is fault.error
    assert exc.provider == case.provider and exc.route_id == f"{case.provider}-conformance"
    assert exc.status == dict(fault.status_by_provider).get(case.provider, fault.status)
    if fault.error is Throttled:
        assert exc.retry_after == pytest.approx(1.5)
    assert_clean(exc)


# ---------------------------------------------------------------------- the typed error, as it came


@pytest.mark.parametrize("name", list(FAULTS))
def test_chat_fault_arrives_as_the_same_typed_error(case: Case, strict_broker: Broker, name: str) -> None:
    fault = FAULTS[name]
    fault.inject(case)

    with pytest.raises(ProviderError) as info:
        strict_broker.chat(model=case.model, messages=MESSAGES)

    _check_error(case, info.value, fault)
    assert len(case.emulator.requests) == 1
    assert _ledger_kinds(strict_broker) == {fault.error.__name__: 1}


@pytest.mark.parametrize("name", list(FAULTS))
def test_stream_fault_before_the_first_token_arrives_as_the_same_typed_error(
    case: Case, strict_broker: Broker, name: str
) -> None:
    fault = FAULTS[name]
    fault.inject(case)

    with pytest.raises(ProviderError) as info:
        list(strict_broker.stream(model=case.model, messages=MESSAGES))

    _check_error(case, info.value, fault)
    assert len(case.emulator.requests) == 1
    assert _ledger_kinds(strict_broker) == {fault.error.__name__: 1}


def test_throttled_carries_the_providers_wait_hint(case: Case, strict_broker: Broker) -> None:
    case.emulator.fail(429, retry_after=2.5)
    with pytest.raises(Throttled) as chat_info:
        strict_broker.chat(model=case.model, messages=MESSAGES)
    case.emulator.fail(429, retry_after=0.75)
    with pytest.raises(Throttled) as stream_info:
        list(strict_broker.stream(model=case.model, messages=MESSAGES))

    assert chat_info.value.retry_after == pytest.approx(2.5)
    assert stream_info.value.retry_after == pytest.approx(0.75)


def test_throttled_without_a_hint_is_still_throttled(case: Case, strict_broker: Broker) -> None:
    case.emulator.fail(429)
    with pytest.raises(Throttled) as info:
        strict_broker.chat(model=case.model, messages=MESSAGES)
    assert info.value.status == 429


def test_malformed_answer_is_a_protocol_error(case: Case, strict_broker: Broker) -> None:
    case.emulator.malformed()
    with pytest.raises(ProtocolError) as chat_info:
        strict_broker.chat(model=case.model, messages=MESSAGES)
    case.emulator.malformed()
    with pytest.raises(ProtocolError) as stream_info:
        list(strict_broker.stream(model=case.model, messages=MESSAGES))

    for exc in (chat_info.value, stream_info.value):
        assert type(exc) is ProtocolError and exc.provider == case.provider
        assert_clean(exc)
    assert len(case.emulator.requests) == 2
    assert _ledger_kinds(strict_broker) == {"ProtocolError": 2}


def test_stream_cut_after_content_is_a_protocol_error_and_is_not_retried(case: Case, broker: Broker) -> None:
    case.emulator.cut_stream(after=3)
    received: list[str] = []

    with pytest.raises(ProtocolError) as info:
        for event in broker.stream(model=case.model, messages=MESSAGES):
            received.append(event.text)

    assert type(info.value) is ProtocolError and info.value.provider == case.provider
    assert "".join(received)  # text reached the caller before the cut
    assert len(case.emulator.requests) == 1  # content was delivered: no retry, even with attempts left
    assert case.emulator.reported.calls == 0  # usage never went out
    totals = ledger_totals(broker)
    assert totals["calls"] == 1 and totals["error_calls"] == 1 and totals["estimated_calls"] == 1


def test_slow_provider_is_a_timeout(case: Case) -> None:
    broker = case.broker(max_attempts=1, timeout_s=0.2)
    case.emulator.delay(0.5)
    with pytest.raises(ProviderError) as chat_info:
        broker.chat(model=case.model, messages=MESSAGES)
    case.emulator.delay(0.5)
    with pytest.raises(ProviderError) as stream_info:
        list(broker.stream(model=case.model, messages=MESSAGES))

    for exc in (chat_info.value, stream_info.value):
        assert type(exc) is Timeout and exc.provider == case.provider
        assert_clean(exc)
    assert len(case.emulator.requests) == 2


# ---------------------------------------------------------------------- retries


@pytest.mark.parametrize("name", RETRYABLE)
def test_retryable_chat_fault_is_retried_and_the_call_succeeds(case: Case, broker: Broker, name: str) -> None:
    FAULTS[name].inject(case)

    reply = broker.chat(model=case.model, messages=MESSAGES)

    assert reply.route.provider == case.provider and reply.text
    assert reply.attempts == 2 and len(case.emulator.requests) == 2
    if name == "429":
        assert case.sleeps == [pytest.approx(1.5)]  # the provider's hint, honoured
    assert _ledger_kinds(broker) == {FAULTS[name].error.__name__: 1, None: 1}
    totals = ledger_totals(broker)
    reported = case.emulator.reported
    assert (totals["input_tokens"], totals["output_tokens"]) == (
        reported.input_tokens,
        reported.output_tokens,
    )


@pytest.mark.parametrize("name", RETRYABLE)
def test_retryable_stream_fault_before_the_first_token_is_retried(
    case: Case, broker: Broker, name: str
) -> None:
    FAULTS[name].inject(case)

    final = list(broker.stream(model=case.model, messages=MESSAGES))[-1]

    assert final.response.attempts == 2 and len(case.emulator.requests) == 2
    assert final.usage.output_tokens == case.emulator.reported.output_tokens
    assert _ledger_kinds(broker) == {FAULTS[name].error.__name__: 1, None: 1}


def test_malformed_answer_is_retried(case: Case, broker: Broker) -> None:
    case.emulator.malformed()

    reply = broker.chat(model=case.model, messages=MESSAGES)

    assert reply.attempts == 2 and len(case.emulator.requests) == 2
    assert reply.usage.input_tokens == case.emulator.reported.input_tokens


def test_stream_cut_before_any_content_is_retried(case: Case, broker: Broker) -> None:
    case.emulator.cut_stream(after=1)

    events = list(broker.stream(model=case.model, messages=MESSAGES))

    assert events[-1].response.attempts == 2 and len(case.emulator.requests) == 2
    assert events[-1].response.text == "".join(e.text for e in events[:-1])
    assert _ledger_kinds(broker) == {"ProtocolError": 1, None: 1}


@pytest.mark.parametrize("name", FINAL)
def test_final_errors_are_not_retried(case: Case, broker: Broker, name: str) -> None:
    fault = FAULTS[name]
    fault.inject(case)

    with pytest.raises(fault.error):
        broker.chat(model=case.model, messages=MESSAGES)

    assert len(case.emulator.requests) == 1 and case.sleeps == []
    assert ledger_totals(broker)["calls"] == 1


def test_each_attempt_is_one_request_and_one_ledger_event(case: Case, broker: Broker) -> None:
    case.emulator.fail(503, times=3)

    with pytest.raises(Unavailable):
        broker.chat(model=case.model, messages=MESSAGES)

    assert len(case.emulator.requests) == 3  # max_attempts_per_route: no hidden SDK retries on top
    assert len(case.sleeps) == 2
    totals = ledger_totals(broker)
    assert totals["calls"] == 1 and totals["attempts"] == 3 and totals["error_calls"] == 3
    assert (totals["input_tokens"], totals["output_tokens"]) == (0, 0)
