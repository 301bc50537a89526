"""The usage ledger: its protocol, its location and what both backends share.

A ledger is a table of `UsageEvent`s.  Two backends implement it:

* `SQLiteLedger` (``sqlite:///abs/path.db``): the embedded default, a file in WAL mode;
  many threads and several processes may write one file.
* `PostgresLedger` (``postgresql://user@host:port/db``): for many broker instances; needs
  the ``postgres`` extra (psycopg 3), imported only when such a URL is opened.

Without a URL the ledger is ``usage.db`` under the data directory: ``$LLAMA_BROKER_DATA_DIR``
when set, else ``platformdirs.user_data_dir("llama-broker")``.

Reports group by dimensions (`parse_group_by`) and aggregate in SQL; both backends return
the same row shape (`METRIC_KEYS`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from broker.metering.events import UsageEvent
    from broker.reports.query import ReportFilters

__all__ = [
    "DIMENSIONS",
    "METRIC_KEYS",
    "Dimension",
    "Ledger",
    "LedgerNotFound",
    "data_dir",
    "default_ledger_url",
    "open_ledger",
    "parse_group_by",
]

#: Plain group-by dimensions; ``tag:KEY`` is accepted besides these.
DIMENSIONS = (
    "tenant",
    "provider",
    "model",
    "model_id",
    "route_id",
    "region",
    "jurisdiction",
    "status",
    "error_kind",
    "day",
    "month",
    "tag",
)
_ALIASES = {"route": "route_id", "tags": "tag"}

#: Aggregated columns of every report row, in display order.
METRIC_KEYS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "unknown_cost_calls",
    "estimated_calls",
    "error_calls",
)


class LedgerNotFound(FileNotFoundError):
    """A ledger was opened with ``create=False`` and does not exist."""


@runtime_checkable
class Ledger(Protocol):
    """Where usage events are kept.  Implementations are safe to share between threads."""

    url: str

    def write(self, events: Sequence[UsageEvent]) -> int:
        """Insert events, skipping ids already present; returns how many rows were new."""

    def spend(self, tenant: str, since: datetime, until: datetime | None = None) -> Decimal:
        """Sum of the known costs of `tenant` in ``[since, until)``; unknown costs add nothing."""

    def aggregate(self, *, group_by: Sequence[str], filters: ReportFilters) -> list[dict[str, Any]]:
        """One row per group (SQL ``GROUP BY``) with the `METRIC_KEYS` columns."""

    def count(self) -> int:
        """Number of events in the ledger."""

    def close(self) -> None:
        """Release connections; idempotent."""


# --------------------------------------------------------------------------- location


def data_dir() -> Path:
    """The broker's data directory (``$LLAMA_BROKER_DATA_DIR`` overrides the platform default)."""
    override = os.environ.get("LLAMA_BROKER_DATA_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llama-broker"))


def default_ledger_url() -> str:
    """``sqlite:///<data dir>/usage.db``."""
    return "sqlite://" + str((data_dir() / "usage.db").resolve())


def sqlite_path_from_url(url: str) -> str:
    """The file path of a ``sqlite://`` URL (``sqlite:///abs/x.db`` -> ``/abs/x.db``).

    ``sqlite://rel/x.db`` is relative to the working directory; ``sqlite://:memory:`` is an
    in-memory ledger (one connection; for experiments, not for a broker).
    """
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    rest = rest.split("?", 1)[0]
    if not rest:
        raise ValueError(f"no path in ledger URL {url!r}")
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")  # sqlite:////abs/x.db (SQLAlchemy style) is the same file
    return os.path.expanduser(rest)


def open_ledger(url: str | None = None, *, create: bool = True) -> Ledger:
    """Open the ledger at `url` (default: `default_ledger_url()`).

    ``sqlite://...`` or a plain file path opens a `SQLiteLedger`; ``postgresql://`` or
    ``postgres://`` a `PostgresLedger`.  With ``create=False`` a SQLite file that does not
    exist raises `LedgerNotFound` instead of being created (reports use this).
    """
    url = url or default_ledger_url()
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from broker.metering.postgres import PostgresLedger

        return PostgresLedger(url)
    if scheme in ("sqlite", ""):
        from broker.metering.sqlite import SQLiteLedger

        path = sqlite_path_from_url(url) if scheme else os.path.expanduser(url)
        if not create and path != ":memory:" and not os.path.exists(path):
            raise LedgerNotFound(f"no ledger at {path}")
        return SQLiteLedger(path)
    raise ValueError(f"unsupported ledger URL {url!r}: use sqlite:///path or postgresql://...")


# --------------------------------------------------------------------------- shared query parts


@dataclass(frozen=True)
class Dimension:
    """One group-by dimension: its row key and, for ``tag:KEY``, the tag key."""

    key: str
    tag_key: str | None = None

    @property
    def is_tag_value(self) -> bool:
        return self.tag_key is not None


def parse_group_by(names: Iterable[str]) -> tuple[Dimension, ...]:
    """Validate group-by names (comma lists allowed) into dimensions, keeping order, no repeats."""
    out: list[Dimension] = []
    for raw in names:
        for part in str(raw).split(","):
            name = part.strip()
            if not name:
                continue
            if name.lower().startswith("tag:"):
                key = name[4:].strip()
                if not key:
                    raise ValueError("tag:KEY needs a tag key, e.g. tag:team")
                dim = Dimension(key=f"tag:{key}", tag_key=key)
            else:
                name = _ALIASES.get(name.lower(), name.lower())
                if name not in DIMENSIONS:
                    allowed = ", ".join(DIMENSIONS)
                    raise ValueError(f"unknown group-by {part.strip()!r}; choose from {allowed}, tag:KEY")
                dim = Dimension(key=name)
            if dim not in out:
                out.append(dim)
    return tuple(out)


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def filter_equalities(filters: Any) -> list[tuple[str, str]]:
    """(column, value) pairs for the equality filters set on a `ReportFilters`."""
    pairs = []
    for column in ("tenant", "provider", "model", "region", "jurisdiction"):
        value = getattr(filters, column, None)
        if value is not None:
            pairs.append((column, value))
    return pairs


def tags_label(tags: dict[str, Any] | None) -> str:
    """A tag set as ``k1=v1,k2=v2`` (sorted by key; empty string for no tags)."""
    if not tags:
        return ""
    return ",".join(f"{k}={tags[k]}" for k in sorted(tags))


_EXACT = Context(prec=80)
#: Costs are kept to the picodollar (1e-12 USD); finer digits are rounded half-even.
COST_SCALE = 12


def to_picousd(cost: Decimal) -> int:
    """A cost in integer picodollars (exact for costs with at most 12 decimal places)."""
    return int(_EXACT.scaleb(cost, COST_SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))


def tidy_decimal(value: Decimal) -> Decimal:
    """`value` without trailing zeros and never in exponent form (``100``, ``0.00072``)."""
    normal = _EXACT.normalize(value)
    return normal if normal.as_tuple().exponent <= 0 else normal.quantize(Decimal(1), context=_EXACT)
