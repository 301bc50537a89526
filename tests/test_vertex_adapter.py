"""Vertex AI adapter: real google-auth credentials and the real httpx path against VertexEmulator.

Token refreshes are real google-auth refreshes over loopback HTTP, against a token endpoint
served here.  Application Default Credentials are never looked up.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from google.oauth2 import credentials as user_credentials

from adapters.vertex import (
    VertexAdapter,
    chat_url,
    google_error,
    maas_model_id,
    safety_settings,
    service_base_url,
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
from broker.testing.server import Answer, Emulator, Fault, Recorded, Reply
from broker.testing.vertex import VertexEmulator
from broker.transport import HttpClients
from broker.types import ChatRequest

MAVERICK = "llama-4-maverick-17b-128e-instruct-maas"
RETIRED = "llama-3.3-70b-instruct-maas"  # retired on Vertex 2026-10-21


# --------------------------------------------------------------------------- fixtures


class TokenEndpoint(Emulator):
    """A Google OAuth2 token endpoint: hands out `fresh-1`, `fresh-2`, ... for any grant."""

    name = "token"

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        with self._lock:
            n = len(self.requests)
        return Answer.json({"access_token": f"fresh-{n}", "expires_in": 3600, "token_type": "Bearer"})

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        refused = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        return Answer.json(refused, 400)

    def grants(self) -> list[str]:
        return [parse_qs(r.body.decode())["grant_type"][0] for r in self.requests]


@pytest.fixture(scope="module")
def vertex_server() -> Iterator[VertexEmulator]:
    known = [MAVERICK, "llama-4-scout-17b-16e-instruct-maas"]
    with VertexEmulator(known_models=known, guard_terms=["forbidden"]) as e:
        yield e


@pytest.fixture
def emu(vertex_server: VertexEmulator) -> VertexEmulator:
    """The module's emulator, reset: no requests, faults or scripted replies; any token, any endpoint."""
    vertex_server.reset()
    vertex_server.valid_tokens = None
    vertex_server.endpoints = None
    return vertex_server


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as t:
        yield t


@pytest.fixture
def token_endpoint(token_server: TokenEndpoint) -> TokenEndpoint:
    token_server.reset()
    return token_server


@pytest.fixture
def http() -> Iterator[HttpClients]:
    clients = HttpClients()
    yield clients
    clients.close()


def make_route(
    endpoint: str | None, *, model_id: str = MAVERICK, region: str = "us-east5", **options: Any
) -> Route:
    options.setdefault("project", "acme-prod")
    return Route(
        id="vertex-test",
        provider="vertex",
        model="llama-4-maverick",
        model_id=model_id,
        region=region,
        jurisdiction="us",
        endpoint=endpoint,
        timeout_s=5,
        options=options,
    )


def fake_creds(token: str = "fake") -> user_credentials.Credentials:
    return user_credentials.Credentials(token=token)


def expired_creds(token_endpoint: TokenEndpoint) -> user_credentials.Credentials:
    return user_credentials.Credentials(
        token="stale",
        expiry=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=5),
        refresh_token="refresh-me",
        token_uri=f"{token_endpoint.url}/token",
        client_id="client-id",
        client_secret="client-secret",
    )


def adapter_for(
    emu: VertexEmulator, http: HttpClients, *, credentials: Any = None, **kw: Any
) -> VertexAdapter:
    """An adapter whose route points at the emulator (`kw` are route options, `model_id` or `region`)."""
    return VertexAdapter(make_route(emu.url, **kw), http=http, credentials=credentials or fake_creds())


def reported(emu: VertexEmulator) -> tuple[int, int]:
    return emu.reported.input_tokens, emu.reported.output_tokens


def header(recorded: Recorded, name: str) -> str:
    """A request header by case-insensitive name (the async transport sends lowercase names)."""
    return {k.lower(): v for k, v in recorded.headers.items()}[name.lower()]


def req(text: str = "Say hello to the broker", **params: Any) -> ChatRequest:
    return ChatRequest(model="llama-4-maverick", messages=[{"role": "user", "content": text}], **params)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# --------------------------------------------------------------------------- pure functions


def test_service_base_url_is_regional_except_global() -> None:
    assert service_base_url("us-east5") == "https://us-east5-aiplatform.googleapis.com"
    assert service_base_url("global") == "https://aiplatform.googleapis.com"


def test_chat_url_for_maas_dedicated_and_overrides() -> None:
    tail = "chat/completions"
    assert chat_url(project="p", location="us-central1") == (
        "https://us-central1-aiplatform.googleapis.com"
        f"/v1/projects/p/locations/us-central1/endpoints/openapi/{tail}"
    )
    assert chat_url(project="p", location="global") == (
        f"https://aiplatform.googleapis.com/v1/projects/p/locations/global/endpoints/openapi/{tail}"
    )
    assert chat_url(project="p", location="us-east5", endpoint_id="123", api_version="v1beta1") == (
        "https://us-east5-aiplatform.googleapis.com"
        f"/v1beta1/projects/p/locations/us-east5/endpoints/123/{tail}"
    )
    dns = "https://123.us-east5-987654.prediction.vertexai.goog/"
    assert chat_url(project="p", location="us-east5", endpoint_id="123", base=dns) == (
        f"{dns}v1/projects/p/locations/us-east5/endpoints/123/{tail}"
    )
    full = "https://psc.internal/v1/projects/p/locations/l/endpoints/openapi/chat/completions"
    assert chat_url(project="x", location="y", base=full) == full


def test_maas_model_id_adds_the_meta_publisher_once() -> None:
    assert maas_model_id(MAVERICK) == f"meta/{MAVERICK}"
    assert maas_model_id(f"meta/{MAVERICK}") == f"meta/{MAVERICK}"


def test_safety_settings_body() -> None:
    assert safety_settings(None) == {}
    off = safety_settings(False)["extra_body"]["google"]["model_safety_settings"]
    assert off == {"enabled": False, "llama_guard_settings": {}}
    assert safety_settings(True)["extra_body"]["google"]["model_safety_settings"]["enabled"] is True


def _gerr(status: int, gstatus: str, message: str = "boom", **extra: Any) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": gstatus, **extra}}


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (429, _gerr(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), Throttled),
        (503, _gerr(503, "UNAVAILABLE"), Unavailable),
        (500, _gerr(500, "INTERNAL"), Unavailable),
        (504, _gerr(504, "DEADLINE_EXCEEDED"), Timeout),
        (401, _gerr(401, "UNAUTHENTICATED"), AuthError),
        (403, _gerr(403, "PERMISSION_DENIED"), AuthError),
        (404, _gerr(404, "NOT_FOUND"), ModelNotAvailable),
        (400, _gerr(400, "INVALID_ARGUMENT", "temperature must be <= 2"), InvalidRequest),
        (400, _gerr(400, "FAILED_PRECONDITION", "Billing is disabled"), InvalidRequest),
        (400, _gerr(400, "INVALID_ARGUMENT", "The input token count exceeds the maximum"), ContextTooLong),
        (400, _gerr(400, "INVALID_ARGUMENT", "Prompt blocked due to prohibited contents"), ContentFiltered),
        (429, [_gerr(429, "RESOURCE_EXHAUSTED")], Throttled),  # Google sometimes wraps the body in a list
        (502, "<html>bad gateway</html>", Unavailable),  # not a Google body: the HTTP table decides
    ],
)
def test_google_error_table(status: int, body: Any, cls: type[ProviderError]) -> None:
    err = google_error(status, body, {}, provider="vertex", route_id="r")
    assert type(err) is cls
    assert err.status == status and err.provider == "vertex" and err.route_id == "r"


def test_google_error_retry_hint_from_retry_info_or_header() -> None:
    info = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    body = _gerr(429, "RESOURCE_EXHAUSTED", details=info)
    err = google_error(429, body, {}, provider="vertex", route_id="r")
    assert err.retry_after == 7.0 and err.code == "RESOURCE_EXHAUSTED"
    assert google_error(429, body, {"Retry-After": "3"}, provider="vertex", route_id="r").retry_after == 3.0


# --------------------------------------------------------------------------- MaaS and dedicated endpoints


def test_maas_chat_sends_bearer_publisher_model_and_project_path(
    emu: VertexEmulator, http: HttpClients
) -> None:
    adapter = adapter_for(emu, http, quota_project="billing-proj")
    result = adapter.chat(req())
    assert result.text.startswith("Hello from the vertex emulator")
    assert result.finish_reason == "stop"
    sent = emu.requests[-1]
    assert header(sent, "Authorization") == "Bearer fake"
    assert header(sent, "x-goog-user-project") == "billing-proj"
    assert sent.json["model"] == f"meta/{MAVERICK}"
    assert "extra_body" not in sent.json  # Llama Guard left at the service default
    target = emu.targets[-1]
    assert (target.api_version, target.project, target.location) == ("v1", "acme-prod", "us-east5")
    assert target.endpoint == "openapi"
    assert (result.usage.input_tokens, result.usage.output_tokens) == reported(emu)
    assert result.usage.output_tokens > 0 and not result.usage.estimated
    assert result.provider_request_id


def test_location_is_the_region_and_nothing_else(emu: VertexEmulator, http: HttpClients) -> None:
    adapter_for(emu, http, region="global").chat(req())
    adapter_for(emu, http, region="us-central1", location="us-central1", api_version="v1beta1").chat(req())
    assert [(t.location, t.api_version) for t in emu.targets] == [
        ("global", "v1"),
        ("us-central1", "v1beta1"),
    ]
    public = VertexAdapter(make_route(None, region="global"), http=http, credentials=fake_creds())
    assert public.url.startswith("https://aiplatform.googleapis.com/v1/projects/acme-prod/locations/global/")
    # residency is derived from the region: an option may not send the call elsewhere
    with pytest.raises(PolicyError, match="contradicts region"):
        VertexAdapter(make_route(emu.url, region="europe-west4", location="global"), http=http,
                      credentials=fake_creds())
    with pytest.raises(PolicyError, match="needs `region:`"):
        VertexAdapter(make_route(emu.url, region=None), http=http, credentials=fake_creds())


def test_dedicated_endpoint_chat(emu: VertexEmulator, http: HttpClients) -> None:
    emu.endpoints = {"4455667788"}
    route = make_route(emu.url, model_id="meta-llama/Llama-3.1-8B-Instruct", region="europe-west4",
                       endpoint_id="4455667788", llama_guard=False)
    result = VertexAdapter(route, http=http, credentials=fake_creds()).chat(req())
    assert result.text
    assert emu.requests[-1].json["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert "extra_body" not in emu.requests[-1].json  # MaaS-only setting
    assert emu.targets[-1].endpoint == "4455667788" and emu.targets[-1].location == "europe-west4"
    gone = make_route(emu.url, model_id="x", endpoint_id="999")
    with pytest.raises(ModelNotAvailable):
        VertexAdapter(gone, http=http, credentials=fake_creds()).chat(req())


def test_stream_with_usage_in_final_chunk(emu: VertexEmulator, http: HttpClients) -> None:
    events = list(adapter_for(emu, http).stream(req("Tell me about the weather in Lisbon please")))
    text = "".join(e.text for e in events)
    assert text.startswith("Hello from the vertex emulator") and len([e for e in events if e.text]) > 1
    assert [e.finish_reason for e in events if e.finish_reason] == ["stop"]
    usage = [e.usage for e in events if e.usage]
    assert len(usage) == 1 and events[-1].usage is usage[0]
    assert (usage[0].input_tokens, usage[0].output_tokens) == reported(emu)
    assert emu.requests[-1].json["stream_options"] == {"include_usage": True}


def test_tool_calls_chat_and_stream(emu: VertexEmulator, http: HttpClients) -> None:
    adapter = adapter_for(emu, http)
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Paris"})]))
    result = adapter.chat(req("Weather in Paris?", tools=[WEATHER_TOOL]))
    assert result.finish_reason == "tool_calls"
    assert [(c.name, c.parsed_arguments()) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert emu.requests[-1].json["tools"][0]["function"]["name"] == "get_weather"
    emu.enqueue(Reply(tool_calls=[("get_weather", {"city": "Oslo"})]))
    pieces = [p for e in adapter.stream(req("Weather in Oslo?", tools=[WEATHER_TOOL])) for p in e.tool_calls]
    assert pieces and pieces[0].name == "get_weather"
    assert json.loads("".join(p.arguments for p in pieces)) == {"city": "Oslo"}


def test_json_mode(emu: VertexEmulator, http: HttpClients) -> None:
    result = adapter_for(emu, http).chat(req("Answer in JSON", response_format={"type": "json_object"}))
    assert json.loads(result.text)["emulator"] == "vertex"
    assert emu.requests[-1].json["response_format"] == {"type": "json_object"}


# --------------------------------------------------------------------------- Llama Guard


def test_llama_guard_block_is_content_filtered(emu: VertexEmulator, http: HttpClients) -> None:
    adapter = adapter_for(emu, http)
    with pytest.raises(ContentFiltered, match="prohibited"):
        adapter.chat(req("something forbidden"))
    with pytest.raises(ContentFiltered):
        list(adapter.stream(req("something forbidden")))


def test_llama_guard_off_is_sent_and_honoured(emu: VertexEmulator, http: HttpClients) -> None:
    result = adapter_for(emu, http, llama_guard=False).chat(req("something forbidden"))
    assert result.finish_reason == "stop" and result.text
    settings = emu.requests[-1].json["extra_body"]["google"]["model_safety_settings"]
    assert settings == {"enabled": False, "llama_guard_settings": {}}


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        ((429, {"retry_after": 2, "message": "Quota exceeded"}), Throttled, "RESOURCE_EXHAUSTED"),
        ((500, {}), Unavailable, "INTERNAL"),
        ((503, {}), Unavailable, "UNAVAILABLE"),
        ((504, {}), Timeout, "DEADLINE_EXCEEDED"),
        ((400, {"message": "top_p must be in (0, 1]"}), InvalidRequest, "INVALID_ARGUMENT"),
        ((400, {"message": "Input is too long: context length 131072"}), ContextTooLong, "INVALID_ARGUMENT"),
        ((400, {"code": "FAILED_PRECONDITION"}), InvalidRequest, "FAILED_PRECONDITION"),
        ((401, {}), AuthError, "UNAUTHENTICATED"),
        ((403, {"message": "Permission denied on project acme-prod"}), AuthError, "PERMISSION_DENIED"),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else getattr(v, "__name__", v),
)
def test_injected_faults_become_typed_errors(
    emu: VertexEmulator,
    http: HttpClients,
    fault: tuple[int, dict[str, Any]],
    cls: type[ProviderError],
    code: str,
) -> None:
    def inject(e: VertexEmulator) -> None:
        e.fail(fault[0], **fault[1])

    inject(emu)
    with pytest.raises(ProviderError) as info:
        adapter_for(emu, http).chat(req())
    assert type(info.value) is cls and info.value.code == code and info.value.provider == "vertex"
    if cls is Throttled:
        assert info.value.retry_after == 2.0
    inject(emu)
    with pytest.raises(cls):
        list(adapter_for(emu, http).stream(req()))


def test_retired_model_is_model_not_available(emu: VertexEmulator, http: HttpClients) -> None:
    with pytest.raises(ModelNotAvailable) as info:
        adapter_for(emu, http, model_id=RETIRED).chat(req())
    assert info.value.status == 404 and info.value.code == "NOT_FOUND" and RETIRED in info.value.message


def test_cut_stream_and_malformed_bodies_are_protocol_errors(emu: VertexEmulator, http: HttpClients) -> None:
    adapter = adapter_for(emu, http)
    emu.cut_stream(after=2)
    with pytest.raises(ProtocolError):
        list(adapter.stream(req("a long enough prompt to stream in several chunks")))
    emu.malformed()
    with pytest.raises(ProtocolError):
        adapter.chat(req())
    emu.malformed()
    with pytest.raises(ProtocolError):
        list(adapter.stream(req()))
    assert emu.reported.calls == 0  # the cut stream never reached its usage chunk


def test_emulator_refuses_requests_without_bearer(emu: VertexEmulator) -> None:
    url = f"{emu.url}/v1/projects/p/locations/us-east5/endpoints/openapi/chat/completions"
    body = {"model": f"meta/{MAVERICK}", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(url, json=body)
    assert answer.status_code == 401 and answer.json()["error"]["status"] == "UNAUTHENTICATED"


def test_wrong_token_is_auth_error(emu: VertexEmulator, http: HttpClients) -> None:
    emu.valid_tokens = {"the-right-one"}
    with pytest.raises(AuthError) as info:
        adapter_for(emu, http, credentials=fake_creds("wrong")).chat(req())
    assert info.value.status == 401 and "wrong" not in str(info.value)


# --------------------------------------------------------------------------- credentials


def test_expired_token_is_refreshed_over_loopback_once(
    emu: VertexEmulator, http: HttpClients, token_endpoint: TokenEndpoint
) -> None:
    emu.valid_tokens = {"fresh-1"}
    adapter = adapter_for(emu, http, credentials=expired_creds(token_endpoint))
    adapter.chat(req())
    adapter.chat(req())
    assert [header(r, "Authorization") for r in emu.requests] == ["Bearer fresh-1", "Bearer fresh-1"]
    assert token_endpoint.grants() == ["refresh_token"]
    assert parse_qs(token_endpoint.requests[0].body.decode())["refresh_token"] == ["refresh-me"]


def test_concurrent_calls_refresh_once(
    emu: VertexEmulator, http: HttpClients, token_endpoint: TokenEndpoint
) -> None:
    emu.valid_tokens = {"fresh-1"}
    adapter = adapter_for(emu, http, credentials=expired_creds(token_endpoint))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            adapter.chat(req())
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(emu.requests) == 8
    assert len(token_endpoint.requests) == 1


def test_refresh_refused_is_auth_error(
    emu: VertexEmulator, http: HttpClients, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.fail(400)
    with pytest.raises(AuthError, match="refresh"):
        adapter_for(emu, http, credentials=expired_creds(token_endpoint)).chat(req())
    assert emu.requests == []


def test_service_account_file_signs_a_jwt_grant_and_gives_the_project(
    tmp_path: Any, emu: VertexEmulator, http: HttpClients, token_endpoint: TokenEndpoint
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account",
        "project_id": "sa-project",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "broker@sa-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{token_endpoint.url}/token",
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    emu.valid_tokens = {"fresh-1"}
    route = make_route(emu.url, credentials_file=str(path))
    route = route.model_copy(update={"options": {k: v for k, v in route.options.as_dict().items() if k != "project"}})
    VertexAdapter(route, http=http).chat(req())
    assert header(emu.requests[-1], "Authorization") == "Bearer fresh-1"
    assert emu.targets[-1].project == "sa-project"
    assert token_endpoint.grants() == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


def test_missing_service_account_file_names_the_path(
    emu: VertexEmulator, http: HttpClients, tmp_path: Any
) -> None:
    route = make_route(emu.url, credentials_file=str(tmp_path / "nope.json"))
    with pytest.raises(CredentialsError, match="nope.json"):
        VertexAdapter(route, http=http).chat(req())


def test_access_token_from_environment(
    emu: VertexEmulator, http: HttpClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERTEX_TEST_TOKEN", "token-from-env")
    VertexAdapter(make_route(emu.url, access_token_env="VERTEX_TEST_TOKEN"), http=http).chat(req())
    assert header(emu.requests[-1], "Authorization") == "Bearer token-from-env"
    route = make_route(emu.url).model_copy(update={"api_key_env": "VERTEX_UNSET_TOKEN"})
    with pytest.raises(CredentialsError, match="VERTEX_UNSET_TOKEN"):
        VertexAdapter(route, http=http).chat(req())


def test_project_by_reference_then_google_cloud_project(
    emu: VertexEmulator, http: HttpClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERTEX_TEST_TOKEN", "ya29.test")
    monkeypatch.setenv("VERTEX_TEST_PROJECT", "project-from-env")
    route = make_route(emu.url).model_copy(
        update={"api_key_env": "VERTEX_TEST_TOKEN", "options": {"project_env": "VERTEX_TEST_PROJECT"}}
    )
    VertexAdapter(route, http=http).chat(req())
    assert emu.targets[-1].project == "project-from-env"
    assert header(emu.requests[-1], "Authorization") == "Bearer ya29.test"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "gcloud-project")  # read before any ADC lookup
    no_project = make_route(emu.url).model_copy(update={"options": {}})
    VertexAdapter(no_project, http=http, credentials=fake_creds()).chat(req())
    assert emu.targets[-1].project == "gcloud-project"


# --------------------------------------------------------------------------- async


async def test_async_chat_and_stream(emu: VertexEmulator) -> None:
    http = HttpClients()
    try:
        adapter = adapter_for(emu, http)
        result = await adapter.achat(req())
        assert result.text and result.usage.output_tokens > 0
        events = [e async for e in adapter.astream(req("stream this answer to me in pieces"))]
        assert "".join(e.text for e in events).startswith("Hello from the vertex emulator")
        total = result.usage.output_tokens + events[-1].usage.output_tokens  # type: ignore[union-attr]
        assert emu.reported.calls == 2 and emu.reported.output_tokens == total
        emu.fail(429, retry_after=1)
        with pytest.raises(Throttled):
            await adapter.achat(req())
        emu.cut_stream(after=1)
        with pytest.raises(ProtocolError):
            [e async for e in adapter.astream(req("a prompt long enough to be cut"))]
    finally:
        await http.aclose()


async def test_async_refresh_runs_off_the_event_loop(
    emu: VertexEmulator, token_endpoint: TokenEndpoint
) -> None:
    emu.valid_tokens = {"fresh-1"}
    http = HttpClients()
    try:
        adapter = adapter_for(emu, http, credentials=expired_creds(token_endpoint))
        events = [e async for e in adapter.astream(req())]
        assert events[-1].usage is not None
        assert header(emu.requests[-1], "Authorization") == "Bearer fresh-1"
        assert token_endpoint.grants() == ["refresh_token"]
    finally:
        await http.aclose()


# --------------------------------------------------------------------------- lazy imports


def test_import_is_cheap_and_aiplatform_init_is_the_last_fallback() -> None:
    script = """
import sys
import adapters.vertex as v
assert "google.auth" not in sys.modules, "google.auth imported at module import"
assert "google.cloud.aiplatform" not in sys.modules
from google.cloud import aiplatform
aiplatform.init(project="init-project", location="us-central1")
from google.oauth2.credentials import Credentials
from broker.routes import Route
from broker.transport import HttpClients
route = Route(id="r", provider="vertex", model="m", model_id="llama-4-scout-17b-16e-instruct-maas",
              region="europe-west4", jurisdiction="eu")
adapter = v.VertexAdapter(route, http=HttpClients(), credentials=Credentials(token="t"))
# the project may come from aiplatform.init(); the location never does
assert "/projects/init-project/locations/europe-west4/" in adapter.url, adapter.url
assert v._aiplatform_project() == "init-project"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("kind", ["not_json", "json_list", "invalid_utf8", "no_choices", "null_message",
                                  "wrong_types", "usage_wrong_types"])
def test_every_malformed_kind_is_a_protocol_error_in_chat_and_stream(
    emu: VertexEmulator, http: HttpClients, kind: str
) -> None:
    adapter = adapter_for(emu, http)
    emu.malformed(kind)
    with pytest.raises(ProtocolError) as chat_info:
        adapter.chat(req())
    emu.malformed(kind)
    with pytest.raises(ProtocolError) as stream_info:
        list(adapter.stream(req()))
    for exc in (chat_info.value, stream_info.value):
        assert (exc.provider, exc.route_id) == ("vertex", adapter.route.id)
    assert emu.reported.calls == 0


def test_a_google_error_in_a_stream_is_still_googles_error(http: HttpClients, emu: VertexEmulator) -> None:
    adapter = adapter_for(emu, http)
    with pytest.raises(Throttled):
        adapter.chunk_events({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    with pytest.raises(ProtocolError, match="no choices"):
        adapter.chunk_events({"id": "c", "object": "chat.completion.chunk"})
