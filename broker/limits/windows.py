"""Rate windows: the counters behind tenant limits and route quotas, and the saturation marks.

A window counts amounts (requests, tokens) over the last `window_s` seconds in
`SLOTS` slots of `window_s / SLOTS` seconds each.  An amount taken at time `t` lands in the
slot holding `t` and counts until that slot's end plus `window_s`: so no span of `window_s`
seconds ever admits more than the limit, and capacity comes back slot by slot (a sliding
window, never the all-at-once reset of a fixed one).  Memory is bounded by `SLOTS` per key,
whatever the rate.

`take` checks every window it is given and the saturation marks, then adds to all of them
or to none: one atomic step (a lock here, a Lua script in `broker.limits.redis_store`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SLOTS", "Held", "MemoryWindows", "Refused", "Take", "Windows", "slot_of"]

SLOTS = 60
"""Slots per window: a one-minute window counts in one-second slots."""


@dataclass(frozen=True, slots=True)
class Take:
    """Take `amount` from the window `key` that holds at most `limit` per `window_s` seconds."""

    key: str
    limit: int
    amount: int
    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Held:
    """What a take added, and where: `adjust` settles it to the actual amount later."""

    key: str
    slot: int
    amount: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Refused:
    """A take refused: `index` of the window that refused (-1: a saturation mark) and the wait in seconds.

    `never` is set when the amount is larger than the limit itself (no wait would admit it).
    """

    index: int
    wait_s: float
    key: str
    never: bool = False


def slot_of(now: float, window_s: float) -> int:
    """The slot index of time `now` (seconds) for a window of `window_s` seconds."""
    return math.floor(now * SLOTS / window_s)


def _slot_end(slot: int, window_s: float) -> float:
    return (slot + 1) * window_s / SLOTS


class Windows(Protocol):
    """Where rate windows live.  `blocking` says whether its methods do I/O."""

    blocking: bool

    def take(self, takes: Sequence[Take], marks: Sequence[str], now: float) -> tuple[Held, ...] | Refused:
        """Add every take, or none: refused when a mark in `marks` is set or a window would pass its limit."""
        ...

    def add(self, key: str, amount: int, window_s: float, now: float) -> Held:
        """Add to a window without checking its limit (an attempt already sent)."""
        ...

    def adjust(self, held: Held, delta: int, now: float) -> None:
        """Change what `held` added by `delta`, if its slot still counts."""
        ...

    def mark(self, key: str, until: float, now: float) -> None:
        """Set the saturation mark `key` until time `until` (a later mark is never shortened)."""
        ...

    def close(self) -> None: ...


class MemoryWindows:
    """Windows in this process, shared by its threads (one lock; each step takes microseconds)."""

    blocking = False

    def __init__(self) -> None:
        self._slots: dict[str, dict[int, int]] = {}
        self._marks: dict[str, float] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, window_s: float, now: float) -> dict[int, int]:
        slots = self._slots.setdefault(key, {})
        cutoff = now - window_s
        for slot in [s for s in slots if _slot_end(s, window_s) <= cutoff]:
            del slots[slot]
        return slots

    def take(self, takes: Sequence[Take], marks: Sequence[str], now: float) -> tuple[Held, ...] | Refused:
        with self._lock:
            for key in marks:
                until = self._marks.get(key, 0.0)
                if until > now:
                    return Refused(-1, until - now, key)
            for i, take in enumerate(takes):
                slots = self._live(take.key, take.window_s, now)
                total = sum(slots.values())
                if take.amount > 0 and total + take.amount > take.limit:
                    return _refusal(i, take, sorted(slots.items()), total, now)
            held = []
            for take in takes:
                slot = slot_of(now, take.window_s)
                slots = self._slots[take.key]
                slots[slot] = slots.get(slot, 0) + take.amount
                held.append(Held(take.key, slot, take.amount, take.window_s))
            return tuple(held)

    def add(self, key: str, amount: int, window_s: float, now: float) -> Held:
        with self._lock:
            slot = slot_of(now, window_s)
            slots = self._live(key, window_s, now)
            slots[slot] = slots.get(slot, 0) + amount
            return Held(key, slot, amount, window_s)

    def adjust(self, held: Held, delta: int, now: float) -> None:
        with self._lock:
            slots = self._live(held.key, held.window_s, now)
            if held.slot in slots:
                slots[held.slot] = max(0, slots[held.slot] + delta)

    def mark(self, key: str, until: float, now: float) -> None:
        with self._lock:
            if until > self._marks.get(key, 0.0):
                self._marks[key] = until
            for stale in [k for k, t in self._marks.items() if t <= now]:
                del self._marks[stale]

    def close(self) -> None:
        return None


def _refusal(index: int, take: Take, slots: list[tuple[int, int]], total: int, now: float) -> Refused:
    """How long until enough of the oldest slots have left the window for `take` to fit."""
    if take.amount > take.limit:
        return Refused(index, take.window_s, take.key, never=True)
    freed = 0
    for slot, amount in slots:
        freed += amount
        if total - freed + take.amount <= take.limit:
            return Refused(index, max(0.0, _slot_end(slot, take.window_s) + take.window_s - now), take.key)
    return Refused(index, take.window_s, take.key)  # pragma: no cover - the loop frees everything
