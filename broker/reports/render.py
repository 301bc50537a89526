"""Report renderers: a rich table, CSV and JSON.

Money leaves as a decimal *string* (``"12.3456"``) in CSV and JSON, so no float rounding
creeps in between the ledger and a spreadsheet.  A group whose calls all had an unknown
price has ``cost_usd`` null in JSON, an empty cell in CSV and ``unknown`` in the table;
``unknown_cost_calls`` says how many calls a known total leaves out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import IO, Any

from broker.metering.query import METRIC_KEYS, tidy_decimal
from broker.reports.money import format_usd, usd_decimals

__all__ = [
    "HEADERS",
    "cell_text",
    "columns",
    "format_cost",
    "jsonable_rows",
    "print_table",
    "render_table",
    "to_csv",
    "to_json",
    "totals",
]

HEADERS = {
    "calls": "requests",
    "attempts": "attempts",
    "retries": "retries",
    "failovers": "failovers",
    "unpriced_input_tokens": "unpriced in tok",
    "unpriced_output_tokens": "unpriced out tok",
    "input_tokens": "input tok",
    "output_tokens": "output tok",
    "cached_input_tokens": "cached tok",
    "cost_usd": "cost (USD)",
    "unknown_cost_calls": "unpriced",
    "estimated_calls": "estimated",
    "error_calls": "errors",
    "energy_j": "energy (J)",
    "usd_per_mtok": "$ / 1M tok",
    "tokens_per_joule": "tok / J",
}


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Column order of a report: the first row's keys (every row has the same keys)."""
    return list(rows[0]) if rows else ["tenant", "provider", "model", "region", *METRIC_KEYS]


def format_cost(value: Decimal | None) -> str | None:
    """An exact decimal string without exponent (``None`` stays ``None``)."""
    if value is None:
        return None
    return format(tidy_decimal(Decimal(value)), "f")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_cost(value)
    return value


def jsonable_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every Decimal turned into its exact string."""
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def to_json(rows: Sequence[dict[str, Any]], *, indent: int | None = 2) -> str:
    """The rows as a JSON list (cost as a string decimal)."""
    return json.dumps(jsonable_rows(rows), indent=indent, ensure_ascii=False)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV with a header line (empty cell = none / unknown)."""
    out = io.StringIO()
    cols = columns(rows)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in jsonable_rows(rows):
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return out.getvalue()


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum of the metric columns over rows (cost: sum of known costs, None if none known)."""
    out: dict[str, Any] = dict.fromkeys(METRIC_KEYS, 0)
    known: list[Decimal] = []
    for row in rows:
        for k in METRIC_KEYS:
            if k == "cost_usd":
                if row[k] is not None:
                    known.append(Decimal(row[k]))
            else:
                out[k] += row[k]
    out["cost_usd"] = sum(known, Decimal(0)) if known else None
    return out


def cell_text(key: str, value: Any) -> str:
    if key == "cost_usd":
        return "unknown" if value is None else format_cost(value) or ""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


#: Metric columns the table leaves out when they are zero on every row.
_OPTIONAL = ("cached_input_tokens", "estimated_calls", "error_calls", "energy_j", "tokens_per_joule", "retries",
             "failovers", "unpriced_input_tokens", "unpriced_output_tokens")


def render_table(rows: Sequence[dict[str, Any]], *, title: str | None = None) -> Any:
    """A `rich.table.Table` of the rows with a totals line (all-zero optional columns left out)."""
    from rich.table import Table

    cols = [c for c in columns(rows) if c not in _OPTIONAL or any(row.get(c) for row in rows)]
    table = Table(title=title, show_footer=bool(rows))
    total = totals(rows)
    places = usd_decimals([row.get("cost_usd") for row in rows])

    def text(c: str, value: Any) -> str:  # money as $ with one number of decimals for the column
        return format_usd(value, places) if c == "cost_usd" else cell_text(c, value)

    for i, c in enumerate(cols):
        numeric = c in METRIC_KEYS
        footer = text(c, total[c]) if numeric else ("total" if i == 0 else "")
        table.add_column(HEADERS.get(c, c), justify="right" if numeric else "left", footer=footer)
    for row in rows:
        table.add_row(*(text(c, row.get(c)) for c in cols))
    return table


def print_table(
    rows: Sequence[dict[str, Any]], *, title: str | None = None, file: IO[str] | None = None
) -> None:
    """Print the table to `file` (default stdout)."""
    from rich.console import Console

    console = Console(file=file)
    if not console.is_terminal:
        console.width = 200  # a file or a pipe: no terminal width to fit
    if not rows:
        console.print("no usage recorded for this selection")
        return
    console.print(render_table(rows, title=title))
