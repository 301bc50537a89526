"""What `Broker` and `AsyncBroker` share: policy, adapters, health, meter, router, executor."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

from .adapter import Adapter, AdapterFactory, AdapterRegistry
from .call_hooks import CallHook
from .errors import InvalidRequest
from .execute import CallMeta, Executor
from .health import CircuitBoard, LatencyTracker
from .metering import Ledger, Meter, open_ledger
from .policy import Policy, load_policy
from .policy.decision import Decision
from .policy.engine import Router
from .redaction import install_log_redaction
from .routes import Route
from .transport import HttpClients, TransportOptions
from .types import ChatRequest, call_tags, call_tenant

__all__ = ["AdapterPool", "BrokerCore", "PolicySource"]

PolicySource = str | PathLike[str] | Mapping[str, Any] | Policy


class AdapterPool:
    """One adapter per route, built on first use and kept for the broker's life."""

    def __init__(self, registry: AdapterRegistry, http: HttpClients) -> None:
        self.registry = registry
        self.http = http
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()

    def get(self, route: Route) -> Adapter:
        adapter = self._adapters.get(route.id)
        if adapter is None:
            with self._lock:
                adapter = self._adapters.get(route.id)
                if adapter is None:
                    adapter = self.registry.get(route.provider)(route, http=self.http)
                    self._adapters[route.id] = adapter
        return adapter

    def close(self) -> None:
        with self._lock:
            adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            adapter.close()
        self.http.close()

    async def aclose(self) -> None:
        with self._lock:
            adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()
        await self.http.aclose()


class BrokerCore:
    """Builds every part of a broker from a policy; `prepare` turns call arguments into a plan."""

    def __init__(
        self,
        policy: PolicySource | None = None,
        *,
        adapters: Mapping[str, str | AdapterFactory] | None = None,
        transport: TransportOptions | None = None,
        ledger: str | Ledger | None = None,
        durable: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Any] | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        install_log_redaction()  # before any SDK is driven: their records are redacted from the first
        self.policy: Policy = policy if isinstance(policy, Policy) else load_policy(policy or default_policy_path())
        self.pool = AdapterPool(AdapterRegistry(dict(adapters or {})), HttpClients(transport))
        self.latency = LatencyTracker()
        circuit = self.policy.circuit
        self.circuits = CircuitBoard(
            failure_threshold=circuit.failure_threshold,
            window_s=circuit.window_s,
            cooldown_s=circuit.cooldown_s,
            clock=time.monotonic if clock is time.perf_counter else clock,
        )
        metering = self.policy.metering
        injected = ledger is not None and not isinstance(ledger, str)
        ledger_obj = ledger if injected else open_ledger(ledger or self.policy.ledger)  # type: ignore[arg-type]
        self.meter = Meter(
            ledger_obj,  # type: ignore[arg-type]
            durable=metering.durable if durable is None else durable,
            max_buffer=metering.max_buffer,
            flush_interval_s=metering.flush_interval_s,
            owns_ledger=not injected,
        )
        self.router = Router(self.policy, latency=self.latency, circuits=self.circuits, spend=self.meter, now=now)
        # what watches every call (budgets, limits, telemetry, audit): see broker/call_hooks.py
        self.hooks: list[CallHook] = []
        self.executor = Executor(
            adapters=self.pool,
            latency=self.latency,
            circuits=self.circuits,
            meter=self.meter,
            retry=self.policy.retry,
            clock=clock,
            sleep=sleep,
            wall=now,
            asleep=asleep or asyncio.sleep,
            hooks=self.hooks,
        )

    def request(self, model: str, messages: Any, params: Mapping[str, Any]) -> ChatRequest:
        """Validate call arguments into a `ChatRequest`; unknown or bad arguments are `InvalidRequest`."""
        from pydantic import ValidationError

        try:
            return ChatRequest(model=model, messages=messages, **params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidRequest(f"invalid chat request: {problems}") from exc

    def prepare(
        self,
        model: str,
        messages: Any,
        tenant: str,
        tags: Mapping[str, str] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> tuple[Decision, ChatRequest, CallMeta]:
        request = self.request(model, messages, params)
        checked_tags = call_tags(tags)
        decision = self.router.decide(request, call_tenant(tenant), stream=stream)
        tenant_policy = decision.tenant_policy
        meta = CallMeta(
            request_id=uuid.uuid4().hex,
            tenant=decision.tenant,
            tags={**tenant_policy.tags, **checked_tags},
            policy_version=self.policy.version,
            store_text=bool(self.policy.metering.store_text or tenant_policy.store_text),
        )
        return decision, request, meta

    def explain(
        self, model: str, messages: Any, tenant: str, params: Mapping[str, Any], *, stream: bool = False
    ) -> Decision:
        return self.router.decide(self.request(model, messages, params), call_tenant(tenant), stream=stream)

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            self.meter.close()

    async def aclose(self) -> None:
        try:
            await self.pool.aclose()
        finally:
            self.meter.close()


def default_policy_path() -> str:
    """The embedded default policy shipped inside the package (`policies/default.yaml`)."""
    from importlib.resources import files

    return str(files("broker") / "data" / "default.yaml")
