"""The shipped policies load clean, mean what their comments say, and `policy validate` gates them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.vertex import VertexOptions
from broker.cli.policy_cmd import policy_app
from broker.policy import load_policy
from broker.policy.lint import lint_policy
from broker.policy.loader import load_policy_document

ROOT = Path(__file__).resolve().parent.parent
POLICIES = sorted((ROOT / "policies").rglob("*.yaml"))


def test_the_examples_are_there() -> None:
    names = {p.name for p in POLICIES}
    assert {"default.yaml", "eu-only.yaml", "cost-first.yaml", "latency-slo.yaml", "org-default.yaml",
            "team-extends.yaml"} <= names


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_policy_loads_clean(path: Path) -> None:
    policy = load_policy(path, env={})
    assert policy.routes and policy.tenants
    assert len({r.id for r in policy.routes}) == len(policy.routes)


def test_default_policy_shape() -> None:
    policy = load_policy(ROOT / "policies" / "default.yaml", env={})
    assert {r.provider for r in policy.routes} == {"bedrock", "vertex", "azure", "groq", "local"}
    by_id = {r.id: r for r in policy.routes}
    assert by_id["azure-eu-70b"].jurisdiction == "eu" and by_id["azure-eu-70b"].api_key_env == "AZURE_AI_API_KEY"
    assert by_id["local-8b"].jurisdiction == "on-prem" and by_id["local-8b"].endpoint == "http://127.0.0.1:8000/v1"
    assert by_id["bedrock-us-70b"].endpoint is None and by_id["bedrock-us-70b"].model_id.startswith("us.")
    vertex = by_id["vertex-us-maverick"].options
    assert isinstance(vertex, VertexOptions)  # typed by the adapter's own options model
    assert vertex.project == "my-project" and vertex.access_token_env == "VERTEX_ACCESS_TOKEN"
    assert policy.tenant("default").residency == ["us", "eu", "on-prem"]
    acme = policy.tenant("acme-eu")
    assert acme.objective == "latency" and acme.residency == ["eu", "on-prem"]
    assert acme.budget is not None and acme.budget.on_exceed == "block" and acme.budget.monthly_usd == 500
    assert policy.ledger is None


def test_default_policy_follows_emulator_variables() -> None:
    env = {f"LLAMA_BROKER_{p}_URL": f"http://127.0.0.1:{9000 + i}" for i, p in
           enumerate(("BEDROCK", "VERTEX", "AZURE", "GROQ", "LOCAL"))}
    policy = load_policy(ROOT / "policies" / "default.yaml", env=env)
    for route in policy.routes:
        assert route.endpoint is not None and route.endpoint.startswith("http://127.0.0.1:9"), route.id


def test_eu_only_keeps_every_route_in_the_eu_or_on_prem() -> None:
    policy = load_policy(ROOT / "policies" / "examples" / "eu-only.yaml", env={})
    assert {r.jurisdiction for r in policy.routes} <= {"eu", "on-prem"}
    assert all(set(t.residency or ["any"]) <= {"eu", "on-prem"} for t in policy.tenants.values())


def test_team_policy_composes_on_the_org_default() -> None:
    policy = load_policy(ROOT / "policies" / "examples" / "team-extends.yaml", env={})
    ids = [r.id for r in policy.routes]
    assert "bedrock-us-maverick" not in ids and "vertex-us-405b" in ids
    price = policy.route("bedrock-us-70b").price
    assert price is not None and str(price.input_per_mtok) == "0.65" and price.source == "negotiated AWS private offer"
    assert policy.tenant("support").objective == "weighted"
    assert policy.tenant("support").models is not None  # kept from the org file
    assert policy.retry.max_attempts_per_route == 2 and policy.circuit.failure_threshold == 3


# --------------------------------------------------------------------------- the CLI


def test_validate_ok_exit_zero() -> None:
    result = CliRunner().invoke(policy_app, ["validate", *map(str, POLICIES)])
    assert result.exit_code == 0, result.output
    assert f"ok: {ROOT / 'policies' / 'default.yaml'} (9 routes, 3 tenants" in result.stdout


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_shipped_policies_warn_only_about_what_is_true_of_them(path: Path) -> None:
    """Credentials unset here, retired catalog rows and EU tenants without Llama 4 are true; a
    profile in the wrong region, a model id of another model or an impossible SLO would be mistakes."""
    found = lint_policy(load_policy_document(path, env={}), today=dt.date(2026, 12, 1), env={})
    assert {f.kind for f in found} <= {"credential", "lifecycle", "unreachable"}, [str(f) for f in found]
    for finding in found:
        if finding.kind == "unreachable":
            assert "(residency:" in finding.message or "retired" in finding.message, finding


def test_validate_reports_every_error_and_exits_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - id: a\n    provider: bedrock\n    model: llama-3.3-70b\n    region: us-east-1\n"
                   "    colour: red\ntenants:\n  t: {residency: [mars]}\n")
    good = ROOT / "policies" / "default.yaml"
    result = CliRunner().invoke(policy_app, ["validate", str(bad), str(good)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{bad}:6: routes[0]: unknown key 'colour'"
    assert lines[1].startswith(f"{bad}:8: tenants.t.residency: unknown jurisdiction 'mars'")
    assert f"ok: {good}" in result.stdout


def test_show_prints_effective_routes() -> None:
    result = CliRunner().invoke(policy_app, ["show", str(ROOT / "policies" / "default.yaml"), "--today", "2026-11-23"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for text in ("bedrock-us-70b", "us.meta.llama3-3-70b-instruct-v1:0", "swedencentral", "on-prem", "acme-eu"):
        assert text in result.stdout


def test_catalog_command_lists_prices_with_sources() -> None:
    from broker.cli.main import app

    result = CliRunner().invoke(app, ["catalog", "--model", "llama-3.3-70b", "--today", "2026-11-23"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "llama-3.3-70b-versatile" in result.stdout and "retired" in result.stdout
    assert "Llama 3.3 Community License" in result.stdout


def test_packaged_default_policy_matches_policies_default() -> None:
    packaged = ROOT / "broker" / "data" / "default.yaml"
    if not packaged.exists():
        pytest.skip("no packaged copy of the default policy")
    assert packaged.read_text() == (ROOT / "policies" / "default.yaml").read_text(), \
        "broker/data/default.yaml must be a copy of policies/default.yaml"
