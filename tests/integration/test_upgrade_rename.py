"""An operator upgrade across the naming change, on the real control plane, under traffic.

Before the naming change, ``support-bot`` on ``dedicated-a100`` ran engine Deployment
``support-bot-dedicated-a100``; now it gets ``support-bot-dedicated-a100-<hash>``
(:func:`tidepool.api.names.engine_deployment`: a name with a dash is hashed). The test leaves the
cluster as the operator before the change left it (its Deployment, owned by the
InferenceDeployment, under the old name and serving), starts the operator, and watches: the new
Deployment comes up beside the old one, the old one goes only once the new one is Ready with
every replica, and no request through the gateway fails meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fixtures_stack import Tidepool
from kubernetes import client
from tidepool_stack import (
    TrafficLoop,
    apply_infd,
    condition,
    deployments,
    engine_pods,
    gateway_knows,
    get_infd,
    infd_manifest,
    wait_for,
)

import stack
from tidepool.api import names

pytestmark = pytest.mark.usefixtures("logs_on_failure")

NAME, POOL, REPLICAS = "support-bot", "dedicated-a100", 2
OLD = f"{NAME}-{POOL}"
NEW = names.engine_deployment(NAME, POOL)


def _ready(kube: client.ApiClient, ns: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (o := get_infd(kube, ns, NAME))
            and condition(o, "Ready").get("status") == "True"
            and o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            and o
        ),
        timeout=60,
        what=f"{ns}/{NAME} Ready=True at the current generation",
    )


def _ready_replicas(dep: client.V1Deployment | None) -> int:
    return int((dep.status.ready_replicas or 0) if dep is not None and dep.status else 0)


def _as_the_old_operator_left_it(kube: client.ApiClient, ns: str) -> None:
    """The operator's Deployment copied under the old name (the old operator rendered the same
    object but for the name: owner, labels, selector, pod template), Ready; then the new-named
    one deleted, its pods gone."""
    apps = client.AppsV1Api(kube)
    rendered = apps.read_namespaced_deployment(NEW, ns)
    meta = rendered.metadata
    old = client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(
            name=OLD,
            namespace=ns,
            labels=meta.labels,
            owner_references=meta.owner_references,
        ),
        spec=rendered.spec,
    )
    apps.create_namespaced_deployment(ns, old)
    wait_for(
        lambda: _ready_replicas(deployments(kube, ns).get(OLD)) == REPLICAS,
        timeout=60,
        what=f"{OLD} Ready with {REPLICAS} replicas",
    )
    apps.delete_namespaced_deployment(NEW, ns, propagation_policy="Foreground")
    wait_for(
        lambda: (
            NEW not in deployments(kube, ns)
            and all(p.metadata.name.startswith(f"{OLD}-") for p in engine_pods(kube, ns))
            and len(engine_pods(kube, ns)) == REPLICAS
        ),
        timeout=60,
        what=f"only {OLD}'s pods left",
    )


def test_an_upgrade_retires_the_old_named_deployment_only_after_the_new_one_is_ready(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    assert NEW != OLD
    body = infd_manifest(
        NAME, namespace, mode="dedicated", scaling={"minReplicas": REPLICAS, "maxReplicas": 2}
    )
    # Model loads take 4 s, so the new Deployment is seen starting beside the old one.
    body["metadata"]["annotations"] = {"tidepool.dev/sim-load-delay": "4s"}
    apply_infd(kube, body)
    _ready(kube, namespace)
    gateway_knows(tidepool.gateway_url, NAME)

    tidepool.operator.stop()
    stopped = True
    samples: list[tuple[float, bool, int | None]] = []
    try:
        _as_the_old_operator_left_it(kube, namespace)
        with TrafficLoop(tidepool.gateway_url, NAME, clients=4, max_tokens=32) as traffic:
            wait_for(lambda: traffic.ok >= 10, timeout=30, what="traffic on the old replicas")
            started = time.monotonic()
            tidepool.operator = stack.operator(
                tidepool.kubeconfig, tidepool.prometheus_url, tick=1.0
            ).start()
            stopped = False
            # One consistent list per sample: is the old one there, how ready is the new one.
            while time.monotonic() - started < 120:
                deps = deployments(kube, namespace)
                old = deps.get(OLD)
                gone = old is None or old.metadata.deletion_timestamp is not None
                new = deps.get(NEW)
                samples.append(
                    (time.monotonic() - started, not gone, _ready_replicas(new) if new else None)
                )
                if gone:
                    break
                time.sleep(0.1)
            time.sleep(3)  # traffic keeps flowing on the new replicas alone
    finally:
        if stopped:
            tidepool.operator = stack.operator(
                tidepool.kubeconfig, tidepool.prometheus_url, tick=1.0
            ).start()

    kept = [s for s in samples if s[1]]
    assert kept, samples
    assert not samples[-1][1], f"{OLD} was never deleted: {samples[-5:]}"
    starting = [s for s in kept if s[2] is not None and s[2] < REPLICAS]
    assert starting, f"never saw {NEW} starting beside {OLD}: {samples[:5]}"
    gone_at, _, new_ready = samples[-1]
    assert new_ready == REPLICAS, f"{OLD} went with {NEW} at {new_ready}/{REPLICAS} ready"
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok > 20
    obj = _ready(kube, namespace)
    assert [p["deployment"] for p in obj["status"]["pools"]] == [NEW]
    assert set(deployments(kube, namespace)) == {NEW}
    print(
        f"\n{NEW} beside {OLD}: {len(starting)} samples starting,"
        f" {OLD} deleted {gone_at:.1f}s after the operator started; {traffic.ok} requests ok"
    )
