"""The meter: takes usage events off the hot path and writes them to the ledger in batches.

Guarantees (see docs/metering.md):

* **Non-durable (default).** `record()` appends to an in-memory buffer and returns.  A
  background thread writes the buffer as one batch when its oldest event has waited
  `flush_interval_s` (by the injected `clock`) or when the buffer is half full.
* **Back-pressure, never drops.** When the buffer reaches `max_buffer`, `record()` flushes
  synchronously on the calling thread.  If that write fails, the buffer is spilled to a JSONL
  file so memory stays bounded; `replay_spill()` writes such a file back.
* **Retry without double counting.** A failed write leaves its events buffered, in order,
  for the next flush; the ledger is idempotent by event id, so a batch that committed but
  reported an error is not counted twice when retried.
* **A bad event never blocks a flush.** The ledger sets aside an event it refuses (a dead
  letter, with the reason) and commits the rest, so a write fails only when the ledger
  itself does.  Budget totals leave out the events a ledger would refuse.
* **Durable mode.** `record()` returns only after the event (and anything buffered before it)
  is committed; if the ledger fails, the event stays buffered and the error is raised.
* **Close.** `close()` stops the thread and flushes; if the ledger still fails, the pending
  events are spilled to ``usage-spill-*.jsonl`` next to the ledger (or in the data
  directory) and the path is logged and kept in `spilled_to`.  An `atexit` hook closes
  every meter still open when the interpreter exits.

Budgets read `month_to_date` / `day_to_date`: the ledger is queried once per (tenant,
period), together with the events still buffered; after that `record()` keeps an
in-process running total, so a budget check costs no query.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from broker.errors import MeteringError
from broker.metering.deadletter import DeadLetter, dead_letter_line, reason_of, spill_dead_letters, usage_problem
from broker.metering.events import UsageEvent, dumps_event, event_from_json, utc
from broker.metering.ledger import Ledger
from broker.metering.paths import data_dir

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Meter", "replay_spill"]

log = logging.getLogger("llama_broker.metering")

_MONTH, _DAY = "month", "day"


def _period(kind: str, moment: datetime) -> tuple[str, datetime, datetime]:
    """(label, start, end) of the UTC month or day holding `moment`."""
    if kind == _MONTH:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start.strftime("%Y-%m"), start, end
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return start.strftime("%Y-%m-%d"), start, start + timedelta(days=1)


class Meter:
    """Buffers `UsageEvent`s and writes them to a `Ledger` (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        durable: bool = False,
        max_buffer: int = 10_000,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        spill_dir: str | Path | None = None,
        owns_ledger: bool = False,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.ledger = ledger
        self.durable = durable
        self.max_buffer = max_buffer
        self.flush_interval_s = flush_interval_s
        self.background = background
        self.owns_ledger = owns_ledger
        self.spilled_to: Path | None = None
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._clock = clock
        self._lock = threading.Lock()  # buffer, running totals
        self._write_lock = threading.Lock()  # one ledger write at a time
        self._wake = threading.Condition(self._lock)
        self._buffer: list[UsageEvent] = []
        self._oldest: float | None = None  # clock() when the oldest buffered event arrived
        self._inflight = 0
        self._totals: dict[tuple[str, str, str], Decimal] = {}
        self._tracked: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        # a strong reference on purpose: a meter dropped without close() still flushes at exit
        atexit.register(self._close_at_exit)

    # ------------------------------------------------------------------ recording

    @property
    def pending(self) -> int:
        """Events recorded but not yet committed (buffered or being written)."""
        with self._lock:
            return len(self._buffer) + self._inflight

    def record(self, event: UsageEvent) -> None:
        """Meter one event: buffer it (or, in durable mode, commit it before returning)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the meter is closed")
            if event.cost_usd is not None and event.tenant in self._tracked and usage_problem(event) is None:
                self._add_to_totals(event)
            self._buffer.append(event)
            now = self._clock()
            if self._oldest is None:
                self._oldest = now
            size = len(self._buffer)
            due = now - self._oldest >= self.flush_interval_s
            if not self.durable and self.background and size < self.max_buffer:
                if self._thread is None:
                    self._start_thread()
                if due or size * 2 >= self.max_buffer:
                    self._wake.notify()
        if self.durable:
            self.flush()
        elif size >= self.max_buffer:
            self._flush_or_spill()
        elif due and not self.background:
            self._flush_quietly()

    def tick(self) -> None:
        """Flush if the oldest buffered event has been held `flush_interval_s` (by the clock)."""
        with self._lock:
            due = self._oldest is not None and self._clock() - self._oldest >= self.flush_interval_s
        if due:
            self._flush_quietly()

    # ------------------------------------------------------------------ flushing

    def flush(self, timeout: float | None = None) -> None:
        """Commit every event recorded before this call; raises `MeteringError` on failure.

        On failure the events stay buffered for the next flush.  `timeout` bounds the wait for
        a write already in progress (`TimeoutError` when it passes).
        """
        if not self._write_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise TimeoutError("a ledger write is still in progress")
        try:
            self._write_pending()
        except Exception as exc:
            raise MeteringError(
                f"the usage ledger refused a write ({_failure(exc)}); {self.pending} events kept for retry"
            ) from exc
        finally:
            self._write_lock.release()

    def _write_pending(self) -> None:
        """Write the whole buffer as one batch; the caller holds the write lock."""
        with self._lock:
            batch, oldest = self._buffer, self._oldest
            self._buffer, self._oldest, self._inflight = [], None, len(batch)
        if not batch:
            return
        try:
            self.ledger.write(batch)
        except BaseException:
            with self._lock:  # put them back in front, keeping their hold time
                self._buffer = batch + self._buffer
                self._oldest = oldest
                self._inflight = 0
            raise
        with self._lock:
            self._inflight = 0

    def _flush_quietly(self) -> bool:
        try:
            self.flush()
            return True
        except Exception as exc:
            log.warning("usage ledger write failed: %s", exc)  # the message counts the events kept
            return False

    def _flush_or_spill(self) -> None:
        """Back-pressure: flush now on this thread; if the ledger fails, spill to disk."""
        if self._flush_quietly():
            return
        path = self._spill_buffer()
        if path is not None:
            log.warning("usage ledger unavailable and the buffer is full: events spilled to %s", path)

    def _spill_buffer(self) -> Path | None:
        with self._write_lock:
            with self._lock:
                batch, oldest = self._buffer, self._oldest
                self._buffer, self._oldest = [], None
            if not batch:
                return None
            try:
                path = self._spill(batch)
            except BaseException:
                with self._lock:
                    self._buffer = batch + self._buffer
                    self._oldest = oldest
                raise
        self.spilled_to = path
        return path

    def _spill(self, events: list[UsageEvent]) -> Path:
        directory = self._spill_dir or getattr(self.ledger, "spill_dir", None) or data_dir()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = directory / f"usage-spill-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        with open(path, "a", encoding="utf-8") as fh:
            for event in events:
                fh.write(dumps_event(event) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path

    # ------------------------------------------------------------------ background thread

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llama-broker-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping:
                    if self._buffer:
                        waited = self._clock() - (self._oldest or 0.0)
                        if waited >= self.flush_interval_s or len(self._buffer) * 2 >= self.max_buffer:
                            break
                        timeout = min(self.flush_interval_s - waited, self.flush_interval_s)
                    else:
                        timeout = self.flush_interval_s
                    self._wake.wait(max(timeout, 0.005))
                if self._stopping:
                    return
            if not self._flush_quietly():
                with self._lock:  # back off one interval before retrying a failing ledger
                    if not self._stopping:
                        self._wake.wait(max(self.flush_interval_s, 0.05))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the thread and flush; a still-failing ledger gets the events spilled to JSONL."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._wake.notify_all()
            thread = self._thread
        atexit.unregister(self._close_at_exit)
        if thread is not None:
            thread.join()
        try:
            self.flush()
        except Exception as exc:
            path = self._spill_buffer()
            log.error(
                "usage ledger unavailable at close (%s): pending events written to %s; "
                "load them with broker.metering.replay_spill",
                exc,
                path,
            )
        finally:
            if self.owns_ledger:
                self.ledger.close()

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter exit: report and go on
            log.exception("closing the usage meter at exit failed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ budgets

    def month_to_date(self, tenant: str, now: datetime) -> Decimal:
        """Known spend of `tenant` in the UTC calendar month of `now` (ledger + this process)."""
        return self._to_date(tenant, _MONTH, now)

    def day_to_date(self, tenant: str, now: datetime) -> Decimal:
        """Known spend of `tenant` in the UTC day of `now` (ledger + this process)."""
        return self._to_date(tenant, _DAY, now)

    def _to_date(self, tenant: str, kind: str, now: datetime) -> Decimal:
        label, start, end = _period(kind, utc(now))
        key = (tenant, kind, label)
        with self._lock:
            total = self._totals.get(key)
        if total is not None:
            return total
        with self._write_lock:  # no write in flight: ledger + buffer counts each event once
            stored = self.ledger.spend(tenant, start, end)
            with self._lock:
                buffered = sum(
                    (
                        e.cost_usd
                        for e in self._buffer
                        if e.tenant == tenant
                        and e.cost_usd is not None
                        and start <= utc(e.timestamp) < end
                        and usage_problem(e) is None
                    ),
                    Decimal(0),
                )
                for old in [k for k in self._totals if k[0] == tenant and k[1] == kind and k[2] < label]:
                    del self._totals[old]  # an earlier period is never asked for again
                self._totals[key] = total = stored + buffered
                self._tracked.add(tenant)
        return total

    def _add_to_totals(self, event: UsageEvent) -> None:
        moment = utc(event.timestamp)
        for kind, label in ((_MONTH, moment.strftime("%Y-%m")), (_DAY, moment.strftime("%Y-%m-%d"))):
            key = (event.tenant, kind, label)
            if key in self._totals:
                self._totals[key] += event.cost_usd  # type: ignore[operator]


def _failure(exc: BaseException) -> str:
    """What failed, in a few words: a ledger's `MeteringError` says it; other errors by type."""
    return str(exc) if isinstance(exc, MeteringError) else type(exc).__name__


def _read_spill_line(line: str) -> UsageEvent | DeadLetter:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return event_from_json(data)
    except Exception as exc:
        return dead_letter_line(line, f"unreadable spill line: {reason_of(exc)}")


def replay_spill(ledger: Ledger, path: str | Path, *, remove: bool = True, batch: int = 5_000) -> int:
    """Write the events of a spill file to `ledger`; returns how many were new.

    Safe to run twice: the ledger skips event ids it already holds.  Events the ledger
    refuses, and lines that are not readable events, are set aside as dead letters (with
    the reason) while the rest commits.  The file is removed after a complete replay unless
    ``remove=False``.
    """
    path = Path(path)
    inserted = 0
    chunk: list[UsageEvent] = []
    unreadable: list[DeadLetter] = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            if not line.strip():
                continue
            item = _read_spill_line(line.rstrip("\n"))
            if isinstance(item, DeadLetter):
                unreadable.append(item)
            else:
                chunk.append(item)
            if len(chunk) >= batch:
                inserted += ledger.write(chunk)
                chunk = []
    inserted += ledger.write(chunk)
    if unreadable:
        set_aside = getattr(ledger, "set_aside", None)
        if set_aside is not None:
            set_aside(unreadable)
        else:
            where = spill_dead_letters(path.parent, unreadable)
            log.warning("%d unreadable lines of %s set aside in %s", len(unreadable), path, where)
    if remove:
        path.unlink()
    return inserted
