"""How joules reach the usage events of measured routes.

    MeasuredAdapters  the executor's adapter source: a measured route's adapter comes wrapped
                      in `MeasuredAdapter`, which reads the device's counter when the attempt
                      starts and when it ends (a stream: when it is done) and leaves a ticket
                      for the attempt in the calling context
    EnergyMeter       the executor's meter: an event with a ticket gets the attempt's joules
                      (`energy_j`, `energy_attributed`) and goes on to the real meter; when its
                      share waits on calls still running on the device, the event waits with
                      it and is metered as soon as they end (or, at the latest, when the broker
                      closes, then with no figure)

Events of other routes pass straight through.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .attribution import DeviceEnergy, Share

if TYPE_CHECKING:
    from ..adapter import Adapter
    from ..metering.events import UsageEvent
    from ..routes import Route
    from ..types import ChatRequest, ChatResponse, StreamEvent

__all__ = ["EnergyMeter", "MeasuredAdapter", "MeasuredAdapters", "Ticket"]


class Ticket:
    """One measured attempt: its route, and its share once known."""

    __slots__ = ("route_id", "share")

    def __init__(self, route_id: str) -> None:
        self.route_id = route_id
        self.share: Share | None = None


_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("llama_broker_energy_ticket", default=None)


class EnergyMeter:
    """Fills the energy of measured attempts' events, then hands them to the real meter."""

    def __init__(self, meter: Any) -> None:
        self.meter = meter
        self.durable: bool = bool(meter.durable)
        self._lock = threading.Lock()
        self._waiting: dict[Ticket, UsageEvent] = {}

    def record(self, event: UsageEvent) -> None:
        ticket = _TICKET.get()
        if ticket is None or ticket.route_id != event.route_id:
            self.meter.record(event)
            return
        _TICKET.set(None)
        with self._lock:
            share = ticket.share
            if share is None:
                self._waiting[ticket] = event
                return
        self.meter.record(_with(event, share))

    def settled(self, shares: list[Share]) -> None:
        """Shares that became known: meter the events that were waiting for them."""
        ready = []
        with self._lock:
            for share in shares:
                ticket = share.key
                assert isinstance(ticket, Ticket)
                ticket.share = share
                event = self._waiting.pop(ticket, None)
                if event is not None:
                    ready.append(_with(event, share))
        for event in ready:
            self.meter.record(event)

    def close(self) -> None:
        """Meter every event still waiting, without a figure (its share could not be known)."""
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for event in waiting:
            self.meter.record(event)


def _with(event: UsageEvent, share: Share) -> UsageEvent:
    if share.joules is None:
        return event
    return replace(event, energy_j=share.joules, energy_attributed=share.attributed)


class MeasuredAdapter:
    """An adapter whose calls are measured on a device; everything else is the wrapped adapter's."""

    def __init__(self, inner: Adapter, route: Route, device: DeviceEnergy, meter: EnergyMeter) -> None:
        self.inner, self.route, self.device, self.meter = inner, route, device, meter

    @property
    def provider(self) -> str:
        return self.inner.provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _begin(self) -> Ticket:
        ticket = Ticket(self.route.id)
        self.device.begin(ticket)
        return ticket

    def _end(self, ticket: Ticket, output_tokens: int) -> None:
        _TICKET.set(ticket)
        self.meter.settled(self.device.end(ticket, output_tokens))

    def chat(self, request: ChatRequest) -> ChatResponse:
        ticket, tokens = self._begin(), 0
        try:
            response = self.inner.chat(request)
            tokens = response.usage.output_tokens
            return response
        finally:
            self._end(ticket, tokens)

    async def achat(self, request: ChatRequest) -> ChatResponse:
        ticket, tokens = self._begin(), 0
        try:
            response = await self.inner.achat(request)
            tokens = response.usage.output_tokens
            return response
        finally:
            self._end(ticket, tokens)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        ticket, tokens = self._begin(), 0
        try:
            for event in self.inner.stream(request):
                if event.usage is not None:
                    tokens = event.usage.output_tokens
                yield event
        finally:
            self._end(ticket, tokens)

    async def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        ticket, tokens = self._begin(), 0
        try:
            async for event in self.inner.astream(request):
                if event.usage is not None:
                    tokens = event.usage.output_tokens
                yield event
        finally:
            self._end(ticket, tokens)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


class MeasuredAdapters:
    """The executor's adapter source: the pool's adapters, measured ones wrapped (one wrapper per route)."""

    def __init__(self, pool: Any, devices: dict[str, DeviceEnergy], meter: EnergyMeter) -> None:
        self.pool, self.devices, self.meter = pool, devices, meter
        self._wrapped: dict[str, tuple[Adapter, MeasuredAdapter]] = {}

    def get(self, route: Route) -> Adapter:
        adapter: Adapter = self.pool.get(route)
        device = self.devices.get(route.id)
        if device is None:
            return adapter
        cached = self._wrapped.get(route.id)
        if cached is None or cached[0] is not adapter:
            cached = (adapter, MeasuredAdapter(adapter, route, device, self.meter))
            self._wrapped[route.id] = cached
        return cached[1]  # type: ignore[return-value]  # an Adapter by structure
