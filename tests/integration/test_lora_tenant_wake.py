"""A LoRA tenant's scale from zero costs an adapter load on its SharedEngine, never a GPU of its
own, on the real control plane.

Six ``mode: serverless`` tenants of one base model, their fleet at zero. Every tenant sends one
request at once through the gateway: each is held, the fleet wakes, loads the adapters and
answers; and over the whole test no tenant ever has an engine Deployment of its own (a watch on
the tenants' namespace sees every one created). Before, each tenant applied a 0-replica
Deployment of its own on the shared pool from the start, and each woken one was scaled 0 -> 1
there, taking GPUs of the pool the fleet wakes on.

Also: the SharedEngine's write of a tenant's status when the tenant was deleted meanwhile (the
API server's 404) is skipped, not raised.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fixtures_stack import Tidepool
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from tidepool_stack import (
    GROUP,
    VERSION,
    apply_infd,
    complete,
    gateway_knows,
    get_infd,
    wait_for,
    wait_for_reconciles,
)
from urllib3.exceptions import ProtocolError

import localcluster
import stack
from podbacker import PodBacker
from stack import replicas_of
from tidepool.adapters import kube as kube_adapter

pytestmark = pytest.mark.usefixtures("logs_on_failure")

BASE = "org/base-wake-6"
FLEET_NAMESPACE = "default"
"""Where the operator runs shared fleets (POD_NAMESPACE is unset in the tests)."""
TENANTS = 6
MAX_LORAS = 4
FLOOR = -(-TENANTS // MAX_LORAS)
"""Replicas a woken fleet starts so that every adapter has a slot: ceil(6 / 4) = 2."""


class DeploymentWatch:
    """Every Deployment created in a namespace while it runs, with the most replicas asked of it:
    a watch, so that one created and deleted between two looks is seen too."""

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.apps = client.AppsV1Api(kube)
        self.namespace = namespace
        self.seen: dict[str, int] = {}
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._run, name="deployment-watch", daemon=True)
        self._stopping = False

    def _run(self) -> None:
        stream = self._watch.stream(
            self.apps.list_namespaced_deployment, self.namespace, timeout_seconds=600
        )
        try:
            for event in stream:
                dep = event["object"]
                name = dep.metadata.name
                self.seen[name] = max(self.seen.get(name, 0), int(dep.spec.replicas or 0))
        except ProtocolError:
            if not self._stopping:
                raise  # the stream broke while still watched; stop() ends it so on purpose

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        self._watch.stop()  # type: ignore[no-untyped-call]
        self._thread.join(timeout=5)


@pytest.fixture
def engine(kube: client.ApiClient) -> Iterator[str]:
    name = f"wake6-{uuid.uuid4().hex[:5]}"
    yield name
    custom, apps = client.CustomObjectsApi(kube), client.AppsV1Api(kube)
    core = client.CoreV1Api(kube)
    with contextlib.suppress(ApiException):
        custom.delete_cluster_custom_object(GROUP, VERSION, "sharedengines", name)
    with contextlib.suppress(ApiException):
        apps.delete_namespaced_deployment(f"sheng-{name}", FLEET_NAMESPACE)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_service(f"sheng-{name}", FLEET_NAMESPACE)
    # The fleet's pods hold GPUs: the next test must find the pool free again.
    localcluster.wait_for(
        lambda: (
            not core.list_namespaced_pod(
                FLEET_NAMESPACE, label_selector=f"tidepool.dev/shared-engine={name}"
            ).items
        ),
        timeout=60,
        what="the fleet's pods to be gone",
        interval=0.5,
    )


def _served(i: int) -> str:
    return f"wake-chat-{i}"


def test_waking_every_tenant_from_zero_starts_no_replica_of_their_own(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    podbacker: PodBacker,
    engine: str,
) -> None:
    custom = client.CustomObjectsApi(kube)
    fleet = f"sheng-{engine}"
    with DeploymentWatch(kube, namespace) as own:
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "sharedengines",
            stack.shared_engine_manifest(
                engine, BASE, max_replicas=FLOOR, max_loras=MAX_LORAS, scale_to_zero_after="10m"
            ),
        )
        for i in range(TENANTS):
            apply_infd(
                kube,
                stack.lora_tenant_manifest(
                    f"w{i}", namespace, BASE, served=_served(i), adapter=f"wake-lora-{i}"
                ),
            )
        wait_for(
            lambda: all(
                get_infd(kube, namespace, f"w{i}").get("status", {}).get("engine") == engine
                for i in range(TENANTS)
            ),
            timeout=60,
            what="every tenant's status.engine to name the SharedEngine",
        )
        for i in range(TENANTS):
            gateway_knows(tidepool.gateway_url, _served(i), timeout=30)
        wait_for_reconciles(
            tidepool.operator, 2 * TENANTS, what="syncs of every tenant with the fleet asleep"
        )
        assert replicas_of(kube, FLEET_NAMESPACE, fleet) == 0, "the fleet starts asleep"
        asleep = dict(own.seen)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=TENANTS) as senders:
            replies = list(
                senders.map(lambda i: complete(tidepool.gateway_url, _served(i)), range(TENANTS))
            )
        took = time.monotonic() - started
        wait_for_reconciles(
            tidepool.operator, 2 * TENANTS, what="the tenants' syncs after the wake"
        )

    print(
        f"wake of {TENANTS} tenants at once: answered {[r.status for r in replies]} after"
        f" {took:.2f}s; Deployments of their own: {len(asleep)} before the wake, {len(own.seen)}"
        f" after, {sum(n > 0 for n in own.seen.values())} of them scaled up"
        f" ({sum(own.seen.values())} replicas in all)"
    )
    assert asleep == {}, "no tenant made a Deployment of its own before any request"
    assert [r.status for r in replies] == [200] * TENANTS, [r.body for r in replies]
    assert all(r.backend.startswith(f"{FLEET_NAMESPACE}/{fleet}-") for r in replies), [
        r.backend for r in replies
    ]
    assert own.seen == {}
    assert replicas_of(kube, FLEET_NAMESPACE, fleet) == FLOOR


def test_a_status_write_for_a_deleted_tenant_is_skipped(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    """The SharedEngine's daemon patches its tenants' status from a list read at the start of
    its sync; one deleted since answers 404, which means there is nothing left to write."""
    ops = kube_adapter.Kube(kube)
    status: dict[str, Any] = {"engine": "nobody"}

    ops.patch_tenant_status(namespace, "deleted-meanwhile", status)

    # Any other refusal still reaches the caller.
    apply_infd(kube, stack.lora_tenant_manifest("real", namespace, BASE, served="r", adapter="r"))
    with pytest.raises(kube_adapter.RefusedKubeError, match="conditions"):
        ops.patch_tenant_status(namespace, "real", {"conditions": "not a list"})
