"""The reliability suite's short variants: the scenarios of `benchmarks/reliability.py` at small sizes.

Each test runs one scenario (seeded, so the fault mix is the same every run) and asserts the
figures that must hold at any size; `python benchmarks/reliability.py --long` runs the long sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
