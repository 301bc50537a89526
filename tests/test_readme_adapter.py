"""The README's third-party adapter, run as written: found by entry point, options checked at load, metered."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker import Broker, PolicyError
from broker.metering import open_ledger
from broker.policy import load_policy_text
from broker.reports import ReportFilters, report_rows

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_blocks(lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Writing an adapter") :]
    section = section[: section.index("\n## ")]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


class _Acme(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, Any]]] = []
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append({"path": self.path, **body})
        status, payload = type(self).answers.pop(0) if type(self).answers else (200, {})
        if not payload and status == 200:
            words = " ".join(m["text"] for m in body["messages"]).split()
            payload = {"text": "hello from acme", "finish": "stop", "tokens_in": len(words), "tokens_out": 3}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status == 429:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def acme_server() -> Iterator[str]:
    _Acme.answers, _Acme.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Acme)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def acme_installed(tmp_path: Path) -> Iterator[None]:
    """The README's module and entry point, installed as a third-party distribution would be."""
    (tmp_path / "acme_adapter.py").write_text(_section_blocks("python")[0], encoding="utf-8")
    entry = _section_blocks("toml")[0]
    dist = tmp_path / "acme_adapter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-adapter\nVersion: 1.0\n")
    # pyproject's TOML table becomes the dist-info's INI section, values unquoted
    ini = entry.replace('[project.entry-points."llama_broker.adapters"]', "[llama_broker.adapters]").replace('"', "")
    (dist / "entry_points.txt").write_text(ini)
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_adapter", None)


def _policy(endpoint: str, tmp_path: Path, options: str = "{priority: 2}") -> str:
    route = _section_blocks("yaml")[0]
    route = route.replace('"https://eu.api.acme.example"', f'"{endpoint}"').replace("{priority: 2}", options)
    return (f"version: 1\nledger: sqlite:///{tmp_path}/usage.db\n{route}"
            "tenants:\n  default: {residency: [eu]}\n")


def test_the_readme_adapter_answers_through_the_broker_and_is_metered(
    acme_installed: None, acme_server: str, tmp_path: Path
) -> None:
    policy = load_policy_text(_policy(acme_server, tmp_path))
    with Broker.from_policy(policy) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "one two three"}])
        streamed = list(broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "four"}]))
    assert reply.text == "hello from acme" and reply.route is not None and reply.route.provider == "acme"
    assert reply.route.jurisdiction == "eu" and reply.usage.input_tokens == 3 and not reply.usage.estimated
    assert streamed[-1].response is not None and streamed[-1].response.text == "hello from acme"
    assert _Acme.seen[0]["path"] == "/v1/generate" and _Acme.seen[0]["priority"] == 2
    with open_ledger(f"sqlite:///{tmp_path}/usage.db", create=False) as ledger:
        rows = report_rows(ledger, ["provider"], ReportFilters())
    assert [(r["provider"], r["calls"], r["input_tokens"], r["output_tokens"]) for r in rows] == [("acme", 2, 4, 6)]


async def test_the_readme_adapter_maps_errors_and_is_retried(
    acme_installed: None, acme_server: str, tmp_path: Path
) -> None:
    from broker import AsyncBroker

    _Acme.answers = [(429, {"error": "slow down"}), (200, {})]
    async with AsyncBroker.from_policy(load_policy_text(_policy(acme_server, tmp_path))) as broker:
        reply = await broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}])
    assert reply.attempts == 2 and reply.text == "hello from acme"


def test_an_option_typo_in_an_acme_route_fails_at_load_with_its_line(
    acme_installed: None, acme_server: str, tmp_path: Path
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(_policy(acme_server, tmp_path, options="{priorty: 2}"), name="acme.yaml")
    message = str(caught.value)
    assert "acme.yaml:" in message and "priorty" in message and "priority" in message
