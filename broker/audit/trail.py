"""The audit trail: a call hook that stores every decision beside the ledger, in batches.

On the hot path a call costs one small object (the decision and how the call ended); rows are
built and written by a background flush every `flush_interval_s`, or when `max_batch` are
waiting, and on `close()`.  With durable metering the row is written before the call returns.
A write that fails keeps its rows for the next flush; rows still unwritten at close go to an
``audit-spill-*.jsonl`` file in the data directory, so no decision is lost silently.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.errors import BrokerError

from .decisions import DecisionEntry
from .store import AuditStore
from .versions import PolicyVersion

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.metering.events import UsageEvent
    from broker.policy.decision import Decision
    from broker.routes import Route
    from broker.types import ChatRequest, ChatResponse

__all__ = ["MAX_PENDING", "AuditTrail"]

#: decisions kept in memory while the store refuses writes; past this many they are spilled to a file
MAX_PENDING = 100_000

log = logging.getLogger("llama_broker.audit")


class _CallScope:
    __slots__ = ("decision", "meta", "route", "started", "trail")

    def __init__(self, trail: AuditTrail, decision: Decision, meta: CallMeta, started: dt.datetime) -> None:
        self.trail, self.decision, self.meta, self.started = trail, decision, meta, started
        self.route: str | None = None

    def claim(self, route: Route) -> BrokerError | None:
        return None

    def attempted(self, route: Route, event: UsageEvent) -> None:
        self.route = route.id

    def close(self, response: ChatResponse | None, error: BaseException | None) -> None:
        # the route that answered; for a failed call, the last one tried (None: none was)
        chosen = response.route.id if response is not None and response.route is not None else self.route
        kind = None if error is None else (getattr(error, "kind", None) or type(error).__name__)
        self.trail.add(DecisionEntry(self.decision, self.meta, self.trail.version.sha256, self.started,
                                     chosen, kind))


class AuditTrail:
    """Stores each call's decision (see the module docstring); opened by the broker when auditing is on."""

    def __init__(
        self,
        store: AuditStore,
        version: PolicyVersion,
        *,
        durable: bool = False,
        flush_interval_s: float = 1.0,
        max_batch: int = 1000,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.store, self.version, self.durable, self.now = store, version, durable, now
        self.blocking = durable  # a durable trail writes in `close`: async calls run it off the loop
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self._pending: list[DecisionEntry] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        store.store_version(version)
        self._thread: threading.Thread | None = None
        if not durable:
            self._thread = threading.Thread(target=self._run, name="llama-broker-audit", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the hook

    def open(self, request: ChatRequest, decision: Decision, meta: CallMeta) -> _CallScope:
        return _CallScope(self, decision, meta, self.now())

    def add(self, entry: DecisionEntry) -> None:
        with self._lock:
            self._pending.append(entry)
            full = len(self._pending) >= self.max_batch
        if self.durable:
            self.flush()
        elif full:
            self._wake.set()

    # ------------------------------------------------------------------ writes

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write what is waiting; on failure the rows stay for the next flush and the error is raised."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                return self.store.write_decisions([e.row() for e in batch])
            except BaseException as exc:
                with self._lock:
                    self._pending[:0] = batch
                    over = len(self._pending) > MAX_PENDING
                if over:  # a store that keeps refusing: what waits goes to a spill file, never unbounded memory
                    self._spill(exc)
                raise

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except BrokerError as exc:
                log.warning("audit trail write failed (%s); %d decisions kept for retry", exc, self.pending)
            except Exception:
                log.exception("audit trail flush failed; %d decisions kept for retry", self.pending)

    def close(self) -> None:
        """Stop the flush thread and write what is left (spilled to a file if the store refuses)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception as exc:
            self._spill(exc)
        finally:
            self.store.close()

    def _spill(self, exc: BaseException) -> None:
        from broker.metering.paths import data_dir

        with self._lock:
            batch, self._pending = self._pending, []
        path = data_dir() / f"audit-spill-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for entry in batch:
                f.write(json.dumps(entry.row(), sort_keys=True, default=str) + "\n")
        log.error("the audit store refused a write (%s); %d decisions written to %s", exc, len(batch), path)
