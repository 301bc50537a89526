"""`Broker` and `AsyncBroker`: the one client interface application code calls.

::

    from broker import Broker

    with Broker() as broker:                      # the embedded default policy
        reply = broker.chat(model="llama-3.3-70b",
                            messages=[{"role": "user", "content": "Hello"}],
                            tenant="acme-eu", max_tokens=200)
        print(reply.text, reply.route.provider, reply.cost_usd)

Both are context managers; closing flushes the usage ledger.  `AsyncBroker` has the same
methods as coroutines (and `stream` as an async iterator).  Every error leaving them has its
cause chain scrubbed of the credentials the broker sent (`broker.redaction`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from .core import BrokerCore, PolicySource
from .redaction import scrubbed_errors
from .types import ChatResponse, StreamEvent

if TYPE_CHECKING:
    from .metering import Meter
    from .policy import Policy
    from .policy.decision import Decision

__all__ = ["AsyncBroker", "Broker"]


class _BrokerBase:
    def __init__(self, policy: PolicySource | None = None, **options: Any) -> None:
        """Build a broker from a policy file path, a mapping, or (None) the embedded default.

        Options: `adapters` (provider name -> adapter class or "module:Class", to add or
        replace providers), `transport` (`TransportOptions`), `ledger` (URL or a `Ledger`),
        `durable` (commit usage before each call returns), `tracer_provider` / `meter_provider`
        (OpenTelemetry providers: passing either turns telemetry on, `broker.telemetry`),
        `energy_counters` (counter name such as ``"nvml:0"`` -> an `EnergyCounter`, replacing the
        host's own for the policy's `energy:` routes, `broker.energy`) with `energy_clock`, and
        injectable `clock`, `sleep`, `asleep`, `now` for deterministic tests.
        """
        with scrubbed_errors:  # a ledger URL's password, say, never shows in the error
            self._core = BrokerCore(policy, **options)

    @classmethod
    def from_policy(cls, source: PolicySource, **options: Any) -> Self:
        """A broker for the policy at `source` (a YAML path, or an already-parsed mapping)."""
        return cls(source, **options)

    @property
    def policy(self) -> Policy:
        return self._core.policy

    @property
    def meter(self) -> Meter:
        return self._core.meter

    def route(
        self,
        *,
        model: str,
        messages: Any,
        tenant: str = "default",
        stream: bool = False,
        **params: Any,
    ) -> Decision:
        """The explained decision for a call, without calling any provider."""
        return self._core.explain(model, messages, tenant, params, stream=stream)


class Broker(_BrokerBase):
    """Synchronous client."""

    def chat(
        self,
        *,
        model: str,
        messages: Any,
        tenant: str = "default",
        tags: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatResponse:
        """Send one chat call where the tenant's policy says, and meter it.

        `params`: max_tokens, temperature, top_p, stop, seed, tools, tool_choice,
        response_format.  Anything else is refused (`InvalidRequest`): in particular, no call
        argument can widen a tenant's residency or lift its budget.
        """
        with scrubbed_errors:
            decision, request, meta = self._core.prepare(model, messages, tenant, tags, params, stream=False)
            request = self._core.guard_input(decision, request, meta)
            return self._core.executor.chat(decision, request, meta)

    def stream(
        self,
        *,
        model: str,
        messages: Any,
        tenant: str = "default",
        tags: Mapping[str, str] | None = None,
        **params: Any,
    ) -> Iterator[StreamEvent]:
        """Stream one chat call: text deltas, then a final event with usage and the whole response."""
        decision, request, meta = self._core.prepare(model, messages, tenant, tags, params, stream=True)
        request = self._core.guard_input(decision, request, meta)
        return _scrubbed(self._core.executor.stream(decision, request, meta))

    def close(self) -> None:
        """Close provider clients and flush the ledger."""
        with scrubbed_errors:
            self._core.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBroker(_BrokerBase):
    """Asynchronous client: the same calls as coroutines."""

    async def chat(
        self,
        *,
        model: str,
        messages: Any,
        tenant: str = "default",
        tags: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatResponse:
        with scrubbed_errors:
            decision, request, meta = self._core.prepare(model, messages, tenant, tags, params, stream=False)
            request = await self._core.aguard_input(decision, request, meta)
            return await self._core.executor.achat(decision, request, meta)

    def stream(
        self,
        *,
        model: str,
        messages: Any,
        tenant: str = "default",
        tags: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncIterator[StreamEvent]:
        """`async for event in broker.stream(...)`; decision errors raise on first iteration."""
        return self._astream(model, messages, tenant, tags, params)

    async def _astream(
        self, model: str, messages: Any, tenant: str, tags: Mapping[str, str] | None, params: Mapping[str, Any]
    ) -> AsyncIterator[StreamEvent]:
        decision, request, meta = self._core.prepare(model, messages, tenant, tags, params, stream=True)
        request = await self._core.aguard_input(decision, request, meta)
        with scrubbed_errors:
            # closed with this generator, so an abandoned stream is metered now, not when collected
            async with aclosing(self._core.executor.astream(decision, request, meta)) as events:
                async for event in events:
                    yield event

    async def aclose(self) -> None:
        """Close provider clients and flush the ledger."""
        with scrubbed_errors:
            await self._core.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _scrubbed(events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """`events`, with the cause chain of any error they raise scrubbed of credentials."""
    with scrubbed_errors:
        yield from events
