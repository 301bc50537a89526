"""The providers under test and what the conformance tests share: routes, the `Case`, checks.

(Named uniquely, not `conftest`, so that `from conformance_cases import ...` can never pick up
another directory's conftest module.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from broker import AsyncBroker, Broker
from broker.reports import ReportFilters, report_rows
from broker.testing import Emulator
from broker.testing.suite import FAKE_CREDENTIALS

PROVIDERS = ("local", "bedrock", "vertex", "azure", "groq")

#: One route per provider.  Bedrock, Vertex, Azure and Groq take model id and price from the
#: built-in catalog (rows that are neither retired nor non-streaming); the local runner has no
#: catalog price, so the route gives one, to check cost arithmetic there too.
ROUTES: dict[str, dict[str, Any]] = {
    "local": {
        "model": "llama-3.1-8b",
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "jurisdiction": "on-prem",
        "price": {"input_per_mtok": "0.35", "output_per_mtok": "1.25"},
    },
    "bedrock": {"model": "llama-3.3-70b", "region": "us-east-1"},  # us.meta.llama3-3-70b: streams natively
    "vertex": {
        "model": "llama-3.1-405b",
        "region": "us-central1",
        "options": {"project": "p", "location": "us-central1", "access_token_env": "VERTEX_ACCESS_TOKEN"},
    },
    "azure": {"model": "llama-3.3-70b", "region": "eastus", "api_key_env": "AZURE_AI_API_KEY"},
    "groq": {"model": "llama-3.1-8b", "api_key_env": "GROQ_API_KEY"},
}

#: The model id each route sends (what the emulators see), for tests that change what they serve.
MODEL_IDS = {
    "local": "meta-llama/Llama-3.1-8B-Instruct",
    "bedrock": "us.meta.llama3-3-70b-instruct-v1:0",
    "vertex": "meta/llama-3.1-405b-instruct-maas",
    "azure": "Llama-3.3-70B-Instruct",
    "groq": "llama-3.1-8b-instant",
}

_ENDPOINT_SUFFIX = {"local": "/v1", "azure": "/models"}

MESSAGES = [{"role": "user", "content": "Tell me about loopback emulators and typed errors"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class Sleeps(list[float]):
    """Injected `sleep` / `asleep`: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


@dataclass
class Case:
    """The provider under test: its emulator, its route and brokers built for it."""

    provider: str
    emulator: Emulator
    url: str
    tmp: Path
    sleeps: Sleeps = field(default_factory=Sleeps)
    _brokers: list[Any] = field(default_factory=list)
    _ledgers: int = 0

    @property
    def model(self) -> str:
        return str(ROUTES[self.provider]["model"])

    @property
    def model_id(self) -> str:
        return MODEL_IDS[self.provider]

    def route(self, **overrides: Any) -> dict[str, Any]:
        return {
            "id": f"{self.provider}-conformance",
            "provider": self.provider,
            "endpoint": self.url + _ENDPOINT_SUFFIX.get(self.provider, ""),
            **ROUTES[self.provider],
            **overrides,
        }

    def policy(self, *, max_attempts: int | None = None, **route_overrides: Any) -> dict[str, Any]:
        self._ledgers += 1  # each broker its own ledger, so its totals are its own calls
        policy: dict[str, Any] = {
            "version": 1,
            "ledger": f"sqlite:///{self.tmp / f'u{self._ledgers}.db'}",
            "routes": [self.route(**route_overrides)],
            "tenants": {"default": {"objective": "cost", "residency": ["us", "on-prem", "unknown"]}},
        }
        if max_attempts is not None:
            policy["retry"] = {"max_attempts_per_route": max_attempts}
        return policy

    def broker(self, *, max_attempts: int | None = None, **route_overrides: Any) -> Broker:
        broker = Broker.from_policy(
            self.policy(max_attempts=max_attempts, **route_overrides), durable=True, sleep=self.sleeps
        )
        self._brokers.append(broker)
        return broker

    def async_broker(self, *, max_attempts: int | None = None, **route_overrides: Any) -> AsyncBroker:
        return AsyncBroker.from_policy(
            self.policy(max_attempts=max_attempts, **route_overrides),
            durable=True,
            sleep=self.sleeps,
            asleep=self.sleeps.asleep,
        )

    def close(self) -> None:
        for broker in self._brokers:
            broker.close()

    # ------------------------------------------------------------------ emulator set-up

    def serve_only(self, *model_ids: str) -> None:
        """Make the emulator answer "unknown model" for every model id but these."""
        if self.provider == "vertex":
            self.emulator.known_models = {m.split("/", 1)[-1] for m in model_ids}  # type: ignore[attr-defined]
        elif self.provider == "bedrock":
            self.emulator.known_models = list(model_ids)  # type: ignore[attr-defined]
        else:
            self.emulator.served_models = list(model_ids)  # type: ignore[attr-defined]


def ledger_totals(broker: Broker | AsyncBroker) -> dict[str, Any]:
    """The ledger's aggregate over every event (one row: calls, tokens, cost, errors)."""
    broker.meter.flush()
    rows = report_rows(broker.meter.ledger, [], ReportFilters())
    assert len(rows) <= 1
    return (
        rows[0]
        if rows
        else {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "error_calls": 0}
    )


def expected_cost(
    provider: str, broker: Broker | AsyncBroker, input_tokens: int, output_tokens: int
) -> Decimal:
    """Price x tokens, from the route's price in force (exact Decimal arithmetic)."""
    price = broker.policy.routes[0].price
    assert price is not None, f"{provider} route is unpriced"
    return (
        Decimal(input_tokens) * price.input_per_mtok + Decimal(output_tokens) * price.output_per_mtok
    ) / Decimal(1_000_000)


def assert_clean(error: BaseException) -> None:
    """A broker error never carries a credential, in its text or its attributes."""
    shown = f"{error!s} {error!r} {vars(error)!r}"
    for name, secret in FAKE_CREDENTIALS.items():
        if name != "LLAMA_BROKER_VERTEX_PROJECT":
            assert secret not in shown, f"{name} leaked into {type(error).__name__}"


def sent_options(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """Sampling options as the provider received them, read from its own request shape."""
    if provider == "bedrock":
        config = body.get("inferenceConfig") or {}
        return {
            "max_tokens": config.get("maxTokens"),
            "temperature": config.get("temperature"),
            "top_p": config.get("topP"),
            "stop": config.get("stopSequences"),
        }
    return {
        "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": body.get("stop"),
    }


def sent_tool_names(provider: str, body: dict[str, Any]) -> list[str]:
    """Names of the tools offered in a request, read from the provider's own request shape."""
    if provider == "bedrock":
        return [t["toolSpec"]["name"] for t in (body.get("toolConfig") or {}).get("tools") or ()]
    return [t["function"]["name"] for t in body.get("tools") or ()]
