"""Metric values as the policies see them: a :class:`Sample` or an explicit :class:`NoData`.

Role: the one vocabulary the metrics adapter, the simulator and the policies share for "what do we
know about this metric right now". A missing, stale or non-finite reading is *unknown*, never zero:
KEDA's ``ignoreNullValues`` turned an empty Prometheus result into 0 and scaled deployments to the
minimum during a Prometheus outage (kedacore/keda#3065). Keeping ``NoData`` a separate type makes
that mistake a type error instead of a silent 0.

This module must not do I/O, read the clock (``now`` is always passed in) or know about
Prometheus; the adapter builds these values, the policies consume them.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Sample:
    """A finite metric value observed at ``at``."""

    value: float
    at: datetime


@dataclass(frozen=True, slots=True)
class NoData:
    """Why there is no usable value, in words for a condition message.

    E.g. ``"prometheus unreachable"``, ``"no series"``, ``"NaN"``,
    ``"stale (last sample 95s old)"``.
    """

    reason: str


Signal = Sample | NoData


def sample(value: float, at: datetime) -> Signal:
    """Wrap a raw reading, refusing what cannot be a queue or rate: NaN, ±Inf and negatives.

    ``sample(float("nan"), t) == NoData("NaN")``; ``sample(3.0, t) == Sample(3.0, t)``.
    """
    if math.isnan(value):
        return NoData("NaN")
    if math.isinf(value):
        return NoData(f"{'+' if value > 0 else '-'}Inf")
    if value < 0:
        return NoData(f"negative value {value:g}")
    return Sample(value=value, at=at)


def fresh(signal: Signal, now: datetime, max_age: timedelta) -> Signal:
    """``signal`` if it is no older than ``max_age`` at ``now``, else ``NoData("stale (...)")``.

    Why: a scrape that stopped 95 s ago still returns its last value from a cache; acting on it
    would scale on a world that no longer exists. E.g. with ``max_age=60s`` a sample taken 95 s
    ago becomes ``NoData("stale (last sample 95s old)")``.
    """
    if isinstance(signal, NoData):
        return signal
    age = (now - signal.at).total_seconds()
    if age > max_age.total_seconds():
        return NoData(f"stale (last sample {age:.0f}s old)")
    return signal


def value_or_none(signal: Signal) -> float | None:
    """The value of a :class:`Sample`; ``None`` for :class:`NoData` (for status fields only)."""
    return signal.value if isinstance(signal, Sample) else None


def describe(signal: Signal) -> str:
    """Short text for messages: ``"37"`` or ``"unknown (prometheus unreachable)"``."""
    if isinstance(signal, Sample):
        return f"{signal.value:g}"
    return f"unknown ({signal.reason})"
