"""Chat conformance: the same call gives the same kind of answer on every provider."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from conformance_cases import MESSAGES, Case, expected_cost, sent_options

from broker import Broker, ContentFiltered
from broker.testing import Reply, count_tokens


def test_chat_returns_text_route_and_the_usage_the_provider_reported(case: Case, broker: Broker) -> None:
    reply = broker.chat(model=case.model, messages=MESSAGES)

    assert reply.text.startswith(f"Hello from the {case.provider} emulator")
    assert "loopback emulators" in reply.text  # the prompt reached the provider intact
    assert reply.finish_reason == "stop" and reply.tool_calls == ()
    assert reply.route.provider == case.provider
    assert reply.route.model == case.model and reply.route.model_id == case.model_id
    reported = case.emulator.reported
    assert reported.calls == 1
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (
        reported.input_tokens,
        reported.output_tokens,
    )
    assert not reply.usage.estimated
    assert reply.request_id and reply.attempts == 1
    assert len(case.emulator.requests) == 1


def test_cost_is_price_times_reported_tokens_exactly(case: Case, broker: Broker) -> None:
    reply = broker.chat(model=case.model, messages=MESSAGES)

    assert isinstance(reply.cost_usd, Decimal)
    reported = case.emulator.reported
    assert reply.cost_usd == expected_cost(
        case.provider, broker, reported.input_tokens, reported.output_tokens
    )
    assert reply.cost_usd > 0


def test_provider_token_counts_are_taken_as_reported_not_estimated(case: Case, broker: Broker) -> None:
    case.emulator.enqueue(Reply(text="Short answer.", input_tokens=1_234_567, output_tokens=89_012))

    reply = broker.chat(model=case.model, messages=MESSAGES)

    assert reply.text == "Short answer."
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (1_234_567, 89_012)
    assert reply.cost_usd == expected_cost(case.provider, broker, 1_234_567, 89_012)


def test_system_prompt_and_history_all_reach_the_provider(case: Case, broker: Broker) -> None:
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "First question about ports"},
        {"role": "assistant", "content": "First answer about ports."},
        {"role": "user", "content": [{"type": "text", "text": "Second question about sockets"}]},
    ]
    reply = broker.chat(model=case.model, messages=conversation)

    assert reply.text.endswith("You said: Second question about sockets")
    # the emulators count the tokens of every message they received, plus three per message
    texts = [
        "You are terse.",
        "First question about ports",
        "First answer about ports.",
        "Second question about sockets",
    ]
    assert reply.usage.input_tokens == case.emulator.reported.input_tokens
    assert reply.usage.input_tokens == sum(count_tokens(t) for t in texts) + 3 * len(texts)


def test_max_tokens_cuts_the_answer_with_finish_reason_length(case: Case, broker: Broker) -> None:
    reply = broker.chat(model=case.model, messages=MESSAGES, max_tokens=3)

    assert reply.finish_reason == "length"
    assert reply.usage.output_tokens == case.emulator.reported.output_tokens <= 3


def test_json_mode_returns_parseable_json(case: Case, broker: Broker) -> None:
    reply = broker.chat(model=case.model, messages=MESSAGES, response_format={"type": "json_object"})

    assert json.loads(reply.text) == {"answer": "ok", "emulator": case.provider}


def test_sampling_options_reach_the_provider(case: Case, broker: Broker) -> None:
    broker.chat(model=case.model, messages=MESSAGES, max_tokens=50, temperature=0.3, top_p=0.9, stop=["END"])

    body = case.emulator.requests[-1].json
    assert sent_options(case.provider, body) == {
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
    }


def test_non_ascii_text_round_trips(case: Case, broker: Broker) -> None:
    text = "Grüße aus Köln — 你好, мир 🌍 ñandú"
    case.emulator.enqueue(Reply(text=text))

    assert (
        broker.chat(model=case.model, messages=[{"role": "user", "content": "Übersetze: 你好"}]).text == text
    )
    assert "Übersetze: 你好" in json.dumps(case.emulator.requests[-1].json, ensure_ascii=False)


def test_provider_request_id_is_kept(case: Case, broker: Broker) -> None:
    reply = broker.chat(model=case.model, messages=MESSAGES)
    final = list(broker.stream(model=case.model, messages=MESSAGES))[-1]

    assert reply.provider_request_id and final.response.provider_request_id
    assert reply.provider_request_id != final.response.provider_request_id
    assert reply.request_id != final.response.request_id


def test_content_filter_finish_is_a_typed_error(case: Case, strict_broker: Broker) -> None:
    case.emulator.enqueue(Reply(text="partial", finish_reason="content_filter"))
    with pytest.raises(ContentFiltered) as chat_info:
        strict_broker.chat(model=case.model, messages=MESSAGES)
    case.emulator.enqueue(Reply(text="partial", finish_reason="content_filter"))
    with pytest.raises(ContentFiltered):
        list(strict_broker.stream(model=case.model, messages=MESSAGES))

    assert chat_info.value.provider == case.provider
    assert len(case.emulator.requests) == 2  # not retried
