"""Events a ledger refuses, and how a batch keeps going without them.

A ledger never lets one bad event stop a batch.  An event is *refused* when its usage is
out of bounds (`usage_problem`: token counts that are not integers in
``[0, MAX_TOKENS_PER_EVENT]``, a negative cost), when its row cannot be built, or when the
database rejects its values (an integer too large for 64 bits, a numeric overflow, text
that cannot be encoded).  A refused event becomes a `DeadLetter`: its id, the event as
JSON, the reason and the time, kept in the ledger's ``usage_dead_letter`` table, or in a
``usage-dead-letter-*.jsonl`` file when that table cannot take it either.

`isolate` finds the refused rows of a batch only when the batch insert fails: it splits the
failing part in halves until each refused row stands alone, so a clean batch costs one
insert and a batch with one bad row about ``2 * log2(n)`` more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from broker.metering.events import UsageEvent, event_to_json
from broker.usage import MAX_TOKENS_PER_CALL

__all__ = [
    "MAX_TOKENS_PER_EVENT",
    "DeadLetter",
    "dead_letter",
    "dead_letter_line",
    "isolate",
    "log_refused",
    "reason_of",
    "screen",
    "spill_dead_letters",
    "usage_problem",
]

log = logging.getLogger("llama_broker.metering")

#: The most tokens of one kind (input, output, cached input) a single event may carry: the
#: core's usage rule (`broker.usage`), checked again where events are written.
MAX_TOKENS_PER_EVENT = MAX_TOKENS_PER_CALL
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens")
_REASON_CHARS = 300
_ID_CHARS = 200

R = TypeVar("R")


def usage_problem(event: UsageEvent) -> str | None:
    """Why the ledger refuses `event`'s usage, or ``None`` when its usage is in bounds."""
    tin, tout, tcached, cost = event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cost_usd
    if (  # the common case in one expression: this runs for every event written
        type(tin) is int
        and type(tout) is int
        and type(tcached) is int
        and 0 <= tin <= MAX_TOKENS_PER_EVENT
        and 0 <= tout <= MAX_TOKENS_PER_EVENT
        and 0 <= tcached <= MAX_TOKENS_PER_EVENT
        and (cost is None or (type(cost) is Decimal and cost.is_finite() and not cost < 0))
    ):
        return None
    for name in _TOKEN_FIELDS:
        value = getattr(event, name)
        if type(value) is not int:  # bool, float, Decimal and str are not token counts
            return f"{name} is not an integer ({type(value).__name__})"
        if value < 0:
            return f"{name} is negative ({value})"
        if value > MAX_TOKENS_PER_EVENT:
            return f"{name} exceeds {MAX_TOKENS_PER_EVENT:,} ({value})"
    return f"cost_usd is negative or not a finite decimal ({cost})"


def _ascii(text: str, limit: int) -> str:
    """`text` as printable ASCII on one line (backslash escapes), at most `limit` characters."""
    flat = " ".join(str(text).split())
    safe = flat.encode("ascii", "backslashreplace").decode("ascii").replace("\x00", "\\x00")
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def reason_of(exc: BaseException) -> str:
    """A short, one-line reason for a refusal: the error's type and the first line of its message.

    Only the first line is kept: database errors put the failing row's values in later lines
    (``DETAIL: Failing row contains ...``), and those may hold prompt text.
    """
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return _ascii(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, _REASON_CHARS)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused event: its id, the event as JSON text, why it was refused and when."""

    event_id: str
    event: str
    reason: str
    timestamp: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event": json.loads(self.event),
            "reason": self.reason,
            "timestamp": self.timestamp.astimezone(timezone.utc).isoformat(),
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def dead_letter(event: UsageEvent, reason: str) -> DeadLetter:
    """The dead letter of a refused event.  Every text is made ASCII, so any database takes it."""
    event_id = str(getattr(event, "event_id", None) or f"no-id-{uuid.uuid4().hex}")
    try:
        body = json.dumps(event_to_json(event), sort_keys=True, default=str)
    except Exception as exc:  # a field no JSON encoder can take: keep what can be kept
        body = json.dumps({"event_id": event_id, "unencodable": reason_of(exc)})
    return DeadLetter(_ascii(event_id, _ID_CHARS), body, _ascii(reason, _REASON_CHARS), _now())


def dead_letter_line(line: str, reason: str) -> DeadLetter:
    """The dead letter of a spill-file line that is not a readable event (kept verbatim, as JSON text)."""
    try:
        data = json.loads(line)
        event_id = data.get("event_id") if isinstance(data, dict) else None
    except ValueError:
        event_id = None
    if not isinstance(event_id, str) or not event_id:
        event_id = "line-" + hashlib.sha256(line.encode("utf-8", "backslashreplace")).hexdigest()[:32]
    body = json.dumps({"unreadable_line": line})
    return DeadLetter(_ascii(event_id, _ID_CHARS), body, _ascii(reason, _REASON_CHARS), _now())


def screen(
    events: Sequence[UsageEvent], to_row: Callable[[UsageEvent], R]
) -> tuple[list[tuple[UsageEvent, R]], list[DeadLetter]]:
    """Split `events` into (event, row) pairs to insert and the dead letters of those refused up front."""
    rows: list[tuple[UsageEvent, R]] = []
    refused: list[DeadLetter] = []
    for event in events:
        try:
            problem = usage_problem(event)
            if problem is None:
                rows.append((event, to_row(event)))
                continue
        except Exception as exc:  # not an event the ledger can read: set aside, never retried
            problem = f"cannot encode the event: {reason_of(exc)}"
        refused.append(dead_letter(event, problem))
    return rows, refused


def isolate(
    items: Sequence[tuple[UsageEvent, R]],
    insert: Callable[[list[R]], int],
    refused_by: Callable[[BaseException], bool],
) -> tuple[int, list[DeadLetter]]:
    """Insert the rows of `items`; rows the database refuses become dead letters.

    `insert` writes a list of rows atomically (a savepoint) and returns how many were new.
    When it raises an error that `refused_by` blames on the data, the part is split in halves
    and each half tried again, down to single rows; any other error propagates at once.
    """
    inserted = 0
    refused: list[DeadLetter] = []
    parts: list[Sequence[tuple[UsageEvent, R]]] = [items] if items else []
    while parts:
        part = parts.pop()
        try:
            inserted += insert([row for _, row in part])
        except Exception as exc:
            if not refused_by(exc):
                raise
            if len(part) == 1:
                refused.append(dead_letter(part[0][0], f"refused by the database: {reason_of(exc)}"))
            else:
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]  # the first half is tried first
    return inserted, refused


def spill_dead_letters(directory: Path, entries: Sequence[DeadLetter]) -> Path:
    """Write dead letters the ledger's table could not take to a JSONL file in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = _now().strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"usage-dead-letter-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry.to_json(), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def log_refused(entries: Sequence[DeadLetter], where: str) -> None:
    """One warning for the events a write set aside (ids and reasons only, never their text)."""
    if not entries:
        return
    shown = "; ".join(f"{e.event_id}: {e.reason}" for e in entries[:5])
    more = f" (and {len(entries) - 5} more)" if len(entries) > 5 else ""
    log.warning("usage ledger set aside %d event(s) in %s: %s%s", len(entries), where, shown, more)
