"""Package hygiene: public surface, lazy imports, adapter discovery by entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import broker
from broker.adapter import AdapterBase, AdapterRegistry
from broker.errors import AdapterNotFound

HEAVY_SDKS = ("boto3", "botocore", "google.auth", "google.cloud", "azure", "groq", "openai", "psycopg", "plotly")


def test_public_names_are_sorted_and_all_resolve() -> None:
    assert broker.__all__ == sorted(broker.__all__)
    for name in broker.__all__:
        assert getattr(broker, name) is not None


def _imported_after(statement: str) -> set[str]:
    """Modules a statement imports beyond what the bare interpreter (with its .pth files) loads."""
    def modules(code: str) -> set[str]:
        run = subprocess.run([sys.executable, "-c", f"import sys; {code}; print('\\n'.join(sys.modules))"],
                             capture_output=True, text=True, check=True)
        return set(run.stdout.split())

    return modules(statement) - modules("pass")


@pytest.mark.parametrize("statement", ["import broker", "from broker import Broker; Broker"])
def test_importing_broker_loads_no_provider_sdk(statement: str) -> None:
    loaded = _imported_after(statement)
    heavy = sorted(m for m in loaded if m.split(".")[0] in {h.split(".")[0] for h in HEAVY_SDKS} and
                   any(m == h or m.startswith(h + ".") for h in HEAVY_SDKS))
    assert heavy == []


def test_importtime_report_shows_no_sdk() -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import broker; broker.Broker"],
                            capture_output=True, text=True, check=True)
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {m for m in modules if m.split(".")[0] in ("boto3", "botocore", "groq", "azure")}


def test_registry_resolves_builtins_lazily_and_reports_unknown() -> None:
    registry = AdapterRegistry()
    assert "local" in registry and "bedrock" in registry
    assert registry.get("local").__name__ == "LocalAdapter"
    with pytest.raises(AdapterNotFound, match="nosuch"):
        registry.get("nosuch")


def test_third_party_adapter_found_through_entry_point(tmp_path: Path) -> None:
    pkg = tmp_path / "acme_adapter"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from broker.adapter import AdapterBase
        class AcmeAdapter(AdapterBase):
            provider = "acme"
    """))
    dist = tmp_path / "acme_adapter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-adapter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[llama_broker.adapters]\nacme = acme_adapter:AcmeAdapter\n")
    sys.path.insert(0, str(tmp_path))
    try:
        registry = AdapterRegistry()
        assert "acme" in registry
        cls = registry.get("acme")
        assert issubclass(cls, AdapterBase) and cls.__name__ == "AcmeAdapter"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_adapter", None)


def test_registered_factory_overrides_a_builtin() -> None:
    class Custom(AdapterBase):
        provider = "local"

    registry = AdapterRegistry({"local": Custom})
    assert registry.get("local") is Custom
