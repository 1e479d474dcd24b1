"""A LoRA tenant of a SharedEngine is promoted to replicas of its own and demoted back, under
continuous traffic, with zero failed requests.

The knob that makes the moves happen in a test's time is price, as in ``test_pool_moves``: the
laptop-priced GPUPools (``e2e/cluster/laptop-priced-pools.yaml``) put a whole dedicated node at
$0.08/h against the fleet's shared GPUs at $4/h, so the capacity the busy tenant forces the fleet
to add costs far more than a replica of its own and ``auto`` promotes it; then the platform
re-prices the dedicated pool ($50/GPU-h, $400 a node) and, at a trickle, its share of the fleet
is far cheaper, so it demotes. A 15-second window and a 20-second dwell keep the hold and dwell
short; the decisions are the operator's own (``policy.placement.decide`` on the fleet's price).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_stack import Tidepool
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tidepool_stack import (
    GROUP,
    VERSION,
    TrafficLoop,
    apply_infd,
    condition,
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
import stack

pytestmark = pytest.mark.usefixtures("logs_on_failure")
REPO = Path(__file__).resolve().parents[2]
PRICED_POOLS = REPO / "e2e" / "cluster" / "laptop-priced-pools.yaml"
BASE = "org/base-8b"
#: Where the operator runs shared fleets when POD_NAMESPACE is unset (the test runs it so).
FLEET_NAMESPACE = "default"
#: Tokens/s one fleet replica serves: the busy tenant's 4 clients of 64-token answers offer
#: about 180 decode tokens/s, 1.5 replicas of work at this rate, so the fleet grows by capacity
#: the tenant forces, which its own replica at $0.01/GPU-h undercuts (``lora_promotion``).
FLEET_CAPACITY = {"prefillTokensPerSecond": 5000.0, "decodeTokensPerSecond": 120.0}


@pytest.fixture(scope="module")
def priced_pools(cluster: localcluster.Cluster) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", str(PRICED_POOLS))
    yield
    cluster.kubectl("delete", "-f", str(PRICED_POOLS), "--ignore-not-found")


@pytest.fixture
def engine_name(kube: client.ApiClient) -> Iterator[str]:
    name = f"base-{uuid.uuid4().hex[:6]}"
    yield name
    try:
        client.CustomObjectsApi(kube).delete_cluster_custom_object(
            GROUP, VERSION, "sharedengines", name
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def _tenant(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body = infd_manifest(name, namespace, **spec)
    body["spec"]["model"] = {
        "name": BASE,
        "servedName": name,
        # An adapter name of its own, so that on the tenant's own replicas (which serve the base
        # model under the tenant's name) a request reaches the adapter, not the base model.
        "adapter": {"name": f"{name}-lora", "source": f"/models/adapters/{name}"},
    }
    return body


def _busy(namespace: str) -> dict[str, Any]:
    body = _tenant(
        "busy",
        namespace,
        mode="auto",
        engine={"maxNumSeqs": 4},
        scaling={
            "minReplicas": 0,
            "maxReplicas": 2,
            "targetQueueDepth": 4,
            "scaleDownStabilization": "5s",
        },
        placement={
            "window": "15s",
            "minDwell": "20s",
            "pools": {"shared": "laptop-shared", "dedicated": "laptop-dedicated"},
        },
    )
    body["metadata"]["annotations"] = {"tidepool.dev/sim-load-delay": "3s"}
    return body


def _price_dedicated(kube: client.ApiClient, per_gpu_hour: float) -> None:
    client.CustomObjectsApi(kube).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "gpupools",
        "laptop-dedicated",
        {"spec": {"pricePerGpuHour": per_gpu_hour}},
    )


def _where(kube: client.ApiClient, ns: str, name: str) -> str:
    """``fleet``, ``own`` or ``moving``: where the gateway sends the tenant now."""
    status = get_infd(kube, ns, name).get("status", {})
    if status.get("migration"):
        return "moving"
    if status.get("effectiveMode") in ("dedicated", "hybrid"):
        return "own"
    loaded = condition(get_infd(kube, ns, name), "AdapterLoaded").get("status") == "True"
    return "fleet" if status.get("engine") and loaded else "moving"


def test_lora_tenant_promoted_and_demoted_under_traffic_without_a_failure(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    priced_pools: None,
    engine_name: str,
) -> None:
    fleet = stack.shared_engine_manifest(
        engine_name, BASE, min_replicas=1, max_replicas=2, max_loras=4, pool="laptop-shared"
    )
    # The fleet's capacity as measured on the engine simulator (20 ms a token, a handful of
    # sequences at once), not the table's A100 figure: at the table's thousands of tokens/s no
    # test's traffic outgrows the fleet's warm replica, and a tenant that adds no capacity to
    # the fleet costs the platform nothing there, so it is rightly never promoted.
    fleet["spec"]["engine"] = {"capacity": FLEET_CAPACITY}
    client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP, VERSION, "sharedengines", fleet
    )
    apply_infd(kube, _tenant("steady", namespace, mode="serverless"))
    apply_infd(kube, _busy(namespace))
    for tenant in ("steady", "busy"):
        gateway_knows(tidepool.gateway_url, tenant, timeout=60)
        wait_for(
            lambda t=tenant: _where(kube, namespace, t) == "fleet",
            timeout=90,
            what=f"{tenant} served by the fleet",
        )
    # A serverless tenant runs replicas of its own (at zero) until the fleet holds its adapter.
    wait_for(
        lambda: not deployments(kube, namespace),
        timeout=60,
        what="no tenant with an engine of its own",
    )

    # The steady tenant's traffic runs throughout; the busy one's is heavy, then a trickle.
    with TrafficLoop(tidepool.gateway_url, "steady", clients=1, max_tokens=4, pause=0.5) as steady:
        with TrafficLoop(tidepool.gateway_url, "busy", clients=4, max_tokens=64) as busy:
            wait_for(
                lambda: _where(kube, namespace, "busy") == "own",
                timeout=180,
                what="the busy tenant promoted to replicas of its own",
                interval=1,
            )
            promoted = get_infd(kube, namespace, "busy")
            pods = engine_pods(kube, namespace)
            assert pods, "its own replica runs"
            assert {node_pool(kube, p.spec.node_name) for p in pods} == {"dedicated-a100"}
            assert "--lora-modules" in pods[0].spec.containers[0].args
            wait_for(
                lambda: (
                    not any(
                        a["tenant"] == f"{namespace}/busy"
                        for a in client.CustomObjectsApi(kube)
                        .get_cluster_custom_object(GROUP, VERSION, "sharedengines", engine_name)
                        .get("status", {})
                        .get("adapters", [])
                    )
                ),
                timeout=30,
                what="the fleet released the busy tenant's adapter",
            )
        # Dedicated GPUs get dear: a whole node at $400/h against a share of the fleet's $4/h.
        _price_dedicated(kube, 50.0)
        try:
            with TrafficLoop(
                tidepool.gateway_url, "busy", clients=1, max_tokens=4, pause=1.0
            ) as trickle:
                wait_for(
                    lambda: _where(kube, namespace, "busy") == "fleet",
                    timeout=180,
                    what="the busy tenant demoted back onto the fleet",
                    interval=1,
                )
                wait_for(
                    lambda: not deployments(kube, namespace),
                    timeout=60,
                    what="its own replicas removed",
                )
                demoted = get_infd(kube, namespace, "busy")
        finally:
            _price_dedicated(kube, 0.01)

    failures = busy.failures + steady.failures + trickle.failures
    assert failures == [], failures[:5]
    assert busy.ok > 20
    assert trickle.ok > 5
    assert steady.ok > 20
    assert promoted["status"]["engine"] == ""
    assert promoted["status"]["spendPerMonth"] is not None
    assert demoted["status"]["engine"] == engine_name
    # Both moves were migrations: the promotion's and the demotion's MigrationComplete Events
    # (status.lastDecision may already hold a later decision).
    assert event_reasons(kube, namespace, "busy")["MigrationComplete"] >= 2
    print(
        f"requests answered: busy {busy.ok} + {trickle.ok}, steady {steady.ok};"
        f" failed: {len(failures)}\npromoted: {promoted['status'].get('spend')}"
        f"\ndemoted: {demoted['status'].get('spend')}"
    )
