"""The sync request the local adapter builds once per route and sends on the shared httpx transport."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from adapters.local import LocalAdapter
from broker.routes import Route
from broker.testing import OpenAICompatEmulator
from broker.testing.server import Answer, Fault, Recorded
from broker.transport import HttpClients
from broker.types import ChatRequest


class _CookieSettingEmulator(OpenAICompatEmulator):
    """Answers like the OpenAI-compatible emulator, and sets a cookie on every answer."""

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        answer = super().handle(request, fault)
        answer.headers["Set-Cookie"] = "session=abc123; Path=/"
        return answer


@pytest.fixture
def emu() -> Iterator[_CookieSettingEmulator]:
    with _CookieSettingEmulator() as e:
        yield e


@pytest.fixture
def adapter(emu: OpenAICompatEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalAdapter]:
    monkeypatch.setenv("LLAMA_BROKER_TEST_SYNC_KEY", "sk-sync-secret")
    route = Route(id="local-s", provider="local", model="llama-3.1-8b", model_id="llama-8b", jurisdiction="on-prem",
                  endpoint=f"{emu.url}/v1", timeout_s=5.0, api_key_env="LLAMA_BROKER_TEST_SYNC_KEY")
    a = LocalAdapter(route, http=HttpClients())
    yield a
    a.close()
    a.http.close()


def req() -> ChatRequest:
    return ChatRequest(model="llama-3.1-8b", messages=[{"role": "user", "content": "héllo"}])


def test_each_call_carries_the_route_headers_and_a_json_body(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    for _ in range(2):
        assert "local emulator" in adapter.chat(req()).text
    for sent in emu.requests:
        assert sent.headers["Authorization"] == "Bearer sk-sync-secret"
        assert sent.headers["Content-Type"] == "application/json"
        assert sent.headers["Accept-Encoding"] == "gzip, deflate"
        assert sent.json["messages"][0]["content"] == "héllo"


def test_cookies_an_answer_sets_are_not_sent_back(adapter: LocalAdapter, emu: OpenAICompatEmulator) -> None:
    adapter.chat(req())
    list(adapter.stream(req()))
    adapter.chat(req())
    assert len(emu.requests) == 3
    assert all("Cookie" not in sent.headers for sent in emu.requests)


def test_each_exchange_is_logged_at_debug_without_secrets(
    adapter: LocalAdapter, emu: OpenAICompatEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="llama_broker.http"):
        adapter.chat(req())
    lines = [r.getMessage() for r in caplog.records if r.name == "llama_broker.http"]
    assert lines == [f'HTTP Request: POST {emu.url}/v1/chat/completions "200"']
    assert "sk-sync-secret" not in caplog.text


def test_the_sdk_client_and_the_adapters_share_one_pool_and_close_together() -> None:
    clients = HttpClients()
    transport = clients.sync_transport
    assert clients.sync_transport is transport
    client = clients.sync
    clients.close()
    assert client.is_closed
    assert clients.sync_transport is not transport  # built afresh after close
    clients.close()
