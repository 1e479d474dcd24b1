"""A SharedEngine with three LoRA tenants on the real control plane: the operator creates the
fleet's Deployment, loads each tenant's adapter on the engine replica through vLLM's runtime
endpoint (served by the engine simulator), and records it on both sides.

The pod backer runs each fleet pod's simulator with the pod's own vLLM LoRA flags and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, as the rendered pod asks of vLLM.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures_stack import Tidepool
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tidepool_stack import (
    GROUP,
    VERSION,
    apply_infd,
    condition,
    deployments,
    get_infd,
    infd_manifest,
    wait_for,
)

import stack
from podbacker import PodBacker
from stack import replicas_of
from tidepool.api import labels

pytestmark = pytest.mark.usefixtures("logs_on_failure")

BASE = "org/base-8b"
#: Where the operator runs shared fleets when POD_NAMESPACE is unset (the test runs it so).
FLEET_NAMESPACE = "default"
TENANTS = ("support-bot", "sql-helper", "legal-summaries")


@pytest.fixture
def engine_name(kube: client.ApiClient) -> Iterator[str]:
    name = f"base-{uuid.uuid4().hex[:6]}"
    yield name
    api = client.CustomObjectsApi(kube)
    try:
        api.delete_cluster_custom_object(GROUP, VERSION, "sharedengines", name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    for delete in (apps.delete_namespaced_deployment, core.delete_namespaced_service):
        try:
            delete(f"sheng-{name}", FLEET_NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _tenant(name: str, namespace: str) -> dict[str, Any]:
    body = infd_manifest(name, namespace, mode="serverless")
    body["spec"]["model"] = {
        "name": BASE,
        "servedName": name,
        "adapter": {"name": name, "source": f"/models/adapters/{name}"},
    }
    return body


def _create_engine(kube: client.ApiClient, name: str, max_replicas: int) -> None:
    client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "sharedengines",
        stack.shared_engine_manifest(
            name, BASE, min_replicas=1, max_replicas=max_replicas, max_loras=4, pool="shared-a100"
        ),
    )


def test_three_lora_tenants_share_one_fleet(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    podbacker: PodBacker,
    engine_name: str,
) -> None:
    starts = "tidepool_replica_start_seconds_count"
    starts_before = stack.metric_total(tidepool.operator, starts)
    _create_engine(kube, engine_name, max_replicas=2)
    for tenant in TENANTS:
        apply_infd(kube, _tenant(tenant, namespace))

    wait_for(
        lambda: replicas_of(kube, FLEET_NAMESPACE, f"sheng-{engine_name}") == 1,
        timeout=30,
        what="the fleet's Deployment at 1 replica",
    )

    def adapter_loaded() -> dict[str, str]:
        return {
            t: condition(get_infd(kube, namespace, t), "AdapterLoaded").get("message", "")
            for t in TENANTS
        }

    loaded = wait_for(
        lambda: (
            (got := adapter_loaded())
            and all(m == "loaded on 1 of 1 replicas" for m in got.values())
            and got
        ),
        timeout=60,
        what="AdapterLoaded=True on every tenant",
    )
    assert set(loaded) == set(TENANTS)
    # The fleet's replica is an engine start like a tenant's: the operator observes it too (the
    # tenants here are served by the fleet alone, so no other pod of the test starts).
    wait_for(
        lambda: stack.metric_total(tidepool.operator, starts) > starts_before,
        timeout=30,
        what="the fleet replica's start observed in tidepool_replica_start_seconds",
    )
    for tenant in TENANTS:
        obj = get_infd(kube, namespace, tenant)
        assert condition(obj, "AdapterLoaded")["status"] == "True"
    engine = wait_for(
        lambda: (
            (
                obj := client.CustomObjectsApi(kube).get_cluster_custom_object(
                    GROUP, VERSION, "sharedengines", engine_name
                )
            )
            and obj.get("status", {}).get("tenants") == len(TENANTS)
            and obj
        ),
        timeout=30,
        what="the SharedEngine's status",
    )
    assert sorted(
        (a["name"], a["tenant"], a["loadedReplicas"]) for a in engine["status"]["adapters"]
    ) == sorted((t, f"{namespace}/{t}", 1) for t in TENANTS)


def _tenant_on_a_fleet(kube: client.ApiClient, namespace: str) -> str:
    """Apply one LoRA tenant of ``BASE`` and wait until a fleet has loaded its adapter."""
    tenant = TENANTS[0]
    apply_infd(kube, _tenant(tenant, namespace))
    wait_for(
        lambda: (
            condition(get_infd(kube, namespace, tenant), "AdapterLoaded").get("status") == "True"
        ),
        timeout=60,
        what="the tenant's adapter loaded on a fleet",
    )
    return tenant


def test_deleting_the_shared_engine_hands_its_tenant_replicas_of_its_own(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    podbacker: PodBacker,
    engine_name: str,
) -> None:
    """A SharedEngine deleted while it serves a tenant takes its fleet with it. The tenant's own
    reconcile then releases it (``status.engine`` cleared, ``AdapterLoaded`` dropped) and runs
    it as a serverless tenant with no fleet: a Deployment of its own on the shared pool, where
    the gateway routes it and a held request wakes it."""
    api = client.CustomObjectsApi(kube)
    _create_engine(kube, engine_name, max_replicas=1)
    tenant = _tenant_on_a_fleet(kube, namespace)
    assert deployments(kube, namespace) == {}, "served by the fleet: no engine of its own"

    api.delete_cluster_custom_object(GROUP, VERSION, "sharedengines", engine_name)

    released = wait_for(
        lambda: (
            (obj := get_infd(kube, namespace, tenant))
            and not obj["status"].get("engine")
            and deployments(kube, namespace)
            and obj
        ),
        timeout=60,
        what="the tenant released from the deleted engine, with a Deployment of its own",
    )
    assert condition(released, "AdapterLoaded") == {}
    pools = [d.metadata.labels.get(labels.POOL) for d in deployments(kube, namespace).values()]
    assert pools == ["shared-a100"]


def test_a_second_engine_of_one_base_model_serves_nobody(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    podbacker: PodBacker,
    engine_name: str,
) -> None:
    """Two SharedEngines of one base model: the older (by creation, then name) serves the
    tenant; the second keeps no replica, names itself on no tenant, and its Ready says which
    engine serves the model."""
    api = client.CustomObjectsApi(kube)
    second = f"{engine_name}-2"
    for name in (engine_name, second):
        _create_engine(kube, name, max_replicas=1)
    try:
        tenant = _tenant_on_a_fleet(kube, namespace)
        assert get_infd(kube, namespace, tenant)["status"]["engine"] == engine_name

        def second_ready() -> dict[str, Any]:
            obj = api.get_cluster_custom_object(GROUP, VERSION, "sharedengines", second)
            return condition(obj, "Ready")

        ready = wait_for(
            lambda: (got := second_ready()).get("reason") == "BaseModelServedElsewhere" and got,
            timeout=30,
            what="the second engine's Ready naming the one that serves the model",
        )
        assert f"served by SharedEngine {engine_name!r}" in ready["message"]
        assert not replicas_of(kube, FLEET_NAMESPACE, f"sheng-{second}")
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "sharedengines", second)
