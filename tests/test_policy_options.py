"""Typed provider options: each adapter's options model is checked at load, with lines and hints.

The same model (and its `check`) is what the adapter reads at construction, so a policy that
loads builds adapters that accept it, and an option typo, a wrong type or a local route without
an endpoint fails `load_policy` instead of every call.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters.azure import AzureOptions
from adapters.bedrock import BedrockOptions
from adapters.local import LocalAdapter, LocalOptions
from adapters.vertex import VertexOptions
from broker.adapter import AdapterRegistry
from broker.errors import PolicyError
from broker.policy import load_policy
from broker.routes import Route, RouteOptions
from broker.transport import HttpClients

TENANTS = "tenants:\n  default: {residency: any}\n"


def issues(tmp_path: Path, routes: str) -> list[tuple[int, str]]:
    path = tmp_path / "policy.yaml"
    path.write_text("routes:\n" + textwrap.dedent(routes) + TENANTS)
    with pytest.raises(PolicyError) as info:
        load_policy(path, env={})
    return [(i.line, i.message) for i in info.value.issues]


def test_option_typo_is_reported_on_its_line_with_a_suggestion(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
      - id: v
        provider: vertex
        model: llama-4-maverick
        region: us-east5
        options:
          project: p
          endpoit_id: "1234"
    """)
    assert found == [(8, "routes[0].options: unknown key 'endpoit_id' (did you mean 'endpoint_id'?)")]


def test_option_of_the_wrong_type(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
      - {id: l, provider: local, model: llama-3.1-8b, jurisdiction: on-prem, endpoint: "http://h:8000/v1",
         options: {stream_usage: sometimes}}
      - id: b
        provider: bedrock
        model: llama-3.3-70b
        region: us-east-1
        options: {max_pool_connections: 0}
    """)
    assert (3, "routes[0].options.stream_usage: Input should be a valid boolean, unable to interpret input "
               "(got 'sometimes')") in found
    assert (8, "routes[1].options.max_pool_connections: Input should be greater than or equal to 1 (got 0)") in found


def test_local_route_without_endpoint_fails_at_load(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
      - id: gpu
        provider: local
        model: llama-3.1-8b
        jurisdiction: on-prem
    """)
    assert found == [(2, "route 'gpu': a local runner needs `endpoint:` (e.g. http://gpu-box:8000/v1)")]


def test_azure_route_without_endpoint_fails_at_load(tmp_path: Path) -> None:
    found = issues(tmp_path, "  - {id: az, provider: azure, model: llama-3.3-70b, region: swedencentral}\n")
    assert found == [(2, "route 'az': an azure route needs `endpoint:` (e.g. https://<resource>.services.ai.azure.com/models)")]


def test_vertex_location_contradicting_region_points_at_the_option(tmp_path: Path) -> None:
    found = issues(tmp_path, """\
      - id: v
        provider: vertex
        model: llama-4-maverick
        region: us-east5
        options:
          project: p
          location: europe-west4
    """)
    assert found == [(8, "route 'v': options.location 'europe-west4' contradicts region 'us-east5'; "
                         "the location is the region (residency is derived from it)")]


def test_credential_references_must_be_variable_names_and_are_never_echoed(tmp_path: Path) -> None:
    secret = "sk-live-9f8e7d/6c5b"
    groq_key = "gsk_canary0123456789abcdef"
    found = issues(tmp_path, f"""\
      - {{id: g, provider: groq, model: llama-4-scout, api_key_env: "{groq_key}"}}
      - {{id: a, provider: azure, model: llama-3.3-70b, region: swedencentral,
         endpoint: "https://r.services.ai.azure.com/models", api_key_env: "{secret}"}}
      - id: v
        provider: vertex
        model: llama-4-maverick
        region: us-east5
        options: {{project: p, access_token_env: "ya29.token-value"}}
    """)
    lines = dict(found)
    assert "looks like a Groq API key" in lines[2]
    assert "api_key_env: must name an environment variable" in lines[4]
    assert "must name an environment variable" in lines[9]
    text = "\n".join(m for _, m in found)
    assert secret not in text and groq_key not in text and "ya29" not in text


def test_the_loaded_route_carries_the_adapters_typed_options(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent("""\
        routes:
          - {id: l, provider: local, model: llama-3.1-8b, jurisdiction: on-prem, endpoint: "http://127.0.0.1:1/v1",
             options: {stream_usage: "no", stream_fallback: false}}
          - {id: b, provider: bedrock, model: llama-3.3-70b, region: us-east-1, options: {profile: work}}
          - {id: v, provider: vertex, model: llama-4-maverick, region: us-east5, options: {project: p}}
          - {id: a, provider: azure, model: llama-3.3-70b, region: swedencentral,
             endpoint: "https://r.services.ai.azure.com/models", options: {api_version: "2024-05-01-preview"}}
        """) + TENANTS)
    policy = load_policy(path, env={})
    local = policy.route("l").options
    assert isinstance(local, LocalOptions) and local.stream_usage is False and local.stream_fallback is False
    assert local.get("stream_fallback") is False  # the core's generic read
    bedrock = policy.route("b").options
    assert isinstance(bedrock, BedrockOptions) and bedrock.profile == "work" and bedrock.max_pool_connections == 50
    assert isinstance(policy.route("v").options, VertexOptions)
    azure = policy.route("a").options
    assert isinstance(azure, AzureOptions) and azure.api_version == "2024-05-01-preview"
    adapter = LocalAdapter(policy.route("l"), http=HttpClients())
    assert adapter.opts is local and adapter.include_stream_usage is False


def test_the_adapter_refuses_what_the_loader_refuses_with_the_same_words() -> None:
    route = Route(id="gpu", provider="local", model="llama-3.1-8b", model_id="m", jurisdiction="on-prem")
    with pytest.raises(PolicyError, match=r"route 'gpu': a local runner needs `endpoint:`"):
        LocalAdapter(route, http=HttpClients())
    typo = route.model_copy(update={"endpoint": "http://h/v1", "options": {"stream_usgae": False}})
    with pytest.raises(PolicyError, match="stream_usgae"):
        LocalAdapter(typo, http=HttpClients())


def test_reading_options_models_imports_no_sdk() -> None:
    code = textwrap.dedent("""\
        import sys
        from broker.adapter import AdapterRegistry
        registry = AdapterRegistry()
        for name in ("local", "bedrock", "vertex", "azure", "groq"):
            assert registry.options_model(name) is not None, name
        heavy = [m for m in ("boto3", "botocore", "groq", "azure.ai.inference", "google.auth") if m in sys.modules]
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def install_third_party(tmp_path: Path, source: str) -> None:
    pkg = tmp_path / "acme_adapter"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "acme_adapter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-adapter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[llama_broker.adapters]\nacme = acme_adapter:AcmeAdapter\n")


@pytest.fixture
def third_party(tmp_path: Path):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("acme_adapter", None)


ACME_ROUTE = "  - {id: x, provider: acme, model: llama-3.1-8b, model_id: m, jurisdiction: on-prem, options: %s}\n"


def test_a_third_party_options_model_is_honoured(third_party: Path) -> None:
    install_third_party(third_party, """\
        from pydantic import ConfigDict
        from broker.adapter import AdapterBase
        from broker.routes import OptionProblem, RouteOptions

        class AcmeOptions(RouteOptions):
            model_config = ConfigDict(extra="forbid", frozen=True)
            zone: str = "a"
            def check(self, route):
                if self.zone == "z":
                    yield OptionProblem("options.zone", "zone z is closed")

        class AcmeAdapter(AdapterBase):
            provider = "acme"
            options = AcmeOptions
    """)
    assert AdapterRegistry().options_model("acme").__name__ == "AcmeOptions"  # type: ignore[union-attr]
    found = issues(third_party, ACME_ROUTE % "{zoen: b}")
    assert found == [(2, "routes[0].options: unknown key 'zoen' (did you mean 'zone'?)")]
    assert issues(third_party, ACME_ROUTE % "{zone: z}") == [(2, "route 'x': zone z is closed")]
    (third_party / "policy.yaml").write_text("routes:\n" + ACME_ROUTE % "{zone: b}" + TENANTS)
    options = load_policy(third_party / "policy.yaml", env={}).route("x").options
    assert type(options).__name__ == "AcmeOptions" and options.get("zone") == "b"


def test_a_third_party_adapter_without_an_options_model_gets_a_plain_mapping(third_party: Path) -> None:
    install_third_party(third_party, """\
        def AcmeAdapter(route, *, http):
            raise NotImplementedError
    """)
    (third_party / "policy.yaml").write_text("routes:\n" + ACME_ROUTE % "{anything: [1, 2], deep: {x: 1}}" + TENANTS)
    options = load_policy(third_party / "policy.yaml", env={}).route("x").options
    assert type(options) is RouteOptions
    assert options.get("anything") == [1, 2] and options.as_dict() == {"anything": [1, 2], "deep": {"x": 1}}
