"""`import broker` stays light: no CLI, rendering or telemetry libraries, no pydantic, no HTTP stacks."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("rich", "click", "pygments", "typer", "opentelemetry", "httpx", "aiohttp", "pydantic", "yaml")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_import_broker_pulls_in_no_heavy_library() -> None:
    assert top_level(loaded_after("import broker")) & set(HEAVY) == set()


def test_the_client_does_not_pull_in_the_cli_libraries_nor_package_metadata() -> None:
    loaded = loaded_after("from broker import Broker, AsyncBroker")
    assert top_level(loaded) & {"rich", "click", "pygments", "typer", "opentelemetry"} == set()
    assert "importlib.metadata" not in loaded  # entry points are read when a registry is first consulted


def test_lazy_names_resolve_to_the_real_objects() -> None:
    import broker
    from broker.client import Broker
    from broker.routes import Route
    from broker.types import ChatRequest

    assert broker.Broker is Broker and broker.Route is Route and broker.ChatRequest is ChatRequest
    assert set(broker.__all__) <= set(dir(broker))
