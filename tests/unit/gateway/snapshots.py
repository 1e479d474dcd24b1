"""Builders for routing snapshots used across the gateway tests (plain values, no I/O)."""

from __future__ import annotations

from tidepool.api.v1alpha1 import types
from tidepool.gateway.snapshot import Endpoint, ModelRoute, Pool, RoutingSnapshot


def route(
    name: str = "llama",
    *,
    namespace: str = "default",
    served: str | None = None,
    tenant: str | None = None,
    hybrid: bool = False,
    cap: int = 32,
    pools: tuple[tuple[str, str, str], ...] = (),
    routable: tuple[str, ...] = (),
    upstream: str | None = None,
    engine: str | None = None,
    adapter: str | None = None,
) -> ModelRoute:
    """``adapter`` defaults to ``upstream``: a tenant served under its adapter's name."""
    return ModelRoute(
        namespace=namespace,
        name=name,
        served_model=served or name,
        tenant=tenant or namespace,
        hybrid=hybrid,
        overflow_concurrency_per_replica=cap,
        routable_pools=routable,
        pools=tuple(Pool(n, types.Tenancy(t), types.PoolRole(r)) for n, t, r in pools),
        upstream_model=upstream,
        engine=engine,
        adapter=adapter or upstream,
    )


def endpoint(
    pod: str,
    *,
    deployment: str = "llama",
    pool: str = "shared",
    port: int = 8000,
    namespace: str = "default",
    host: str = "127.0.0.1",
    engine: str = "",
    adapters: tuple[str, ...] = (),
    seats: int | None = None,
    priority_scheduling: bool = False,
) -> Endpoint:
    return Endpoint(
        namespace,
        pod,
        deployment,
        pool,
        host,
        port,
        engine,
        frozenset(adapters),
        seats,
        priority_scheduling,
    )


def snapshot(
    models: tuple[ModelRoute, ...], endpoints: tuple[Endpoint, ...] = ()
) -> RoutingSnapshot:
    return RoutingSnapshot(models=models, endpoints=endpoints)


HYBRID_POOLS = (
    ("dedicated-a", types.Tenancy.DEDICATED, types.PoolRole.PRIMARY),
    ("shared", types.Tenancy.SHARED, types.PoolRole.OVERFLOW),
)
