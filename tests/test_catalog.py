"""The built-in catalog and the jurisdiction table: facts, provenance, lifecycle, aliases."""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from broker.errors import NoEligibleRoute, PolicyError
from broker.policy import JURISDICTIONS, builtin_catalog, load_catalog

DATA = Path(__file__).resolve().parent.parent / "broker" / "data"


@pytest.fixture(scope="module")
def cat():  # type: ignore[no-untyped-def]
    return builtin_catalog()


def test_catalog_is_dated_and_covers_every_model_and_provider(cat) -> None:  # type: ignore[no-untyped-def]
    assert cat.as_of == dt.date(2026, 11, 23)
    assert set(cat.models) == {
        "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b",
        "llama-3.2-11b-vision", "llama-3.2-90b-vision", "llama-3.3-70b", "llama-4-scout", "llama-4-maverick",
    }
    assert {e.provider for e in cat.entries} == {"bedrock", "vertex", "azure", "groq", "local"}


def test_every_price_is_decimal_with_source_and_date(cat) -> None:  # type: ignore[no-untyped-def]
    priced = [e for e in cat.entries if e.price is not None]
    assert len(priced) > 30
    for e in priced:
        assert isinstance(e.price.input_per_mtok, Decimal) and isinstance(e.price.output_per_mtok, Decimal)
        assert e.price.source and e.price.source.startswith("["), e
        assert e.price.as_of is not None
    assert all(e.price is None for e in cat.entries if e.provider == "local")


@pytest.mark.parametrize(
    ("provider", "model", "region", "model_id", "price_in", "price_out"),
    [
        ("bedrock", "llama-3.3-70b", "us-east-1", "us.meta.llama3-3-70b-instruct-v1:0", "0.72", "0.72"),
        ("bedrock", "llama-3.2-1b", "eu-west-1", "eu.meta.llama3-2-1b-instruct-v1:0", "0.13", "0.13"),
        ("bedrock", "llama-4-maverick", "us-west-1", "us.meta.llama4-maverick-17b-instruct-v1:0", "0.24", "0.97"),
        ("vertex", "llama-4-scout", "us-east5", "meta/llama-4-scout-17b-16e-instruct-maas", "0.25", "0.70"),
        ("vertex", "llama-3.1-405b", "us-central1", "meta/llama-3.1-405b-instruct-maas", "5.00", "16.00"),
        ("azure", "llama-3.3-70b", "swedencentral", "Llama-3.3-70B-Instruct", "0.71", "0.71"),
        ("azure", "llama-4-maverick", "global-standard", "Llama-4-Maverick-17B-128E-Instruct-FP8", "0.25", "1.00"),
        ("groq", "llama-3.1-8b", None, "llama-3.1-8b-instant", "0.05", "0.08"),
        ("groq", "llama-4-scout", None, "meta-llama/llama-4-scout-17b-16e-instruct", "0.11", "0.34"),
    ],
)
def test_reference_facts(cat, provider, model, region, model_id, price_in, price_out) -> None:  # type: ignore[no-untyped-def]
    entry = cat.find(provider, model, region)
    assert entry is not None and entry.model_id == model_id
    assert entry.price is not None
    assert (entry.price.input_per_mtok, entry.price.output_per_mtok) == (Decimal(price_in), Decimal(price_out))


def test_find_prefers_the_exact_model_id_then_the_first_listed(cat) -> None:  # type: ignore[no-untyped-def]
    assert cat.find("bedrock", "llama-3.3-70b", "us-east-2").model_id.startswith("us.")
    assert cat.find("bedrock", "llama-3.3-70b", "us-east-2", "meta.llama3-3-70b-instruct-v1:0").model_id == \
        "meta.llama3-3-70b-instruct-v1:0"
    assert cat.find("bedrock", "llama-3.3-70b", "eu-central-1") is None
    assert cat.find("local", "llama-3.1-8b", "eu-central-1").model_id == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(
    ("provider", "model", "region", "status", "date"),
    [
        ("vertex", "llama-3.3-70b", "us-central1", "retired", "2026-10-21"),
        ("azure", "llama-3.1-405b", "eastus", "retired", "2026-06-13"),
        ("azure", "llama-3.1-8b", "swedencentral", "retired", "2026-06-13"),
        ("azure", "llama-3.2-11b-vision", "eastus", "retired", "2026-06-13"),
        ("azure", "llama-3.2-90b-vision", "eastus", "retired", "2026-06-13"),
        ("bedrock", "llama-3.2-3b", "eu-central-1", "retired", "2026-07-07"),
        ("bedrock", "llama-3.1-405b", "us-west-2", "retired", "2026-07-07"),
        ("groq", "llama-3.3-70b", None, "retired", "2026-08-16"),
        ("bedrock", "llama-3.3-70b", "us-east-1", "deprecated", "2027-03-30"),
        ("azure", "llama-3.3-70b", "eastus", "ga", None),
    ],
)
def test_lifecycle(cat, provider, model, region, status, date) -> None:  # type: ignore[no-untyped-def]
    life = cat.find(provider, model, region).lifecycle
    assert life.status == status
    assert (str(life.retires_on) if life.retires_on else None) == date
    assert life.note
    assert life.is_retired(dt.date(2026, 11, 23)) is (status == "retired")


def test_capabilities(cat) -> None:  # type: ignore[no-untyped-def]
    for model in ("llama-4-scout", "llama-4-maverick"):
        # Llama 4 streams on Bedrock, but not with tools (ConverseStream with tools is refused)
        assert all(e.capabilities.streaming and not e.capabilities.streaming_tools
                   for e in cat.entries_for(model, provider="bedrock"))
        assert all(e.capabilities.streaming for e in cat.entries_for(model, provider="groq"))
    bedrock = cat.find("bedrock", "llama-3.3-70b", "us-east-1").capabilities
    assert (bedrock.context_window, bedrock.max_output_tokens) == (128_000, 4096)
    assert cat.find("azure", "llama-4-maverick", "global-standard").capabilities.context_window == 1_000_000
    assert cat.find("groq", "llama-3.3-70b", None).capabilities.max_output_tokens == 32_768
    assert cat.models["llama-3.2-11b-vision"].capabilities.vision
    assert not cat.models["llama-3.1-8b"].capabilities.vision


@pytest.mark.parametrize(
    "name",
    ["llama-3.3-70b", "meta/llama-3.3-70b-instruct", "Llama-3.3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
     "LLAMA-3.3-70B", "us.meta.llama3-3-70b-instruct-v1:0", "meta.llama3-3-70b-instruct-v1:0",
     "llama-3.3-70b-instruct-maas", "meta/llama-3.3-70b-instruct-maas", "llama-3.3-70b-versatile", "llama3.3:70b"],
)
def test_aliases_resolve_to_one_logical_model(cat, name) -> None:  # type: ignore[no-untyped-def]
    assert cat.model_for(name) == "llama-3.3-70b"


def test_other_aliases(cat) -> None:  # type: ignore[no-untyped-def]
    assert cat.model_for("meta-llama/llama-4-maverick-17b-128e-instruct") == "llama-4-maverick"
    assert cat.model_for("Llama-4-Maverick-17B-128E-Instruct-FP8") == "llama-4-maverick"
    assert cat.model_for("llama-3.1-8b-instant") == "llama-3.1-8b"
    assert cat.model_for("gpt-4o") is None
    with pytest.raises(NoEligibleRoute, match="gpt-4o"):
        cat.resolve_model("gpt-4o")


@pytest.mark.parametrize(
    ("provider", "region", "model_id", "expected"),
    [
        ("bedrock", "us-east-1", "meta.llama3-3-70b-instruct-v1:0", "us"),
        ("bedrock", "eu-central-1", "eu.meta.llama3-2-1b-instruct-v1:0", "eu"),
        ("bedrock", "eu-central-1", "us.meta.llama3-2-1b-instruct-v1:0", "us"),  # prefix beats region
        ("bedrock", "eu-west-1", "global.meta.some-model-v1:0", "global"),
        ("bedrock", "ap-south-1", "apac.meta.some-model-v1:0", "apac"),
        ("bedrock", "ap-south-1", "meta.llama3-8b-instruct-v1:0", "in"),
        ("bedrock", "eu-west-2", "meta.llama3-8b-instruct-v1:0", "uk"),
        ("bedrock", "us-gov-west-1", None, "us"),
        ("bedrock", "us-east-1", "arn:aws:bedrock:us-east-1:1:inference-profile/eu.meta.x-v1:0", "eu"),
        ("vertex", "us-east5", None, "us"),
        ("vertex", "europe-west4", None, "eu"),
        ("vertex", "global", None, "global"),
        ("azure", "swedencentral", None, "eu"),
        ("azure", "global-standard", None, "global"),
        ("azure", "eastus2", None, "us"),
        ("groq", None, "llama-3.1-8b-instant", "unknown"),
        ("local", "eu-central-1", None, "eu"),   # unlisted providers look in every table
        ("local", None, None, None),
        ("azure", "us-east-1", None, None),     # an AWS region is not an Azure one
    ],
)
def test_jurisdiction_derivation(cat, provider, region, model_id, expected) -> None:  # type: ignore[no-untyped-def]
    assert cat.jurisdictions.derive(provider, region, model_id)[0] == expected


def test_endpoint_region(cat) -> None:  # type: ignore[no-untyped-def]
    j = cat.jurisdictions
    assert j.endpoint_region("bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com") == "eu-west-1"
    assert j.endpoint_region("bedrock", "https://bedrock-runtime-fips.us-east-1.amazonaws.com") == "us-east-1"
    assert j.endpoint_region("vertex", "https://us-east5-aiplatform.googleapis.com/v1") == "us-east5"
    assert j.endpoint_region("bedrock", "http://127.0.0.1:9000") is None


def test_jurisdiction_set_in_data_matches_the_schema() -> None:
    data = yaml.safe_load((DATA / "jurisdictions.yaml").read_text())
    assert set(data["jurisdictions"]) == JURISDICTIONS
    for cloud in data["clouds"].values():
        assert set(cloud["regions"].values()) <= JURISDICTIONS


def test_every_catalog_region_has_a_jurisdiction(cat) -> None:  # type: ignore[no-untyped-def]
    for e in cat.entries:
        if e.provider != "local":
            assert cat.jurisdictions.derive(e.provider, e.region, e.model_id)[0] is not None, e


def test_custom_catalog_errors_have_lines(tmp_path: Path) -> None:
    path = tmp_path / "cat.yaml"
    path.write_text(textwrap.dedent("""\
        models:
          m1: {aliases: [one]}
        deployments:
          - {provider: bedrock, model: m2, region: us-east-1, model_id: x}
          - {provider: bedrock, model: m1, model_id: y}
          - {provider: bedrock, model: one, region: mars-1, model_id: z}
          - {provider: groq, model: m1, model_id: w, price: {input_per_mtok: 1}}
        """))
    with pytest.raises(PolicyError) as info:
        load_catalog(path)
    found = {(i.line, i.message.split(";")[0]) for i in info.value.issues}
    assert (4, "unknown model 'm2'") in found
    assert (5, "a bedrock deployment needs a region") in found
    assert (6, "unknown region 'mars-1' for bedrock") in found
    assert any(line == 7 and "missing required key 'output_per_mtok'" in m for line, m in found)


def test_custom_catalog_loads(tmp_path: Path) -> None:
    path = tmp_path / "cat.yaml"
    path.write_text("as_of: 2027-01-01\nmodels:\n  m1: {}\ndeployments:\n"
                    "  - {provider: groq, model: m1, model_id: w, price: {input_per_mtok: 1, output_per_mtok: 2}}\n")
    cat = load_catalog(path)
    assert cat.as_of == dt.date(2027, 1, 1) and cat.model_for("w") == "m1"
    assert cat.find("groq", "m1", None).price.output_per_mtok == Decimal(2)
