"""Policy loading: schema errors with their lines, all at once; safe YAML; extends; env expansion."""

from __future__ import annotations

import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from broker.errors import NoEligibleRoute, PolicyError, UnknownTenant
from broker.policy import load_policy, load_policy_text

BEDROCK_70B = """\
  - id: bedrock-70b
    provider: bedrock
    model: llama-3.3-70b
    region: us-east-1
"""
TENANTS = """\
tenants:
  default: {residency: [us]}
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def issues(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path, env=env or {})
    return [(i.line, i.message) for i in info.value.issues]


def one(found: list[tuple[int, str]], fragment: str) -> int:
    """The line of the single issue whose message contains `fragment`."""
    lines = [line for line, message in found if fragment in message]
    assert len(lines) == 1, (fragment, found)
    return lines[0]


# --------------------------------------------------------------------------- each error class, with its line


def test_unknown_key_is_reported_on_its_line_with_a_suggestion(tmp_path: Path) -> None:
    found = issues(tmp_path, "routes:\n" + BEDROCK_70B + "    regoin: x\n" + TENANTS)
    assert one(found, "unknown key 'regoin'") == 6
    assert "did you mean 'region'" in found[0][1]


def test_unknown_tenant_key_is_an_error(tmp_path: Path) -> None:
    found = issues(tmp_path, "routes:\n" + BEDROCK_70B + "tenants:\n  t:\n    residency: [us]\n    residancy: [eu]\n")
    assert one(found, "unknown key 'residancy'") == 9


def test_wrong_type(tmp_path: Path) -> None:
    found = issues(tmp_path, "routes:\n" + BEDROCK_70B + "    timeout_s: fast\n" + TENANTS)
    assert one(found, "routes[0].timeout_s: Input should be a valid number") == 6


def test_unknown_provider(tmp_path: Path) -> None:
    text = "routes:\n  - id: x\n    provider: bedrok\n    model: llama-3.3-70b\n    region: us-east-1\n" + TENANTS
    assert one(issues(tmp_path, text), "unknown provider 'bedrok'") == 3


def test_unknown_region_without_jurisdiction(tmp_path: Path) -> None:
    text = "routes:\n  - id: x\n    provider: bedrock\n    model: llama-3.3-70b\n    region: us-eats-1\n" + TENANTS
    found = issues(tmp_path, text)
    assert one(found, "unknown region 'us-eats-1'") == 5
    assert "did you mean us-east-1" in found[0][1]


def test_unlisted_region_is_accepted_with_an_explicit_jurisdiction(tmp_path: Path) -> None:
    text = """\
        routes:
          - {id: x, provider: local, model: llama-3.1-8b, region: rack-7, jurisdiction: on-prem,
             endpoint: "http://10.0.0.7:8000/v1"}
        tenants:
          default: {residency: [on-prem]}
        """
    policy = load_policy(write(tmp_path, text), env={})
    assert policy.routes[0].jurisdiction == "on-prem"
    assert policy.routes[0].model_id == "meta-llama/Llama-3.1-8B-Instruct"


def test_negative_price(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "    price:\n      input_per_mtok: -0.5\n      output_per_mtok: 1\n" + TENANTS
    assert one(issues(tmp_path, text), "greater than or equal to 0") == 7


def test_residency_naming_an_unknown_jurisdiction(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "tenants:\n  a:\n    residency: [eu, europe]\n"
    assert one(issues(tmp_path, text), "unknown jurisdiction 'europe'") == 8


def test_duplicate_route_ids(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + BEDROCK_70B + TENANTS
    assert one(issues(tmp_path, text), "duplicate route id 'bedrock-70b' (first on line 2)") == 6


def test_downgrade_to_unknown_model(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + textwrap.dedent("""\
        tenants:
          a:
            residency: [us]
            budget:
              monthly_usd: 10
              on_exceed: downgrade
              downgrade_to: llama-7b
        """)
    assert one(issues(tmp_path, text), "downgrade_to names unknown model 'llama-7b'") == 12


def test_downgrade_to_a_model_no_route_serves(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "tenants:\n  a:\n    residency: [us]\n" \
        "    budget: {monthly_usd: 10, on_exceed: downgrade, downgrade_to: llama-3.1-8b}\n"
    assert one(issues(tmp_path, text), "served by no route") == 9


def test_downgrade_without_target(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "tenants:\n  a:\n    residency: [us]\n    budget: {monthly_usd: 10, on_exceed: downgrade}\n"
    assert one(issues(tmp_path, text), "on_exceed: downgrade needs downgrade_to") == 9


def test_jurisdiction_contradicting_region(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "    jurisdiction: eu\n" + TENANTS
    found = issues(tmp_path, text)
    assert one(found, "jurisdiction 'eu' contradicts") == 6
    assert "'us'" in found[0][1]


def test_jurisdiction_contradicting_the_model_id_prefix(tmp_path: Path) -> None:
    text = """\
        routes:
          - id: x
            provider: bedrock
            model: llama-3.2-1b
            region: eu-central-1
            model_id: us.meta.llama3-2-1b-instruct-v1:0
            jurisdiction: eu
        tenants: {default: {residency: any}}
        """
    assert one(issues(tmp_path, text), "contradicts model id us.meta") == 7


def test_endpoint_host_contradicting_region(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "    endpoint: https://bedrock-runtime.eu-west-1.amazonaws.com\n" + TENANTS
    assert one(issues(tmp_path, text), "endpoint names region 'eu-west-1'") == 6


def test_regional_provider_needs_a_region(tmp_path: Path) -> None:
    text = "routes:\n  - {id: x, provider: vertex, model: llama-4-scout}\n" + TENANTS
    assert one(issues(tmp_path, text), "a vertex route needs a region (catalog regions for llama-4-scout: us-east5)") == 2


def test_local_route_needs_a_jurisdiction(tmp_path: Path) -> None:
    text = "routes:\n  - {id: x, provider: local, model: llama-3.1-8b}\n" + TENANTS
    assert one(issues(tmp_path, text), "jurisdiction unknown for provider 'local'") == 2


def test_route_outside_the_catalog_must_give_model_id(tmp_path: Path) -> None:
    text = "routes:\n  - {id: x, provider: azure, model: llama-4-scout, region: swedencentral}\n" + TENANTS
    assert one(issues(tmp_path, text), "no azure deployment of llama-4-scout in swedencentral") == 2


def test_unknown_model_and_unknown_tenant_provider(tmp_path: Path) -> None:
    text = """\
        routes:
          - {id: x, provider: groq, model: llama-9}
        tenants:
          a: {residency: any, providers: {deny: [groqq]}}
        """
    found = issues(tmp_path, text)
    assert one(found, "unknown model 'llama-9'") == 2
    assert one(found, "unknown provider 'groqq' in providers.deny") == 4


def test_ledger_must_be_a_database_url(tmp_path: Path) -> None:
    text = "ledger: /var/usage.db\nroutes:\n" + BEDROCK_70B + TENANTS
    assert one(issues(tmp_path, text), "ledger must be sqlite:///PATH or postgresql://") == 1


# --------------------------------------------------------------------------- all at once, YAML safety


def test_all_errors_are_reported_at_once_in_line_order(tmp_path: Path) -> None:
    text = """\
        routes:
          - id: a
            provider: bedrock
            model: llama-3.3-70b
            region: us-east-1
            colour: red
          - id: b
            provider: nimbus
            model: llama-3.3-70b
          - id: c
            provider: azure
            model: llama-3.3-70b
            region: swedencentral
            price: {input_per_mtok: -1, output_per_mtok: 1}
        tenants:
          t1: {residency: [mars]}
          t2: {objective: cheapest, residency: any}
        """
    found = issues(tmp_path, text)
    assert [line for line, _ in found] == [6, 8, 14, 16, 17]


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    found = issues(tmp_path, "routes:\n  - id: a\n    provider: [bedrock\n  - id: b\n")
    assert len(found) == 1 and found[0][1].startswith("YAML syntax error")
    assert found[0][0] in (3, 4)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "    region: us-west-2\n" + TENANTS + "  default: {residency: [eu]}\n"
    found = issues(tmp_path, text)
    assert one(found, "duplicate key 'region' (first given on line 5)") == 6
    assert one(found, "duplicate key 'default' (first given on line 8)") == 9


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        rows.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    start = time.perf_counter()
    found = issues(tmp_path, "\n".join(rows) + "\n")
    assert time.perf_counter() - start < 0.5
    assert any("refused" in m for _, m in found)


def test_merge_key_bomb_is_refused_fast(tmp_path: Path) -> None:
    rows = ["a: &a {x0: 1, x1: 1, x2: 1, x3: 1, x4: 1, x5: 1, x6: 1, x7: 1}"]
    for prev, name in zip("abcdefghijklmnop", "bcdefghijklmnopq"):
        merges = ", ".join(f"{{<<: *{prev}, k{i}: {i}}}" for i in range(8))
        rows.append(f"{name}: &{name} {{" + ", ".join(f"m{i}: {{<<: *{prev}}}" for i in range(8)) + f", all: [{merges}]}}")
    start = time.perf_counter()
    found = issues(tmp_path, "\n".join(rows) + "\n")
    assert time.perf_counter() - start < 0.5
    assert any("refused" in m for _, m in found)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    found = issues(tmp_path, "a: &a [1, *a]\n")
    assert any("recursive alias" in m for _, m in found)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    found = issues(tmp_path, "routes: !!python/object/apply:os.system ['true']\n")
    assert any("unsupported YAML tag" in m for _, m in found)


def test_anchors_and_merge_keys_work() -> None:
    policy = load_policy_text(
        "routes:\n  - &r {id: east, provider: bedrock, model: llama-3.3-70b, region: us-east-1}\n"
        "  - {<<: *r, id: west, region: us-west-2}\ntenants: {default: {residency: [us]}}\n",
        env={},
    )
    assert [(r.id, r.region) for r in policy.routes] == [("east", "us-east-1"), ("west", "us-west-2")]


# --------------------------------------------------------------------------- environment expansion


def test_env_expansion_and_defaults(tmp_path: Path) -> None:
    text = """\
        routes:
          - id: local
            provider: local
            model: llama-3.1-8b
            jurisdiction: on-prem
            endpoint: ${LOCAL_URL:-http://127.0.0.1:8000/v1}
          - id: bedrock
            provider: bedrock
            model: llama-3.3-70b
            region: ${AWS_REGION_X:-us-east-1}
            endpoint: ${BEDROCK_URL:-}
            options: {profile: "team$$5"}
        tenants: {default: {residency: [us, on-prem]}}
        """
    path = write(tmp_path, text)
    plain = load_policy(path, env={})
    assert plain.route("local").endpoint == "http://127.0.0.1:8000/v1"
    assert plain.route("bedrock").endpoint is None  # empty string means "provider default"
    assert plain.route("bedrock").options.get("profile") == "team$5"
    aimed = load_policy(path, env={"LOCAL_URL": "http://127.0.0.1:5001/v1", "BEDROCK_URL": "http://127.0.0.1:5002",
                                   "AWS_REGION_X": "us-west-2"})
    assert aimed.route("local").endpoint == "http://127.0.0.1:5001/v1"
    assert aimed.route("bedrock").endpoint == "http://127.0.0.1:5002"
    assert aimed.route("bedrock").region == "us-west-2"
    assert aimed.version != plain.version


def test_env_expansion_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BROKER_TEST_URL", "http://127.0.0.1:7777/v1")
    text = "routes:\n  - {id: l, provider: local, model: llama-3.1-8b, jurisdiction: on-prem, endpoint: '${LLAMA_BROKER_TEST_URL}'}\n" \
        "tenants: {default: {residency: [on-prem]}}\n"
    assert load_policy(write(tmp_path, text)).routes[0].endpoint == "http://127.0.0.1:7777/v1"


def test_unset_env_var_without_default_is_an_error(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "    endpoint: ${NOT_SET_ANYWHERE}\n" + TENANTS
    assert one(issues(tmp_path, text), "environment variable NOT_SET_ANYWHERE is not set") == 6


# --------------------------------------------------------------------------- extends


def test_extends_merges_routes_by_id_tenants_by_name_and_overrides_scalars(tmp_path: Path) -> None:
    write(tmp_path, """\
        ledger: sqlite:///org.db
        default_residency: [us]
        retry: {max_attempts_per_route: 5}
        routes:
          - {id: r1, provider: bedrock, model: llama-3.3-70b, region: us-east-1, timeout_s: 30}
          - {id: r2, provider: bedrock, model: llama-4-scout, region: us-east-1}
        tenants:
          default: {objective: cost}
          team: {objective: latency, tags: {a: "1"}}
        """, "base.yaml")
    child = write(tmp_path, """\
        extends: base.yaml
        ledger: sqlite:///team.db
        retry: {base_delay_s: 1.0}
        routes:
          - {id: r1, price: {input_per_mtok: "0.5", output_per_mtok: "0.6"}}
          - {id: r2, enabled: false}
          - {id: r3, provider: groq, model: llama-3.1-8b}
        tenants:
          team: {tags: {b: "2"}, residency: [us, unknown]}
        """, "team.yaml")
    policy = load_policy(child, env={})
    assert [r.id for r in policy.routes] == ["r1", "r3"]
    r1 = policy.route("r1")
    assert (r1.provider, r1.region, r1.timeout_s) == ("bedrock", "us-east-1", 30)
    assert r1.price is not None and r1.price.input_per_mtok == Decimal("0.5")
    assert r1.price.source is not None and "team.yaml" in r1.price.source
    assert policy.ledger == "sqlite:///team.db"
    assert (policy.retry.max_attempts_per_route, policy.retry.base_delay_s) == (5, 1.0)
    team = policy.tenant("team")
    assert team.objective == "latency" and team.tags == {"a": "1", "b": "2"}
    assert team.residency == ["us", "unknown"]
    assert policy.tenant("default").residency == ["us"]


def test_errors_in_an_extended_file_name_that_file(tmp_path: Path) -> None:
    write(tmp_path, "routes:\n" + BEDROCK_70B + "    colour: red\n", "base.yaml")
    child = write(tmp_path, "extends: [base.yaml]\n" + TENANTS, "team.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy(child, env={})
    [issue] = info.value.issues
    assert issue.file.endswith("base.yaml") and issue.line == 6


def test_extends_cycle_is_detected(tmp_path: Path) -> None:
    write(tmp_path, "extends: b.yaml\n" + "routes:\n" + BEDROCK_70B + TENANTS, "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "a.yaml", env={})
    [issue] = info.value.issues
    assert issue.file.endswith("b.yaml") and issue.line == 1
    assert "extends cycle: a.yaml -> b.yaml -> a.yaml" in issue.message


def test_extends_missing_file(tmp_path: Path) -> None:
    found = issues(tmp_path, "extends:\n  - nowhere.yaml\nroutes:\n" + BEDROCK_70B + TENANTS)
    assert one(found, "cannot read policy file") == 2


def test_dict_source_and_extends_from_dict(tmp_path: Path) -> None:
    base = write(tmp_path, "routes:\n" + BEDROCK_70B, "base.yaml")
    policy = load_policy({"extends": str(base), "tenants": {"default": {"residency": ["us"]}}}, env={})
    assert policy.source == "<dict>" and [r.id for r in policy.routes] == ["bedrock-70b"]
    with pytest.raises(PolicyError) as info:
        load_policy({"routes": [{"id": "x", "provider": "bedrock"}], "tenants": {}}, env={})
    assert all(str(i).startswith("<dict>:0: ") for i in info.value.issues)
    assert any("missing required key 'model'" in i.message for i in info.value.issues)


# --------------------------------------------------------------------------- resolution and the Policy object


def test_catalog_fills_model_id_price_capabilities_and_lifecycle(tmp_path: Path) -> None:
    text = """\
        routes:
          - {id: b, provider: bedrock, model: Llama-3.3-70B-Instruct, region: us-east-2,
             model_id: "meta.llama3-3-70b-instruct-v1:0", capabilities: {max_output_tokens: 2048}}
          - {id: m, provider: bedrock, model: llama-4-maverick, region: us-west-2}
          - {id: a, provider: azure, model: llama-3.3-70b, region: swedencentral, model_id: my-deployment,
             endpoint: "https://a.services.ai.azure.com/models"}
          - {id: z, provider: azure, model: llama-3.3-70b, region: eastus, price: null,
             endpoint: "https://z.services.ai.azure.com/models"}
        tenants: {default: {residency: any}}
        """
    policy = load_policy(write(tmp_path, text), env={})
    b = policy.route("b")
    assert b.model == "llama-3.3-70b" and b.jurisdiction == "us"
    assert b.price is not None and b.price.input_per_mtok == Decimal("0.72") and b.price.source and b.price.as_of
    assert (b.capabilities.context_window, b.capabilities.max_output_tokens) == (128_000, 2048)
    assert b.lifecycle.status == "deprecated" and str(b.lifecycle.retires_on) == "2027-03-30"
    m = policy.route("m")
    assert m.model_id == "us.meta.llama4-maverick-17b-instruct-v1:0" and m.capabilities.streaming_tools is False
    a = policy.route("a")  # a custom deployment name keeps the catalog price of its (provider, model, region)
    assert a.model_id == "my-deployment" and a.price is not None and a.price.input_per_mtok == Decimal("0.71")
    assert a.jurisdiction == "eu"
    assert policy.route("z").price is None  # explicit null: unknown cost


def test_residency_defaults_and_any(tmp_path: Path) -> None:
    text = "default_residency: [eu]\nroutes:\n" + BEDROCK_70B + "tenants:\n  a: {}\n  b: {residency: any}\n  c: {residency: [us]}\n"
    policy = load_policy(write(tmp_path, text), env={})
    assert policy.tenant("a").residency == ["eu"]
    assert policy.tenant("b").residency is None and policy.tenant("b").allows_jurisdiction("unknown")
    assert policy.tenant("c").allows_jurisdiction("us") and not policy.tenant("c").allows_jurisdiction("global")


def test_residency_must_be_stated_somewhere(tmp_path: Path) -> None:
    found = issues(tmp_path, "routes:\n" + BEDROCK_70B + "tenants:\n  a: {objective: cost}\n")
    assert one(found, "residency is not set and the policy has no default_residency") == 7


def test_policy_without_tenants_gets_a_default_from_default_residency(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "default_residency: any\nroutes:\n" + BEDROCK_70B), env={})
    assert policy.tenant("default").name == "default" and policy.tenant("default").residency is None


def test_tenant_lookup_falls_back_to_default_or_raises(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "routes:\n" + BEDROCK_70B + "tenants:\n  acme: {residency: [us]}\n"), env={})
    assert policy.tenant("acme").name == "acme"
    with pytest.raises(UnknownTenant, match="'nobody'"):
        policy.tenant("nobody")


def test_resolve_model_and_unknown_model(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "routes:\n" + BEDROCK_70B + TENANTS), env={})
    assert policy.resolve_model("meta-llama/Llama-3.3-70B-Instruct") == "llama-3.3-70b"
    assert policy.resolve_model("LLAMA-3.3-70B") == "llama-3.3-70b"
    with pytest.raises(NoEligibleRoute, match="'gpt-4o'.*serves: llama-3.3-70b"):
        policy.resolve_model("gpt-4o")


def test_settings_defaults_and_version_hash(tmp_path: Path) -> None:
    path = write(tmp_path, "routes:\n" + BEDROCK_70B + TENANTS)
    policy = load_policy(path, env={})
    assert (policy.metering.durable, policy.metering.store_text, policy.metering.max_buffer) == (False, False, 10_000)
    assert (policy.retry.max_attempts_per_route, policy.retry.budget_ratio) == (3, 0.2)
    assert (policy.circuit.failure_threshold, policy.circuit.window_s, policy.circuit.cooldown_s) == (5, 30, 15)
    assert policy.ledger is None and len(policy.version) == 12
    assert load_policy(path, env={}).version == policy.version
    changed = write(tmp_path, "routes:\n" + BEDROCK_70B + "    price: {input_per_mtok: 1, output_per_mtok: 1}\n" + TENANTS, "b.yaml")
    assert load_policy(changed, env={}).version != policy.version


def test_policy_catalog_section_adds_models_and_deployments(tmp_path: Path) -> None:
    text = """\
        catalog:
          models:
            acme-8b: {aliases: [acme/8b], capabilities: {tools: false, context_window: 8192}}
          deployments:
            - {provider: bedrock, model: llama-3.3-70b, region: us-east-1, model_id: "us.meta.llama3-3-70b-instruct-v1:0",
               price: {input_per_mtok: "0.50", output_per_mtok: "0.50", source: contract}}
        routes:
          - {id: ft, provider: local, model: acme/8b, jurisdiction: on-prem, model_id: acme-8b,
             endpoint: "http://gpu-box:8000/v1"}
          - {id: b, provider: bedrock, model: llama-3.3-70b, region: us-east-1}
        tenants: {default: {residency: [us, on-prem]}}
        """
    policy = load_policy(write(tmp_path, text), env={})
    ft = policy.route("ft")
    assert ft.model == "acme-8b" and ft.capabilities.tools is False and ft.capabilities.context_window == 8192
    b = policy.route("b")
    assert b.price is not None and b.price.input_per_mtok == Decimal("0.50") and b.price.source == "contract"
    assert policy.catalog.model_for("ACME/8B") == "acme-8b"


def test_policy_catalog_alias_conflict(tmp_path: Path) -> None:
    text = "catalog:\n  models:\n    mine:\n      aliases: [llama-3.3-70b-instruct]\nroutes:\n" + BEDROCK_70B + TENANTS
    assert one(issues(tmp_path, text), "alias 'llama-3.3-70b-instruct' already names 'llama-3.3-70b'") == 4


def test_models_allow_is_resolved_to_logical_ids(tmp_path: Path) -> None:
    text = "routes:\n" + BEDROCK_70B + "tenants:\n  a: {residency: [us], models: {allow: [Llama-3.3-70B-Instruct]}}\n"
    tenant = load_policy(write(tmp_path, text), env={}).tenant("a")
    assert tenant.allows_model("llama-3.3-70b") and not tenant.allows_model("llama-3.1-8b")


def test_a_later_files_catalog_deployment_wins(tmp_path: Path) -> None:
    row = "catalog:\n  deployments:\n    - {provider: bedrock, model: llama-3.3-70b, region: us-east-1, model_id: %s, " \
          "price: {input_per_mtok: %s, output_per_mtok: 1}}\n"
    write(tmp_path, row % ("base-id", "0.1") + "routes:\n" + BEDROCK_70B + TENANTS, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\n" + row % ("team-id", "0.2"), "team.yaml")
    route = load_policy(child, env={}).routes[0]
    assert route.model_id == "team-id" and route.price is not None and route.price.input_per_mtok == Decimal("0.2")


def test_names_are_checked_even_in_a_route_with_other_errors(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "version: 1\n"
        "routes:\n"
        "  - id: a\n"
        "    provider: bedrokc\n"
        "    model: llama-3.3-70b\n"
        "    price: {input_per_mtok: -1, output_per_mtok: 1}\n"
        "  - id: b\n"
        "    provider: bedrock\n"
        "    model: llama-3.3-70b\n"
        "    region: eu-moon-1\n"
        "    timeout_s: fast\n"
        "tenants:\n"
        "  default: {residency: [eu]}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    lines = {(i.line, i.message.split(":")[0]) for i in info.value.issues}
    messages = "\n".join(str(i) for i in info.value.issues)
    assert f"{path}:4: route 'a': unknown provider 'bedrokc'" in messages
    assert f"{path}:6:" in messages  # the negative price
    assert f"{path}:10: route 'b': unknown region 'eu-moon-1'" in messages
    assert f"{path}:11:" in messages  # the wrong type
    assert len(lines) == 4
