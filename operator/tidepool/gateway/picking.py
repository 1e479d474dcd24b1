"""Choosing a backend for one request: least outstanding, the hybrid spill rule, adapter affinity.

Role: a pure function of the model's backends and the current in-flight counts. In order:

1. primary backends that are under their cap (no cap outside hybrid mode), least in flight
   (for a LoRA tenant on a fleet, after the adapter affinity below);
2. otherwise overflow backends (hybrid's shared pool), least in flight;
3. otherwise hold the request (and wake the operator): ``NO_REPLICA`` when nothing is ready,
   ``OVERFLOW_PENDING`` when dedicated replicas exist but are all at their cap, so the request
   waits for whichever comes first, a freed dedicated slot or a ready overflow pod.

E.g. hybrid, cap 2, primaries A=2 B=1 in flight, overflow C=5: B (under cap). With A=2 B=2:
C, although it has more in flight, because the primaries are full.

Adapter affinity: for a LoRA tenant (``route.adapter``), within each step only the replicas
that hold its adapter (``endpoint.adapters``, the operator's record) are candidates. A
SharedEngine replica without the adapter cannot serve it at all (vLLM answers 404 for an
adapter it has not loaded), so when no fleet replica holds it the request is held, as when
nothing is ready, until the operator has loaded it: a new replica gets its adapters before
their traffic. A tenant's own replicas load their adapter at start (``--lora-modules``), carry
no record, and are all candidates, least in flight.

Among the fleet replicas that hold the adapter, the order is
:func:`tidepool.policy.adapter_affinity.preference`'s, the one rule the fleet simulator
(:mod:`tidepool.sim.shared`) routes by too: first those already running it (no new adapter in
their batch) that have a free seat, the one running the most of it, then the fewest in flight;
then the other holders with a free seat, the one whose batch runs the fewest distinct adapters,
then the fewest in flight; then the full ones, the fewest in flight. "Running it": requests of
this adapter in flight there (``running``, the dispatcher's count per replica and adapter);
a replica's distinct adapters are the adapters with a count there. "Free seat": fewer in flight
than the replica's batch seats (``endpoint.seats``, its SharedEngine's ``maxNumSeqs``, vLLM's
``--max-num-seqs``; :data:`~tidepool.gateway.snapshot.DEFAULT_SEATS` when unknown). Why: vLLM's
``--max-loras`` bounds the distinct adapters in one running batch, and a request whose adapter
would be one too many waits while others pass it. Packing each adapter onto the replicas
running the most of it confines a heavy tenant to the fewest replicas its load fills, where
spreading it (least in flight) would put it, and its slot, in every batch of the fleet. When
every holder is full the least in flight still takes the request and vLLM queues it there (the
simulator holds it at the gateway instead; either way it waits for a seat). Ties go round by
``rotation``.

E.g. adapter ``bot`` with 20 of replica A's 50 requests in flight and 3 of B's 10 (64 seats
each): A, although B has more free seats. A full (64 of 64 in flight): B. Neither running it, A
running 3 adapters with 40 in flight and B 4 with 10: A. Held by A but not B: A; held by
neither: hold.

Must not: mutate counts, do I/O, read the clock, or import ``kubernetes``/``aiohttp``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from tidepool.gateway import routing
from tidepool.gateway.snapshot import DEFAULT_SEATS, Endpoint, ModelRoute
from tidepool.policy import adapter_affinity

RunningKey = tuple[str, str]
"""(endpoint key, adapter): whose requests are in flight on which fleet replica."""

_NOTHING_RUNNING: Final[Mapping[RunningKey, int]] = MappingProxyType({})


class HoldReason(StrEnum):
    NO_REPLICA = "NoReadyReplica"
    OVERFLOW_PENDING = "OverflowPending"


@dataclass(frozen=True, slots=True)
class Pick:
    backend: routing.Backend
    adapter: str | None = None
    """The adapter this request runs on the backend, as the dispatcher counts it
    (:func:`running_adapter`)."""


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
    return _first(backends, lambda b: (inflight.get(b.endpoint.key, 0),), rotation)


def holding(backends: Sequence[routing.Backend], adapter: str | None) -> list[routing.Backend]:
    """The backends that can serve ``adapter``: a fleet replica only if the record says it
    holds it, a tenant's own replica always (all of them when there is no adapter)."""
    if adapter is None:
        return list(backends)
    return [b for b in backends if not b.endpoint.engine or adapter in b.endpoint.adapters]


def running_adapter(route: ModelRoute | None, endpoint: Endpoint) -> str | None:
    """The adapter a request of ``route`` runs on ``endpoint``, as ``running`` keys it: the
    LoRA tenant's adapter on a fleet replica; None elsewhere (a tenant's own replicas run its
    adapter only, so there is no batch of other adapters to keep it out of)."""
    return route.adapter if route is not None and endpoint.engine else None


def seats_of(endpoint: Endpoint) -> int:
    """The batch seats of a replica: its SharedEngine's, else :data:`DEFAULT_SEATS`."""
    return DEFAULT_SEATS if endpoint.seats is None else endpoint.seats


def _first(
    backends: Sequence[routing.Backend],
    key: Callable[[routing.Backend], tuple[float, ...]],
    rotation: int,
) -> routing.Backend | None:
    """The backend with the lowest ``key``, ties broken by ``rotation``: the one tie-break of
    every pick here (see :func:`least_outstanding` for why it rotates)."""
    if not backends:
        return None
    keys = [key(b) for b in backends]
    low = min(keys)
    tied = [b for b, k in zip(backends, keys, strict=True) if k == low]
    return tied[rotation % len(tied)]


def _best(
    backends: Sequence[routing.Backend],
    adapter: str | None,
    inflight: Mapping[str, int],
    running: Mapping[RunningKey, int],
    rotation: int,
) -> routing.Backend | None:
    """Within one step: for an adapter on fleet replicas, the first by adapter affinity (module
    docstring); otherwise (a tenant's own replicas, a model without an adapter) the least in
    flight. A tenant's own replica beside fleet ones counts none of the fleet's adapters."""
    if adapter is None or not any(b.endpoint.engine for b in backends):
        return least_outstanding(backends, inflight, rotation)
    adapters_on = Counter(key for (key, _), n in running.items() if n > 0)

    def key(b: routing.Backend) -> adapter_affinity.PreferenceKey:
        e = b.endpoint
        fleet = bool(e.engine)
        return adapter_affinity.preference(
            in_flight=inflight.get(e.key, 0),
            seats=seats_of(e),
            this_adapter=running.get((e.key, adapter), 0) if fleet else 0,
            adapters=adapters_on[e.key] if fleet else 0,
        )

    return _first(backends, key, rotation)


def choose(
    target: routing.ModelTarget | None,
    inflight: Mapping[str, int],
    *,
    running: Mapping[RunningKey, int] = _NOTHING_RUNNING,
    rotation: int = 0,
    exclude: frozenset[str] = frozenset(),
) -> Decision:
    """Pick a backend or say why the request must be held (see the module docstring).

    ``inflight``: requests in flight per endpoint key; ``running``: per (endpoint key, adapter)
    on fleet replicas.
    """
    route = target.route if target else None
    adapter = route.adapter if route else None
    backends = holding(
        [b for b in (target.backends if target else ()) if b.endpoint.key not in exclude], adapter
    )
    primaries = [b for b in backends if b.tier is routing.Tier.PRIMARY]
    open_primaries = [
        b for b in primaries if b.cap is None or inflight.get(b.endpoint.key, 0) < b.cap
    ]
    best = _best(open_primaries, adapter, inflight, running, rotation)
    if best is None:
        overflow = [b for b in backends if b.tier is routing.Tier.OVERFLOW]
        best = _best(overflow, adapter, inflight, running, rotation)
    if best is not None:
        return Pick(best, running_adapter(route, best.endpoint))
    return Hold(HoldReason.OVERFLOW_PENDING if primaries else HoldReason.NO_REPLICA)
