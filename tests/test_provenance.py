"""Signed provenance records: on every answer and stream, verified by the C2PA library's reader."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict
from provenance_pki import Pki, make_pki
from typer.testing import CliRunner

from broker import Broker, PolicyError
from broker.cli.main import app
from broker.errors import ProvenanceError
from broker.provenance import TRAINED_ALGORITHMIC_MEDIA, text_sha256
from broker.provenance.verify import Verdict, verify_document, verify_record, verify_text
from broker.testing import OpenAICompatEmulator

MSG = [{"role": "user", "content": "Name a fjord."}]
runner = CliRunner()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _policy(emu: OpenAICompatEmulator, tmp: Path, pki: Pki, **settings: Any) -> dict[str, Any]:
    provenance = {"enabled": True, "key_file": str(pki.key), "cert_file": str(pki.chain), **settings}
    return policy_dict([local_route(emu, endpoint=f"{emu.url}/v1")], tmp=tmp, provenance=provenance)


def _answer(emu: OpenAICompatEmulator, tmp: Path, pki: Pki, **settings: Any) -> Any:
    with Broker.from_policy(_policy(emu, tmp, pki, **settings), durable=True) as broker:
        return broker.chat(model="llama-3.1-8b", messages=MSG)


def test_a_signed_record_is_untrusted_until_its_ca_is_a_trust_anchor(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki
) -> None:
    reply = _answer(local_emulator, tmp_path, pki)
    signed = reply.provenance
    record = signed.record
    assert record.output_sha256 == text_sha256(reply.text)
    assert (record.provider, record.jurisdiction, record.logical_model) == ("local", "on-prem", "llama-3.1-8b")
    assert record.provider_model_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert record.endpoint_host == local_emulator.url.split("://")[1]
    assert record.request_id == reply.request_id and record.decision_id and len(record.policy_sha256) == 64
    assert record.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    document = json.loads(signed.to_json())

    untrusted = verify_record(document, text=reply.text)
    assert untrusted.verdict is Verdict.UNTRUSTED and "signingCredential.untrusted" in untrusted.reasons
    assert untrusted.signer["common_name"] == "broker signer"
    assert verify_record(document, text=reply.text, trust_anchors=pki.other_ca.read_bytes()).verdict is Verdict.UNTRUSTED
    trusted = verify_record(document, text=reply.text, trust_anchors=pki.ca.read_bytes())
    assert trusted.verdict is Verdict.TRUSTED and trusted.reasons == ()


def test_one_changed_character_or_field_is_tampered(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki
) -> None:
    reply = _answer(local_emulator, tmp_path, pki)
    document = json.loads(reply.provenance.to_json())
    anchors = pki.ca.read_bytes()
    changed_text = reply.text[:-1] + ("x" if reply.text[-1] != "x" else "y")
    assert verify_record(document, text=changed_text, trust_anchors=anchors).verdict is Verdict.TAMPERED
    for field, value in (("jurisdiction", "us"), ("region", "us-east-1"), ("output_sha256", text_sha256("other"))):
        forged = json.loads(json.dumps(document))
        forged["record"][field] = value
        outcome = verify_record(forged, trust_anchors=anchors)
        assert outcome.verdict is Verdict.TAMPERED, field
        assert "assertion.dataHash.mismatch" in outcome.reasons
    broken = dict(document, c2pa_manifest=document["c2pa_manifest"][:-12] + "AAAAAAAAAAAA")
    assert verify_record(broken, trust_anchors=anchors).verdict is Verdict.TAMPERED
    assert verify_record({"record": document["record"]}).verdict is Verdict.UNSIGNED
    with pytest.raises(ProvenanceError):
        verify_record({"answer": "no record here"})


def test_the_final_stream_event_carries_a_verified_record(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki
) -> None:
    with Broker.from_policy(_policy(local_emulator, tmp_path, pki), durable=True) as broker:
        events = list(broker.stream(model="llama-3.1-8b", messages=MSG))
    final = events[-1].response
    assert final is not None and final.provenance is not None
    streamed = "".join(e.text for e in events)
    outcome = verify_record(final.provenance.to_dict(), text=streamed, trust_anchors=pki.ca.read_bytes())
    assert outcome.verdict is Verdict.TRUSTED


async def test_async_answers_are_signed_too(tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki) -> None:
    from broker import AsyncBroker

    async with AsyncBroker.from_policy(_policy(local_emulator, tmp_path, pki), durable=True) as broker:
        reply = await broker.chat(model="llama-3.1-8b", messages=MSG)
    assert verify_record(reply.provenance.to_dict(), text=reply.text).verdict is Verdict.UNTRUSTED


def test_an_embedded_record_survives_a_utf8_file_and_json_and_breaks_on_one_character(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki
) -> None:
    reply = _answer(local_emulator, tmp_path, pki, embed_in_text=True)
    from broker.provenance.embed import extract

    manifest, clean = extract(reply.text)
    assert manifest is not None and len(reply.text) > len(clean)  # an invisible wrapper appended
    assert reply.provenance.record.matches(clean)
    anchors = pki.ca.read_bytes()
    path = tmp_path / "answer.txt"
    path.write_text(reply.text, encoding="utf-8")
    from_file = path.read_text(encoding="utf-8")
    assert verify_text(from_file, trust_anchors=anchors).verdict is Verdict.TRUSTED
    through_json = json.loads(json.dumps({"answer": from_file}))["answer"]
    assert verify_text(through_json, trust_anchors=anchors).verdict is Verdict.TRUSTED
    assert verify_document(through_json).verdict is Verdict.UNTRUSTED
    edited = "J" + from_file[1:]
    assert verify_text(edited, trust_anchors=anchors).verdict is Verdict.TAMPERED
    assert verify_text("a text nobody signed").verdict is Verdict.UNSIGNED


def test_provenance_is_off_by_default(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    with Broker.from_policy(policy_dict([local_route(local_emulator)], tmp=tmp_path), durable=True) as broker:
        assert broker.chat(model="llama-3.1-8b", messages=MSG).provenance is None


def test_the_key_and_certificate_are_named_by_reference(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = [local_route(local_emulator)]
    with pytest.raises(PolicyError, match="key_file or key_env"):
        Broker.from_policy(policy_dict(routes, tmp=tmp_path, provenance={"enabled": True}))
    with pytest.raises(PolicyError, match="not both"):
        Broker.from_policy(policy_dict(routes, tmp=tmp_path, provenance={
            "key_file": "a", "key_env": "B", "cert_file": "c"}))
    unset = {"enabled": True, "key_env": "BROKER_TEST_SIGNING_KEY", "cert_file": str(pki.chain)}
    monkeypatch.delenv("BROKER_TEST_SIGNING_KEY", raising=False)
    with pytest.raises(ProvenanceError, match="BROKER_TEST_SIGNING_KEY is not set"):
        Broker.from_policy(policy_dict(routes, tmp=tmp_path, provenance=unset))
    monkeypatch.setenv("BROKER_TEST_SIGNING_KEY", pki.key.read_text())  # the PEM text itself
    with Broker.from_policy(policy_dict(routes, tmp=tmp_path, provenance=unset), durable=True) as broker:
        assert broker.chat(model="llama-3.1-8b", messages=MSG).provenance is not None
    wrong = {"enabled": True, "key_file": str(pki.chain), "cert_file": str(pki.chain)}
    with pytest.raises(ProvenanceError, match="not an unencrypted PEM private key"):
        Broker.from_policy(policy_dict(routes, tmp=tmp_path, provenance=wrong))
    stranger = make_pki(tmp_path / "stranger")  # a key that does not belong to the certificate
    mismatched = {"enabled": True, "key_file": str(stranger.key), "cert_file": str(pki.chain)}
    with pytest.raises(ProvenanceError, match="signature does not match"):
        Broker.from_policy(policy_dict(routes, tmp=tmp_path, provenance=mismatched))


def test_verify_command_reports_each_verdict_by_exit_status(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki
) -> None:
    reply = _answer(local_emulator, tmp_path, pki)
    record, text = tmp_path / "record.json", tmp_path / "answer.txt"
    record.write_text(reply.provenance.to_json(indent=2), encoding="utf-8")
    text.write_text(reply.text, encoding="utf-8")
    untrusted = runner.invoke(app, ["provenance", "verify", str(record), "--text", str(text)])
    assert untrusted.exit_code == 3 and untrusted.output.startswith("valid-untrusted")
    trusted = runner.invoke(app, ["provenance", "verify", str(record), "--text", str(text), "--trust", str(pki.ca)])
    assert trusted.exit_code == 0 and "broker signer" in trusted.output
    text.write_text(reply.text + ".", encoding="utf-8")
    tampered = runner.invoke(app, ["provenance", "verify", str(record), "--text", str(text), "--json"])
    assert tampered.exit_code == 4 and json.loads(tampered.output)["verdict"] == "tampered"
    unsigned = runner.invoke(app, ["provenance", "verify", str(text)])
    assert unsigned.exit_code == 5 and unsigned.output.startswith("unsigned")
    missing = runner.invoke(app, ["provenance", "verify", str(tmp_path / "nothing.json")])
    assert missing.exit_code == 1 and "ProvenanceError" in missing.output


def test_a_record_names_no_prompt_and_no_tenant(tmp_path: Path, local_emulator: OpenAICompatEmulator, pki: Pki) -> None:
    reply = _answer(local_emulator, tmp_path, pki)
    fields = {f.name for f in dataclasses.fields(reply.provenance.record)}
    assert "tenant" not in fields and "fjord" not in reply.provenance.to_json()
