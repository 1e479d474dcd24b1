"""The routing table: which backends may take a request for which model, and in which tier.

Role: turn a discovery :class:`~tidepool.gateway.snapshot.RoutingSnapshot` into an immutable
lookup (served model name -> InferenceDeployment -> backends), applying the routability rules:
a pod gets new requests only if its pool is in ``status.routablePools`` (all pools when that is
empty), and in hybrid mode each backend is tagged *primary* (a dedicated pool, capped at
``overflowConcurrencyPerReplica`` in flight) or *overflow* (the shared pool that takes the rest).
A LoRA tenant on a SharedEngine (``route.engine``) is served by every ready pod of that fleet,
uncapped: its own pools and their roles say nothing about the fleet's pods.

Must not: do I/O, import ``kubernetes`` or ``aiohttp``, read the clock, or keep per-request
state (in-flight counts live in :mod:`tidepool.gateway.dispatch`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tidepool.api.v1alpha1 import types
from tidepool.gateway.snapshot import Endpoint, ModelRoute, RoutingSnapshot

#: Pool roles that never get new requests unless routablePools names them explicitly: a
#: migration target is not warmed up yet, a draining pool only finishes what it has.
_NOT_ROUTED_BY_DEFAULT = frozenset({types.PoolRole.TARGET, types.PoolRole.DRAINING})

ModelKey = tuple[str, str]
"""(namespace, InferenceDeployment name)."""


class Tier(StrEnum):
    """A backend's place in the pick order: primaries first (each up to its cap), then overflow.

    Narrower than :class:`~tidepool.api.v1alpha1.types.PoolRole` (a backend is never a migration
    target or draining: those are not routed), but spelled with the same words, taken from it,
    so a tier and the pool role that puts a pod there never read differently.
    """

    PRIMARY = types.PoolRole.PRIMARY.value
    OVERFLOW = types.PoolRole.OVERFLOW.value


@dataclass(frozen=True, slots=True)
class Backend:
    endpoint: Endpoint
    tier: Tier
    cap: int | None
    """In-flight requests this backend takes before the request spills (None: no cap)."""


@dataclass(frozen=True, slots=True)
class ModelTarget:
    route: ModelRoute
    backends: tuple[Backend, ...]

    @property
    def key(self) -> ModelKey:
        return self.route.key


def classify(route: ModelRoute, endpoint: Endpoint) -> Backend | None:
    """The backend for ``endpoint`` under ``route``, or None if it must get no new requests.

    E.g. hybrid, pools ``dedicated-a`` (primary, dedicated) and ``shared`` (overflow), cap 32:
    a pod in dedicated-a is PRIMARY with cap 32, a pod in shared is OVERFLOW without cap.
    """
    pools = {p.name: p for p in route.pools}
    pool = pools.get(endpoint.pool)
    if route.routable_pools:
        if endpoint.pool not in route.routable_pools:
            return None
    elif pool is not None and pool.role in _NOT_ROUTED_BY_DEFAULT:
        return None
    if not route.hybrid or pool is None:
        return Backend(endpoint, Tier.PRIMARY, None)
    if pool.role == types.PoolRole.OVERFLOW:
        return Backend(endpoint, Tier.OVERFLOW, None)
    if pool.tenancy == types.Tenancy.DEDICATED:
        return Backend(endpoint, Tier.PRIMARY, route.overflow_concurrency_per_replica)
    return Backend(endpoint, Tier.PRIMARY, None)


class RoutingTable:
    """Immutable after construction; the gateway swaps a whole new table on every snapshot."""

    __slots__ = ("_by_key", "_by_served")

    def __init__(self, targets: Iterable[ModelTarget] = ()) -> None:
        self._by_key: dict[ModelKey, ModelTarget] = {}
        self._by_served: dict[str, list[ModelTarget]] = {}
        for t in sorted(targets, key=lambda t: t.key):
            self._by_key[t.key] = t
            self._by_served.setdefault(t.route.served_model, []).append(t)

    @classmethod
    def from_snapshot(cls, snapshot: RoutingSnapshot) -> RoutingTable:
        endpoints: dict[ModelKey, list[Endpoint]] = {}
        fleets: dict[str, list[Endpoint]] = {}
        for e in snapshot.endpoints:
            if e.engine:
                fleets.setdefault(e.engine, []).append(e)
            else:
                endpoints.setdefault((e.namespace, e.deployment), []).append(e)
        targets = []
        for route in snapshot.models:
            label = route.engine_label
            if label is not None:
                fleet = fleets.get(label, ())
                targets.append(
                    ModelTarget(route, tuple(Backend(e, Tier.PRIMARY, None) for e in fleet))
                )
                continue
            backends = (classify(route, e) for e in endpoints.get(route.key, ()))
            targets.append(ModelTarget(route, tuple(b for b in backends if b is not None)))
        return cls(targets)

    def target(self, key: ModelKey) -> ModelTarget | None:
        return self._by_key.get(key)

    def lookup(self, served_model: str, tenant: str | None = None) -> ModelTarget | None:
        """The deployment serving ``served_model``.

        Why tenant-aware: with --all-namespaces two tenants may both call their model
        ``llama-8b``; the caller's own deployment wins, otherwise the first by namespace/name
        (which the caller then refuses with the same 404 as an unknown model).
        """
        candidates = self._by_served.get(served_model)
        if not candidates:
            return None
        if tenant is not None:
            for t in candidates:
                if t.route.tenant == tenant:
                    return t
        return candidates[0]

    def targets(self) -> list[ModelTarget]:
        return list(self._by_key.values())
