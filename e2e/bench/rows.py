"""What the benchmarks share: exit codes, the row verdict, table cell formats and percentiles.

``bench_simulate.py`` (one row per trace x scale x prices) and ``bench_shared.py`` (one row per
ServeGen pool) print worst-first tables and exit by the same rule.
"""

import math
from collections.abc import Sequence
from typing import Final, Protocol

#: Exit codes: a target missed, a trace missing, a row that failed to run.
MISSED: Final = 1
NO_TRACE: Final = 2
FAILED: Final = 3


class Verdict(Protocol):
    @property
    def error(self) -> str | None: ...
    @property
    def misses(self) -> tuple[str, ...]: ...


def exit_code(rows: Sequence[Verdict]) -> int:
    """3 when a row failed to run, else 1 when a row misses a target, else 0."""
    if any(r.error is not None for r in rows):
        return FAILED
    if any(r.misses for r in rows):
        return MISSED
    return 0


def num(x: float | None, spec: str, suffix: str = "") -> str:
    """``x`` formatted by ``spec``; ``-`` when not a number (a row that failed to run), ``none``
    when there is nothing to measure."""
    if x is None:
        return "none"
    return f"{x:{spec}}{suffix}" if math.isfinite(x) else "-"


def money(x: float) -> str:
    return f"${x:,.0f}" if math.isfinite(x) else "-"


def finite(x: float) -> float:
    """``x``, or a huge number for a row that failed, so that sorting puts it first."""
    return x if math.isfinite(x) else 1e300


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank: a value that was measured."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
