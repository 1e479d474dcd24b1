"""The dispatcher: routing table + in-flight counts + hold queues, as one synchronous object.

Role: admit a request (lease a backend now, hold it, or refuse because the model's queue is
full), release a lease when the response ends, and re-dispatch held requests whenever capacity
appears: a new routing table with a ready pod, or a freed slot on a capped dedicated replica.
Held requests stay in FIFO order, and a new request never overtakes one already held for the
same model. Held requests survive any routing-table change, including their model vanishing
from the table; only their deadline ends them.

In-flight counts (:class:`EndpointLoad`): per endpoint, and per (endpoint, adapter) for LoRA
tenants' requests on SharedEngine replicas, both changed only when a lease is taken and when it
is given back (the proxy releases each lease once its response has ended, failed or been
cancelled, and a lease whose waiter has gone at once), so the picker's adapter affinity reads
what is really in flight.

Must not: touch futures, sockets or the clock (the async shell in :mod:`tidepool.gateway.proxy`
passes ``now`` and resolves waiter tokens), or import ``kubernetes``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from tidepool.gateway import picking, routing
from tidepool.gateway import queue as hold

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Lease:
    """A backend reserved for one request; give it back with :meth:`Dispatcher.release`."""

    model: routing.ModelKey
    backend: routing.Backend
    adapter: str | None = None
    """The adapter counted as running on the backend (:func:`picking.running_adapter`), kept
    here because the table may change before the release."""


class EndpointLoad(Mapping[str, int]):
    """Requests the gateway has in flight on each backend: per endpoint key (the mapping
    itself, what picking reads as ``inflight``) and per (endpoint key, adapter)
    (:attr:`running`). Not :class:`tidepool.adapters.http_server.InFlight`, which counts the
    gateway's own open requests for its drain on shutdown.

    One structure, and :meth:`add` and :meth:`remove` its only writers, each changing both
    counts, so the per-adapter counts cannot drift from the per-endpoint ones: an endpoint's
    count is always at least the sum of its adapters' counts (the rest are requests without a
    fleet adapter). A count that reaches zero is dropped, so an idle gateway holds no keys.
    """

    __slots__ = ("_by_adapter", "_by_endpoint")

    def __init__(self) -> None:
        self._by_endpoint: dict[str, int] = {}
        self._by_adapter: dict[picking.RunningKey, int] = {}

    def __getitem__(self, endpoint_key: str) -> int:
        return self._by_endpoint[endpoint_key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_endpoint)

    def __len__(self) -> int:
        return len(self._by_endpoint)

    @property
    def running(self) -> Mapping[picking.RunningKey, int]:
        """Requests in flight per (endpoint key, adapter), read-only."""
        return MappingProxyType(self._by_adapter)

    def add(self, endpoint_key: str, adapter: str | None) -> None:
        _step(self._by_endpoint, endpoint_key, 1)
        if adapter is not None:
            _step(self._by_adapter, (endpoint_key, adapter), 1)

    def remove(self, endpoint_key: str, adapter: str | None) -> None:
        _step(self._by_endpoint, endpoint_key, -1)
        if adapter is not None:
            _step(self._by_adapter, (endpoint_key, adapter), -1)


def _step(counts: dict[_K, int], key: _K, by: int) -> None:
    """Add ``by`` to ``counts[key]``, dropping the key at zero or below."""
    n = counts.get(key, 0) + by
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


@dataclass(frozen=True, slots=True)
class Held:
    waiter: hold.Waiter
    reason: picking.HoldReason


@dataclass(frozen=True, slots=True)
class QueueFull:
    capacity: int


Admission = Lease | Held | QueueFull
Release = tuple[hold.Waiter, Lease]
"""A held request that now has a backend."""


class Dispatcher:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.table = routing.RoutingTable()
        self._inflight = EndpointLoad()
        self._queues: dict[routing.ModelKey, hold.HoldQueue] = {}
        self._rotation = 0

    # ---- reading -----------------------------------------------------------------------
    def inflight(self, endpoint_key: str, adapter: str | None = None) -> int:
        """Requests in flight on the endpoint; with ``adapter``, only that adapter's."""
        if adapter is None:
            return self._inflight.get(endpoint_key, 0)
        return self._inflight.running.get((endpoint_key, adapter), 0)

    def fleet_load(self, model: routing.ModelKey, adapter: str) -> tuple[int, int, int]:
        """What :mod:`tidepool.policy.fair_share` weighs a fleet request by, on the replicas
        ``model`` routes to, through this gateway: ``adapter``'s requests in flight there, the
        adapters with requests in flight there, and the replicas' batch seats."""
        target = self.table.target(model)
        endpoints = {b.endpoint.key: b.endpoint for b in target.backends} if target else {}
        mine, tenants = 0, set()
        for (key, running), n in self._inflight.running.items():
            if key in endpoints:
                tenants.add(running)
                mine += n if running == adapter else 0
        return mine, len(tenants), sum(picking.seats_of(e) for e in endpoints.values())

    def running(self) -> Mapping[picking.RunningKey, int]:
        """Requests in flight per (fleet endpoint key, adapter), read-only."""
        return self._inflight.running

    def depth(self, model: routing.ModelKey) -> int:
        q = self._queues.get(model)
        return len(q) if q else 0

    def held_models(self) -> list[routing.ModelKey]:
        return [k for k, q in self._queues.items() if q]

    def total_held(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def total_inflight(self) -> int:
        return sum(self._inflight.values())

    def next_deadline(self) -> float | None:
        deadlines = [d for q in self._queues.values() if (d := q.next_deadline()) is not None]
        return min(deadlines, default=None)

    # ---- changing ----------------------------------------------------------------------
    def set_table(self, table: routing.RoutingTable) -> list[Release]:
        """Swap the table; held requests that now fit are released (in FIFO order per model)."""
        self.table = table
        released: list[Release] = []
        for model in self.held_models():
            released.extend(self._drain(model))
        return released

    def admit(
        self,
        model: routing.ModelKey,
        now: float,
        deadline: float,
        token: object = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Admission:
        queue = self._queues.get(model)
        if not queue:
            decision = self._choose(model, exclude)
            if isinstance(decision, picking.Pick):
                return self._lease(model, decision)
            reason = decision.reason
        else:
            decision = self._choose(model, exclude)
            reason = (
                decision.reason
                if isinstance(decision, picking.Hold)
                else picking.HoldReason.NO_REPLICA
            )
        queue = self._queues.setdefault(model, hold.HoldQueue(self.queue_size))
        waiter = hold.Waiter(model=model, enqueued_at=now, deadline=deadline, token=token)
        if not queue.push(waiter):
            return QueueFull(self.queue_size)
        # No drain here: a non-empty queue means nothing fit at the last capacity change
        # (every such change drains), so the new waiter simply joins the back.
        return Held(waiter, reason)

    def release(self, lease: Lease) -> list[Release]:
        """The request on ``lease`` ended; held requests for the same model may now fit."""
        self._inflight.remove(lease.backend.endpoint.key, lease.adapter)
        return self._drain(lease.model)

    def cancel(self, waiter: hold.Waiter) -> bool:
        """Drop a held request (its client went away); False if it was not held any more."""
        queue = self._queues.get(waiter.model)
        return queue.remove(waiter) if queue else False

    def expire(self, now: float) -> list[hold.Waiter]:
        expired: list[hold.Waiter] = []
        for queue in self._queues.values():
            expired.extend(queue.expire(now))
        return expired

    # ---- internals ---------------------------------------------------------------------
    def _choose(
        self, model: routing.ModelKey, exclude: frozenset[str] = frozenset()
    ) -> picking.Decision:
        self._rotation += 1
        return picking.choose(
            self.table.target(model),
            self._inflight,
            running=self._inflight.running,
            rotation=self._rotation,
            exclude=exclude,
        )

    def _lease(self, model: routing.ModelKey, pick: picking.Pick) -> Lease:
        self._inflight.add(pick.backend.endpoint.key, pick.adapter)
        return Lease(model, pick.backend, pick.adapter)

    def _drain(self, model: routing.ModelKey) -> list[Release]:
        queue = self._queues.get(model)
        released: list[Release] = []
        while queue:
            decision = self._choose(model)
            if not isinstance(decision, picking.Pick):
                break
            waiter = queue.pop()
            released.append((waiter, self._lease(model, decision)))
        return released
