"""Money as a finance reader expects it: ``$1,234.57``, with decimals chosen for the magnitude.

`usd_decimals` picks one number of decimals for a set of figures (a table column, a chart
axis) so they line up: two for amounts of a dollar and more, more digits for the small
per-call figures LLM traffic produces (never more than eight).  JSON and CSV keep the exact
decimal strings; these helpers are for people.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["format_usd", "usd_decimals"]


def usd_decimals(values: Iterable[Decimal | float | int | None]) -> int:
    """Decimals that show the largest non-zero magnitude in `values` with four significant digits (2..8)."""
    largest = max((abs(Decimal(str(v))) for v in values if v is not None), default=Decimal(0))
    if largest == 0 or largest >= 1:
        return 2
    digits = 2
    while digits < 8 and largest * (Decimal(10) ** digits) < 100:
        digits += 1
    return digits


def format_usd(value: Decimal | float | None, decimals: int | None = None, *, unknown: str = "unknown") -> str:
    """``$1,234.57`` (``-$3.10`` below zero); `unknown` for None.  Decimals default to `usd_decimals`."""
    if value is None:
        return unknown
    amount = Decimal(str(value))
    places = usd_decimals([amount]) if decimals is None else decimals
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"
