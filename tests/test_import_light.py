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


CLIENT_NEVER = ("rich", "click", "typer", "pygments", "opentelemetry", "psycopg", "redis", "c2pa", "plotly", "boto3",
                "groq", "azure")
OPTIONAL_PARTS = ("broker.limits.hook", "broker.limits.windows", "broker.budgets.hook", "broker.budgets.store",
                  "broker.guardrails", "broker.energy.counters", "broker.energy.attribution", "broker.policy.licence",
                  "broker.policy.loader", "broker.policy.catalog", "broker.cli", "broker.reports", "broker.gateway")


def test_from_broker_import_broker_pulls_in_no_cli_cloud_or_optional_library() -> None:
    at_start = loaded_after("pass")  # namespace packages such as `google.cloud` come from .pth files at start-up
    loaded = loaded_after("from broker import Broker") - at_start
    assert "broker.client" in loaded  # the probe really imported the client
    assert top_level(loaded) & {*CLIENT_NEVER, "google"} == set()
    assert "yaml" not in top_level(loaded)  # read when a policy file is loaded
    assert {m for m in loaded if m in OPTIONAL_PARTS or m.startswith(tuple(f"{p}." for p in OPTIONAL_PARTS))} == set()


#: what `from broker import Broker` leaves for later: the retry machinery (a route's first failure), asyncio
#: (the first async call), the policy schema and loader, the router, the executor, the meter and the report
#: filters, the call hooks' packages (a broker's construction)
DEFERRED = ("tenacity", "asyncio", "broker.retry_strategies", "broker.policy.schema", "broker.policy.loader",
            "broker.policy.engine", "broker.policy.filters", "broker.policy.budget", "broker.execute",
            "broker.call_hooks", "broker.metering.meter", "broker.metering.query", "broker.metering.location",
            "broker.audit", "broker.budgets", "broker.energy", "broker.telemetry")


def test_from_broker_import_broker_defers_what_only_a_broker_or_a_call_needs() -> None:
    loaded = loaded_after("from broker import Broker, AsyncBroker") - loaded_after("pass")
    assert "broker.core" in loaded
    assert {m for m in loaded if m.startswith(tuple(f"{d}." for d in DEFERRED)) or m in DEFERRED} == set()


PLAIN = {"version": 1, "ledger": "sqlite:///:memory:",
         "routes": [{"id": "r", "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
                     "endpoint": "http://127.0.0.1:9/v1", "jurisdiction": "eu"}],
         "tenants": {"default": {"residency": ["eu"]}}}


def test_a_broker_loads_no_retry_machinery_until_a_route_fails() -> None:
    loaded = loaded_after(f"from broker import Broker\nBroker({PLAIN!r}).close()")
    assert "broker.execute" in loaded and "broker.policy.schema" in loaded  # the broker was really built
    assert "tenacity" not in top_level(loaded) and "broker.retry_strategies" not in loaded


def test_the_retry_rule_builds_its_strategies_and_async_sleep_on_first_use() -> None:
    import asyncio

    from broker.health import CircuitBoard
    from broker.policy.schema import RetrySettings
    from broker.retry import RetryRule, WaitForHint
    from broker.retry_strategies import WaitForHint as StrategiesWaitForHint

    rule = RetryRule(RetrySettings(max_attempts_per_route=2), circuits=CircuitBoard(), sleep=lambda s: None)
    assert rule.asleep is asyncio.sleep
    assert WaitForHint is StrategiesWaitForHint and isinstance(rule.wait, WaitForHint)
    assert rule.strategies is rule.strategies  # built once


def test_optional_parts_load_only_when_a_policy_turns_them_on() -> None:
    plain = PLAIN
    limited = {**plain, "tenants": {"default": {"residency": ["eu"], "rate_limit": {"rpm": 60}}}}
    probe = "from broker import Broker\nBroker({policy!r}).close()"
    without = loaded_after(probe.format(policy=plain))
    assert "yaml" in top_level(without)  # the embedded catalog is YAML: loaded on construction, not import
    assert {m for m in without if m.startswith(("broker.limits.hook", "broker.budgets.hook", "broker.guardrails",
                                                "broker.energy.counters", "broker.policy.licence"))} == set()
    assert "broker.limits.hook" in loaded_after(probe.format(policy=limited))


def test_lazy_names_resolve_to_the_real_objects() -> None:
    import broker
    from broker.client import Broker
    from broker.routes import Route
    from broker.types import ChatRequest

    assert broker.Broker is Broker and broker.Route is Route and broker.ChatRequest is ChatRequest
    assert set(broker.__all__) <= set(dir(broker))


def test_lazy_package_names_resolve_to_the_real_objects() -> None:
    import importlib

    for package in ("broker.policy", "broker.limits", "broker.budgets", "broker.energy", "broker.metering"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"
    from broker.limits.hook import RateLimits
    from broker.policy import Policy, load_policy
    from broker.policy.loaded import Policy as LoadedPolicy
    from broker.policy.loader import load_policy as loader_load_policy

    assert Policy is LoadedPolicy and load_policy is loader_load_policy
    from broker.metering import Meter, ReportFilters
    from broker.metering.meter import Meter as MeterModule
    from broker.metering.query import ReportFilters as QueryReportFilters

    assert Meter is MeterModule and ReportFilters is QueryReportFilters
    assert importlib.import_module("broker.limits").RateLimits is RateLimits
