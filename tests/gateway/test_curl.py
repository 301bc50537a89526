"""`curl` against the gateway: the same scenario list as the SDK clients, streaming read as curl prints it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from gateway_fixtures import KEYS, THROTTLE_RETRY_AFTER_S, WRONG_KEY, ledger_rows, metered_tokens

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(served, body: dict | None, *, key: str | None = None, path: str = "/chat/completions",
         headers: tuple[str, ...] = ()) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of one request made by curl (`-N`: nothing buffered)."""
    args = ["curl", "-sS", "-N", "-D", "-", f"{served.url}{path}", "-H", "Content-Type: application/json"]
    if key is not None:
        args += ["-H", f"Authorization: Bearer {KEYS.get(key, key)}"]
    for header in headers:
        args += ["-H", header]
    if body is not None:
        args += ["--data-binary", json.dumps(body)]
    out = subprocess.run(args, capture_output=True, timeout=30, check=True).stdout.decode()
    head, _, text = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), found, text


def chat(content: str, model: str = "llama-3.1-8b", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def test_chat(served) -> None:
    status, headers, text = curl(served, chat("Hello curl"), key="acme", headers=("x-llama-broker-tags: via=curl",))
    reply = json.loads(text)
    assert status == 200 and "You said: Hello curl" in reply["choices"][0]["message"]["content"]
    assert headers["x-llama-broker-route"] == "local-8b" and headers["x-request-id"]


def test_streaming_with_usage(served) -> None:
    status, headers, text = curl(served, chat("Stream curl", stream=True, stream_options={"include_usage": True}),
                                 key="acme")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "You said: Stream curl" in "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                                              if c["choices"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-1]["llama_broker"]["route"] == "local-8b"


def test_tools(served) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    status, _, text = curl(served, chat("Look it up", model="llama-3.3-70b", tools=[tool]), key="acme")
    message = json.loads(text)["choices"][0]["message"]
    assert status == 200 and message["tool_calls"][0]["function"]["name"] == "lookup"


@pytest.mark.parametrize(("key", "body", "status", "code"), [
    ("acme", chat("x", model="gpt-4o"), 404, "model_not_found"),
    ("acme", {"model": "llama-3.1-8b", "messages": []}, 400, "invalid_request"),
    ("acme", chat("x", model="llama-3.1-405b"), 429, "rate_limit_exceeded"),
    ("capped", chat("x"), 429, "budget_exceeded"),
    ("acme", chat("x", model="llama-3.2-1b"), 503, "upstream_unavailable"),
    ("eu-only", chat("x"), 403, "no_route_allowed"),
    ("eu-only", chat("x", stream=True), 403, "no_route_allowed"),
    (WRONG_KEY, chat("x"), 401, "invalid_api_key"),
    (None, chat("x"), 401, "invalid_api_key"),
], ids=["unknown-model", "no-messages", "throttled", "budget", "unavailable", "residency", "residency-stream",
        "wrong-key", "no-key"])
def test_errors(served, key, body, status, code) -> None:
    got, headers, text = curl(served, body, key=key)
    error = json.loads(text)["error"]
    assert got == status and error["code"] == code and set(error) == {"message", "type", "param", "code"}
    assert headers["x-request-id"]
    if code == "rate_limit_exceeded":
        assert headers["retry-after"] == str(THROTTLE_RETRY_AFTER_S)


def test_a_bad_body_is_400_and_unknown_paths_404(served) -> None:
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{served.url}/chat/completions",
            "-H", f"Authorization: Bearer {KEYS['acme']}", "--data-binary", "{not json"]
    assert subprocess.run(args, capture_output=True, text=True, check=True).stdout == "400"
    status, _, text = curl(served, None, key="acme", path="/engines")
    assert status == 404 and json.loads(text)["error"]["code"] == "not_found"


def test_ledger_holds_exactly_the_tokens_the_emulators_served_by_tenant(served) -> None:
    curl(served, chat("globex via curl"), key="globex")
    assert metered_tokens(served.ledger) == served.backends.served()
    assert any(json.loads(r["tags"]).get("via") == "curl" for r in ledger_rows(served.ledger) if r["tenant"] == "acme")
