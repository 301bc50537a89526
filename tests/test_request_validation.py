"""Call arguments are checked once, in the request model, before any provider is called.

`tags` must map strings to strings; each message must make sense for its role (the table in
`broker/types.py`).  Both are `InvalidRequest`, for chat, stream, their async twins and route.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import AsyncBroker, Broker, InvalidRequest
from broker.testing import EmulatorSuite, OpenAICompatEmulator
from broker.types import ChatRequest

USER = {"role": "user", "content": "What is the weather in Paris?"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}

#: (messages, what the refusal says)
BAD_MESSAGES: list[tuple[list[Any], str]] = [
    ([{"role": "user"}], r"messages\[0\] \(user\) has no content"),
    ([{"role": "user", "content": None}], "has no content"),
    ([{"role": "user", "content": []}], "has no content"),
    ([{"role": "user", "content": "   "}], "has no text and no image"),
    ([{"role": "user", "content": [{"type": "text", "text": ""}]}], "has no text and no image"),
    ([{"role": "system"}, USER], r"messages\[0\] \(system\) has no content"),
    ([{"role": "developer", "content": None}, USER], "has no content"),
    ([{"role": "system", "content": [IMAGE]}, USER], "images belong in user messages"),
    ([USER, {"role": "assistant"}], r"messages\[1\] \(assistant\) has neither content nor tool_calls"),
    ([USER, {"role": "assistant", "content": ""}], "has neither content nor tool_calls"),
    ([USER, {"role": "assistant", "content": [IMAGE]}], "images belong in user messages"),
    ([USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "sunny"}],
     r"messages\[2\] \(tool\) has no tool_call_id"),
    ([USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "c1"}], "has no content"),
    ([USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "c1", "content": [IMAGE]}],
     "images belong in user messages"),
    ([{**USER, "tool_calls": [CALL]}], "only assistant messages carry them"),
    ([{**USER, "tool_call_id": "c1"}], "only tool messages carry it"),
    ([{"role": "function", "content": "x"}], "role"),
    ([{"role": "robot", "content": "x"}], "role"),
    ([{"content": "no role"}], "role"),
    (["just a string"], "messages"),
    ([], "messages"),
]

GOOD_MESSAGES: list[list[Any]] = [
    [USER],
    [{"role": "user", "content": [IMAGE]}],  # an image alone is a question
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}],
    [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
     {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 24 degrees"}],
    [USER, {"role": "assistant", "content": "", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "c1", "content": ""}],
    [USER, {"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "Thanks"}],
]

BAD_TAGS: list[Any] = ["x", ["a", "b"], {"n": 5}, {"a": None}, {5: "x"}, {"a": {"nested": "x"}}]


@pytest.fixture
def broker(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> Iterator[Broker]:
    route = local_route(local_emulator, capabilities={"vision": True})
    with Broker.from_policy(policy_dict([route], tmp=tmp_path), durable=True) as b:
        yield b


def sync_calls(broker: Broker) -> list[Callable[..., Any]]:
    return [broker.chat, lambda **kw: list(broker.stream(**kw))]


@pytest.mark.parametrize(("messages", "says"), BAD_MESSAGES)
def test_messages_that_make_no_sense_for_their_role_are_refused_before_any_call(
    broker: Broker, local_emulator: OpenAICompatEmulator, messages: list[Any], says: str
) -> None:
    for call in [*sync_calls(broker), broker.route]:
        with pytest.raises(InvalidRequest, match=says):
            call(model="llama-3.1-8b", messages=messages)
    assert local_emulator.requests == []
    assert broker.meter.ledger.count() == 0


@pytest.mark.parametrize(("messages", "says"), BAD_MESSAGES[:16])
def test_the_request_model_itself_refuses_them(messages: list[Any], says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        ChatRequest(model="llama-3.1-8b", messages=messages)


@pytest.mark.parametrize("messages", GOOD_MESSAGES)
def test_valid_openai_shape_conversations_pass(broker: Broker, messages: list[Any]) -> None:
    assert broker.chat(model="llama-3.1-8b", messages=messages).text is not None


@pytest.mark.parametrize("tags", BAD_TAGS)
def test_tags_must_map_strings_to_strings(broker: Broker, local_emulator: OpenAICompatEmulator, tags: Any) -> None:
    for call in sync_calls(broker):
        with pytest.raises(InvalidRequest, match="tag"):
            call(model="llama-3.1-8b", messages=[USER], tags=tags)
    assert local_emulator.requests == [] and broker.meter.ledger.count() == 0


def test_string_tags_are_metered_as_given(broker: Broker, tmp_path: Path) -> None:
    broker.chat(model="llama-3.1-8b", messages=[USER], tags={"app": "web", "n": "5"})
    broker.meter.flush()
    with sqlite3.connect(tmp_path / "usage.db") as db:
        (stored,) = db.execute("SELECT tags FROM usage_events").fetchone()
    assert json.loads(stored) == {"app": "web", "n": "5"}


async def test_async_calls_check_the_same(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    async with AsyncBroker.from_policy(policy_dict([local_route(local_emulator)], tmp=tmp_path)) as broker:
        with pytest.raises(InvalidRequest, match="has no tool_call_id"):
            await broker.chat(model="llama-3.1-8b", messages=[USER, {"role": "tool", "content": "x"}])
        with pytest.raises(InvalidRequest, match="has no content"):
            [e async for e in broker.stream(model="llama-3.1-8b", messages=[{"role": "user"}])]
        with pytest.raises(InvalidRequest, match="tags"):
            await broker.chat(model="llama-3.1-8b", messages=[USER], tags="x")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match="tags"):
            [e async for e in broker.stream(model="llama-3.1-8b", messages=[USER], tags={"n": 5})]  # type: ignore[dict-item]
    assert local_emulator.requests == []


@pytest.mark.parametrize(("messages", "says"), [BAD_MESSAGES[1], BAD_MESSAGES[11]])
def test_no_provider_is_called_whichever_would_have_been_chosen(messages: list[Any], says: str) -> None:
    """The embedded default policy over all five emulators: the refusal comes before any of them."""
    with EmulatorSuite() as suite, suite.applied():
        with Broker(durable=True) as broker:
            for model in ("llama-3.3-70b", "llama-3.1-8b", "llama-4-maverick"):
                with pytest.raises(InvalidRequest, match=says):
                    broker.chat(model=model, messages=messages, tenant="labs")
        assert {name: len(e.requests) for name, e in suite.emulators.items()} == dict.fromkeys(suite.emulators, 0)
