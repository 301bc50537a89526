"""Groq adapter: the real groq SDK clients, on the shared httpx clients, against the Groq emulator."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.groq import (
    GroqAdapter,
    from_provider_response,
    rate_limits_from,
    stream_events,
    throttle_wait,
    timings_from,
    to_provider_request,
)
from broker.errors import (
    AuthError,
    ContextTooLong,
    CredentialsError,
    InvalidRequest,
    ModelNotAvailable,
    ProtocolError,
    ProviderError,
    Throttled,
    Timeout,
    Unavailable,
)
from broker.routes import Route
from broker.testing.groq import GroqEmulator
from broker.testing.server import Reply
from broker.transport import HttpClients
from broker.types import ChatRequest, StreamEvent

MODEL_ID = "llama-3.3-70b-versatile"
SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
RETIRED = "llama3-70b-8192"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class RecordingClients(HttpClients):
    """Shared clients whose sync client records the URLs it sent (proves Groq used them)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    @property
    def sync(self) -> httpx.Client:
        if self._sync is None:
            self._sync = httpx.Client(
                timeout=None,
                trust_env=False,
                event_hooks={"request": [lambda r: self.sent.append(str(r.url))]},
            )
        return self._sync


def make_route(
    endpoint: str | None, *, model_id: str = MODEL_ID, key_env: str | None = None, timeout_s: float = 5.0
) -> Route:
    return Route(
        id="groq-70b",
        provider="groq",
        model="llama-3.3-70b",
        model_id=model_id,
        region="us",
        jurisdiction="us",
        endpoint=endpoint,
        api_key_env=key_env,
        timeout_s=timeout_s,
        connect_timeout_s=2.0,
    )


def ask(text: str = "Name three rivers.", **params: Any) -> ChatRequest:
    return ChatRequest(model="llama-3.3-70b", messages=[{"role": "user", "content": text}], **params)


@pytest.fixture(scope="module")
def server() -> Iterator[GroqEmulator]:
    with GroqEmulator(
        api_key="gsk_test", known_models=[MODEL_ID, SCOUT], decommissioned_models=[RETIRED]
    ) as running:
        yield running


@pytest.fixture
def emu(server: GroqEmulator) -> GroqEmulator:
    server.reset()
    server.chunk_delay_s = 0.0
    server.retry_after_headers = ("retry-after",)
    return server


@pytest.fixture
def http() -> Iterator[RecordingClients]:
    clients = RecordingClients()
    yield clients
    clients.close()


@pytest.fixture
def adapter(emu: GroqEmulator, http: RecordingClients, monkeypatch: pytest.MonkeyPatch) -> GroqAdapter:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    return GroqAdapter(make_route(emu.url), http=http)


# ---------------------------------------------------------------------- pure translation


def test_request_translation() -> None:
    kwargs = to_provider_request(ask(max_tokens=50, seed=7, tools=[WEATHER_TOOL]), MODEL_ID)
    assert (
        kwargs["model"] == MODEL_ID and kwargs["max_completion_tokens"] == 50 and "max_tokens" not in kwargs
    )
    assert kwargs["seed"] == 7 and kwargs["tools"][0]["function"]["name"] == "get_weather"
    streamed = to_provider_request(ask(), MODEL_ID, stream=True)
    assert streamed["stream"] is True and "stream_options" not in streamed
    assert streamed["extra_body"] == {"stream_options": {"include_usage": True}}


def test_timings_and_rate_limits() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "queue_time": 0.02,
        "prompt_time": 0.001,
        "completion_time": 0.04,
        "total_time": 0.041,
    }
    assert timings_from(usage) == {
        "queue_time": 0.02,
        "prompt_time": 0.001,
        "completion_time": 0.04,
        "total_time": 0.041,
    }
    assert timings_from({"prompt_tokens": 1}) == {}
    limits = rate_limits_from(
        {
            "x-ratelimit-remaining-requests": "14399",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-reset-tokens": "7.66s",
            "x-ratelimit-limit-tokens": "6000",
        }
    )
    assert limits["ratelimit_remaining_requests"] == 14399 and limits["ratelimit_limit_tokens"] == 6000
    assert limits["ratelimit_reset_requests_s"] == pytest.approx(179.56)
    assert limits["ratelimit_reset_tokens_s"] == pytest.approx(7.66)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        (
            {
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "7.66s",
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "2m59.56s",
            },
            7.66,
        ),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1m0.5s",
                "x-ratelimit-reset-tokens": "120ms",
            },
            60.5,
        ),
        ({"x-ratelimit-reset-requests": "1m", "x-ratelimit-reset-tokens": "120ms"}, 0.12),
        ({}, None),
    ],
)
def test_throttle_wait_from_each_header_form(headers: dict[str, str], wait: float | None) -> None:
    assert throttle_wait(headers) == (pytest.approx(wait) if wait is not None else None)


def test_response_translation_keeps_groq_fields() -> None:
    body = {
        "id": "chatcmpl-1",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Nile"}}
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "queue_time": 0.5, "total_time": 0.25},
        "x_groq": {"id": "req_abc"},
    }
    resp = from_provider_response(
        body, provider="groq", route_id="r", headers={"x-ratelimit-remaining-tokens": "9"}
    )
    assert resp.provider_request_id == "req_abc"
    assert resp.provider_latency_ms == 250.0
    assert resp.provider_timings == {"queue_time": 0.5, "total_time": 0.25, "ratelimit_remaining_tokens": 9.0}


def test_stream_chunk_translation() -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_time": 0.1, "queue_time": 0.01}
    final = {
        "id": "c",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "x_groq": {"id": "req_1", "usage": usage},
    }
    events = stream_events(
        final, provider="groq", route_id="r", rate_limits={"ratelimit_remaining_requests": 3.0}
    )
    assert [e.finish_reason for e in events] == ["stop", None]
    last = events[-1]
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (4, 2)
    assert last.provider_latency_ms == pytest.approx(100.0)
    assert last.provider_timings == {
        "total_time": 0.1,
        "queue_time": 0.01,
        "ratelimit_remaining_requests": 3.0,
    }
    # with include_usage the same numbers also come at top level: still one usage event
    both = stream_events({**final, "usage": usage}, provider="groq", route_id="r")
    assert sum(e.usage is not None for e in both) == 1
    with pytest.raises(Unavailable, match="overloaded"):
        stream_events(
            {"id": "c", "choices": [], "x_groq": {"id": "req_1", "error": "overloaded"}},
            provider="groq",
            route_id="r",
        )


# ---------------------------------------------------------------------- chat


def test_chat_keeps_usage_timings_and_rate_limits(
    adapter: GroqAdapter, emu: GroqEmulator, http: RecordingClients
) -> None:
    resp = adapter.chat(ask(max_tokens=100))
    assert resp.text.startswith("Hello from the groq emulator")
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (
        emu.reported.input_tokens,
        emu.reported.output_tokens,
    )
    timings = resp.provider_timings or {}
    assert timings["queue_time"] == emu.queue_time_s
    assert timings["total_time"] == pytest.approx(timings["prompt_time"] + timings["completion_time"])
    assert resp.provider_latency_ms == pytest.approx(timings["total_time"] * 1000)
    assert timings["ratelimit_remaining_requests"] == emu.limit_requests - 1
    assert timings["ratelimit_reset_requests_s"] == pytest.approx(179.56)
    assert resp.provider_request_id and resp.provider_request_id.startswith("req_")
    (seen,) = emu.requests
    assert seen.path == "/openai/v1/chat/completions"
    assert seen.json["max_completion_tokens"] == 100 and "max_tokens" not in seen.json
    assert http.sent == [f"{emu.url}/openai/v1/chat/completions"]  # over the broker's shared client


def test_default_key_env_and_endpoint_forms(
    emu: GroqEmulator, http: RecordingClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CredentialsError, match="GROQ_API_KEY"):
        GroqAdapter(make_route(emu.url), http=http)
    monkeypatch.setenv("MY_GROQ_KEY", "gsk_test")
    a = GroqAdapter(make_route(emu.url + "/openai/v1/", key_env="MY_GROQ_KEY", model_id=SCOUT), http=http)
    assert a.chat(ask()).text
    assert emu.requests[-1].path == "/openai/v1/chat/completions"
    assert emu.requests[-1].json["model"] == SCOUT


def test_json_mode_and_tool_calls(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    resp = adapter.chat(ask(response_format="json_object"))
    assert json.loads(resp.text)["answer"] == "ok"
    assert emu.requests[-1].json["response_format"] == {"type": "json_object"}
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Lima"})]))
    resp = adapter.chat(ask(tools=[WEATHER_TOOL], tool_choice="required"))
    (call,) = resp.tool_calls
    assert (call.name, call.parsed_arguments(), resp.finish_reason) == (
        "get_weather",
        {"city": "Lima"},
        "tool_calls",
    )
    assert emu.requests[-1].json["tool_choice"] == "required"


# ---------------------------------------------------------------------- streaming


def test_stream_with_usage_and_timings(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    events = list(adapter.stream(ask()))
    assert "".join(e.text for e in events).startswith("Hello from the groq emulator")
    (final,) = [e for e in events if e.usage is not None]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        emu.reported.input_tokens,
        emu.reported.output_tokens,
    )
    assert final.provider_timings and final.provider_timings["queue_time"] == emu.queue_time_s
    assert final.provider_latency_ms == pytest.approx(final.provider_timings["total_time"] * 1000)
    assert final.provider_timings["ratelimit_remaining_tokens"] < emu.limit_tokens
    assert emu.requests[-1].json["stream_options"] == {"include_usage": True}
    assert len(emu.requests) == 1 and emu.reported.calls == 1


def test_stream_is_delivered_incrementally(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    emu.chunk_delay_s = 0.08
    start = time.monotonic()
    arrivals = [time.monotonic() - start for e in adapter.stream(ask()) if e.text]
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] >= 0.12


def test_stream_tool_calls(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Rome"})]))
    events = list(adapter.stream(ask(tools=[WEATHER_TOOL])))
    pieces = [p for e in events for p in e.tool_calls]
    assert pieces[0].name == "get_weather" and json.loads("".join(p.arguments for p in pieces)) == {
        "city": "Rome"
    }
    assert any(e.finish_reason == "tool_calls" for e in events)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("inject", "headers", "expected", "retry_after"),
    [
        ({"status": 429, "retry_after": 3}, ("retry-after",), Throttled, 3.0),
        ({"status": 429, "retry_after": 1.5}, ("retry-after-ms",), Throttled, 1.5),
        ({"status": 429}, (), Throttled, 7.66),  # tokens exhausted: x-ratelimit-reset-tokens
        ({"status": 498, "message": "flex tier capacity exceeded"}, (), Throttled, None),
        ({"status": 500}, (), Unavailable, None),
        ({"status": 503}, (), Unavailable, None),
        ({"status": 400, "message": "'messages' must contain the word 'json'"}, (), InvalidRequest, None),
        (
            {"status": 400, "message": "Please reduce the length of the messages or completion."},
            (),
            ContextTooLong,
            None,
        ),
        ({"status": 401}, (), AuthError, None),
        (
            {"status": 400, "code": "model_decommissioned", "message": "decommissioned"},
            (),
            ModelNotAvailable,
            None,
        ),
    ],
)
def test_injected_faults_are_typed(
    adapter: GroqAdapter,
    emu: GroqEmulator,
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
    assert type(err) is expected and err.status == inject["status"] and err.provider == "groq"
    assert err.retry_after == (pytest.approx(retry_after) if retry_after is not None else None)
    assert err.request_id and err.request_id.startswith("req_")
    assert len(emu.requests) == 1  # max_retries=0


@pytest.mark.parametrize(
    ("model_id", "code"), [(RETIRED, "model_decommissioned"), ("llama-9-1t", "model_not_found")]
)
def test_unknown_or_retired_model(
    emu: GroqEmulator, http: RecordingClients, monkeypatch: pytest.MonkeyPatch, model_id: str, code: str
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    with pytest.raises(ModelNotAvailable) as info:
        GroqAdapter(make_route(emu.url, model_id=model_id), http=http).chat(ask())
    assert info.value.status == 404 and info.value.code == code


def test_wrong_key_is_auth_error(
    emu: GroqEmulator, http: RecordingClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_wrong")
    with pytest.raises(AuthError) as info:
        GroqAdapter(make_route(emu.url), http=http).chat(ask())
    assert info.value.status == 401 and "gsk_wrong" not in str(info.value)


def test_streamed_call_is_throttled(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    emu.fail(429, retry_after=2)
    with pytest.raises(Throttled) as info:
        list(adapter.stream(ask()))
    assert info.value.retry_after == 2.0 and len(emu.requests) == 1


@pytest.mark.parametrize("form", ["event", "x_groq"])
def test_error_event_mid_stream(adapter: GroqAdapter, emu: GroqEmulator, form: str) -> None:
    emu.error_in_stream(after=2, form=form)
    got: list[StreamEvent] = []
    with pytest.raises(Unavailable, match="overloaded"):
        for event in adapter.stream(ask()):
            got.append(event)
    assert any(e.text for e in got)


def test_cut_and_malformed_are_protocol_errors(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    emu.cut_stream(after=2)
    with pytest.raises(ProtocolError):
        list(adapter.stream(ask()))
    emu.malformed()
    with pytest.raises(ProtocolError):
        adapter.chat(ask())
    emu.malformed()
    with pytest.raises(ProtocolError):
        list(adapter.stream(ask()))
    assert len(emu.requests) == 3 and emu.reported.calls == 0


def test_slow_answer_is_timeout(http: RecordingClients, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    with GroqEmulator() as slow:  # its own server: the late answer must not reach another test
        slow.delay(1.0)
        with pytest.raises(Timeout):
            GroqAdapter(make_route(slow.url, timeout_s=0.3), http=http).chat(ask())
        assert len(slow.requests) == 1


def test_refused_connection_is_unavailable(http: RecordingClients, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable):
        GroqAdapter(make_route(f"http://127.0.0.1:{port}"), http=http).chat(ask())


# ---------------------------------------------------------------------- async


async def test_async_chat_and_stream_on_the_shared_async_client(
    emu: GroqEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    http = HttpClients()
    a = GroqAdapter(make_route(emu.url), http=http)
    try:
        resp = await a.achat(ask())
        assert resp.provider_timings and resp.provider_timings["total_time"] > 0
        events = [e async for e in a.astream(ask())]
        assert "".join(e.text for e in events) == resp.text
        (final,) = [e for e in events if e.usage is not None]
        assert resp.usage.output_tokens + final.usage.output_tokens == emu.reported.output_tokens
        assert final.provider_timings and "queue_time" in final.provider_timings
        emu.fail(429, retry_after=1)
        with pytest.raises(Throttled):
            await a.achat(ask())
        emu.cut_stream(after=2)
        with pytest.raises(ProtocolError):
            _ = [e async for e in a.astream(ask())]
        emu.error_in_stream(after=1)
        with pytest.raises(Unavailable):
            _ = [e async for e in a.astream(ask())]
        assert len(emu.requests) == 5
        await a.aclose()
        assert not http.async_.is_closed  # closing the adapter leaves the broker's client open
    finally:
        await http.aclose()


async def test_async_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test")
    http = HttpClients()
    try:
        with GroqEmulator() as slow:
            slow.delay(1.0)
            with pytest.raises(Timeout):
                await GroqAdapter(make_route(slow.url, timeout_s=0.3), http=http).achat(ask())
    finally:
        await http.aclose()


# ---------------------------------------------------------------------- the emulator itself


def test_emulator_wire_shape(emu: GroqEmulator) -> None:
    url = f"{emu.url}/openai/v1/chat/completions"
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert httpx.post(url, json=body).status_code == 401
    raw = httpx.post(url, json=body, headers={"Authorization": "Bearer gsk_test"})
    chunks = [json.loads(e[len("data: ") :]) for e in raw.text.split("\n\n") if e and e != "data: [DONE]"]
    assert chunks[0]["x_groq"] == {"id": chunks[-1]["x_groq"]["id"]}
    assert "usage" in chunks[-1]["x_groq"] and "usage" not in chunks[-1]  # include_usage not asked
    assert all("x_groq" not in c for c in chunks[1:-1])
    assert raw.headers["x-ratelimit-reset-requests"] == "2m59.56s"


# ---------------------------------------------------------------------- malformed answers through the SDK

SDK_KINDS = ["html_page", "json_list", "not_json", "invalid_utf8", "null_message", "wrong_types", "no_choices",
             "no_finish_reason", "usage_wrong_types"]


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_what_the_sdk_makes_of_a_malformed_answer_is_a_protocol_error(
    adapter: GroqAdapter, emu: GroqEmulator, kind: str
) -> None:
    """The SDK parses without validation: a text page comes back as `str`, a JSON list as `list`,
    wrong types unchanged.  Each is a `ProtocolError`, and no pydantic warning is printed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # model_dump of a wrong-typed field would warn
        emu.malformed(kind)
        with pytest.raises(ProtocolError) as chat_info:
            adapter.chat(ask())
        if kind not in ("no_finish_reason", "html_page"):  # streams with no finish: the broker's core judges
            emu.malformed(kind)
            with pytest.raises(ProtocolError):
                list(adapter.stream(ask()))
    assert chat_info.value.route_id == adapter.route.id and emu.reported.calls == 0


async def test_async_sdk_results_that_are_not_objects_are_protocol_errors(adapter: GroqAdapter, emu: GroqEmulator) -> None:
    for kind in ("html_page", "json_list"):
        emu.malformed(kind)
        with pytest.raises(ProtocolError, match="not an object"):
            await adapter.achat(ask())
    emu.malformed("json_list")
    with pytest.raises(ProtocolError, match="not an object"):
        [e async for e in adapter.astream(ask())]


def test_x_groq_of_the_wrong_shape_is_a_protocol_error_and_odd_timings_are_left_out() -> None:
    body = {"id": "c", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "x_groq": "req_1"}
    with pytest.raises(ProtocolError, match="x_groq"):
        from_provider_response(body, provider="groq", route_id="r")
    with pytest.raises(ProtocolError, match="x_groq"):
        stream_events({"id": "c", "choices": [], "x_groq": ["e"]}, provider="groq", route_id="r")
    with pytest.raises(ProtocolError, match="not a JSON object"):
        stream_events(["c"], provider="groq", route_id="r")  # type: ignore[arg-type]
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "queue_time": "fast", "total_time": float("nan"),
             "prompt_time": True, "completion_time": 0.5}
    assert timings_from(usage) == {"completion_time": 0.5}
    assert timings_from("n/a") == {}
