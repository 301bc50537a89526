"""No credential the broker sends shows in an error or a log record, on any provider.

Each provider's emulator echoes the credentials it received (and the ones it never receives,
such as the AWS secret key, written into its error text) in a 401 or 400 body.  The broker's
exception (message, repr, attributes, the whole printed chain) and every log record captured
with every logger at DEBUG must be free of them.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import AsyncBroker, AuthError, Broker, InvalidRequest, ProviderError
from broker.redaction import (
    MASK,
    MAX_ERROR_TEXT,
    RedactingFilter,
    Redactor,
    bounded,
    register_secret,
    scrub_exception,
)
from broker.testing import EmulatorSuite

PROVIDERS = ("local", "bedrock", "vertex", "azure", "groq")

#: Canary credentials per provider: environment variable -> value.  None has a well-known
#: shape, so only the broker's registry of what it sent can find them.
CANARIES: dict[str, dict[str, str]] = {
    "local": {"LOCAL_RUNNER_KEY": "canary-local-bearer-55aa17"},
    "bedrock": {
        "AWS_ACCESS_KEY_ID": "AKIDCANARY0000000001",
        "AWS_SECRET_ACCESS_KEY": "canary/aws/secret+key0123456789ABCDEFGH",
        "AWS_SESSION_TOKEN": "canary-aws-session-token-Fwo9GZXIvYXdzEJr",
    },
    "vertex": {"VERTEX_ACCESS_TOKEN": "canary-vertex-token-1d2e3f4a5b"},
    "azure": {"AZURE_AI_API_KEY": "canary-azure-key-0c0ffee42"},
    "groq": {"GROQ_API_KEY": "canary-groq-key-7f3a9c2e1b"},
}

ROUTES: dict[str, dict[str, Any]] = {
    "local": {"model": "llama-3.1-8b", "model_id": "meta-llama/Llama-3.1-8B-Instruct", "jurisdiction": "on-prem",
              "api_key_env": "LOCAL_RUNNER_KEY"},
    "bedrock": {"model": "llama-3.3-70b", "region": "us-east-1"},
    "vertex": {"model": "llama-3.1-405b", "region": "us-central1",
               "options": {"project": "p", "access_token_env": "VERTEX_ACCESS_TOKEN"}},
    "azure": {"model": "llama-3.3-70b", "region": "eastus", "api_key_env": "AZURE_AI_API_KEY"},
    "groq": {"model": "llama-3.1-8b", "api_key_env": "GROQ_API_KEY"},
}
_SUFFIX = {"local": "/v1", "azure": "/models"}
PROMPT = "PROMPT-CANARY: my card number is 4111 1111 1111 1111"


@pytest.fixture(scope="module")
def suite() -> Iterator[EmulatorSuite]:
    with EmulatorSuite() as emulators:
        yield emulators


@pytest.fixture(params=PROVIDERS)
def provider(
    request: pytest.FixtureRequest, suite: EmulatorSuite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    name: str = request.param
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key, value in CANARIES[name].items():
        monkeypatch.setenv(key, value)
    for emulator in suite.emulators.values():
        emulator.reset()
    return name


def policy(suite: EmulatorSuite, provider: str, tmp: Path) -> dict[str, Any]:
    route = {"id": f"{provider}-r", "provider": provider, "endpoint": suite[provider].url + _SUFFIX.get(provider, ""),
             **ROUTES[provider]}
    return {
        "version": 1,
        "ledger": f"sqlite:///{tmp / 'usage.db'}",
        "routes": [route],
        "tenants": {"default": {"objective": "cost", "residency": ["us", "on-prem", "unknown"]}},
        "retry": {"max_attempts_per_route": 1},
    }


def echo_everything(suite: EmulatorSuite, provider: str, status: int) -> None:
    """The next answer is an error whose text holds every canary (those sent, and those never sent)."""
    said = ", ".join(CANARIES[provider].values())
    suite[provider].fail(status, message=f"credentials rejected: {said}", echo_credentials=True)


def shown(error: BaseException) -> str:
    """Everything a caller or a log could print of an error: str, repr, attributes, the whole chain."""
    return " ".join([str(error), repr(error), repr(vars(error)), "".join(traceback.format_exception(error))])


def assert_no_canary(text: str, provider: str) -> None:
    for name, value in CANARIES[provider].items():
        assert value not in text, f"{name} leaked"
        assert value[:12] not in text, f"the start of {name} leaked"


def assert_logs_clean(caplog: pytest.LogCaptureFixture, provider: str) -> None:
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for record in caplog.records:
        text = " ".join(str(x) for x in (record.getMessage(), record.msg, record.args, record.exc_text, record.stack_info))
        assert_no_canary(text, provider)
    assert_no_canary(caplog.text, provider)


@pytest.mark.parametrize("status", [401, 400])
def test_a_credential_echoed_in_an_error_body_is_redacted_everywhere(
    suite: EmulatorSuite, provider: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    expected = AuthError if status == 401 else InvalidRequest
    with Broker.from_policy(policy(suite, provider, tmp_path), durable=True) as broker:
        assert broker.chat(model=ROUTES[provider]["model"], messages=[{"role": "user", "content": PROMPT}]).text
        errors: list[BaseException] = []
        echo_everything(suite, provider, status)
        with pytest.raises(expected) as info:
            broker.chat(model=ROUTES[provider]["model"], messages=[{"role": "user", "content": PROMPT}])
        errors.append(info.value)
        echo_everything(suite, provider, status)
        with pytest.raises(expected) as info:
            list(broker.stream(model=ROUTES[provider]["model"], messages=[{"role": "user", "content": PROMPT}]))
        errors.append(info.value)
    sent = suite[provider].requests[-1].headers
    if provider != "bedrock":  # the credential really went out, and came back in the body
        assert any(value in " ".join(sent.values()) for value in CANARIES[provider].values())
    else:
        assert sent.get("x-amz-security-token") == CANARIES["bedrock"]["AWS_SESSION_TOKEN"]
    for error in errors:
        assert isinstance(error, ProviderError) and MASK in error.message
        assert_no_canary(shown(error), provider)
    assert_logs_clean(caplog, provider)
    broker_logs = [r.getMessage() for r in caplog.records if r.name.startswith("llama_broker")]
    assert not any("PROMPT-CANARY" in m for m in broker_logs)


async def test_async_calls_are_redacted_too(
    suite: EmulatorSuite, provider: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with AsyncBroker.from_policy(policy(suite, provider, tmp_path), durable=True) as broker:
        echo_everything(suite, provider, 401)
        with pytest.raises(AuthError) as info:
            await broker.chat(model=ROUTES[provider]["model"], messages=[{"role": "user", "content": "hi"}])
        echo_everything(suite, provider, 401)
        with pytest.raises(AuthError) as streamed:
            [e async for e in broker.stream(model=ROUTES[provider]["model"], messages=[{"role": "user", "content": "hi"}])]
    for error in (info.value, streamed.value):
        assert_no_canary(shown(error), provider)
    assert_logs_clean(caplog, provider)


# --------------------------------------------------------------------------- the redaction itself


def test_registered_values_and_well_known_shapes_are_masked() -> None:
    redactor = Redactor()
    redactor.add("s3cr3t-value-xyz", None, "", "other")  # empty and short values are ignored
    text = (
        "key s3cr3t-value-xyz; Authorization: Bearer abc.def-ghi; id AKIAABCDEFGHIJKLMNOP; groq gsk_AbCdEf0123456789; "
        "token ya29.a0AfH6SM-xyz; jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig-nature; "
        "{'X-Amz-Security-Token': b'IQoJb3JpZ2luX2Vj'}; {\"access_token\": \"opaque123\"}; "
        "postgresql://app:hunter2pass@db:5432/usage; api-key=raw-key-value"
    )
    out = redactor.redact(text)
    for secret in ("s3cr3t-value-xyz", "abc.def-ghi", "AKIAABCDEFGHIJKLMNOP", "gsk_AbCdEf0123456789", "ya29.a0AfH6SM",
                   "eyJhbGciOiJIUzI1", "IQoJb3JpZ2luX2Vj", "opaque123", "hunter2pass", "raw-key-value"):
        assert secret not in out, secret
    assert "postgresql://app:[redacted]@db:5432/usage" in out and "Bearer [redacted]" in out
    assert redactor.redact("Missing api-key or Authorization header") == "Missing api-key or Authorization header"
    assert redactor.redact(out) == out  # idempotent
    assert redactor.redact("the other tenant") == "the other tenant"  # a short value never garbles text


def test_a_text_cut_inside_a_secret_does_not_show_its_start() -> None:
    redactor = Redactor()
    redactor.add("canary-cut-secret-0123456789")
    assert redactor.redact("body: {'error': 'bad key canary-cut-sec", cut=True) == "body: {'error': 'bad key " + MASK


def test_provider_error_text_is_redacted_then_bounded() -> None:
    register_secret("canary-bounded-secret-abcdef")
    long = "x" * (MAX_ERROR_TEXT - 10) + " canary-bounded-secret-abcdef " + "y" * 2000
    err = InvalidRequest(long, provider="p", code="canary-bounded-secret-abcdef")
    assert "canary-bounded" not in f"{err} {err!r} {err.code}"
    assert err.message.startswith("x" * (MAX_ERROR_TEXT - 10)) and "more characters cut" in err.message
    assert len(err.message) < MAX_ERROR_TEXT + 60
    assert bounded("short") == "short"


def test_scrubbing_reaches_the_whole_cause_chain() -> None:
    secret = "canary-chain-" + "secret-777"  # built, so the traceback's source lines do not show it
    register_secret(secret)

    class SDKError(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.message = message

    try:
        try:
            raise SDKError(f"401: your key {secret} is wrong")
        except SDKError as inner:
            raise AuthError("rejected") from inner
    except AuthError as outer:
        scrub_exception(outer)
        assert "canary-chain" not in "".join(traceback.format_exception(outer))
        assert isinstance(outer.__cause__, SDKError) and "canary-chain" not in outer.__cause__.message


def test_log_records_are_redacted_with_their_arguments_and_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("canary-log-secret-4242")
    caplog.set_level(logging.DEBUG)
    filt = RedactingFilter()
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, "headers=%s", ({"t": "canary-log-secret-4242"},), None)
    filt.filter(record)
    assert "canary-log" not in record.getMessage() and record.args == ()
    try:
        raise ValueError("boom canary-log-secret-4242")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    filt.filter(record)
    assert "canary-log" not in (record.exc_text or "") and "boom" in (record.exc_text or "")


def test_records_of_sdk_descendant_loggers_are_redacted_once_a_broker_exists(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, local_emulator: Any
) -> None:
    from helpers import local_route, policy_dict

    register_secret("canary-factory-secret-99")
    with Broker.from_policy(policy_dict([local_route(local_emulator)], tmp=tmp_path)):
        pass
    caplog.set_level(logging.DEBUG)
    logging.getLogger("botocore.some.new.child").debug("sent %s", "canary-factory-secret-99")
    logging.getLogger("my.app").debug("kept %s", "canary-factory-secret-99")  # the app's own loggers are left alone
    by_name = {r.name: r.getMessage() for r in caplog.records}
    assert by_name["botocore.some.new.child"] == f"sent {MASK}"
    assert by_name["my.app"] == "kept canary-factory-secret-99"


def test_prompt_and_completion_text_stay_out_of_logs_at_debug(
    suite: EmulatorSuite, provider: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SDK debug records that dump request or response bodies are logged with the body withheld."""
    caplog.set_level(logging.DEBUG)
    canary = "PROMPTCANARYzq81"  # the emulator's answer repeats the prompt: a completion canary too
    with Broker.from_policy(policy(suite, provider, tmp_path), durable=True) as broker:
        reply = broker.chat(model=ROUTES[provider]["model"], messages=[{"role": "user", "content": f"say {canary}"}])
        streamed = list(broker.stream(model=ROUTES[provider]["model"],
                                      messages=[{"role": "user", "content": f"say {canary}"}]))
    assert streamed and canary in reply.text  # the text really went out and came back
    assert caplog.records, "nothing was logged: the check would prove nothing"
    leaks = [f"{r.name}: {r.getMessage()[:120]}" for r in caplog.records if canary in r.getMessage()]
    assert leaks == []
