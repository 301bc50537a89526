"""The official `openai` Python SDK against the gateway, itself in front of the loopback emulators.

The scenario list every client runs (Python SDK here, the npm package in test_openai_node.py, curl
in test_curl.py): chat, streaming with usage, tools, errors with their statuses, a wrong key, a
residency refusal; then the ledger holds exactly the tokens the emulators served, by tenant.
"""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest
from gateway_fixtures import KEYS, THROTTLE_RETRY_AFTER_S, WRONG_KEY, ledger_rows, metered_tokens

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def client(served, tenant: str = "acme", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key=KEYS[tenant] if tenant in KEYS else tenant, max_retries=0,
                         **kw)


def test_chat_answers_in_openai_shape_with_route_headers(served) -> None:
    raw = client(served).chat.completions.with_raw_response.create(
        model="llama-3.1-8b",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello gateway"}],
        max_tokens=50, user="user-42", extra_headers={"x-llama-broker-tags": "app=sdk-test, feature=chat"},
    )
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.model == "llama-3.1-8b"
    assert "You said: Hello gateway" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + \
        reply.usage.completion_tokens
    headers = raw.headers
    assert headers["x-llama-broker-route"] == "local-8b"
    assert headers["x-llama-broker-jurisdiction"] == "on-prem"
    assert reply.id == f"chatcmpl-{headers['x-request-id']}"
    assert "x-llama-broker-explanation" not in headers  # only on request
    row = next(r for r in ledger_rows(served.ledger) if r["request_id"] == headers["x-llama-broker-decision-id"]
               or r.get("decision_id") == headers["x-llama-broker-decision-id"])
    assert row["tenant"] == "acme" and row["input_tokens"] == reply.usage.prompt_tokens
    assert json.loads(row["tags"]) == {"app": "sdk-test", "feature": "chat", "user": "user-42", "team": "acme"}
    assert float(headers["x-llama-broker-cost-usd"]) == pytest.approx(
        (reply.usage.prompt_tokens * 0.5 + reply.usage.completion_tokens * 1.5) / 1e6)


def test_the_explanation_comes_on_request_and_names_only_this_tenants_rules(served) -> None:
    raw = client(served, "globex").chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "explain"}],
        extra_headers={"x-llama-broker-explain": "true"})
    explanation = json.loads(raw.headers["x-llama-broker-explanation"])
    assert raw.headers["x-llama-broker-route"] == "groq-8b"
    assert explanation["tenant"] == "globex" and explanation["allowed_jurisdictions"] == ["unknown"]
    text = raw.headers["x-llama-broker-explanation"]
    assert all(other not in text for other in ("acme", "eu-only", "capped"))


def test_streaming_with_usage(served) -> None:
    stream = client(served).chat.completions.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "Stream this please"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: Stream this please" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    facts = last.model_extra["llama_broker"]
    assert facts["route"] == "local-8b" and facts["jurisdiction"] == "on-prem" and facts["cost_usd"]
    assert stream.response.headers["x-request-id"] in last.id


def test_tools_round_trip(served) -> None:
    api = client(served)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = api.chat.completions.create(model="llama-3.3-70b", messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    second = api.chat.completions.create(model="llama-3.3-70b", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_streamed_tool_call(served) -> None:
    chunks = list(client(served).chat.completions.create(
        model="llama-3.3-70b", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL],
        stream=True))
    pieces = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert pieces[0].function.name == "get_weather"
    assert json.loads("".join(p.function.arguments or "" for p in pieces)) == {"city": "Paris"}


def test_json_mode_and_images(served) -> None:
    api = client(served)
    answer = api.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "JSON"}],
                                         response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content)["answer"] == "ok"
    raw = api.chat.completions.with_raw_response.create(model="llama-4-scout", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}}]}])
    assert raw.headers["x-llama-broker-route"] == "local-scout" and raw.parse().choices[0].message.content
    sent = served.backends.suite["local"].requests[-1].json["messages"][0]["content"]
    assert any(part.get("type") == "image_url" for part in sent)


@pytest.mark.parametrize(("tenant", "model", "extra", "error", "status", "code"), [
    ("acme", "gpt-4o", {}, openai.NotFoundError, 404, "model_not_found"),
    ("acme", "llama-3.1-8b", {"temperature": 5}, openai.BadRequestError, 400, "invalid_request"),
    ("acme", "llama-3.1-8b", {"n": 3}, openai.BadRequestError, 400, "invalid_request"),
    ("acme", "llama-3.1-405b", {}, openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("capped", "llama-3.1-8b", {}, openai.RateLimitError, 429, "budget_exceeded"),
    ("acme", "llama-3.2-1b", {}, openai.InternalServerError, 503, "upstream_unavailable"),
    ("eu-only", "llama-3.1-8b", {}, openai.PermissionDeniedError, 403, "no_route_allowed"),
    (WRONG_KEY, "llama-3.1-8b", {}, openai.AuthenticationError, 401, "invalid_api_key"),
], ids=["unknown-model", "bad-temperature", "n-above-1", "throttled", "budget", "unavailable", "residency",
        "wrong-key"])
def test_errors_have_their_status_and_openai_shape(served, tenant, model, extra, error, status, code) -> None:
    with pytest.raises(error) as caught:
        client(served, tenant).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                                        **extra)
    exc = caught.value
    assert exc.status_code == status and exc.code == code
    assert set(exc.body) >= {"message", "type", "param", "code"}
    assert exc.response.headers["x-request-id"]
    if status == 429:
        assert int(exc.response.headers["retry-after"]) >= 1
    if code == "rate_limit_exceeded":
        assert exc.response.headers["retry-after"] == str(THROTTLE_RETRY_AFTER_S)
    if tenant == WRONG_KEY:
        assert WRONG_KEY not in exc.response.text


@pytest.mark.parametrize(("tenant", "model", "error", "status"), [
    ("eu-only", "llama-3.1-8b", openai.PermissionDeniedError, 403),
    ("acme", "llama-3.2-1b", openai.InternalServerError, 503),
    ("acme", "llama-3.1-405b", openai.RateLimitError, 429),
])
def test_a_stream_that_cannot_start_gets_its_status(served, tenant, model, error, status) -> None:
    with pytest.raises(error) as caught:
        list(client(served, tenant).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], stream=True))
    assert caught.value.status_code == status


def test_no_header_or_body_field_picks_another_tenant(served) -> None:
    api = client(served, "acme", default_headers={"x-llama-broker-tenant": "globex", "x-tenant": "globex"})
    raw = api.chat.completions.with_raw_response.create(model="llama-3.1-8b",
                                                        messages=[{"role": "user", "content": "who am I"}])
    assert raw.headers["x-llama-broker-jurisdiction"] == "on-prem"  # acme's residency, not globex's
    rows = [r for r in ledger_rows(served.ledger) if r["request_id"] == raw.headers["x-llama-broker-decision-id"]
            or r.get("decision_id") == raw.headers["x-llama-broker-decision-id"]]
    assert {r["tenant"] for r in rows} == {"acme"}
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}],
                                    extra_body={"tenant": "globex"})
    assert caught.value.body["param"] == "tenant"


def test_models_lists_what_the_keys_tenant_may_use(served) -> None:
    assert [m.id for m in client(served, "globex").models.list()] == ["llama-3.1-8b"]
    assert "llama-3.3-70b" in [m.id for m in client(served, "acme").models.list()]
    assert list(client(served, "eu-only").models.list()) == []
    assert client(served, "acme").models.retrieve("llama-3.3-70b").id == "llama-3.3-70b"
    with pytest.raises(openai.NotFoundError):
        client(served, "globex").models.retrieve("llama-3.3-70b")
    with pytest.raises(openai.AuthenticationError):
        client(served, WRONG_KEY).models.list()


def test_health_readiness_and_metrics(served) -> None:
    base = served.url.removesuffix("/v1")
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").json()["ledger"] == "ok"
    client(served, "globex").chat.completions.create(model="llama-3.1-8b",
                                                     messages=[{"role": "user", "content": "count me"}])
    text = httpx.get(f"{base}/metrics").text
    assert 'llama_broker_gateway_requests_total{model="llama-3.1-8b",provider="groq",status="200",tenant="globex"}' \
        in text
    assert 'llama_broker_gateway_tokens_total{direction="output",model="llama-3.1-8b",provider="groq",' \
           'tenant="globex"}' in text
    assert "llama_broker_gateway_request_duration_seconds_bucket" in text


def test_ledger_holds_exactly_the_tokens_the_emulators_served_by_tenant(served) -> None:
    for tenant in ("acme", "globex"):
        client(served, tenant).chat.completions.create(model="llama-3.1-8b",
                                                       messages=[{"role": "user", "content": f"I am {tenant}"}])
    served_tokens = served.backends.served()
    metered = metered_tokens(served.ledger)
    assert metered == served_tokens
    assert served_tokens["acme"][0] > 0 and served_tokens["globex"][0] > 0
