"""The audit trail: decisions stored with the ledger, policy versions by hash, and the residency audit."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import local_route
from ledger_fixtures import *  # noqa: F403  (the ledger fixtures)
from ledger_fixtures import make_event
from typer.testing import CliRunner

from broker import Broker
from broker.audit.store import open_store
from broker.audit.versions import snapshot
from broker.cli.main import app
from broker.metering import open_ledger
from broker.testing import OpenAICompatEmulator

MSG = [{"role": "user", "content": "Where do I run?"}]
runner = CliRunner()


def _policy(emu: OpenAICompatEmulator, ledger: str, **top: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": ledger,
        "routes": [
            local_route(emu, "eu-box", jurisdiction="eu", price={"input_per_mtok": 1, "output_per_mtok": 1}),
            local_route(emu, "us-box", jurisdiction="us", price={"input_per_mtok": 0.1, "output_per_mtok": 0.1}),
        ],
        "tenants": {
            "acme-eu": {"residency": ["eu"]},
            "globex": {"residency": ["us", "eu"]},
        },
        **top,
    }


def _calls(policy: dict[str, Any], **options: Any) -> Broker:
    broker = Broker.from_policy(policy, **options)
    with broker:
        broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-eu", max_tokens=5)
        broker.chat(model="llama-3.1-8b", messages=MSG, tenant="globex")
        list(broker.stream(model="llama-3.1-8b", messages=MSG, tenant="globex"))
    return broker


def test_every_decision_is_stored_and_linked_to_its_events(
    ledger_url: str, local_emulator: OpenAICompatEmulator
) -> None:
    broker = _calls(_policy(local_emulator, ledger_url))  # batched (not durable): written at close
    store = open_store(ledger_url)
    try:
        acme = store.decisions(tenant="acme-eu")
        everyone = store.decisions()
        versions = store.versions()
    finally:
        store.close()
    assert len(acme) == 1 and len(everyone) == 3
    row = acme[0]
    assert row["chosen_route"] == "eu-box" and row["outcome"] == "ok"
    candidates = {c["route"]: c for c in row["document"]["candidates"]}
    assert candidates["us-box"]["removed_by"] == "residency" and not candidates["us-box"]["eligible"]
    assert candidates["eu-box"]["rank"] == 1 and candidates["eu-box"]["score"] is not None
    assert row["policy_version"] == broker.policy.version
    expected = snapshot(broker.policy)
    assert row["policy_sha256"] == expected.sha256
    assert [(v.version, v.sha256) for v in versions] == [(expected.version, expected.sha256)]
    assert all(r["chosen_route"] == "us-box" for r in everyone if r["tenant"] == "globex")  # the cheaper one
    ledger = open_ledger(ledger_url)
    try:
        linked = _event_links(ledger_url)
    finally:
        ledger.close()
    assert {(r["decision_id"], r["request_id"]) for r in everyone} == linked


def _event_links(url: str) -> set[tuple[str, str]]:
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            return set(db.execute("SELECT decision_id, request_id FROM usage_events").fetchall())
        finally:
            db.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return set(conn.execute("SELECT decision_id, request_id FROM usage_events").fetchall())


def test_a_durable_broker_stores_the_decision_before_the_call_returns(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    url = f"sqlite://{tmp_path / 'usage.db'}"
    with Broker.from_policy(_policy(local_emulator, url), durable=True) as broker:
        reply = broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-eu")
        store = open_store(url)
        try:
            rows = store.decisions()
        finally:
            store.close()
    assert [r["request_id"] for r in rows] == [reply.request_id]


def test_a_policy_may_turn_the_trail_off(tmp_path: Path, local_emulator: OpenAICompatEmulator) -> None:
    url = f"sqlite://{tmp_path / 'usage.db'}"
    _calls(_policy(local_emulator, url, audit={"enabled": False}))
    store = open_store(url)
    try:
        assert store.decisions() == [] and store.versions() == []
    finally:
        store.close()


def test_residency_audit_passes_a_clean_ledger_finds_a_planted_event_and_counts_old_ones_apart(
    ledger_url: str, local_emulator: OpenAICompatEmulator
) -> None:
    broker = _calls(_policy(local_emulator, ledger_url))
    store = open_store(ledger_url)
    try:
        clean = store.residency()
        assert clean.checked == 3 and clean.violations == () and clean.unverifiable == {}
        version = broker.policy.version
        planted = make_event(tenant="acme-eu", jurisdiction="us", region="us-east-1", route_id="us-box",
                             policy_version=version, timestamp=dt.datetime.now(dt.timezone.utc))
        allowed = make_event(tenant="globex", jurisdiction="us", policy_version=version)
        unknown = make_event(tenant="stranger", jurisdiction="eu", policy_version=version)  # refused names
        old = [make_event(tenant="acme-eu", jurisdiction="us", policy_version="before-versions") for _ in range(2)]
        ledger = open_ledger(ledger_url)
        try:
            ledger.write([planted, allowed, unknown, *old])
        finally:
            ledger.close()
        report = store.residency()
        only_acme = store.residency(tenant="acme-eu")
    finally:
        store.close()
    assert {v.event_id for v in report.violations} == {planted.event_id, unknown.event_id}
    bad = next(v for v in report.violations if v.event_id == planted.event_id)
    assert (bad.tenant, bad.jurisdiction, bad.route_id, bad.policy_version) == ("acme-eu", "us", "us-box", version)
    assert report.checked == 6 and report.unverifiable == {"acme-eu": 2} and not report.compliant
    assert [v.event_id for v in only_acme.violations] == [planted.event_id] and only_acme.checked == 2


def test_unknown_tenant_names_are_audited_under_the_rules_they_got(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    url = f"sqlite://{tmp_path / 'usage.db'}"
    policy = _policy(local_emulator, url, unknown_tenants="default")
    policy["tenants"]["default"] = {"residency": ["eu"]}
    with Broker.from_policy(policy) as broker:
        broker.chat(model="llama-3.1-8b", messages=MSG, tenant="walk-in")
    ledger = open_ledger(url)
    try:
        ledger.write([make_event(tenant="walk-in", jurisdiction="us", policy_version=broker.policy.version)])
    finally:
        ledger.close()
    store = open_store(url)
    try:
        report = store.residency()
    finally:
        store.close()
    assert report.checked == 2 and [v.tenant for v in report.violations] == ["walk-in"]


def test_the_audit_commands_list_decisions_and_violations(
    tmp_path: Path, local_emulator: OpenAICompatEmulator
) -> None:
    url = f"sqlite://{tmp_path / 'usage.db'}"
    broker = _calls(_policy(local_emulator, url))
    listed = runner.invoke(app, ["audit", "--tenant", "acme-eu", "--since", "2020-01-01", "--ledger", url])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("\n") == 1 and "-> eu-box" in listed.output and "us-box (residency)" in listed.output
    later = runner.invoke(app, ["audit", "--tenant", "acme-eu", "--since", "2999-01-01", "--ledger", url])
    assert later.output.strip() == "no decisions"
    as_json = json.loads(runner.invoke(app, ["audit", "--json", "--ledger", url]).output)
    assert len(as_json) == 3
    clean = runner.invoke(app, ["audit", "residency", "--ledger", url])
    assert clean.exit_code == 0 and "violations: none" in clean.output
    ledger = open_ledger(url)
    try:
        ledger.write([
            make_event(tenant="acme-eu", jurisdiction="us", policy_version=broker.policy.version),
            make_event(tenant="acme-eu", jurisdiction="eu", policy_version="older"),
        ])
    finally:
        ledger.close()
    found = runner.invoke(app, ["audit", "residency", "--ledger", url])
    assert found.exit_code == 1 and "1 violations" in found.output and "tenant acme-eu" in found.output
    assert "unverifiable (policy version not stored): 1 events" in found.output
    bad_date = runner.invoke(app, ["audit", "--since", "yesterday", "--ledger", url])
    assert bad_date.exit_code == 2
    missing = runner.invoke(app, ["audit", "residency", "--ledger", f"sqlite://{tmp_path / 'none.db'}"])
    assert missing.exit_code == 1 and "no ledger" in missing.output


def test_decisions_left_when_the_store_fails_are_spilled_not_lost(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.errors import MeteringError

    url = f"sqlite://{tmp_path / 'usage.db'}"
    broker = Broker.from_policy(_policy(local_emulator, url))
    trail = broker._core.audit
    assert trail is not None

    def refuse(rows: Any) -> int:
        raise MeteringError("the audit store is down (injected)")

    monkeypatch.setattr(trail.store, "write_decisions", refuse)
    broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-eu")
    spill_dir = tmp_path / "spill"
    monkeypatch.setattr("broker.metering.paths.data_dir", lambda: spill_dir)
    broker.close()
    spilled = [json.loads(line) for f in spill_dir.glob("audit-spill-*.jsonl") for line in f.read_text().splitlines()]
    assert len(spilled) == 1 and spilled[0]["tenant"] == "acme-eu" and spilled[0]["chosen_route"] == "eu-box"


def test_a_store_that_keeps_refusing_spills_past_the_cap_instead_of_growing(
    tmp_path: Path, local_emulator: OpenAICompatEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.audit import trail as trail_module
    from broker.errors import MeteringError

    url = f"sqlite://{tmp_path / 'usage.db'}"
    broker = Broker.from_policy(_policy(local_emulator, url))
    trail = broker._core.audit
    assert trail is not None

    def refuse(rows: Any) -> int:
        raise MeteringError("the audit store is down (injected)")

    monkeypatch.setattr(trail.store, "write_decisions", refuse)
    monkeypatch.setattr(trail_module, "MAX_PENDING", 3)
    spill_dir = tmp_path / "spill"
    monkeypatch.setattr("broker.metering.paths.data_dir", lambda: spill_dir)
    for _ in range(5):
        broker.chat(model="llama-3.1-8b", messages=MSG, tenant="acme-eu")
        with pytest.raises(MeteringError):
            trail.flush()
        assert trail.pending <= 3
    broker.close()
    spilled = [json.loads(line) for f in spill_dir.glob("audit-spill-*.jsonl") for line in f.read_text().splitlines()]
    assert len(spilled) == 5  # every decision kept, on disk rather than in memory
