"""Routability and tiers: which pods may get new requests, and as primary or overflow."""

import pytest
from snapshots import HYBRID_POOLS, endpoint, route, snapshot

from tidepool.gateway import routing

P, OV = routing.Tier.PRIMARY, routing.Tier.OVERFLOW


@pytest.mark.parametrize(
    ("model", "pool", "expected"),
    [
        pytest.param(route(), "shared", (P, None), id="serverless-any-pool-primary-uncapped"),
        pytest.param(
            route(routable=("a",)), "b", None, id="pool-not-in-routablePools-is-not-routed"
        ),
        pytest.param(route(routable=("a",)), "a", (P, None), id="pool-in-routablePools-routed"),
        pytest.param(
            route(pools=(("old", "shared", "draining"),)),
            "old",
            None,
            id="draining-pool-skipped-when-routablePools-empty",
        ),
        pytest.param(
            route(pools=(("new", "dedicated", "target"),)),
            "new",
            None,
            id="migration-target-skipped-when-routablePools-empty",
        ),
        pytest.param(
            route(pools=(("new", "dedicated", "target"),), routable=("new",)),
            "new",
            (P, None),
            id="routablePools-wins-over-role",
        ),
        pytest.param(
            route(hybrid=True, cap=4, pools=HYBRID_POOLS),
            "dedicated-a",
            (P, 4),
            id="hybrid-dedicated-primary-capped",
        ),
        pytest.param(
            route(hybrid=True, cap=4, pools=HYBRID_POOLS),
            "shared",
            (OV, None),
            id="hybrid-overflow-uncapped",
        ),
        pytest.param(
            route(hybrid=True, pools=HYBRID_POOLS), "unknown", (P, None), id="hybrid-unknown-pool"
        ),
    ],
)
def test_classify(model, pool, expected):
    backend = routing.classify(model, endpoint("p", pool=pool))
    assert (None if backend is None else (backend.tier, backend.cap)) == expected


def test_table_joins_endpoints_to_their_deployment_only():
    snap = snapshot(
        (route("a"), route("b")),
        (endpoint("a-1", deployment="a"), endpoint("b-1", deployment="b")),
    )
    table = routing.RoutingTable.from_snapshot(snap)
    target = table.lookup("a")
    assert target is not None
    assert [b.endpoint.pod for b in target.backends] == ["a-1"]


@pytest.mark.parametrize(
    ("tenant", "expected_namespace"),
    [
        pytest.param(None, "alpha", id="no-tenant-first-by-namespace"),
        pytest.param("beta", "beta", id="callers-own-deployment-wins"),
        pytest.param("gamma", "alpha", id="other-tenant-gets-first-then-403"),
    ],
)
def test_lookup_same_served_name_in_two_namespaces(tenant, expected_namespace):
    snap = snapshot(
        (
            route("m", namespace="beta", served="llama"),
            route("m", namespace="alpha", served="llama"),
        )
    )
    target = routing.RoutingTable.from_snapshot(snap).lookup("llama", tenant)
    assert target is not None
    assert target.route.namespace == expected_namespace


def test_lookup_unknown_model_is_none():
    assert routing.RoutingTable().lookup("nope") is None
