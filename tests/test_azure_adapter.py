"""Azure AI Foundry adapter: the real azure-ai-inference clients against the Azure emulator."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.azure import (
    ENTRA_SCOPE,
    AzureAdapter,
    from_provider_response,
    stream_events,
    to_provider_request,
)
from broker.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    CredentialsError,
    InvalidRequest,
    ModelNotAvailable,
    PolicyError,
    ProtocolError,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import Route
from broker.testing.azure import AzureEmulator
from broker.testing.server import Reply
from broker.transport import HttpClients
from broker.types import ChatRequest, StreamEvent

KEY_ENV = "AZURE_TEST_INFERENCE_KEY"
DEPLOYMENT = "Llama-3.3-70B-Instruct"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_route(
    endpoint: str, *, key_env: str | None = KEY_ENV, timeout_s: float = 5.0, **options: Any
) -> Route:
    return Route(
        id="azure-swc-70b",
        provider="azure",
        model="llama-3.3-70b",
        model_id=DEPLOYMENT,
        region="swedencentral",
        jurisdiction="eu",
        endpoint=endpoint,
        api_key_env=key_env,
        timeout_s=timeout_s,
        connect_timeout_s=2.0,
        options=options,
    )


def ask(text: str = "What is the capital of France?", **params: Any) -> ChatRequest:
    return ChatRequest(model="llama-3.3-70b", messages=[{"role": "user", "content": text}], **params)


@pytest.fixture(scope="module")
def server() -> Iterator[AzureEmulator]:
    with AzureEmulator(deployments=[DEPLOYMENT], api_key="test-key") as running:
        yield running


@pytest.fixture
def emu(server: AzureEmulator) -> AzureEmulator:
    """The module's emulator, reset to a clean state for each test."""
    server.reset()
    server.api_key, server.chunk_delay_s = "test-key", 0.0
    server.retry_after_headers = ("retry-after-ms", "Retry-After")
    return server


@pytest.fixture
def adapter(emu: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureAdapter]:
    monkeypatch.setenv(KEY_ENV, "test-key")
    http = HttpClients()
    a = AzureAdapter(make_route(emu.endpoint), http=http)
    yield a
    a.close()


def collect(events: Iterator[StreamEvent]) -> tuple[str, list[StreamEvent]]:
    got = list(events)
    return "".join(e.text for e in got), got


# ---------------------------------------------------------------------- pure translation


def test_request_translation_uses_sdk_fields_and_model_extras() -> None:
    req = ask(
        max_tokens=64,
        temperature=0.2,
        stop="END",
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        response_format="json_object",
    )
    kwargs = to_provider_request(req, DEPLOYMENT)
    assert kwargs["model"] == DEPLOYMENT
    assert kwargs["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert kwargs["max_tokens"] == 64 and kwargs["temperature"] == 0.2 and kwargs["stop"] == ["END"]
    assert kwargs["tools"][0]["function"]["name"] == "get_weather"
    assert kwargs["response_format"] == "json_object"
    assert "stream" not in kwargs and "model_extras" not in kwargs

    streamed = to_provider_request(ask(), DEPLOYMENT, stream=True)
    assert streamed["stream"] is True
    assert streamed["model_extras"] == {"stream_options": {"include_usage": True}}


def test_json_schema_format_travels_in_model_extras() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    kwargs = to_provider_request(ask(response_format=schema), DEPLOYMENT)
    assert "response_format" not in kwargs
    assert kwargs["model_extras"]["response_format"] == schema


def test_image_parts_go_out_as_image_url_parts() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": "https://example.org/cat.png"},
                ],
            }
        ],
    )
    parts = to_provider_request(req, DEPLOYMENT)["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert parts[2]["image_url"]["url"] == "https://example.org/cat.png"


def test_response_translation_and_filtered_finish() -> None:
    body = {
        "id": "cmpl-1",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }
    resp = from_provider_response(body, provider="azure", route_id="r", request_id="apim-1")
    assert (resp.text, resp.usage.input_tokens, resp.usage.output_tokens) == ("Paris", 7, 1)
    assert resp.provider_request_id == "apim-1"
    body["choices"][0]["finish_reason"] = "content_filter"
    with pytest.raises(ContentFiltered) as info:
        from_provider_response(body, provider="azure", route_id="r")
    assert info.value.status == 200 and info.value.code == "content_filter"
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}
    with pytest.raises(ContentFiltered):
        stream_events(chunk, provider="azure", route_id="r")


# ---------------------------------------------------------------------- chat


def test_chat_over_the_wire(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    resp = adapter.chat(ask(max_tokens=100))
    assert resp.text.startswith("Hello from the azure emulator")
    assert resp.finish_reason == "stop"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (
        emu.reported.input_tokens,
        emu.reported.output_tokens,
    )
    assert emu.reported.calls == 1 and not resp.usage.estimated
    (seen,) = emu.requests
    assert seen.path == "/models/chat/completions" and "api-version=" in seen.query
    assert seen.headers.get("api-key") == "test-key"
    assert seen.json["model"] == DEPLOYMENT and seen.json["max_tokens"] == 100
    assert resp.provider_request_id and resp.provider_request_id.count("-") == 4  # the apim-request-id uuid


def test_api_version_option_is_sent(emu: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")
    a = AzureAdapter(make_route(emu.endpoint, api_version="2025-04-01"), http=HttpClients())
    a.chat(ask())
    assert "api-version=2025-04-01" in emu.requests[-1].query


def test_serverless_endpoint_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    with AzureEmulator() as root:
        a = AzureAdapter(make_route(root.url), http=HttpClients())
        assert a.chat(ask()).text
        assert root.requests[-1].path == "/chat/completions"


def test_json_mode(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    resp = adapter.chat(ask(response_format={"type": "json_object"}))
    assert json.loads(resp.text)["answer"] == "ok"
    assert emu.requests[-1].json["response_format"] == {"type": "json_object"}


def test_image_request_reaches_the_service(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    req = ChatRequest(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    )
    adapter.chat(req)
    sent = emu.requests[-1].json["messages"][0]["content"]
    assert sent[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_tool_calls(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Paris"})]))
    resp = adapter.chat(ask(tools=[WEATHER_TOOL]))
    assert resp.finish_reason == "tool_calls"
    (call,) = resp.tool_calls
    assert call.name == "get_weather" and call.parsed_arguments() == {"city": "Paris"}
    assert emu.requests[-1].json["tools"][0]["function"]["name"] == "get_weather"


# ---------------------------------------------------------------------- streaming


def test_stream_with_usage_on_the_final_chunk(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    text, events = collect(adapter.stream(ask()))
    assert text.startswith("Hello from the azure emulator")
    assert [e.finish_reason for e in events if e.finish_reason] == ["stop"]
    usage_events = [e for e in events if e.usage is not None]
    assert len(usage_events) == 1
    usage = usage_events[0].usage
    assert (usage.input_tokens, usage.output_tokens) == (
        emu.reported.input_tokens,
        emu.reported.output_tokens,
    )
    sent = emu.requests[-1]
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.headers.get("extra-parameters") == "pass-through"
    assert len(emu.requests) == 1


def test_stream_is_delivered_incrementally(emu: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")
    emu.chunk_delay_s = 0.08
    a = AzureAdapter(make_route(emu.endpoint), http=HttpClients())
    start = time.monotonic()
    arrivals = [time.monotonic() - start for e in a.stream(ask()) if e.text]
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.12  # pieces came as sent, not all at the end


def test_stream_tool_calls(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Oslo"})]))
    _, events = collect(adapter.stream(ask(tools=[WEATHER_TOOL])))
    pieces = [p for e in events for p in e.tool_calls]
    assert pieces and pieces[0].name == "get_weather"
    assert json.loads("".join(p.arguments for p in pieces)) == {"city": "Oslo"}
    assert any(e.finish_reason == "tool_calls" for e in events)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("inject", "headers", "expected", "retry_after"),
    [
        ({"status": 429, "retry_after": 1.5}, ("retry-after-ms", "Retry-After"), Throttled, 1.5),
        ({"status": 429, "retry_after": 1.5}, ("Retry-After",), Throttled, 2.0),
        ({"status": 429, "retry_after": 0.25}, ("x-ms-retry-after-ms",), Throttled, 0.25),
        ({"status": 500}, (), Unavailable, None),
        ({"status": 503, "retry_after": 3}, ("Retry-After",), Unavailable, 3.0),
        ({"status": 400, "message": "temperature must be below 1"}, (), InvalidRequest, None),
        (
            {"status": 400, "message": "This model's maximum context length is 131072 tokens"},
            (),
            ContextTooLong,
            None,
        ),
        ({"status": 400, "code": "content_filter", "message": "filtered"}, (), ContentFiltered, None),
        ({"status": 403}, (), AuthError, None),
        ({"status": 404}, (), ModelNotAvailable, None),
    ],
)
def test_injected_faults_are_typed(
    adapter: AzureAdapter,
    emu: AzureEmulator,
    inject: dict[str, Any],
    headers: tuple[str, ...],
    expected: type[ProviderError],
    retry_after: float | None,
) -> None:
    emu.retry_after_headers = headers
    emu.fail(**inject)
    with pytest.raises(expected) as info:
        adapter.chat(ask())
    err = info.value
    assert type(err) is expected
    assert err.status == inject["status"] and err.provider == "azure" and err.route_id == "azure-swc-70b"
    assert err.retry_after == retry_after
    assert err.request_id  # from the apim-request-id header of the error answer
    assert len(emu.requests) == 1  # the SDK's retries are off


def test_streamed_call_faults_are_typed(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    emu.fail(429, retry_after=2)
    with pytest.raises(Throttled) as info:
        list(adapter.stream(ask()))
    assert info.value.retry_after == 2.0 and len(emu.requests) == 1


def test_wrong_key_is_auth_error(emu: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    a = AzureAdapter(make_route(emu.endpoint), http=HttpClients())
    with pytest.raises(AuthError) as info:
        a.chat(ask())
    assert info.value.status == 401 and "wrong-key" not in str(info.value)


def test_unknown_deployment_is_model_not_available(
    emu: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")
    route = make_route(emu.endpoint).model_copy(update={"model_id": "Llama-2-70b-chat"})
    with pytest.raises(ModelNotAvailable) as info:
        AzureAdapter(route, http=HttpClients()).chat(ask())
    assert info.value.status == 404


def test_content_filter_refusal_and_filtered_finish(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    emu.filter_prompt()
    with pytest.raises(ContentFiltered) as info:
        adapter.chat(ask())
    assert (info.value.status, info.value.code) == (400, "content_filter")
    emu.enqueue(Reply(text="", finish_reason="content_filter"))
    with pytest.raises(ContentFiltered):
        adapter.chat(ask())
    emu.enqueue(Reply(text="some words then", finish_reason="content_filter"))
    with pytest.raises(ContentFiltered):
        list(adapter.stream(ask()))


def test_cut_stream_is_protocol_error(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    emu.cut_stream(after=2)
    got: list[StreamEvent] = []
    with pytest.raises(ProtocolError):
        for event in adapter.stream(ask()):
            got.append(event)
    assert got and got[0].text  # the pieces before the cut were delivered
    assert emu.reported.calls == 0


def test_malformed_answers_are_protocol_errors(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    emu.malformed()
    with pytest.raises(ProtocolError):
        adapter.chat(ask())
    emu.malformed()
    with pytest.raises(ProtocolError):
        list(adapter.stream(ask()))
    assert len(emu.requests) == 2


def test_slow_answer_is_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")
    with AzureEmulator() as slow:  # its own server: the late answer must not reach another test
        a = AzureAdapter(make_route(slow.endpoint, timeout_s=0.3), http=HttpClients())
        slow.delay(1.0)
        with pytest.raises(Timeout):
            a.chat(ask())
        assert len(slow.requests) == 1


def test_refused_connection_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = AzureAdapter(make_route(f"http://127.0.0.1:{port}/models"), http=HttpClients())
    with pytest.raises(Unavailable):
        a.chat(ask())


# ---------------------------------------------------------------------- async


async def test_async_chat_and_stream(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    try:
        resp = await adapter.achat(ask())
        assert resp.text.startswith("Hello from the azure emulator")
        events = [e async for e in adapter.astream(ask())]
        assert "".join(e.text for e in events) == resp.text
        usage = next(e.usage for e in events if e.usage)
        assert emu.reported.calls == 2
        assert resp.usage.input_tokens + usage.input_tokens == emu.reported.input_tokens
        assert resp.usage.output_tokens + usage.output_tokens == emu.reported.output_tokens
        emu.fail(429, retry_after=1.5)
        with pytest.raises(Throttled) as info:
            await adapter.achat(ask())
        assert info.value.retry_after == 1.5
        emu.cut_stream(after=2)
        with pytest.raises(ProtocolError):
            _ = [e async for e in adapter.astream(ask())]
        assert len(emu.requests) == 4
    finally:
        await adapter.aclose()


# ---------------------------------------------------------------------- credentials


class StaticToken:
    """A TokenCredential for tests: a fixed bearer token; records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken("entra-token", int(time.time()) + 3600)


def test_entra_credential_sends_bearer_token(emu: AzureEmulator) -> None:
    emu.api_key = None
    cred = StaticToken()
    a = AzureAdapter(make_route(emu.endpoint, key_env=None), http=HttpClients(), credential=cred)
    assert a.chat(ask()).text
    seen = emu.requests[-1]
    assert seen.headers.get("Authorization") == "Bearer entra-token" and "api-key" not in seen.headers
    assert cred.scopes == [(ENTRA_SCOPE,)]


def test_injected_key_credential(emu: AzureEmulator) -> None:
    from azure.core.credentials import AzureKeyCredential

    a = AzureAdapter(
        make_route(emu.endpoint, key_env=None), http=HttpClients(), credential=AzureKeyCredential("test-key")
    )
    assert a.chat(ask()).text
    assert emu.requests[-1].headers.get("api-key") == "test-key"


async def test_async_entra_credential(emu: AzureEmulator) -> None:
    emu.api_key = None
    a = AzureAdapter(make_route(emu.endpoint, key_env=None), http=HttpClients(), credential=StaticToken())
    try:
        assert (await a.achat(ask())).text
        assert emu.requests[-1].headers.get("Authorization") == "Bearer entra-token"
    finally:
        await a.aclose()


def test_entra_without_an_injected_credential_uses_the_default_chain(emu: AzureEmulator) -> None:
    identity = pytest.importorskip("azure.identity")
    a = AzureAdapter(make_route(emu.endpoint, key_env=None), http=HttpClients())
    try:
        assert isinstance(a._sync_credential(), identity.DefaultAzureCredential)
    finally:
        a.close()


def test_route_errors_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CredentialsError, match=KEY_ENV):
        AzureAdapter(make_route("http://127.0.0.1:9/models"), http=HttpClients())
    with pytest.raises(PolicyError, match="endpoint"):
        AzureAdapter(make_route("http://x").model_copy(update={"endpoint": None}), http=HttpClients())


# ---------------------------------------------------------------------- the emulator itself


def test_emulator_requires_auth_and_api_version(emu: AzureEmulator) -> None:
    url = f"{emu.endpoint}/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(url + "?api-version=2024-05-01-preview", json=body)
    assert r.status_code == 401 and r.headers["x-ms-error-code"] == "Unauthorized"
    r = httpx.post(url, json=body, headers={"api-key": "test-key"})
    assert r.status_code == 400 and "api-version" in r.json()["error"]["message"]
    r = httpx.get(f"{emu.endpoint}/info?api-version=2024-05-01-preview", headers={"api-key": "test-key"})
    assert r.json()["model_type"] == "chat-completion"


def test_emulator_stream_is_strict_sse_and_honours_stream_options(emu: AzureEmulator) -> None:
    url = f"{emu.endpoint}/chat/completions?api-version=2024-05-01-preview"
    body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    raw = httpx.post(url, json=body, headers={"api-key": "test-key"}).text
    events = raw.split("\n\n")
    assert events[-1] == "" and all(e.startswith("data: ") and "\n" not in e for e in events[:-1])
    final = json.loads(events[-3][len("data: ") :])
    assert final["choices"][0]["finish_reason"] == "stop" and final["usage"]["total_tokens"] > 0
    off = httpx.post(
        url, json={**body, "stream_options": {"include_usage": False}}, headers={"api-key": "test-key"}
    ).text
    assert '"usage"' not in off


# ---------------------------------------------------------------------- malformed answers through the SDK


@pytest.mark.parametrize("kind", ["invalid_utf8", "json_list", "html_page", "null_message", "wrong_types",
                                  "no_choices", "no_finish_reason", "usage_wrong_types"])
def test_what_the_sdk_makes_of_a_malformed_answer_is_a_protocol_error(
    adapter: AzureAdapter, emu: AzureEmulator, kind: str
) -> None:
    """azure-core decodes a body without charset with replacement characters, and hands a JSON
    list back as it is; the adapter refuses both (and every wrong shape) as `ProtocolError`."""
    emu.malformed(kind)
    with pytest.raises(ProtocolError) as info:
        adapter.chat(ask())
    assert info.value.route_id == adapter.route.id
    if kind != "html_page":  # a proxy's page carries no request id of the service
        assert info.value.request_id  # the service's request id (apim-request-id)
    if kind not in ("no_finish_reason", "html_page"):  # streams with no finish: the broker's core judges
        emu.malformed(kind)
        with pytest.raises(ProtocolError):
            list(adapter.stream(ask()))


async def test_async_malformed_answers_are_protocol_errors(adapter: AzureAdapter, emu: AzureEmulator) -> None:
    for kind in ("invalid_utf8", "json_list"):
        emu.malformed(kind)
        with pytest.raises(ProtocolError):
            await adapter.achat(ask())
        emu.malformed(kind)
        with pytest.raises(ProtocolError):
            [e async for e in adapter.astream(ask())]
    await adapter.aclose()


def test_a_bare_exception_outside_the_sdks_parser_is_not_mapped(adapter: AzureAdapter) -> None:
    with pytest.raises(AttributeError), adapter._mapped_errors({}):
        None.items()  # type: ignore[attr-defined]
