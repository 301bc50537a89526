"""What `Broker` and `AsyncBroker` share: policy, adapters, health, meter, router, executor."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

from .adapter import Adapter, AdapterFactory, AdapterRegistry
from .attempts import CallMeta, new_call_id
from .errors import InvalidRequest
from .health import CircuitBoard, LatencyTracker
from .policy.loaded import Policy
from .redaction import install_log_redaction
from .routes import Route
from .transport import HttpClients, TransportOptions
from .types import ChatRequest, ChatResponse, call_tags, call_tenant

if TYPE_CHECKING:  # the optional parts load only when a policy turns them on
    from .call_hooks import CallHook
    from .energy import EnergyCounter
    from .guardrails import Guardrails
    from .limits import RateLimits
    from .metering import Ledger
    from .policy.decision import Decision

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
        tracer_provider: Any = None,
        meter_provider: Any = None,
        energy_counters: Mapping[str, EnergyCounter] | None = None,
        energy_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from .audit import open_trail  # the executor, meter, router, loader and hooks load with a broker
        from .budgets import open_budget_hook
        from .energy import build_energy
        from .execute import Executor
        from .metering import Meter, open_ledger
        from .policy.engine import Router
        from .policy.loader import load_policy
        from .telemetry import build_telemetry

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
        # budgets as reservations in the store beside the ledger (broker/budgets/): None without a budget
        self.budgets = open_budget_hook(self.policy, ledger_obj, now=now)  # type: ignore[arg-type]
        self.router = Router(self.policy, latency=self.latency, circuits=self.circuits, spend=self.budgets, now=now)
        # what watches every call (budgets, limits, telemetry, audit): see broker/call_hooks.py
        self.hooks: list[CallHook] = []
        # the decision audit trail beside the ledger (broker/audit/): None when the policy turns it off
        self.audit = open_trail(self.policy, getattr(ledger_obj, "url", None), durable=self.meter.durable, now=now,
                                flush_interval_s=metering.flush_interval_s)
        if self.audit is not None:
            self.hooks.append(self.audit)
        # spans and metrics (broker/telemetry/): None, and opentelemetry never imported, while off
        self.telemetry = build_telemetry(self.policy.telemetry, tracer_provider=tracer_provider,
                                         meter_provider=meter_provider, version=_version())
        if self.telemetry is not None:
            self.hooks.append(self.telemetry.hook)
        if any(t.licence is not None for t in self.policy.tenants.values()):
            from .policy.licence import LicenceGuard

            self.hooks.append(LicenceGuard(self.policy))
        # input and output checks of the tenants that declare some (broker/guardrails/): None otherwise
        self.guardrails = self._guardrails(now)
        # tenant and group rate limits, route quotas and saturation marks (broker/limits/): only when set
        self.limits = _rate_limits(self.policy, now, sleep)
        if self.limits is not None:
            self.hooks.append(self.limits)
        if self.budgets is not None:  # after the rate limits: a route they refuse is never reserved
            self.hooks.append(self.budgets)
        # joules on the events of routes whose runner is on this host (broker/energy/): None when none
        self.energy = build_energy(self.policy.energy, self.meter, counters=energy_counters, clock=energy_clock)
        self.executor = Executor(
            adapters=self.pool if self.energy is None else self.energy.adapters(self.pool),
            latency=self.latency,
            circuits=self.circuits,
            meter=self.meter if self.energy is None else self.energy.meter,
            retry=self.policy.retry,
            clock=clock,
            sleep=sleep,
            wall=now,
            asleep=asleep,  # None: asyncio.sleep, imported with the first async retry
            hooks=self.hooks,
        )
        self._stamp: Callable[[ChatResponse, CallMeta, Route], ChatResponse] | None = None
        if self.policy.provenance.enabled:  # a signed record on every answer (broker/provenance/): off by default
            from .audit.versions import snapshot
            from .provenance.signing import ProvenanceSigner

            signer = ProvenanceSigner(self.policy.provenance, policy_sha256=snapshot(self.policy).sha256, now=now)
            self._stamp = signer.stamp
        self._guard_output()

    def _guardrails(self, now: Callable[[], dt.datetime]) -> Guardrails | None:
        if not any(t.guardrails is not None for t in self.policy.tenants.values()):
            return None
        from .guardrails import Guardrails

        self._now = now
        return Guardrails(self._classifier)

    def _guard_output(self) -> None:
        """Sign answers as they leave the executor; with output checks, after them, so a record's hash is
        the hash of the text the caller gets."""
        if self.guardrails is None:
            self.executor.outcomes.stamp = self._stamp
            return
        from .guardrails.output import GuardedOutput

        self.executor.output = GuardedOutput(self.guardrails, self._sign)

    def _classifier(self, tenant: str, model: str) -> Callable[[list[dict[str, str]]], str]:
        """A Llama Guard classifier: an ordinary call of the tenant, tagged, on the policy's routes."""
        from .guardrails.pipeline import CLASSIFIER_TAG

        def classify(messages: list[dict[str, str]]) -> str:
            decision, request, meta = self.prepare(model, messages, tenant, {CLASSIFIER_TAG: "llama_guard"}, {},
                                                   stream=False)
            return self.executor.chat(decision, request, meta).text
        return classify

    def guard_input(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatRequest:
        """The request after the tenant's input checks; a blocked one is metered and never sent."""
        if self.guardrails is None:
            return request
        from .errors import GuardrailBlocked
        from .guardrails.blocked import blocked_event
        from .guardrails.pipeline import CLASSIFIER_TAG

        if CLASSIFIER_TAG in meta.tags:
            return request

        try:
            return self.guardrails.check_input(decision, request)
        except GuardrailBlocked as exc:
            self.meter.record(blocked_event(decision, meta, exc, self._now()))
            if self.audit is not None:  # the trail stores the decision with the guardrail's outcome
                from .audit.decisions import DecisionEntry

                self.audit.add(DecisionEntry(decision, meta, self.audit.version.sha256, self._now(), None,
                                             "GuardrailBlocked"))
            raise

    async def aguard_input(self, decision: Decision, request: ChatRequest, meta: CallMeta) -> ChatRequest:
        guards = self.guardrails.for_tenant(decision) if self.guardrails is not None else None
        if guards is None:
            return request
        if guards.needs_io or self.meter.durable:  # a classifier call or a durable write: off the loop's thread
            import asyncio

            return await asyncio.to_thread(self.guard_input, decision, request, meta)
        return self.guard_input(decision, request, meta)

    def _sign(self, response: ChatResponse, meta: CallMeta) -> ChatResponse:
        """The answer with its signed provenance record, when the policy turns provenance on."""
        if self._stamp is None or response.route is None:
            return response
        route = next((r for r in self.policy.routes if r.id == response.route.id), None)
        return response if route is None else self._stamp(response, meta, route)

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
            request_id=new_call_id(),
            tenant=decision.tenant,
            tags={**tenant_policy.tags, **checked_tags},
            policy_version=self.policy.version,
            store_text=bool(self.policy.metering.store_text or tenant_policy.store_text),
            stream=stream,
            decision_id=new_call_id(),
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
            try:
                self._close_energy()
                try:
                    self.meter.close()
                finally:
                    if self.audit is not None:
                        self.audit.close()
            finally:
                try:
                    self._close_telemetry()
                finally:
                    if self.limits is not None:
                        self.limits.windows.close()
                    if self.budgets is not None:
                        self.budgets.close()  # stops renewing leases; open calls' reservations then expire

    async def aclose(self) -> None:
        try:
            await self.pool.aclose()
        finally:
            try:
                self._close_energy()
                try:
                    self.meter.close()
                finally:
                    if self.audit is not None:
                        self.audit.close()
            finally:
                try:
                    self._close_telemetry()
                finally:
                    if self.limits is not None:
                        self.limits.windows.close()
                    if self.budgets is not None:
                        self.budgets.close()  # stops renewing leases; open calls' reservations then expire

    def _close_energy(self) -> None:
        if self.energy is not None:
            self.energy.close()  # events still waiting for a share go to the meter (without a figure)

    def _close_telemetry(self) -> None:
        if self.telemetry is not None:
            self.telemetry.shutdown()  # flushes the spans and metrics of providers the broker built


def _version() -> str:
    from . import __version__

    return __version__


def _rate_limits(policy: Policy, now: Callable[[], dt.datetime], sleep: Callable[[float], None]) -> RateLimits | None:
    """The limits hook when the policy sets a rate limit or a route quota; None costs a call nothing."""
    if not (any(t.rate_limit for t in policy.tenants.values()) or any(g.rate_limit for g in policy.groups.values())
            or any(r.rpm or r.tpm for r in policy.routes)):
        return None
    from .limits import RateLimits, open_windows

    return RateLimits(policy, open_windows(policy.limits), key_prefix=policy.limits.key_prefix,
                      now=lambda: now().timestamp(), sleep=sleep)


def default_policy_path() -> str:
    """The embedded default policy shipped inside the package (`policies/default.yaml`)."""
    from importlib.resources import files

    return str(files("broker") / "data" / "default.yaml")
