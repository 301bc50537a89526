"""The licence guard: a tenant's declared product against the model's licence terms, before any provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import local_route, policy_dict

from broker import Broker
from broker.errors import LicenceRefused
from broker.policy.licence import licence_for
from broker.testing import OpenAICompatEmulator

IMAGE = [{"type": "text", "text": "what is in this picture?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]


def _broker(emu: OpenAICompatEmulator, tmp: Path, **licence: Any) -> Broker:
    declared = {"product": "Acme Vision", "monthly_active_users": 50_000, "domicile": "DE", **licence}
    routes = [local_route(emu, "vision", model="llama-3.2-11b-vision", model_id="meta-llama/Llama-3.2-11B-Vision"),
              local_route(emu, "text", model="llama-3.3-70b", model_id="meta-llama/Llama-3.3-70B-Instruct")]
    tenants = {"acme-eu": {"residency": ["on-prem"], "licence": declared}}
    return Broker.from_policy(policy_dict(routes, tenants, tmp), durable=True)


def test_an_eu_tenants_image_call_on_a_withheld_model_is_refused_naming_the_clause(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    with _broker(local_emulator, tmp_path) as broker:
        with pytest.raises(LicenceRefused) as caught:
            broker.chat(model="llama-3.2-11b-vision", messages=[{"role": "user", "content": IMAGE}], tenant="acme-eu")
        assert caught.value.term == "eu-multimodal"
        assert "Llama 3.2 Acceptable Use Policy" in caught.value.clause and "section 1(a)" in caught.value.clause
        assert "Llama 3.2 Acceptable Use Policy" in str(caught.value)
        assert local_emulator.requests == []  # refused before any provider
        # a text-only model of another licence is not touched by the restriction
        answer = broker.chat(model="llama-3.3-70b", messages=[{"role": "user", "content": "hi"}], tenant="acme-eu")
        assert answer.text and not answer.decision.warnings


def test_on_warn_the_call_goes_ahead_with_the_clause_in_the_decision(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    with _broker(local_emulator, tmp_path, on_violation="warn") as broker:
        answer = broker.chat(model="llama-3.2-11b-vision", messages=[{"role": "user", "content": IMAGE}],
                             tenant="acme-eu")
    assert answer.text
    assert any("Llama 3.2 Acceptable Use Policy" in w for w in answer.decision.warnings)
    assert len(local_emulator.requests) == 1


def test_end_users_and_tenants_outside_the_eu_are_not_restricted(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    for licence in ({"end_user": True}, {"domicile": "US"}, {"domicile": "CH"}):
        with _broker(local_emulator, tmp_path, **licence) as broker:
            answer = broker.chat(model="llama-3.2-11b-vision", messages=[{"role": "user", "content": IMAGE}],
                                 tenant="acme-eu")
            assert not answer.decision.warnings, licence


def test_a_product_over_the_mau_threshold_needs_a_separate_licence(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    with _broker(local_emulator, tmp_path, monthly_active_users=800_000_000, domicile="US") as broker:
        with pytest.raises(LicenceRefused) as caught:
            broker.chat(model="llama-3.3-70b", messages=[{"role": "user", "content": "hi"}], tenant="acme-eu")
        assert caught.value.term == "mau" and "section 2" in caught.value.clause
    with _broker(local_emulator, tmp_path, monthly_active_users=800_000_000, domicile="US",
                 separate_licence=True) as broker:
        assert broker.chat(model="llama-3.3-70b", messages=[{"role": "user", "content": "hi"}], tenant="acme-eu").text


def test_every_catalog_model_has_licence_terms() -> None:
    from broker.policy import builtin_catalog

    for model in builtin_catalog().models:
        terms = licence_for(model)
        assert terms is not None, model
        assert terms.mau_threshold == 700_000_000 and terms.attribution == "Built with Llama"
    assert [r.id for r in licence_for("llama-4-scout").restrictions] == ["eu-multimodal"]  # type: ignore[union-attr]
    assert licence_for("llama-3.1-8b").restrictions == ()  # type: ignore[union-attr]


def test_report_lists_the_attribution_duties_of_each_product(
    local_emulator: OpenAICompatEmulator, tmp_path: Path
) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from broker.cli.main import app

    policy = tmp_path / "policy.yaml"
    doc = {"version": 1, "ledger": f"sqlite:///{tmp_path / 'usage.db'}",
           "routes": [local_route(local_emulator, "text", model="llama-3.3-70b",
                                  model_id="meta-llama/Llama-3.3-70B-Instruct")],
           "tenants": {"acme-eu": {"residency": ["on-prem"],
                                   "licence": {"product": "Acme Assistant", "monthly_active_users": 10,
                                               "domicile": "FR"}},
                       "lab": {"residency": ["on-prem"]}}}
    policy.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with Broker.from_policy(str(policy), durable=True) as broker:
        for tenant in ("acme-eu", "acme-eu", "lab"):
            broker.chat(model="llama-3.3-70b", messages=[{"role": "user", "content": "hi"}], tenant=tenant)
    result = CliRunner().invoke(app, ["report", "-p", str(policy), "--licences", "--format", "json"])
    assert result.exit_code == 0, result.output
    duties = {d["tenant"]: d for d in json.loads(result.output)}
    assert duties["acme-eu"]["product"] == "Acme Assistant" and duties["acme-eu"]["calls"] == 2
    assert duties["acme-eu"]["attribution"] == "Built with Llama"
    assert "section 1.b.i" in duties["acme-eu"]["attribution_clause"]
    assert duties["lab"]["product"] == "(not declared)" and duties["lab"]["licence"].startswith("Llama 3.3")
    table = CliRunner().invoke(app, ["report", "-p", str(policy), "--licences"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "Acme Assistant" in table.output and "Built with Llama" in table.output
