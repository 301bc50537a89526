"""The gateway's rules without a socket: keys to tenants, the status table, body and tag parsing,
and the policy loader's line-numbered errors for bad `api_keys` entries."""

from __future__ import annotations

import datetime as dt
import hmac
import inspect
from pathlib import Path

import pytest
from gateway_fixtures import sha256

import broker.errors as errors_module
from broker.errors import BrokerError, BudgetExceeded, CredentialsError, NoEligibleRoute, PolicyError, Throttled
from broker.gateway import STATUS_TABLE, KeyTable
from broker.gateway.errors import HttpRefusal, answer_for
from broker.gateway.openai_shape import parse_chat_body, parse_tags_header
from broker.policy import load_policy

ROUTE = {"id": "l", "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
         "endpoint": "http://127.0.0.1:9/v1", "jurisdiction": "on-prem"}


def policy(tenants: dict) -> object:
    return load_policy({"version": 1, "routes": [ROUTE], "tenants": tenants})


def test_keys_map_to_their_tenant_by_env_or_digest_and_nothing_else() -> None:
    table = KeyTable.from_policy(policy({
        "a": {"residency": ["on-prem"], "api_keys": [{"env": "KEY_A"}, {"sha256": sha256("second-a")}]},
        "b": {"residency": ["on-prem"], "api_keys": [{"sha256": sha256("key-b")}]},
    }), {"KEY_A": "key-a"})
    assert [table.tenant_for(k) for k in ("key-a", "second-a", "key-b")] == ["a", "a", "b"]
    assert table.tenant_for("key-c") is None and table.tenant_for("") is None
    assert table.tenant_for(sha256("key-b")) is None  # the digest itself is not a key


def test_every_entry_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    table = KeyTable.from_policy(policy({
        f"t{i}": {"residency": ["on-prem"], "api_keys": [{"sha256": sha256(f"k{i}")}]} for i in range(5)}), {})
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert table.tenant_for("k0") == "t0"  # a match on the first entry still compares all five
    assert len(calls) == 5


def test_an_unset_key_variable_is_named_and_a_shared_key_refused() -> None:
    with pytest.raises(CredentialsError, match="KEY_MISSING"):
        KeyTable.from_policy(policy({"a": {"residency": ["on-prem"], "api_keys": [{"env": "KEY_MISSING"}]}}), {})
    with pytest.raises(PolicyError, match="tenants 'a' and 'b' share one API key"):
        KeyTable.from_policy(policy({
            "a": {"residency": ["on-prem"], "api_keys": [{"env": "K"}]},
            "b": {"residency": ["on-prem"], "api_keys": [{"sha256": sha256("same")}]},
        }), {"K": "same"})


def test_bad_key_entries_are_file_and_line_errors_that_never_echo_a_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "version: 1\n"
        "routes:\n"
        "  - {id: l, provider: local, model: llama-3.1-8b, model_id: m, endpoint: 'http://127.0.0.1:9/v1',\n"
        "     jurisdiction: on-prem}\n"
        "tenants:\n"
        "  a:\n"
        "    residency: [on-prem]\n"
        "    api_keys:\n"
        "      - sk-live-pasted-by-mistake\n"       # line 9, reported on its list's line 8
        "  b:\n"
        "    residency: [on-prem]\n"
        "    api_keys:\n"
        "      - {sha256: sk-live-also-pasted}\n"
        "  c:\n"
        "    residency: [on-prem]\n"
        "    api_keys:\n"
        "      - {env: GOOD}\n"
        "      - {sha265: abc}\n"                   # line 18
        "  d:\n"
        "    residency: [on-prem]\n"
        "    api_keys: [{env: SAME}, {env: SAME}]\n"  # line 21
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    issues = {(i.line, i.message.split(": ", 1)[0]) for i in caught.value.issues}
    text = str(caught.value)
    assert (8, "tenants.a.api_keys") in issues and (12, "tenants.b.api_keys") in issues
    assert any(i.line == 18 and "did you mean 'sha256'" in i.message for i in caught.value.issues)
    assert any(i.line == 21 and "listed twice" in i.message for i in caught.value.issues)
    assert "never the key itself" in text and "not a SHA-256 digest" in text
    assert all(i.file == str(path) for i in caught.value.issues)
    assert "sk-live" not in text


def _broker_errors() -> list[type[BrokerError]]:
    return [obj for _, obj in inspect.getmembers(errors_module, inspect.isclass)
            if issubclass(obj, BrokerError) and obj.__module__ == errors_module.__name__]


def test_every_broker_error_has_a_row_of_its_own_or_its_parents() -> None:
    for cls in _broker_errors():
        assert any(c.__name__ in STATUS_TABLE for c in cls.__mro__), cls


@pytest.mark.parametrize(("name", "status"), [
    ("InvalidRequest", 400), ("ContextTooLong", 400), ("ContentFiltered", 400), ("UnknownTenant", 401),
    ("ResidencyViolation", 403), ("Throttled", 429), ("RateLimited", 429), ("BudgetExceeded", 429),
    ("AuthError", 502), ("ProtocolError", 502), ("ModelNotAvailable", 502), ("AdapterBug", 502),
    ("CredentialsError", 502), ("Unavailable", 503), ("Timeout", 504),
])
def test_status_by_cause(name: str, status: int) -> None:
    cls = getattr(errors_module, name, None)
    if cls is None:  # a row may name a class another part of the broker adds later
        cls = type(name, (BrokerError,), {})
    if issubclass(cls, errors_module.ProviderError):
        exc: BaseException = cls("x", provider="local")
    elif name == "BudgetExceeded":
        exc = cls("x", tenant="t")
    elif name == "RateLimited":
        try:
            exc = cls("x", retry_after=3.2, limit="rpm", scope="tenant:t")
        except TypeError:
            exc = cls("x")
    else:
        exc = cls("x")
    answer = answer_for(exc)
    assert answer.status == status
    assert set(answer.body["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert int(dict(answer.headers)[b"retry-after"]) >= 1


def test_a_rate_limit_class_is_found_by_name() -> None:
    class RateLimited(BrokerError):
        retry_after = 2.5

    answer = answer_for(RateLimited("tenant rpm"))
    assert answer.status == 429 and dict(answer.headers)[b"retry-after"] == b"3"
    assert dict(answer.headers)[b"retry-after-ms"] == b"2500"


def test_retry_after_follows_the_providers_hint_and_the_budget_period() -> None:
    assert dict(answer_for(Throttled("slow down", retry_after=12)).headers)[b"retry-after"] == b"12"
    now = dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.timezone.utc)
    daily = BudgetExceeded("over", tenant="t", period="day")
    monthly = BudgetExceeded("over", tenant="t", period="month")
    assert dict(answer_for(daily, now=now).headers)[b"retry-after"] == b"3600"
    assert dict(answer_for(monthly, now=now).headers)[b"retry-after"] == b"3600"  # December starts then too
    now = dt.datetime(2026, 11, 15, 0, 0, tzinfo=dt.timezone.utc)
    assert dict(answer_for(monthly, now=now).headers)[b"retry-after"] == str(16 * 86400).encode()


def test_no_route_statuses_tell_policy_from_need_from_health() -> None:
    from broker import Broker

    routes = [ROUTE, {**ROUTE, "id": "us", "jurisdiction": "us", "capabilities": {"tools": False}}]
    with Broker({"version": 1, "routes": routes, "tenants": {
        "eu": {"residency": ["eu"]}, "us": {"residency": ["us"]}}}) as broker:
        tool = {"type": "function", "function": {"name": "f"}}
        for tenant, params, status in (("eu", {}, 403), ("us", {"tools": [tool]}, 400)):
            with pytest.raises(NoEligibleRoute) as caught:
                broker.route(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}], tenant=tenant,
                             **params)
            assert answer_for(caught.value).status == status
    with Broker({"version": 1, "routes": routes, "circuit": {"failure_threshold": 1},
                 "tenants": {"us": {"residency": ["us"]}}}) as broker:
        broker._core.circuits.begin("us")
        broker._core.circuits.failure("us")  # the only route the tenant may use is now open
        with pytest.raises(NoEligibleRoute) as caught:
            broker.route(model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}], tenant="us")
        assert answer_for(caught.value).status == 503
    assert answer_for(NoEligibleRoute("nothing", decision=None)).status == 403


def test_bodies_are_checked_field_by_field() -> None:
    call = parse_chat_body({"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "max_completion_tokens": 9, "n": 1, "user": "u", "stream": True,
                            "stream_options": {"include_usage": True}})
    assert call.params == {"max_tokens": 9} and call.stream and call.include_usage and call.user == "u"
    for body, param in (
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tenant": "other"}, "tenant"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {}}, "stream_options"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [1], "max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens"),
    ):
        with pytest.raises(HttpRefusal) as caught:
            parse_chat_body(body)
        assert caught.value.param == param


def test_tags_header() -> None:
    assert parse_tags_header("app=bot, team = search ,empty=") == {"app": "bot", "team": "search", "empty": ""}
    assert parse_tags_header(None) == {} and parse_tags_header("  ") == {}
    for bad in ("novalue", "=v", ",".join(f"k{i}=v" for i in range(40))):
        with pytest.raises(HttpRefusal):
            parse_tags_header(bad)
