"""Choosing a backend for one request: least outstanding requests, with the hybrid spill rule.

Role: a pure function of the model's backends and the current in-flight counts. In order:

1. primary backends that are under their cap (no cap outside hybrid mode), least in flight;
2. otherwise overflow backends (hybrid's shared pool), least in flight;
3. otherwise hold the request (and wake the operator): ``NO_REPLICA`` when nothing is ready,
   ``OVERFLOW_PENDING`` when dedicated replicas exist but are all at their cap, so the request
   waits for whichever comes first, a freed dedicated slot or a ready overflow pod.

E.g. hybrid, cap 2, primaries A=2 B=1 in flight, overflow C=5: B (under cap). With A=2 B=2:
C, although it has more in flight, because the primaries are full.

Adapter affinity: for a LoRA tenant (``route.adapter``), within each step only the replicas
that hold its adapter (``endpoint.adapters``, the operator's record) are candidates, least in
flight among them. A SharedEngine replica without the adapter cannot serve it at all (vLLM
answers 404 for an adapter it has not loaded), so when no fleet replica holds it the request is
held, as when nothing is ready, until the operator has loaded it: a new replica gets its
adapters before their traffic. A tenant's own replicas load their adapter at start
(``--lora-modules``), carry no record, and are all candidates. E.g. adapter ``bot`` held by fleet
replica A (3 in flight) but not B (0): A; held by neither: hold.

Must not: mutate counts, do I/O, read the clock, or import ``kubernetes``/``aiohttp``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tidepool.gateway import routing


class HoldReason(StrEnum):
    NO_REPLICA = "NoReadyReplica"
    OVERFLOW_PENDING = "OverflowPending"


@dataclass(frozen=True, slots=True)
class Pick:
    backend: routing.Backend


@dataclass(frozen=True, slots=True)
class Hold:
    reason: HoldReason


Decision = Pick | Hold


def least_outstanding(
    backends: Sequence[routing.Backend], inflight: Mapping[str, int], rotation: int = 0
) -> routing.Backend | None:
    """The backend with the fewest requests in flight.

    Ties are broken by ``rotation`` (a counter the caller advances) rather than always by the
    first name, so a trickle of sequential requests spreads over idle replicas instead of
    keeping one warm and the others cold.
    """
    if not backends:
        return None
    low = min(inflight.get(b.endpoint.key, 0) for b in backends)
    tied = [b for b in backends if inflight.get(b.endpoint.key, 0) == low]
    return tied[rotation % len(tied)]


def holding(backends: Sequence[routing.Backend], adapter: str | None) -> list[routing.Backend]:
    """The backends that can serve ``adapter``: a fleet replica only if the record says it
    holds it, a tenant's own replica always (all of them when there is no adapter)."""
    if adapter is None:
        return list(backends)
    return [b for b in backends if not b.endpoint.engine or adapter in b.endpoint.adapters]


def choose(
    target: routing.ModelTarget | None,
    inflight: Mapping[str, int],
    *,
    rotation: int = 0,
    exclude: frozenset[str] = frozenset(),
) -> Decision:
    """Pick a backend or say why the request must be held (see the module docstring)."""
    adapter = target.route.adapter if target else None
    backends = holding(
        [b for b in (target.backends if target else ()) if b.endpoint.key not in exclude], adapter
    )
    primaries = [b for b in backends if b.tier is routing.Tier.PRIMARY]
    open_primaries = [
        b for b in primaries if b.cap is None or inflight.get(b.endpoint.key, 0) < b.cap
    ]
    best = least_outstanding(open_primaries, inflight, rotation)
    if best is None:
        overflow = [b for b in backends if b.tier is routing.Tier.OVERFLOW]
        best = least_outstanding(overflow, inflight, rotation)
    if best is not None:
        return Pick(best)
    return Hold(HoldReason.OVERFLOW_PENDING if primaries else HoldReason.NO_REPLICA)
