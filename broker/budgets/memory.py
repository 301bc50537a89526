"""Reservations in this process's memory: budgets that hold across its threads (an in-memory ledger)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from broker.policy.budget import Standing

from .store import Hold, Outcome

__all__ = ["MemoryReservations"]


class MemoryReservations:
    """One lock over settled totals and leased reservations; `clock` (seconds) is injectable."""

    blocking = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._settled: dict[str, Decimal] = {}
        self._open: dict[str, dict[str, tuple[Decimal, float]]] = {}  # key -> id -> (amount, expires at)
        self._lock = threading.Lock()

    def ensure(self, key: str, seed: Callable[[], Decimal]) -> None:
        with self._lock:
            if key in self._settled:
                return
        value = seed()
        with self._lock:
            self._settled.setdefault(key, value)
            self._open.setdefault(key, {})

    def _standing(self, key: str, now: float) -> Standing:
        live = self._open.get(key, {})
        for rid in [rid for rid, (_, expires) in live.items() if expires <= now]:
            del live[rid]  # expired: no longer counts
        return Standing(self._settled.get(key, Decimal(0)), sum((a for a, _ in live.values()), Decimal(0)))

    def reserve(self, reservation_id: str, holds: Sequence[Hold], lease_s: float) -> Outcome:
        with self._lock:
            now = self.clock()
            seen = {h.key: self._standing(h.key, now) for h in holds}
            taken = all(h.key in self._settled for h in holds) and all(
                h.cap is None or seen[h.key].settled + seen[h.key].reserved + h.amount <= h.cap for h in holds
            )
            if taken:
                for h in holds:
                    self._open[h.key][reservation_id] = (h.amount, now + lease_s)
            return Outcome(taken, seen)

    def settle(self, reservation_id: str, keys: Sequence[str], cost: Decimal) -> None:
        with self._lock:
            for key in keys:
                self._open.get(key, {}).pop(reservation_id, None)
                if cost and key in self._settled:
                    self._settled[key] += cost

    def renew(self, reservation_ids: Sequence[str], lease_s: float) -> None:
        with self._lock:
            expires = self.clock() + lease_s
            for live in self._open.values():
                for rid in reservation_ids:
                    if rid in live:
                        live[rid] = (live[rid][0], expires)

    def standing(self, keys: Sequence[str]) -> dict[str, Standing]:
        with self._lock:
            now = self.clock()
            return {key: self._standing(key, now) for key in keys}

    def close(self) -> None:
        pass
