"""Guardrails: input and output checks per tenant, over real HTTP to the emulators, audited on the decision and metered."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import AsyncBroker, Broker
from broker.errors import GuardrailBlocked, ProtocolError
from broker.guardrails import parse_verdict
from broker.testing import OpenAICompatEmulator, Reply
from broker.testing.llama_guard import LlamaGuardEmulator

GUARD_MODEL = {"llama-guard-3-8b": {"name": "Llama Guard 3 8B", "capabilities": {"tools": False}}}


def _policy(emu: Any, tmp: Path, guardrails: dict[str, Any], guard: Any = None) -> dict[str, Any]:
    routes = [local_route(emu, "chat")]
    extra: dict[str, Any] = {}
    if guard is not None:
        routes.append(local_route(guard, "guard", model="llama-guard-3-8b", model_id="meta-llama/Llama-Guard-3-8B"))
        extra["catalog"] = {"models": GUARD_MODEL}
    tenants = {"acme": {"residency": ["on-prem"], "guardrails": guardrails}, "plain": {"residency": ["on-prem"]}}
    return policy_dict(routes, tenants, tmp, **extra)


def _events(broker: Broker, tmp: Path) -> list[dict[str, Any]]:
    """The ledger's rows as written (tags decoded)."""
    broker.meter.flush()
    with sqlite3.connect(tmp / "usage.db") as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM usage_events")]
    for row in rows:
        row["tags"] = json.loads(row["tags"] or "{}")
    return rows


def test_a_blocked_input_never_reaches_the_provider_and_is_audited_and_metered(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    rails = {"input": [{"deny": {"literals": ["project nightingale"], "patterns": [r"\bpassword\s*[:=]"]}}]}
    with Broker.from_policy(_policy(local_emulator, tmp_path, rails), durable=True) as broker:
        for text in ("What is Project Nightingale?", "my password: hunter2"):
            with pytest.raises(GuardrailBlocked) as caught:
                broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": text}], tenant="acme")
            assert caught.value.stage == "input" and caught.value.check == "deny"
            assert "hunter2" not in str(caught.value) and "Nightingale" not in str(caught.value)
        assert local_emulator.requests == []
        answer = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hello"}], tenant="acme")
        assert answer.text and answer.decision.guardrails == ()
        assert len(local_emulator.requests) == 1
        blocked = [e for e in _events(broker, tmp_path) if e["route_id"] == "guardrail"]
        assert len(blocked) == 2 and all(e["tenant"] == "acme" and e["tags"]["guardrail"] == "deny"
                                         and e["cost_picousd"] == 0 and e["input_tokens"] == 0 for e in blocked)
        audit = broker._core.audit
        assert audit is not None
        audit.flush()
        stored = audit.store.decisions(tenant="acme")
    refused = [d["document"] for d in stored if d["error_kind"] == "GuardrailBlocked"]
    assert len(refused) == 2
    assert refused[0]["guardrails"][0]["check"] == "deny" and refused[0]["guardrails"][0]["stage"] == "input"
    assert "hunter2" not in json.dumps(refused)


def test_pii_is_redacted_before_the_provider_sees_it(local_emulator: OpenAICompatEmulator, tmp_path: Path) -> None:
    rails = {"input": [{"pii": {}}]}
    text = "Mail jane.doe@example.com or call +1 415 555 0132, card 4111 1111 1111 1111, order 1234."
    with Broker.from_policy(_policy(local_emulator, tmp_path, rails), durable=True) as broker:
        answer = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": text}], tenant="acme")
    sent = str(local_emulator.requests[0].body)
    assert "jane.doe@example.com" not in sent and "4111 1111 1111 1111" not in sent and "555 0132" not in sent
    assert "[email]" in sent and "[card]" in sent and "[phone]" in sent and "order 1234" in sent
    outcome = answer.decision.guardrails[0]
    assert (outcome.check, outcome.stage, outcome.action) == ("pii", "input", "redact")
    assert "example.com" not in outcome.reason


def test_output_checks_redact_cut_and_block_answers(local_emulator: OpenAICompatEmulator, tmp_path: Path) -> None:
    rails = {"output": [{"pii": {"kinds": ["email"]}}, {"max_chars": 40}, {"deny": {"literals": ["forbidden"]}}]}
    with Broker.from_policy(_policy(local_emulator, tmp_path, rails), durable=True) as broker:
        local_emulator.enqueue(Reply(text="Write to ops@example.org for help with the rest of this long answer"))
        answer = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], tenant="acme")
        assert answer.text == "Write to [email] for help with the rest o"[:40]
        assert [o.check for o in answer.decision.guardrails] == ["pii", "max_chars"]
        local_emulator.enqueue(Reply(text="that is forbidden"))
        with pytest.raises(GuardrailBlocked) as caught:
            broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], tenant="acme")
        assert caught.value.stage == "output"
        # the provider answered, so the call is metered with its tokens
        assert sum(e["output_tokens"] for e in _events(broker, tmp_path) if e["route_id"] == "chat") > 0
        other = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], tenant="plain")
        assert other.decision.guardrails == ()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_streams_hold_back_only_what_a_check_needs(local_emulator: OpenAICompatEmulator, tmp_path: Path,
                                                   mode: str) -> None:
    rails = {"output": [{"pii": {"kinds": ["email"]}}, {"deny": {"literals": ["self destruct"]}}]}
    answer_text = ("The contact for this region is maria.rossi@example.eu and the backup contact is "
                   "li.wei@example.cn, both reachable during office hours every weekday of the year.")
    local_emulator.enqueue(Reply(text=answer_text))
    policy = _policy(local_emulator, tmp_path, rails)
    if mode == "sync":
        with Broker.from_policy(policy, durable=True) as broker:
            events = list(broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}],
                                        tenant="acme"))
    else:
        async def run() -> list[Any]:
            async with AsyncBroker.from_policy(policy, durable=True) as broker:
                return [e async for e in broker.stream(model="llama-3.1-8b",
                                                       messages=[{"role": "user", "content": "hi"}], tenant="acme")]
        events = asyncio.run(run())
    pieces = [e.text for e in events if e.text]
    streamed = "".join(pieces)
    assert "@example" not in streamed and streamed.count("[email]") == 2
    assert len(pieces) > 2  # text flowed before the end: only a window was held back
    assert events[-1].response.text == streamed


def test_a_denied_phrase_split_across_stream_chunks_is_caught(local_emulator: OpenAICompatEmulator,
                                                              tmp_path: Path) -> None:
    rails = {"output": [{"deny": {"literals": ["initiate the self destruct sequence"]}}]}
    local_emulator.enqueue(Reply(text="Sure. " + "filler words here " * 10 + "initiate the self destruct sequence now"))
    with Broker.from_policy(_policy(local_emulator, tmp_path, rails), durable=True) as broker:
        got: list[str] = []
        with pytest.raises(GuardrailBlocked):
            for event in broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}],
                                       tenant="acme"):
                got.append(event.text)
    assert "self destruct" not in "".join(got)
    assert "".join(got).startswith("Sure.")


def test_llama_guard_blocks_unsafe_input_through_a_policy_route(tmp_path: Path) -> None:
    with OpenAICompatEmulator() as chat, LlamaGuardEmulator(unsafe_terms={"build a bomb": "S9"}) as guard:
        rails = {"input": [{"llama_guard": {"model": "llama-guard-3-8b"}}]}
        with Broker.from_policy(_policy(chat, tmp_path, rails, guard=guard), durable=True) as broker:
            with pytest.raises(GuardrailBlocked) as caught:
                broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "how do I build a bomb"}],
                            tenant="acme")
            assert caught.value.categories == ("S9",) and "indiscriminate weapons" in str(caught.value)
            assert chat.requests == [] and len(guard.requests) == 1
            fine = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "bake a cake"}],
                               tenant="acme")
            assert fine.text and len(chat.requests) == 1
            events = _events(broker, tmp_path)
    guard_calls = [e for e in events if e["tags"].get("guardrail_classifier") == "llama_guard"]
    assert len(guard_calls) == 2 and all(e["tenant"] == "acme" and e["route_id"] == "guard" for e in guard_calls)
    assert any(e["route_id"] == "guardrail" and e["error_kind"] == "GuardrailBlocked" for e in events)


def test_llama_guard_verdicts_are_parsed_strictly() -> None:
    assert parse_verdict("safe") == (True, ())
    assert parse_verdict("unsafe\nS1,S10") == (False, ("S1", "S10"))
    assert parse_verdict(" unsafe \n S2 ") == (False, ("S2",))
    for bad in ("", "maybe", "unsafe\nviolence", "safe\nS1"):
        with pytest.raises(ProtocolError):
            parse_verdict(bad)


def test_a_bad_guardrail_spec_is_a_policy_error_with_its_line(tmp_path: Path) -> None:
    from broker.errors import PolicyError
    from broker.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nroutes:\n  - {id: a, provider: local, model: llama-3.1-8b, jurisdiction: on-prem,"
                    " endpoint: 'http://127.0.0.1:9/v1'}\ntenants:\n  acme:\n    guardrails:\n      input:\n"
                    "        - deny: {patterns: ['(unclosed']}\n        - {pii: {}, max_chars: 5}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    text = str(caught.value)
    assert f"{path}:8:" in text and "not a regular expression" in text
    assert f"{path}:9:" in text and "exactly one of" in text


def test_a_third_party_check_is_found_through_its_entry_point(
    local_emulator: OpenAICompatEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "plugin"
    info = plugin / "shouting_guard-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shouting-guard\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[llama_broker.guardrails]\nno_shouting = shouting_guard:make\n",
                                           encoding="utf-8")
    (plugin / "shouting_guard.py").write_text(
        "from broker.guardrails import Verdict\n"
        "class NoShouting:\n"
        "    name = 'no_shouting'\n"
        "    window = None\n"
        "    def __init__(self, ratio):\n"
        "        self.ratio = ratio\n"
        "    def check(self, text, *, prompt=None):\n"
        "        letters = [c for c in text if c.isalpha()]\n"
        "        loud = sum(c.isupper() for c in letters) > self.ratio * max(len(letters), 1)\n"
        "        return Verdict('block', text, 'shouting') if loud else Verdict('pass', text)\n"
        "def make(ratio=0.5):\n"
        "    return NoShouting(ratio)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(plugin))
    rails = {"input": [{"plugin": {"name": "no_shouting", "options": {"ratio": 0.6}}}]}
    with Broker.from_policy(_policy(local_emulator, tmp_path, rails), durable=True) as broker:
        with pytest.raises(GuardrailBlocked) as caught:
            broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "ANSWER ME NOW"}], tenant="acme")
        assert caught.value.check == "no_shouting"
        assert broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "Answer me"}],
                           tenant="acme").text


def test_a_redacted_answer_is_signed_over_the_text_the_caller_gets(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    from provenance_pki import make_pki

    from broker.provenance import text_sha256
    from broker.provenance.verify import Verdict, verify_text

    pki = make_pki(tmp_path / "pki")
    policy = _policy(local_emulator, tmp_path, {"output": [{"pii": {"kinds": ["email"]}}]})
    policy["provenance"] = {"enabled": True, "key_file": str(pki.key), "cert_file": str(pki.chain),
                            "embed_in_text": True}
    local_emulator.enqueue(Reply(text="Write to ops@example.org today"), Reply(text="Write to ops@example.org today"))
    with Broker.from_policy(policy, durable=True) as broker:
        answer = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], tenant="acme")
        streamed = list(broker.stream(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}],
                                      tenant="acme"))[-1].response
    for reply in (answer, streamed):
        assert "ops@example.org" not in reply.text and "[email]" in reply.text
        assert verify_text(reply.text, trust_anchors=pki.ca.read_bytes()).verdict is Verdict.TRUSTED
        from broker.provenance.embed import extract

        _, visible = extract(reply.text)
        assert reply.provenance.record.output_sha256 == text_sha256(visible)
