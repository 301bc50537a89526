"""Energy per token for runners on this host: joules on the usage events of measured routes.

A policy names the routes whose runner runs on the broker's own host, and the counter that
measures it (`broker.energy.counters`): a GPU through NVML, a CPU package through RAPL::

    energy:
      routes:
        local-vllm:  {counter: nvml, device: 0}
        local-cpu:   {counter: rapl}

Routes naming the same counter share it, and calls overlapping on it share its energy
(`broker.energy.attribution`).  Where the counter cannot be read, nothing is recorded.
Reports show tokens per joule per route from these events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..policy.schema import EnergySettings
    from .attribution import DeviceEnergy, Share
    from .counters import CounterUnavailable, EnergyCounter, NvmlCounter, RaplCounter, open_counter
    from .metered import MeasuredAdapters

__all__ = [
    "CounterUnavailable",
    "DeviceEnergy",
    "Energy",
    "EnergyCounter",
    "NvmlCounter",
    "RaplCounter",
    "Share",
    "build_energy",
    "open_counter",
]


_COUNTER_NAMES = frozenset({"CounterUnavailable", "EnergyCounter", "NvmlCounter", "RaplCounter", "open_counter"})


def __getattr__(name: str) -> Any:
    """The counters and the attribution load on first use: a policy without `energy:` routes never needs them."""
    if name in ("DeviceEnergy", "Share"):
        from . import attribution

        value = getattr(attribution, name)
    elif name in _COUNTER_NAMES:
        from . import counters

        value = getattr(counters, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


class Energy:
    """The devices of a broker's measured routes, and the wrappers that carry their joules to events."""

    def __init__(self, devices: dict[str, DeviceEnergy], counters: list[EnergyCounter], meter: Any) -> None:
        self.devices = devices
        from .metered import EnergyMeter

        self._counters = counters
        self.meter = EnergyMeter(meter)

    def adapters(self, pool: Any) -> MeasuredAdapters:
        from .metered import MeasuredAdapters

        return MeasuredAdapters(pool, self.devices, self.meter)

    def close(self) -> None:
        try:
            self.meter.close()
        finally:
            for counter in self._counters:
                counter.close()


def build_energy(
    settings: EnergySettings,
    meter: Any,
    *,
    counters: Mapping[str, EnergyCounter] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Energy | None:
    """The energy measurement of a policy's routes; None when it names none or none can be read here.

    `counters` (by name: `nvml:0`, `rapl:0`) replaces the host's own, for tests and other sources.
    """
    if not settings.routes:
        return None
    from .attribution import DeviceEnergy
    from .counters import open_counter

    given: dict[str, EnergyCounter | None] = dict(counters or {})
    by_name: dict[str, DeviceEnergy] = {}
    opened: list[EnergyCounter] = []
    devices: dict[str, DeviceEnergy] = {}
    for route_id, spec in settings.routes.items():
        kinds = ("nvml", "rapl") if spec.counter == "auto" else (spec.counter,)
        name = next((f"{k}:{spec.device}" for k in kinds if f"{k}:{spec.device}" in given), None)
        if name is None:
            name = f"{spec.counter}:{spec.device}"
            if name not in given:
                counter = open_counter(spec.counter, spec.device)
                given[name] = counter  # None: not readable here (said once), nothing recorded
                if counter is not None:
                    opened.append(counter)
        counter = given[name]
        if counter is None:
            continue
        device = by_name.get(counter.name)
        if device is None:
            device = by_name[counter.name] = DeviceEnergy(counter, clock=clock)
        devices[route_id] = device
    if not devices:
        return None
    return Energy(devices, opened, meter)
