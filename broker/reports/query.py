"""Report queries: filters, group-bys and the rows every renderer consumes.

Aggregation happens in the ledger's SQL (``GROUP BY``); this module validates the request,
fills in the columns every row carries and orders the rows.  A row holds its group-by
values, then ``tenant``, ``provider``, ``model`` and ``region`` (``"*"`` when that dimension
is not grouped, meaning "all"), then the metrics:

``calls``, ``input_tokens``, ``output_tokens``, ``cached_input_tokens``, ``cost_usd`` (exact
`Decimal` sum of the known costs; ``None`` when no call of the group had a known price),
``unknown_cost_calls`` (calls whose price was unknown: never counted as $0),
``estimated_calls`` (usage estimated by the broker, not reported by the provider) and
``error_calls``; then ``energy_j`` (joules measured, ``None`` where none was),
``usd_per_mtok`` ($ per million input and output tokens, ``None`` unless every call had a
known price) and ``tokens_per_joule`` (output tokens per joule over the events with an
energy figure): see `broker.metering.query.unit_rates`.

Group-by names: tenant, provider, model, model_id, route_id (alias route), region,
jurisdiction, status, error_kind, day and month (UTC, ``2025-01-31`` / ``2025-01``),
``tag:KEY`` (the value of one tag; ``None`` for events without it) and ``tag`` (the event's
whole tag set as ``k1=v1,k2=v2``, so each event falls in exactly one group and totals add up).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

from broker.metering.ledger import Ledger
from broker.metering.query import METRIC_KEYS, ReportFilters, parse_group_by, unit_rates

__all__ = [
    "DEFAULT_GROUP_BY",
    "IDENTITY_KEYS",
    "ReportFilters",
    "month_bounds",
    "parse_time",
    "report_rows",
]

DEFAULT_GROUP_BY = ("tenant", "provider", "model", "region")
#: Columns every row carries, grouped or not ("*" = all values).
IDENTITY_KEYS = ("tenant", "provider", "model", "region")
ALL = "*"


def _sort_key(row: dict[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple((row[k] is not None, str(row[k]) if row[k] is not None else "") for k in keys)


def report_rows(
    ledger: Ledger,
    group_by: Iterable[str] | None = None,
    filters: ReportFilters | None = None,
) -> list[dict[str, Any]]:
    """Aggregate the ledger into report rows (see the module docstring for their columns)."""
    dims = parse_group_by(DEFAULT_GROUP_BY if group_by is None else group_by)
    keys = [d.key for d in dims]
    raw = ledger.aggregate(group_by=keys, filters=filters or ReportFilters())
    rows = []
    for r in raw:
        row = {k: r[k] for k in keys}
        for k in IDENTITY_KEYS:
            row.setdefault(k, ALL)
        for k in METRIC_KEYS:
            row[k] = r[k]
        row.update(unit_rates(r))  # $ per 1M tokens, and tokens per joule where energy was measured
        rows.append(row)
    rows.sort(key=lambda row: _sort_key(row, keys))
    return rows


_RELATIVE = re.compile(r"^(\d+)\s*([dhw])$")


def parse_time(value: str | None, *, end: bool = False, now: datetime | None = None) -> datetime | None:
    """A CLI time: ISO date or datetime, ``today``, or a span back from now (``7d``, ``12h``, ``2w``).

    A bare date as an *end* (``--until 2025-01-31``) means the end of that day, so the day
    is included.  Results are aware UTC datetimes.
    """
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        span = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "w": timedelta(weeks=amount)}[unit]
        return now - span
    if text == "today":
        day = now.date()
        return _day_bound(day, end)
    try:
        return _day_bound(date.fromisoformat(text), end)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {value!r}: use YYYY-MM-DD, an ISO datetime, today or 7d"
        ) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _day_bound(day: date, end: bool) -> datetime:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start + timedelta(days=1) if end else start


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def month_bounds(value: str) -> tuple[datetime, datetime]:
    """``2026-11`` as its UTC bounds: the first instant of the month and of the next one."""
    match = _MONTH.match(value.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"cannot read month {value!r}: use YYYY-MM, e.g. 2026-11")
    start = datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=timezone.utc)
    return start, (start + timedelta(days=32)).replace(day=1)
