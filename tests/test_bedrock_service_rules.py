"""Bedrock as the service behaves: what it refuses, what fails over, what is filtered before a call.

Each rule is proved twice: the emulator refuses what the real service refuses (driven through the
real boto3 client, with the service's own words), and the broker does not send it, fails over
from it, or filters the route with a recorded reason.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from adapters import bedrock_shape
from adapters.bedrock import BedrockAdapter, error_from_code
from broker import Broker
from broker.errors import InvalidRequest, ModelNotAvailable, NoEligibleRoute
from broker.policy.lint import lint_policy
from broker.policy.loader import load_policy_document
from broker.routes import Route
from broker.testing.bedrock import (
    INVALID_MODEL_ID,
    NO_STREAMING_TOOLS,
    BedrockEmulator,
)
from broker.testing.openai_compat import OpenAICompatEmulator
from broker.transport import HttpClients
from broker.types import ChatRequest

PROFILE_33 = "us.meta.llama3-3-70b-instruct-v1:0"
BASE_33 = "meta.llama3-3-70b-instruct-v1:0"
BASE_8B = "meta.llama3-1-8b-instruct-v1:0"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
MSG = [{"role": "user", "content": "hi there"}]
HISTORY = [
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
    {"role": "user", "content": "thanks, and in one word?"},
]


@pytest.fixture(autouse=True)
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")


@pytest.fixture(scope="module")
def server() -> Any:
    with BedrockEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu(server: BedrockEmulator) -> BedrockEmulator:
    server.reset()
    server.known_models = None
    return server


def bedrock(emu: BedrockEmulator, route_id: str = "b", model: str = "llama-3.3-70b", **extra: Any) -> dict[str, Any]:
    """A policy route on the emulator; capabilities, price and default model id come from the catalog."""
    return {"id": route_id, "provider": "bedrock", "model": model, "region": "us-east-1", "endpoint": emu.url,
            **extra}


def adapter_for(emu: BedrockEmulator, model_id: str = PROFILE_33, region: str = "us-east-1") -> BedrockAdapter:
    route = Route(id="b", provider="bedrock", model="llama-3.3-70b", model_id=model_id, region=region,
                  jurisdiction="us", endpoint=emu.url, timeout_s=5.0)
    return BedrockAdapter(route, http=HttpClients())


def ask(messages: list[dict[str, Any]] = MSG) -> ChatRequest:
    return ChatRequest(model="llama-3.3-70b", messages=messages)


def refused(adapter: BedrockAdapter, op: str, **kwargs: Any) -> str:
    """The service's message for a boto3 call it refuses (400 ValidationException)."""
    call = getattr(adapter.client, op)
    with pytest.raises(adapter.client.exceptions.ValidationException) as info:
        response = call(**{"modelId": adapter.route.model_id, "messages": [{"role": "user", "content": [
            {"text": "hi"}]}], **kwargs})
        list(response["stream"])
    return str(info.value.response["Error"]["Message"])


# =========================================================================== model ids: route properties


@pytest.mark.parametrize("message", [
    INVALID_MODEL_ID,
    "Invocation of model ID meta.llama3-1-8b-instruct-v1:0 with on-demand throughput isn\u2019t supported. "
    "Retry your request with the ID or ARN of an inference profile that contains this model.",
    "Invocation of model ID meta.llama3-1-8b-instruct-v1:0 with on-demand throughput isn't supported.",
    "The provided model doesn't support on-demand throughput.",
])
def test_model_id_refusals_are_model_not_available_and_fail_over(message: str) -> None:
    err = error_from_code("ValidationException", message, status=400)
    assert type(err) is ModelNotAvailable and err.failover and not err.retryable
    other = error_from_code("ValidationException", "Malformed input request, please reformat your input.", status=400)
    assert type(other) is InvalidRequest and not other.failover


def test_an_invalid_model_id_fails_over_to_the_next_route(emu: BedrockEmulator, tmp_path: Path) -> None:
    emu.known_models = [PROFILE_33]
    routes = [bedrock(emu, "typo", model_id="us.meta.llama3-3-70b-instruct-v9:0",
                      price={"input_per_mtok": "0.01", "output_per_mtok": "0.01"}),
              bedrock(emu, "good")]
    with Broker.from_policy(policy_dict(routes, {"default": {"residency": ["us"]}}, tmp=tmp_path)) as broker:
        answer = broker.chat(model="llama-3.3-70b", messages=MSG)
    assert answer.route.id == "good" and answer.text
    assert [r.path.split("/")[2] for r in emu.requests] == ["us.meta.llama3-3-70b-instruct-v9%3A0",
                                                              "us.meta.llama3-3-70b-instruct-v1%3A0"]


def test_a_base_id_where_a_profile_is_required_is_refused_and_fails_over(emu: BedrockEmulator,
                                                                          tmp_path: Path) -> None:
    message = refused(adapter_for(emu, BASE_8B, "us-east-1"), "converse")
    assert message.startswith(f"Invocation of model ID {BASE_8B} with on-demand throughput isn\u2019t supported.")
    assert adapter_for(emu, BASE_33, "us-east-2").chat(ask()).text  # In-Region there
    routes = [bedrock(emu, "base", model="llama-3.1-8b", model_id=BASE_8B,
                      price={"input_per_mtok": "0.01", "output_per_mtok": "0.01"}),
              bedrock(emu, "profile", model="llama-3.1-8b")]
    with Broker.from_policy(policy_dict(routes, {"default": {"residency": ["us"]}}, tmp=tmp_path)) as broker:
        answer = broker.chat(model="llama-3.1-8b", messages=MSG)
    assert answer.route.id == "profile" and answer.route.model_id == "us.meta.llama3-1-8b-instruct-v1:0"


def test_policy_validate_warns_of_a_base_id_where_a_profile_is_required(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(f"""\
        routes:
          - {{id: base, provider: bedrock, model: llama-3.3-70b, region: us-east-1,
             model_id: "{BASE_33}"}}
          - {{id: in-region, provider: bedrock, model: llama-3.3-70b, region: us-east-2,
             model_id: "{BASE_33}"}}
          - {{id: profile, provider: bedrock, model: llama-3.3-70b, region: us-west-2}}
        tenants:
          default: {{residency: [us]}}
        """))
    found = [f for f in lint_policy(load_policy_document(path, env={}), env={}) if "inference profile" in f.message]
    assert [(f.line, f.kind) for f in found] == [(3, "model_id")]
    assert "'base'" in found[0].message and PROFILE_33 in found[0].message


# =========================================================================== toolConfig with tool history


def test_the_service_refuses_tool_blocks_without_a_tool_config(emu: BedrockEmulator) -> None:
    adapter = adapter_for(emu)
    kwargs = bedrock_shape.to_provider_request(ask(HISTORY), PROFILE_33)
    kwargs.pop("toolConfig")
    with pytest.raises(adapter.client.exceptions.ValidationException, match="toolConfig field must be defined"):
        adapter.client.converse(**kwargs)


@pytest.mark.parametrize("params", [{}, {"tools": [WEATHER], "tool_choice": "none"}])
def test_a_conversation_with_tool_blocks_carries_a_tool_config(emu: BedrockEmulator, tmp_path: Path,
                                                                params: dict[str, Any]) -> None:
    with Broker.from_policy(policy_dict([bedrock(emu)], {"default": {"residency": ["us"]}}, tmp=tmp_path)) as b:
        answer = b.chat(model="llama-3.3-70b", messages=HISTORY, **params)
    assert answer.text and answer.route.id == "b"
    sent = emu.requests[-1].json["toolConfig"]
    assert [t["toolSpec"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert "toolChoice" not in sent  # Converse has no `none`; auto is its default
    if params:
        assert sent["tools"][0]["toolSpec"]["inputSchema"]["json"] == WEATHER["function"]["parameters"]
    else:
        assert sent["tools"][0]["toolSpec"]["inputSchema"]["json"] == {"type": "object"}


# =========================================================================== streaming vs streaming with tools


def test_llama_refuses_converse_stream_with_tools_but_streams_without(emu: BedrockEmulator) -> None:
    adapter = adapter_for(emu, "us.meta.llama4-scout-17b-instruct-v1:0")
    spec = {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}
    assert refused(adapter, "converse_stream", toolConfig={"tools": [spec]}) == NO_STREAMING_TOOLS
    response = adapter.client.converse_stream(modelId=adapter.route.model_id,
                                              messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert sum(1 for e in response["stream"] if "contentBlockDelta" in e) > 1


@pytest.mark.parametrize("model", ["llama-3.3-70b", "llama-4-scout"])
@pytest.mark.parametrize("messages", ["tools offered", "tool history"])
def test_a_stream_with_tools_on_llama_is_one_converse_answer_replayed(
    emu: BedrockEmulator, tmp_path: Path, model: str, messages: str
) -> None:
    params: dict[str, Any] = {"tools": [WEATHER]} if messages == "tools offered" else {}
    msgs = MSG if messages == "tools offered" else HISTORY
    with Broker.from_policy(policy_dict([bedrock(emu, model=model)], {"default": {"residency": ["us"]}},
                                        tmp=tmp_path)) as broker:
        events = list(broker.stream(model=model, messages=msgs, **params))
        plain = list(broker.stream(model=model, messages=MSG))
    final = events[-1].response
    assert final is not None and final.text and final.usage.output_tokens > 0
    (chosen,) = [c for c in final.decision.candidates if c.eligible]
    assert "stream replayed from one whole answer" in chosen.warnings  # the decision says how it was served
    assert plain[-1].response is not None
    assert not any("replayed" in w for c in plain[-1].response.decision.candidates for w in c.warnings)
    assert [r.path.rsplit("/", 1)[-1] for r in emu.requests] == ["converse", "converse-stream"]


def test_without_stream_fallback_a_stream_with_tools_skips_the_route(emu: BedrockEmulator, tmp_path: Path) -> None:
    routes = [bedrock(emu, options={"stream_fallback": False})]
    with Broker.from_policy(policy_dict(routes, {"default": {"residency": ["us"]}}, tmp=tmp_path)) as broker:
        with pytest.raises(NoEligibleRoute) as info:
            list(broker.stream(model="llama-3.3-70b", messages=MSG, tools=[WEATHER]))
        assert list(broker.stream(model="llama-3.3-70b", messages=MSG))[-1].response is not None
    assert info.value.reasons == {"b": "capabilities: no streaming with tools"}


# =========================================================================== parameters the route cannot honour


def test_the_service_refuses_a_temperature_above_one_and_named_or_any_tool_choice_for_llama(
    emu: BedrockEmulator,
) -> None:
    adapter = adapter_for(emu)
    assert "less than or equal to 1" in refused(adapter, "converse", inferenceConfig={"temperature": 1.5})
    spec = {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}
    for choice, kind in (({"tool": {"name": "f"}}, "tool"), ({"any": {}}, "any")):
        message = refused(adapter, "converse", toolConfig={"tools": [spec], "toolChoice": choice})
        assert message.startswith(f"This model doesn't support the toolConfig.toolChoice.{kind} field.")


NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(("params", "reason"), [
    ({"temperature": 1.5}, "temperature 1.5 > 1.0"),
    ({"tools": [WEATHER], "tool_choice": NAMED}, "no named tool_choice support"),
    ({"tools": [WEATHER], "tool_choice": "required"}, "no tool_choice required support"),
    ({"seed": 7}, "no seed support"),
])
def test_parameters_bedrock_llama_cannot_honour_filter_the_route_with_the_reason(
    emu: BedrockEmulator, tmp_path: Path, params: dict[str, Any], reason: str
) -> None:
    with OpenAICompatEmulator() as local:
        routes = [bedrock(emu, price={"input_per_mtok": "0.01", "output_per_mtok": "0.01"}),
                  local_route(local, model="llama-3.3-70b", model_id="llama-3.3-70b",
                              price={"input_per_mtok": "9", "output_per_mtok": "9"})]
        tenants = {"default": {"residency": ["us", "on-prem"]}, "us": {"residency": ["us"]}}
        with Broker.from_policy(policy_dict(routes, tenants, tmp=tmp_path)) as broker:
            answer = broker.chat(model="llama-3.3-70b", messages=MSG, **params)
            with pytest.raises(NoEligibleRoute) as info:
                broker.chat(model="llama-3.3-70b", messages=MSG, tenant="us", **params)
            assert broker.chat(model="llama-3.3-70b", messages=MSG).route.id == "b"  # cheaper when it can
    assert answer.route.id == "local-a"
    (removed,) = [c for c in answer.decision.candidates if not c.eligible]
    assert (removed.route.id, removed.removed_by, removed.reason) == ("b", "capabilities", reason)
    assert info.value.reasons["b"] == f"capabilities: {reason}"
    assert not any(r.path.endswith("/converse") and "temperature" in json.dumps(r.json) and
                   r.json["inferenceConfig"]["temperature"] > 1 for r in emu.requests)


# =========================================================================== fields clients ignore


def test_the_emulator_sends_padding_and_server_tool_usage_and_the_adapter_ignores_them(
    emu: BedrockEmulator,
) -> None:
    from botocore.eventstream import EventStreamBuffer

    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
    raw = urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - the loopback emulator
        f"{emu.url}/model/{PROFILE_33}/converse-stream", body, {"Content-Type": "application/json"})).read()
    buf = EventStreamBuffer()
    buf.add_data(raw)
    payloads = [json.loads(m.payload) for m in buf]
    assert payloads and all(isinstance(p.get("p"), str) and p["p"] for p in payloads)
    answer = json.loads(urllib.request.urlopen(urllib.request.Request(  # noqa: S310
        f"{emu.url}/model/{PROFILE_33}/converse", body, {"Content-Type": "application/json"})).read())
    assert "serverToolUsage" in answer["usage"]

    emu.reset()
    adapter = adapter_for(emu)
    response = adapter.chat(ask())
    events = list(adapter.stream(ask()))
    assert response.usage.input_tokens + response.usage.output_tokens > 0
    assert events[-1].usage == response.usage  # the same answer either way, padding and all
    assert "".join(e.text for e in events) == response.text


def test_the_shape_readers_ignore_padding_and_server_tool_usage() -> None:
    usage = {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}
    plain = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
             "usage": usage}
    extra = {**plain, "usage": {**usage, "serverToolUsage": {"webSearch": 0}}}
    read = [bedrock_shape.from_provider_response(r, provider="bedrock", route_id="r") for r in (plain, extra)]
    assert read[0] == read[1]
    events = [{"messageStart": {"role": "assistant"}},
              {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "hi"}}},
              {"messageStop": {"stopReason": "end_turn"}},
              {"metadata": {"usage": usage, "metrics": {"latencyMs": 3}}}]
    padded = [{k: {**v, "p": "abcdefghij"} for k, v in e.items()} for e in events]
    out = []
    for stream in (events, padded):
        state = bedrock_shape.StreamState("bedrock", "r")
        out.append([x for e in stream for x in state.events(e)])
        state.check_complete()
    assert out[0] == out[1]
