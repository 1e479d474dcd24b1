"""Translation of API JSON into routing values (gateway/snapshot.py, no cluster needed), the
wake push's values and the static routes file."""

from datetime import UTC, datetime

import pytest

from tidepool.adapters import discovery, wake
from tidepool.api import labels
from tidepool.api.v1alpha1 import types
from tidepool.gateway import routing, snapshot, static
from tidepool.gateway import wake as wakes


def _pod(ready="True", ip="127.0.0.9", deleting=False, port_name="http", pool="shared"):
    meta = {
        "name": "p1",
        "namespace": "ns",
        "labels": {labels.INFERENCE_DEPLOYMENT: "llama", labels.POOL: pool},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"ports": [{"name": port_name, "containerPort": 9000}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
    }


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(_pod(), ("127.0.0.9", 9000, "shared"), id="ready-pod-named-port"),
        pytest.param(_pod(port_name="metrics"), ("127.0.0.9", 8000, "shared"), id="default-port"),
        pytest.param(_pod(ready="False"), None, id="not-ready"),
        pytest.param(_pod(deleting=True), None, id="terminating"),
        pytest.param(_pod(ip=None), None, id="no-ip-yet"),
    ],
)
def test_endpoint_from_pod(pod, expected):
    e = snapshot.endpoint_from_pod(pod)
    assert (None if e is None else (e.host, e.port, e.pool)) == expected


@pytest.mark.parametrize(
    ("obj", "served", "hybrid", "tenant"),
    [
        pytest.param({"metadata": {"name": "m", "namespace": "ns"}}, "m", False, "ns", id="bare"),
        pytest.param(
            {"metadata": {"name": "m"}, "spec": {"model": {"servedName": "s"}}},
            "s",
            False,
            "default",
            id="spec-served-name",
        ),
        pytest.param(
            {
                "metadata": {"name": "m", "namespace": "ns"},
                "spec": {"model": {"servedName": "s"}, "tenant": "acme"},
                "status": {"servedModel": "st"},
            },
            "st",
            False,
            "acme",
            id="status-served-model-wins",
        ),
        pytest.param(
            {
                "metadata": {"name": "m"},
                "spec": {"mode": "auto"},
                "status": {"effectiveMode": "hybrid"},
            },
            "m",
            True,
            "default",
            id="auto-running-hybrid",
        ),
    ],
)
def test_model_from_inference_deployment(obj, served, hybrid, tenant):
    m = snapshot.model_from_inference_deployment(obj)
    assert (m.served_model, m.hybrid, m.tenant) == (served, hybrid, tenant)
    assert m.overflow_concurrency_per_replica == 56  # HybridSpec's default


DED, SHARED = types.Tenancy.DEDICATED, types.Tenancy.SHARED
PRIMARY, OVERFLOW = types.PoolRole.PRIMARY, types.PoolRole.OVERFLOW


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            {"name": "ded", "tenancy": "dedicated", "role": "overflow"},
            snapshot.Pool("ded", DED, OVERFLOW),
            id="known-values",
        ),
        pytest.param(
            {"name": "mig", "tenancy": "dedicated", "role": "target"},
            snapshot.Pool("mig", DED, types.PoolRole.TARGET),
            id="migration-target",
        ),
        pytest.param({"name": "s"}, snapshot.Pool("s", SHARED, PRIMARY), id="none-given"),
        pytest.param(
            {"name": "s", "tenancy": "metered", "role": "canary"},
            snapshot.Pool("s", SHARED, PRIMARY),
            id="a-newer-operators-values",
        ),
        pytest.param(
            {"name": "s", "tenancy": 7, "role": ["overflow"]},
            snapshot.Pool("s", SHARED, PRIMARY),
            id="not-strings",
        ),
    ],
)
def test_status_pools_read_into_the_api_enums(entry, expected):
    m = snapshot.model_from_inference_deployment(
        {"metadata": {"name": "m"}, "status": {"pools": [entry]}}
    )
    assert m.pools == (expected,)
    assert (type(m.pools[0].tenancy), type(m.pools[0].role)) == (types.Tenancy, types.PoolRole)


@pytest.mark.parametrize("tenancy", ["dedicated", "shared"])
@pytest.mark.parametrize("hybrid", ["hybrid", "serverless"])
def test_an_unknown_role_routes_as_primary(tenancy, hybrid):
    """How routing treated a role string it did not know before roles were read as the enum."""

    def backend(role):
        obj = {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"mode": hybrid},
            "status": {"pools": [{"name": "shared", "tenancy": tenancy, "role": role}]},
        }
        route = snapshot.model_from_inference_deployment(obj)
        return routing.classify(route, snapshot.endpoint_from_pod(_pod()))

    assert backend("canary") == backend("primary") is not None


def test_build_snapshot_drops_unroutable_pods():
    snap = snapshot.build_snapshot(
        {"ns/p1": _pod(), "ns/p2": _pod(ready="False")},
        {"ns/llama": {"metadata": {"name": "llama", "namespace": "ns"}}},
    )
    assert [e.pod for e in snap.endpoints] == ["p1"]
    assert [m.name for m in snap.models] == ["llama"]


def test_wake_patch_is_a_single_annotation_rfc3339():
    now = datetime(2026, 9, 2, 10, 0, 0, 123000, tzinfo=UTC)
    assert wake.wake_patch(now) == {
        "metadata": {"annotations": {labels.WAKE_REQUESTED_AT: "2026-09-02T10:00:00.123Z"}}
    }


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        pytest.param([0.0, 0.5, 0.99, 1.0], [True, False, False, True], id="one-per-second"),
        pytest.param([0.0, 5.0], [True, True], id="spaced-out"),
    ],
)
def test_wake_limiter(times, expected):
    limiter = wakes.WakeLimiter(1.0)
    assert [limiter.should_wake(("ns", "m"), t) for t in times] == expected


def test_static_routes_parse_and_errors():
    snap = static.parse(
        {"models": [{"name": "m", "endpoints": [{"port": 8001, "pool": "shared"}]}]}
    )
    assert snap.models[0].served_model == "m"
    assert snap.models[0].upstream_model is None
    assert snap.endpoints[0].url == "http://127.0.0.1:8001"
    lora = static.parse({"models": [{"name": "m", "adapter": "bot", "endpoints": []}]})
    assert (lora.models[0].served_model, lora.models[0].upstream_model) == ("m", "bot")
    with pytest.raises(static.StaticRoutesError, match=r"endpoints\[0\]\.port"):
        static.parse({"models": [{"name": "m", "endpoints": [{}]}]})


def test_a_long_named_tenants_pods_are_its_endpoints():
    """A name over 63 characters is cut and hashed in the pods' label; routing still finds them."""
    long_name = "l" + "o" * 100 + "ng"
    pod = _pod()
    pod["metadata"]["labels"] = labels.selector_labels(long_name) | {labels.POOL: "shared"}

    snap = snapshot.build_snapshot(
        {"ns/p1": pod}, {f"ns/{long_name}": {"metadata": {"name": long_name, "namespace": "ns"}}}
    )

    assert [e.deployment for e in snap.endpoints] == [long_name]


def _slice(*endpoints):
    return {"metadata": {"name": "gw-abc", "namespace": "ns"}, "endpoints": list(endpoints)}


def _gw(uid, ready=True, address="10.0.0.1"):
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": [address], "conditions": conditions, "targetRef": {"uid": uid}}


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        pytest.param([], 0, id="no-slices-yet"),
        pytest.param([_slice(_gw("a"), _gw("b"), _gw("c"))], 3, id="three-ready"),
        pytest.param([_slice(_gw("a"), _gw("b", ready=False))], 1, id="unready-not-counted"),
        pytest.param([_slice(_gw("a", ready=None))], 1, id="ready-absent-means-ready"),
        pytest.param(
            [_slice(_gw("a"), _gw("b")), _slice(_gw("a", address="fd00::1"), _gw("b"))],
            2,
            id="dual-stack-counts-each-pod-once",
        ),
        pytest.param(
            [_slice({"addresses": ["10.0.0.7"]}, {"addresses": ["10.0.0.8"]})],
            2,
            id="no-target-ref-by-address",
        ),
        pytest.param([{"metadata": {}, "endpoints": None}], 0, id="empty-slice"),
    ],
)
def test_ready_gateway_replicas_from_endpoint_slices(slices, expected):
    assert discovery.ready_endpoints(slices) == expected
