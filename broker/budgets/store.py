"""What every reservation store does, and the small parts they share.

    ensure(key, seed)             a limit's period row exists (created once, seeded from the ledger)
    reserve(id, holds, lease_s)   every hold taken, or none (one transaction); the standing it saw
    settle(id, keys, cost)        the reservation released and `cost` added to each key's settled spend
    renew(ids, lease_s)           open reservations' leases pushed back
    standing(keys)                settled spend and live reservations of each key

A `Hold` with a `cap` is taken only when settled + live reservations + its amount <= cap,
decided in the store; one without a cap is always taken (it still counts for other calls).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Generic, Protocol, TypeVar

from broker.policy.budget import Standing

__all__ = ["Hold", "Outcome", "ReservationStore", "pico", "usd"]

_PICO = Decimal("1e12")
#: expired reservations are deleted once they have been expired this much longer than their lease
SWEEP_AFTER_LEASES = 2


@dataclass(frozen=True)
class Hold:
    """Part of one reservation: `amount` against the limit named `key`, conditional on `cap` if set."""

    key: str
    amount: Decimal
    cap: Decimal | None


@dataclass(frozen=True)
class Outcome:
    """Whether a reservation was taken, and the standing of each key the store saw when deciding."""

    taken: bool
    standing: dict[str, Standing]


class ReservationStore(Protocol):
    """Budget reservations and settled spend, shared by every broker that opens the same store."""

    #: whether its methods do I/O (async calls then run them off the event loop)
    blocking: bool

    def ensure(self, key: str, seed: Callable[[], Decimal]) -> None: ...
    def reserve(self, reservation_id: str, holds: Sequence[Hold], lease_s: float) -> Outcome: ...
    def settle(self, reservation_id: str, keys: Sequence[str], cost: Decimal) -> None: ...
    def renew(self, reservation_ids: Sequence[str], lease_s: float) -> None: ...
    def standing(self, keys: Sequence[str]) -> dict[str, Standing]: ...
    def close(self) -> None: ...


def pico(amount: Decimal, *, up: bool = True) -> int:
    """USD as whole picodollars, rounded up (amounts held) or down (limits)."""
    return int((amount * _PICO).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR))


def usd(picodollars: int | None) -> Decimal:
    return Decimal(picodollars or 0) / _PICO


C = TypeVar("C")


class Pool(Generic[C]):
    """At most `size` connections, made on demand and handed to one thread at a time."""

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None], size: int) -> None:
        self._connect, self._close, self._size = connect, close, size
        self._idle: queue.LifoQueue[C] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        conn = self._take()
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            if healthy and not self._closed:
                self._idle.put(conn)
            else:
                self._discard(conn)

    def _take(self) -> C:
        if self._closed:
            from broker.errors import MeteringError

            raise MeteringError("the reservation store is closed: a budget cannot be checked")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            make = self._made < self._size
            if make:
                self._made += 1
        if not make:
            return self._idle.get()
        try:
            return self._connect()
        except BaseException:
            with self._lock:
                self._made -= 1
            raise

    def _discard(self, conn: C) -> None:
        with self._lock:
            self._made -= 1
        with contextlib.suppress(Exception):  # a broken connection may fail to close: it is gone either way
            self._close(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            self._discard(conn)
