"""Moving tenants between pools with continuous traffic: zero failed requests, no orphans.

The laptop-priced GPUPools (e2e/cluster/laptop-priced-pools.yaml) give a price scenario where
the spend policy has a clear answer: dedicated GPUs at $0.01/GPU-h (a whole 8-GPU node is $0.08)
against shared GPUs at $4/GPU-h. Under the load of 4 busy clients ``auto`` promotes. Then the
platform re-prices the dedicated pool ($50/GPU-h, $400 a node): at a trickle, the tenant's shared
replica spends far less, so it demotes. The pools select the same fake nodes as the default pools
(pools may overlap).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_stack import Tidepool
from kubernetes import client
from tidepool_stack import (
    TrafficLoop,
    apply_infd,
    deployments,
    engine_pods,
    event_reasons,
    gateway_knows,
    get_infd,
    infd_manifest,
    node_pool,
    wait_for,
)

import localcluster

pytestmark = pytest.mark.usefixtures("logs_on_failure")
REPO = Path(__file__).resolve().parents[2]

PRICED_POOLS = REPO / "e2e" / "cluster" / "laptop-priced-pools.yaml"


@pytest.fixture(scope="module")
def priced_pools(cluster: localcluster.Cluster) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", str(PRICED_POOLS))
    yield
    cluster.kubectl("delete", "-f", str(PRICED_POOLS), "--ignore-not-found")


def _auto(name: str, ns: str) -> dict:
    body = infd_manifest(
        name,
        ns,
        mode="auto",
        engine={"maxNumSeqs": 4},
        scaling={
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetQueueDepth": 4,
            "scaleDownStabilization": "5s",
        },
        placement={
            "promoteAbove": 0.5,
            "demoteBelow": 0.2,
            "window": "15s",
            "minDwell": "20s",
            "pools": {"shared": "laptop-shared", "dedicated": "laptop-dedicated"},
        },
    )
    body["metadata"]["annotations"] = {"tidepool.dev/sim-load-delay": "3s"}
    return body


def _price_dedicated(kube: client.ApiClient, per_gpu_hour: float) -> None:
    client.CustomObjectsApi(kube).patch_cluster_custom_object(
        "tidepool.dev",
        "v1alpha1",
        "gpupools",
        "laptop-dedicated",
        {"spec": {"pricePerGpuHour": per_gpu_hour}},
    )


def _mode(kube: client.ApiClient, ns: str, name: str) -> str:
    status = get_infd(kube, ns, name).get("status", {})
    return str(status.get("effectiveMode", "")) if not status.get("migration") else "migrating"


def _pools_of_pods(kube: client.ApiClient, ns: str) -> set[str]:
    return {node_pool(kube, p.spec.node_name) for p in engine_pods(kube, ns) if p.spec.node_name}


def test_promotion_and_demotion_drop_no_request(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    priced_pools: None,
) -> None:
    apply_infd(kube, _auto("tenant", namespace))
    gateway_knows(tidepool.gateway_url, "tenant")
    wait_for(
        lambda: _mode(kube, namespace, "tenant") == "serverless",
        timeout=30,
        what="start on the shared pool",
    )

    with TrafficLoop(tidepool.gateway_url, "tenant", clients=4, max_tokens=64) as busy:
        wait_for(
            lambda: _mode(kube, namespace, "tenant") in {"dedicated", "hybrid"},
            timeout=120,
            what="promotion out of the shared pool",
            interval=1,
        )
        obj = get_infd(kube, namespace, "tenant")
        wait_for(
            lambda: _pools_of_pods(kube, namespace) == {"dedicated-a100"},
            timeout=60,
            what="every engine pod on dedicated nodes",
        )
        time.sleep(3)  # traffic keeps flowing on the new pool

    assert busy.failures == [], busy.failures[:5]
    assert busy.ok > 20
    # The move went through a migration (make-before-break), not a switch in place. Its Event
    # says so; status.lastDecision may already be the autoscaler's next decision (CI once read
    # "scale 2->1" there, decided in the same second).
    wait_for(
        lambda: "MigrationComplete" in event_reasons(kube, namespace, "tenant"),
        timeout=30,
        what="the MigrationComplete Event",
    )
    assert (
        obj["status"]["routablePools"] == ["laptop-dedicated"]
        or "laptop-dedicated" in obj["status"]["routablePools"]
    )
    assert not [d for d in deployments(kube, namespace) if d.endswith("laptop-shared")]

    # Dedicated GPUs get dear: a whole node at $400/h against one shared GPU at $4/h, at most.
    _price_dedicated(kube, 50.0)
    try:
        with TrafficLoop(
            tidepool.gateway_url, "tenant", clients=1, max_tokens=4, pause=1.0
        ) as trickle:
            try:
                wait_for(
                    lambda: _mode(kube, namespace, "tenant") == "serverless",
                    timeout=150,
                    what="demotion back to the shared pool",
                    interval=1,
                )
            except TimeoutError as exc:
                status = get_infd(kube, namespace, "tenant")["status"]
                raise AssertionError(f"{exc}; last decision: {status.get('lastDecision')}") from exc
            wait_for(
                lambda: _pools_of_pods(kube, namespace) == {"shared-a100"},
                timeout=60,
                what="every engine pod on shared nodes",
            )

        assert trickle.failures == [], trickle.failures[:5]
        assert trickle.ok > 5
        assert set(deployments(kube, namespace)) == {"tenant-laptop-shared"}
    finally:
        _price_dedicated(kube, 0.01)


def test_operator_crash_mid_migration_resumes_without_orphans(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, priced_pools: None
) -> None:
    body = infd_manifest(
        "crashy",
        namespace,
        mode="serverless",
        engine={"maxNumSeqs": 4},
        scaling={"minReplicas": 1, "maxReplicas": 2},
        placement={"pools": {"shared": "laptop-shared", "dedicated": "laptop-dedicated"}},
    )
    body["metadata"]["annotations"] = {"tidepool.dev/sim-load-delay": "6s"}
    apply_infd(kube, body)
    gateway_knows(tidepool.gateway_url, "crashy")
    wait_for(
        lambda: get_infd(kube, namespace, "crashy").get("status", {}).get("readyReplicas"),
        timeout=60,
        what="a ready replica on the shared pool",
    )

    with TrafficLoop(tidepool.gateway_url, "crashy", clients=3, max_tokens=32) as traffic:
        body["spec"]["mode"] = "dedicated"  # a user-driven move takes the same path
        apply_infd(kube, body)
        wait_for(
            lambda: (
                (get_infd(kube, namespace, "crashy")["status"].get("migration") or {}).get("phase")
                == "StartingTarget"
            ),
            timeout=30,
            what="migration started",
        )
        tidepool.restart_operator(crash=True)  # SIGKILL while the target pool loads
        wait_for(
            lambda: _mode(kube, namespace, "crashy") == "dedicated",
            timeout=120,
            what="migration completed by the restarted operator",
            interval=1,
        )
        time.sleep(2)  # traffic keeps flowing on the new pool alone

    assert traffic.failures == [], traffic.failures[:5]
    assert set(deployments(kube, namespace)) == {"crashy-laptop-dedicated"}, "orphaned Deployment"
    wait_for(
        lambda: _pools_of_pods(kube, namespace) == {"dedicated-a100"},
        timeout=60,
        what="no engine pod left on the shared pool",
    )


def test_hybrid_overflow_is_served_by_shared_pool_replicas(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    body = infd_manifest(
        "mixed",
        namespace,
        mode="hybrid",
        engine={"maxNumSeqs": 4},
        scaling={"minReplicas": 1, "maxReplicas": 3, "targetQueueDepth": 2},
        hybrid={"overflowConcurrencyPerReplica": 2, "maxOverflowReplicas": 2},
    )
    body["metadata"]["annotations"] = {"tidepool.dev/sim-load-delay": "1s"}
    apply_infd(kube, body)
    gateway_knows(tidepool.gateway_url, "mixed")
    wait_for(
        lambda: get_infd(kube, namespace, "mixed").get("status", {}).get("readyReplicas"),
        timeout=60,
        what="the dedicated floor ready",
    )

    with TrafficLoop(tidepool.gateway_url, "mixed", clients=8, max_tokens=128) as traffic:
        wait_for(
            lambda: any("mixed-shared-a100" in b for b in traffic.backends),
            timeout=90,
            what="a request served by a shared-pool overflow replica",
            interval=1,
        )

    assert traffic.failures == [], traffic.failures[:5]
    dedicated = sum(n for b, n in traffic.backends.items() if "mixed-dedicated-a100" in b)
    overflow = sum(n for b, n in traffic.backends.items() if "mixed-shared-a100" in b)
    assert dedicated > 0, traffic.backends
    assert overflow > 0, traffic.backends
