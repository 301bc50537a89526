"""`policy validate` warnings: policies that load but cannot work as written, each at its line."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from broker.cli.policy_cmd import policy_app
from broker.policy.lint import Finding, lint_policy
from broker.policy.loader import load_policy_document

TODAY = dt.date(2026, 12, 1)
LOCAL = '{id: gpu, provider: local, model: llama-3.1-8b, jurisdiction: on-prem, endpoint: "http://127.0.0.1:1/v1"}'


def lint(tmp_path: Path, text: str, *, env: dict[str, str] | None = None, name: str = "policy.yaml",
         today: dt.date = TODAY) -> list[Finding]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return lint_policy(load_policy_document(path, env={}), today=today, env=env or {})


def only(found: list[Finding], kind: str) -> list[tuple[int, str]]:
    return [(f.line, f.message) for f in found if f.kind == kind]


def test_a_tenant_whose_residency_leaves_no_route(tmp_path: Path) -> None:
    found = lint(tmp_path, f"""\
        routes:
          - {{id: b, provider: bedrock, model: llama-3.3-70b, region: us-east-1}}
          - {LOCAL}
        tenants:
          us: {{residency: [us, on-prem]}}
          eu:
            residency: [eu]
        """)
    assert only(found, "unreachable") == [
        (6, "tenant 'eu' can reach no route for llama-3.3-70b: b (residency: jurisdiction 'us' not in ['eu'])"),
        (6, "tenant 'eu' can reach no route for llama-3.1-8b: gpu (residency: jurisdiction 'on-prem' not in ['eu'])"),
    ]


def test_provider_rules_price_ceiling_and_slo_that_remove_every_route(tmp_path: Path) -> None:
    found = lint(tmp_path, """\
        routes:
          - {id: b, provider: bedrock, model: llama-3.3-70b, region: us-east-1}
        tenants:
          deny: {residency: any, providers: {deny: [bedrock]}}
          cheap: {residency: any, max_price_per_mtok: {input: 0.01}}
          fast: {residency: any, latency_slo_ms: {p95: 100}}
          fine: {residency: any}
        """)
    messages = dict(only(found, "unreachable"))
    assert "providers: provider 'bedrock' denied" in messages[4]
    assert "price: input $0.72/Mtok > ceiling $0.01" in messages[5]
    assert "latency: predicted p95" in messages[6] and "> SLO 100 ms" in messages[6]
    assert 7 not in messages


def test_an_extends_that_disables_a_tenants_only_route(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text(textwrap.dedent(f"""\
        routes:
          - {LOCAL}
          - {{id: b, provider: bedrock, model: llama-4-maverick, region: us-east-1}}
        tenants:
          research: {{residency: any, models: {{allow: [llama-4-maverick]}}}}
        """))
    found = lint(tmp_path, """\
        extends: org.yaml
        routes:
          - id: b
            enabled: false
        """, name="team.yaml")
    [(line, message)] = only(found, "unreachable")
    assert message == (f"tenant 'research' can reach no route for llama-4-maverick: "
                       f"b (disabled by enabled: false at {tmp_path / 'team.yaml'}:4)")
    assert found[0].file == str(tmp_path / "org.yaml") and line == 5


def test_daily_budget_above_monthly(tmp_path: Path) -> None:
    found = lint(tmp_path, f"""\
        routes: [{LOCAL}]
        tenants:
          t:
            residency: any
            budget:
              monthly_usd: 100
              daily_usd: 150
        """)
    assert only(found, "budget") == [
        (7, "tenant 't': budget.daily_usd 150 is above budget.monthly_usd 100; the daily limit never binds")]


def test_retired_and_soon_retiring_routes(tmp_path: Path) -> None:
    text = """\
        routes:
          - {id: old, provider: groq, model: llama-3.3-70b, api_key_env: K}
          - {id: soon, provider: bedrock, model: llama-3.3-70b, region: us-east-1}
        tenants: {default: {residency: any}}
        """
    found = lint(tmp_path, text, env={"K": "set"}, today=dt.date(2027, 2, 1))
    assert only(found, "lifecycle") == [
        (2, "route 'old' (llama-3.3-70b-versatile) is retired since 2026-08-16; it is never a candidate"),
        (3, "route 'soon' (us.meta.llama3-3-70b-instruct-v1:0) retires on 2027-03-30, in 57 days"),
    ]
    assert only(lint(tmp_path, text, env={"K": "set"}, today=dt.date(2026, 12, 1)), "lifecycle") == [
        (2, "route 'old' (llama-3.3-70b-versatile) is retired since 2026-08-16; it is never a candidate")]


def test_bedrock_profile_geography_against_the_region(tmp_path: Path) -> None:
    found = lint(tmp_path, """\
        routes:
          - id: b
            provider: bedrock
            model: llama-3.2-3b
            region: us-east-1
            model_id: "eu.meta.llama3-2-3b-instruct-v1:0"
          - {id: ok, provider: bedrock, model: llama-3.3-70b, region: us-west-2,
             model_id: "us.meta.llama3-3-70b-instruct-v1:0"}
        tenants: {default: {residency: any}}
        """)
    assert only(found, "route") == [
        (6, "route 'b': inference profile 'eu.meta.llama3-2-3b-instruct-v1:0' is a eu profile, "
            "but the route calls it from region 'us-east-1'")]


def test_a_model_id_that_belongs_to_another_model(tmp_path: Path) -> None:
    found = lint(tmp_path, """\
        routes:
          - id: b
            provider: bedrock
            model: llama-3.3-70b
            region: us-east-1
            model_id: "us.meta.llama3-1-8b-instruct-v1:0"
        tenants: {default: {residency: any}}
        """)
    assert only(found, "model_id") == [
        (6, "route 'b': model_id 'us.meta.llama3-1-8b-instruct-v1:0' is llama-3.1-8b in the catalog, "
            "but the route serves model llama-3.3-70b")]


def test_credential_variables_that_are_not_set(tmp_path: Path) -> None:
    text = """\
        routes:
          - {id: g, provider: groq, model: llama-4-scout}
          - id: v
            provider: vertex
            model: llama-4-maverick
            region: us-east5
            options: {project_env: MY_PROJECT, access_token_env: MY_TOKEN}
        tenants: {default: {residency: any}}
        """
    found = only(lint(tmp_path, text), "credential")
    assert [line for line, _ in found] == [2, 7, 7]
    assert "environment variable GROQ_API_KEY (api_key_env) is not set" in found[0][1]
    assert {"MY_TOKEN", "MY_PROJECT"} == {m.split("variable ")[1].split()[0] for _, m in found[1:]}
    assert only(lint(tmp_path, text, env={"GROQ_API_KEY": "x", "MY_PROJECT": "p", "MY_TOKEN": "t"}), "credential") == []


def test_a_vertex_project_known_only_at_call_time_is_a_warning(tmp_path: Path) -> None:
    found = lint(tmp_path, """\
        routes:
          - {id: v, provider: vertex, model: llama-4-maverick, region: us-east5}
        tenants: {default: {residency: any}}
        """)
    assert only(found, "route") == [(2, "route 'v': no options.project: the project comes from the credentials, "
                                        "GOOGLE_CLOUD_PROJECT or application-default credentials at call time")]


def test_validate_prints_warnings_and_strict_makes_them_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"routes: [{LOCAL}]\ntenants:\n  t: {{residency: [eu]}}\n")
    result = CliRunner().invoke(policy_app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warning = (f"{path}:3: warning: tenant 't' can reach no route for llama-3.1-8b: "
               "gpu (residency: jurisdiction 'on-prem' not in ['eu'])")
    assert result.stderr.strip().splitlines() == [warning]
    assert f"ok: {path} (1 routes, 1 tenants; 1 warning)" in result.stdout
    strict = CliRunner().invoke(policy_app, ["validate", "--strict", str(path)])
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines() == [warning.replace("warning: ", "")]
    assert "ok:" not in strict.stdout
