"""What every section of the suite shares: its settings, the figure rows, medians and percentiles."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Figure", "Settings", "median_of", "pct"]


@dataclass(frozen=True)
class Settings:
    """How long the suite runs: `quick` shrinks every size; `reps` repetitions per figure."""

    quick: bool = False
    reps: int = 5
    ten_million: bool = False

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Figure:
    """One row of the table: a median, the baseline it is compared with (same run), a target."""

    section: str
    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def median_of(runs: Sequence[float]) -> float:
    return float(statistics.median(runs))


def pct(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


def check(value: float, limit: float, *, at_most: bool = True) -> bool:
    return value <= limit if at_most else value >= limit


def interleaved(reps: int, runners: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Run each runner `reps` times, interleaved, so all of them see the same machine noise."""
    results: dict[str, list[Any]] = {name: [] for name in runners}
    for _ in range(reps):
        for name, run in runners.items():
            results[name].append(run())
    return results
