"""Whose joules: a device's energy shared among the calls that ran on it.

The counter is read at every call's start and end.  Between two reads lies an interval with
a measured energy and the set of calls running through all of it:

    one call alone           the interval's energy is that call's (`attributed` False)
    several calls overlapping  the interval's energy is shared by the tokens each call
                             generated in it, taking a call's output tokens as spread evenly
                             over its duration (`attributed` True); when none generated any
                             there, it is shared equally
    no call running          idle energy, nobody's

A call's share of an interval is known once every call in that interval has ended, so
`end` returns the shares of every call that became known then (its own, or an earlier
call's that was waiting on it).  A failed read leaves the calls of that interval without a
figure (`joules` None), never a guess.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from .counters import EnergyCounter

__all__ = ["DeviceEnergy", "Share"]

log = logging.getLogger("llama_broker.energy")


@dataclass(frozen=True)
class Share:
    """The energy of one call: `joules` None when a reading it depends on failed."""

    key: Hashable
    joules: float | None
    attributed: bool


@dataclass
class _Interval:
    start: float
    end: float
    joules: float | None
    members: tuple[Hashable, ...]


@dataclass
class _Call:
    start: float
    end: float | None = None
    tokens: int = 0
    intervals: list[_Interval] = field(default_factory=list)


class DeviceEnergy:
    """The calls running on one device and the energy its counter measured under them (thread-safe)."""

    def __init__(self, counter: EnergyCounter, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.counter, self.clock = counter, clock
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}
        self._running: list[Hashable] = []
        self._rates: dict[Hashable, float] = {}  # of ended calls, while an unsettled interval names them
        self._last_t = 0.0
        self._last_j: float | None = None

    def begin(self, key: Hashable) -> None:
        """A call starts on the device."""
        with self._lock:
            self._read()
            self._calls[key] = _Call(start=self._last_t)
            self._running.append(key)

    def end(self, key: Hashable, output_tokens: int) -> list[Share]:
        """A call ended with `output_tokens` generated; the shares that became known (maybe none)."""
        with self._lock:
            self._read()
            call = self._calls[key]
            call.end, call.tokens = self._last_t, max(0, output_tokens)
            self._rates[key] = self._rate(call)
            self._running.remove(key)
            return self._settle()

    @property
    def pending(self) -> int:
        """Calls started or ended whose share is not known yet."""
        return len(self._calls)

    def _read(self) -> None:
        t = self.clock()
        try:
            joules: float | None = self.counter.read_j()
        except Exception as exc:  # a driver hiccup costs this interval's figure, never the call
            log.warning("energy counter %s could not be read: %s", self.counter.name, type(exc).__name__)
            joules = None
        if self._running:
            used = None if joules is None or self._last_j is None else max(0.0, joules - self._last_j)
            interval = _Interval(self._last_t, t, used, tuple(self._running))
            for key in self._running:
                self._calls[key].intervals.append(interval)
        self._last_t, self._last_j = t, joules

    def _settle(self) -> list[Share]:
        running = set(self._running)
        shares = []
        for key in [k for k, c in self._calls.items()
                    if c.end is not None and not any(running.intersection(i.members) for i in c.intervals)]:
            shares.append(self._share(key))
        for share in shares:
            del self._calls[share.key]
        named = {m for c in self._calls.values() for i in c.intervals for m in i.members}
        for gone in [k for k in self._rates if k not in named]:
            del self._rates[gone]
        return shares

    def _share(self, key: Hashable) -> Share:
        total, attributed = 0.0, False
        for interval in self._calls[key].intervals:
            if interval.joules is None:
                return Share(key, None, len(interval.members) > 1)
            if len(interval.members) == 1:
                total += interval.joules
                continue
            attributed = True
            weights = {m: self._rates[m] for m in interval.members}
            weight_sum = sum(weights.values())
            fraction = weights[key] / weight_sum if weight_sum > 0 else 1 / len(interval.members)
            total += interval.joules * fraction
        return Share(key, total, attributed)

    @staticmethod
    def _rate(call: _Call) -> float:
        """Tokens per second of a call over its life (its tokens in an interval are rate x length)."""
        duration = (call.end or call.start) - call.start
        return call.tokens / duration if duration > 0 else float(call.tokens)
