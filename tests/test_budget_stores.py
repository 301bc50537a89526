"""The reservation stores (memory, SQLite file, real PostgreSQL): conditional, all-or-nothing, leased."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from ledger_fixtures import *  # noqa: F403  (sqlite_url, pg_url: an empty ledger database on each backend)

from broker.budgets import Hold, MemoryReservations, ReservationStore, open_reservations
from broker.metering import open_ledger

A, B = "tenant:acme@2026-11", "group:team-x@2026-11"
CENT = Decimal("0.01")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[ReservationStore]:
    if request.param == "memory":
        made: ReservationStore = MemoryReservations()
    else:
        url = str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))
        open_ledger(url).close()  # the ledger's own tables first, as a broker opens them
        made = open_reservations(url)
    made.ensure(A, lambda: Decimal(0))
    made.ensure(B, lambda: Decimal(0))
    try:
        yield made
    finally:
        made.close()


def test_a_capped_hold_is_taken_only_while_it_fits(store: ReservationStore) -> None:
    for i in range(3):
        assert store.reserve(f"r{i}", [Hold(A, CENT, Decimal("0.03"))], 30).taken
    refused = store.reserve("r3", [Hold(A, CENT, Decimal("0.03"))], 30)
    assert not refused.taken and refused.standing[A].reserved == Decimal("0.03")
    assert store.reserve("alert", [Hold(A, CENT, None)], 30).taken  # no cap: taken, and it counts
    assert store.standing([A])[A].reserved == Decimal("0.04")


def test_holds_are_taken_all_or_none(store: ReservationStore) -> None:
    outcome = store.reserve("r", [Hold(A, CENT, Decimal(1)), Hold(B, CENT, Decimal("0.005"))], 30)
    assert not outcome.taken
    assert store.standing([A, B]) == {A: outcome.standing[A], B: outcome.standing[B]}
    assert store.standing([A])[A].reserved == 0


def test_settling_turns_the_reservation_into_the_metered_cost(store: ReservationStore) -> None:
    assert store.reserve("r", [Hold(A, Decimal("0.05"), None), Hold(B, Decimal("0.05"), None)], 30).taken
    store.settle("r", [A, B], Decimal("0.0123"))
    standing = store.standing([A, B])
    assert standing[A].settled == standing[B].settled == Decimal("0.0123")
    assert standing[A].reserved == standing[B].reserved == 0
    assert store.reserve("s", [Hold(A, Decimal("0.05"), None)], 30).taken
    store.settle("s", [A], Decimal(0))  # released, nothing spent
    assert store.standing([A])[A] == standing[A]


def test_a_period_row_is_seeded_once(store: ReservationStore) -> None:
    key = "tenant:acme@2026-12"
    store.ensure(key, lambda: Decimal("4.5"))
    store.ensure(key, lambda: Decimal("99"))
    assert store.standing([key])[key].settled == Decimal("4.5")


def test_many_threads_never_take_more_than_the_cap(store: ReservationStore) -> None:
    cap, amount = Decimal("0.37"), Decimal("0.01")

    def one(i: int) -> bool:
        return store.reserve(f"t{i}", [Hold(A, amount, cap), Hold(B, amount, None)], 30).taken

    with ThreadPoolExecutor(16) as pool:
        taken = sum(pool.map(one, range(120)))
    assert taken == 37
    assert store.standing([A])[A].reserved == Decimal("0.37") == store.standing([B])[B].reserved


def test_an_unrenewed_reservation_expires_and_a_renewed_one_does_not(store: ReservationStore) -> None:
    now = [0.0]
    if isinstance(store, MemoryReservations):
        store.clock = lambda: now[0]
    lease = 0.6
    assert store.reserve("dies", [Hold(A, Decimal("0.5"), Decimal(1))], lease).taken
    assert store.reserve("lives", [Hold(A, Decimal("0.5"), Decimal(1))], lease).taken
    assert not store.reserve("late", [Hold(A, CENT, Decimal(1))], lease).taken
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 4):
            store.renew(["lives"], lease)

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        for _ in range(2):
            now[0] += lease * 0.75
            time.sleep(lease * 0.75)
        standing = store.standing([A])[A]
        assert standing.reserved == Decimal("0.5")  # the renewed one still counts, the other expired
        assert store.reserve("room", [Hold(A, Decimal("0.5"), Decimal(1))], lease).taken
    finally:
        stop.set()
        renewer.join()
