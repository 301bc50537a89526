"""The budget hook: reserve before each route is tried, settle when the call ends, renew leases meanwhile.

    open(request, decision)   the call's limits (tenant, its groups, per provider); None without any
    claim(route)              the previous route's reservation settled; this route's upper-bound cost
                              held against every limit covering it, in one step in the store;
                              a `block` limit that cannot fit refuses the route (`BudgetExceeded`)
    attempted(route, event)   the attempt's metered cost added to what the route will settle
    close(...)                the open reservation settled to the metered cost, the rest released

The hook is also the router's `BudgetSource`: the rule applied once before any route reads the
same store.  A store that cannot be reached refuses the call (its `MeteringError`): a budget that
cannot be checked is not spent.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from broker.errors import BrokerError, MeteringError
from broker.policy.budget import (
    BudgetLimit,
    Standing,
    call_limits,
    describe,
    exceeded,
    refusal,
    tightest,
    upper_bound_cost,
)
from broker.policy.schema import TenantPolicy

from .seed import ledger_spend
from .store import Hold, ReservationStore

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.metering.events import UsageEvent
    from broker.metering.ledger import Ledger
    from broker.policy.decision import Decision
    from broker.policy.loaded import Policy
    from broker.routes import Route
    from broker.types import ChatRequest, ChatResponse

__all__ = ["BudgetHook"]

log = logging.getLogger("llama_broker.budgets")
_NOTHING = Standing(Decimal(0), Decimal(0))


class BudgetHook:
    """Budgets of one broker, held in `store` (shared with every broker that opens the same one)."""

    def __init__(
        self,
        policy: Policy,
        store: ReservationStore,
        ledger: Ledger | None,
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.policy = policy
        self.store = store
        self.ledger = ledger
        self.now = now
        self.lease_s = policy.budgets.lease_s
        self.blocking = store.blocking
        self._open: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # ------------------------------------------------------------------ the router's budget source

    def limits(self, tenant: TenantPolicy, name: str, now: dt.datetime) -> tuple[BudgetLimit, ...]:
        return call_limits(tenant, name, self.policy.groups_of(tenant.name), now)

    def standing(self, limits: Sequence[BudgetLimit]) -> list[Standing]:
        self.ensure(limits)
        seen = self.store.standing([lim.key for lim in limits])
        return [seen.get(lim.key, _NOTHING) for lim in limits]

    def ensure(self, limits: Sequence[BudgetLimit]) -> None:
        """Every limit's period row exists in the store, seeded from the ledger when new."""
        for lim in limits:
            self.store.ensure(lim.key, functools.partial(self._seed, lim))

    def _seed(self, limit: BudgetLimit) -> Decimal:
        return ledger_spend(self.ledger, limit) if self.ledger is not None else Decimal(0)

    # ------------------------------------------------------------------ the call hook

    def open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> CallBudget | None:
        limits = self.limits(decision.tenant_policy, decision.tenant, self.now())
        if not limits:
            return None
        self.ensure(limits)
        return CallBudget(self, request, decision, limits)

    # ------------------------------------------------------------------ leases

    def track(self, reservation_id: str) -> None:
        with self._lock:
            self._open.add(reservation_id)
            if self._renewer is None and not self._stop.is_set():
                self._renewer = threading.Thread(target=self._renew, name="llama-broker-budget-leases", daemon=True)
                self._renewer.start()

    def untrack(self, reservation_id: str) -> None:
        with self._lock:
            self._open.discard(reservation_id)

    def _renew(self) -> None:
        """Push back the leases of open calls every third of a lease, until the hook closes."""
        while not self._stop.wait(self.lease_s / 3):
            with self._lock:
                ids = sorted(self._open)
            try:
                self.store.renew(ids, self.lease_s)
            except Exception:
                log.exception("renewing %d budget reservations failed; they expire after %ss", len(ids), self.lease_s)

    def close(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        self.store.close()


class CallBudget:
    """One call's reservations: at most one open at a time (the route being tried)."""

    def __init__(self, hook: BudgetHook, request: ChatRequest, decision: Decision,
                 limits: tuple[BudgetLimit, ...]) -> None:
        self.hook, self.request, self.decision, self.limits = hook, request, decision, limits
        self._held: tuple[str, str, tuple[str, ...]] | None = None  # reservation id, route id, keys
        self._cost = Decimal(0)

    def _conditional(self, limit: BudgetLimit) -> bool:
        """Whether `limit` refuses this call when exceeded (else it is reserved whatever it holds)."""
        if limit.on_exceed == "block":
            return True
        return limit.on_exceed == "downgrade" and self.decision.downgraded_from is None

    def claim(self, route: Route) -> BrokerError | None:
        self._settle()
        covering = [lim for lim in self.limits if lim.covers(route.provider)]
        estimate = upper_bound_cost(route, self.request)
        if not covering or estimate <= 0:
            return None  # no price: the route meters no cost, so it spends no budget
        holds = [Hold(lim.key, estimate, lim.limit_usd if self._conditional(lim) else None) for lim in covering]
        reservation_id = uuid.uuid4().hex
        try:
            outcome = self.hook.store.reserve(reservation_id, holds, self.hook.lease_s)
        except MeteringError as exc:
            return exc
        seen = [(lim, outcome.standing.get(lim.key, _NOTHING)) for lim in covering]
        if not outcome.taken:
            refusing = [(lim, st) for lim, st in seen if self._conditional(lim) and exceeded(lim, st, estimate)]
            limit, standing = tightest(refusing or seen, estimate)
            return refusal(self.decision.tenant, limit, standing, estimate, f"; route {route.id!r} is not tried")
        self._held = (reservation_id, route.id, tuple(h.key for h in holds))
        self.hook.track(reservation_id)
        over = [(lim, st) for lim, st in seen if exceeded(lim, st, estimate)]
        if over:
            limit, standing = tightest(over, estimate)
            log.warning("tenant %s: budget exceeded (%s); on_exceed=%s, route %s goes ahead",
                        self.decision.tenant, describe(limit, standing, estimate), limit.on_exceed, route.id)
        return None

    def attempted(self, route: Route, event: UsageEvent) -> None:
        if self._held is not None and self._held[1] == route.id and event.cost_usd is not None:
            self._cost += event.cost_usd

    def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
        self._settle()

    def _settle(self) -> None:
        """Turn the open reservation into settled spend: this route's metered cost; release the rest."""
        held, cost = self._held, self._cost
        if held is None:
            return
        self._held, self._cost = None, Decimal(0)
        self.hook.untrack(held[0])
        try:
            self.hook.store.settle(held[0], held[2], cost)
        except MeteringError:  # the reservation expires after its lease; its spend is then not counted
            log.exception("settling a budget reservation of tenant %s failed", self.decision.tenant)
