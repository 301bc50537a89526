"""Energy counters of this host: a GPU's (NVML) and a CPU package's (Linux RAPL).

Each counter reads a cumulative figure in joules; the broker takes differences around calls.

    NvmlCounter   `nvmlDeviceGetTotalEnergyConsumption` (millijoules since the driver loaded;
                  Volta and later), through `nvidia-ml-py` (the `energy` extra)
    RaplCounter   `/sys/class/powercap/intel-rapl:N/energy_uj` (microjoules, wrapping at
                  `max_energy_range_uj`); often readable by root only, absent in most VMs

`open_counter` returns None when the counter cannot be read here (no library, no device, no
permission): then nothing is recorded, never an estimate.  Tests inject their own counter
through `Broker(energy_counters={"nvml:0": counter})`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

__all__ = ["POWERCAP_ROOT", "CounterUnavailable", "EnergyCounter", "NvmlCounter", "RaplCounter", "open_counter"]

log = logging.getLogger("llama_broker.energy")

POWERCAP_ROOT = Path("/sys/class/powercap")


class CounterUnavailable(Exception):
    """This host has no readable counter of the kind asked for (said once, then nothing is recorded)."""


class EnergyCounter(Protocol):
    """A cumulative energy reading in joules; it only grows (a counter that wraps handles it itself)."""

    name: str

    def read_j(self) -> float: ...
    def close(self) -> None: ...


class NvmlCounter:
    """GPU `index`'s total energy through NVML."""

    def __init__(self, index: int = 0, *, nvml: Any = None) -> None:
        self.name = f"nvml:{index}"
        try:
            nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        except ImportError as exc:
            raise CounterUnavailable("nvidia-ml-py is not installed: pip install 'llama-broker[energy]'") from exc
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise CounterUnavailable(f"NVML could not start here: {exc}") from exc
        try:
            self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # supported on this GPU?
        except nvml.NVMLError as exc:
            nvml.nvmlShutdown()
            raise CounterUnavailable(f"GPU {index} has no NVML energy counter: {exc}") from exc

    def read_j(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) / 1000.0

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class RaplCounter:
    """CPU package `index`'s energy through the powercap sysfs files, wraps included."""

    def __init__(self, index: int = 0, *, root: Path = POWERCAP_ROOT) -> None:
        self.name = f"rapl:{index}"
        zone = root / f"intel-rapl:{index}"
        self._energy = zone / "energy_uj"
        try:
            self._range_uj = int((zone / "max_energy_range_uj").read_text())
            self._last_uj = int(self._energy.read_text())
        except (OSError, ValueError) as exc:
            raise CounterUnavailable(f"RAPL zone {zone} is not readable: {exc}") from exc
        self._wrapped_uj = 0
        self._lock = threading.Lock()

    def read_j(self) -> float:
        raw = int(self._energy.read_text())
        with self._lock:
            if raw < self._last_uj:  # the counter wrapped since the last read
                self._wrapped_uj += self._range_uj
            self._last_uj = raw
            return (self._wrapped_uj + raw) / 1e6

    def close(self) -> None:
        pass


def open_counter(kind: str, device: int, *, root: Path = POWERCAP_ROOT) -> EnergyCounter | None:
    """The counter `kind` (`nvml`, `rapl`, or `auto`: NVML, then RAPL) of `device`, or None here."""
    kinds = ("nvml", "rapl") if kind == "auto" else (kind,)
    reasons = []
    for each in kinds:
        try:
            return NvmlCounter(device) if each == "nvml" else RaplCounter(device, root=root)
        except CounterUnavailable as exc:
            reasons.append(str(exc))
    log.warning("no energy counter %s:%d on this host, energy is not recorded (%s)", kind, device, "; ".join(reasons))
    return None
