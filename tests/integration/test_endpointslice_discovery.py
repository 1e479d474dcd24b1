"""The gateway's EndpointSlice discovery against the real API server.

The chart runs the gateway on the engine Services' EndpointSlices, but every other test here runs
it with ``--endpoints-from pods``: kwok's pod IPs are loopback ones, which the API server refuses
in a slice (Kubernetes' ``ValidateEndpointIP``), so the EndpointSlice controller can publish none
for them. This test writes the slices by hand, with routable addresses, as the controller would
for an InferenceDeployment's engine Service, and runs the gateway's own discovery
(:class:`tidepool.adapters.discovery.KubeDiscovery` on ``ENDPOINT_SLICES``, building
:func:`tidepool.gateway.snapshot.build_snapshot`) against the API server's list and watch, so the
routes it reports are the ones the gateway would use.

The slices carry what the controller writes (Kubernetes' EndpointSlice controller,
``pkg/controller/endpointslice``): the Service's labels, ``kubernetes.io/service-name``, an
``http`` port, one endpoint per pod with its ``targetRef`` and its ``ready``/``serving``/
``terminating`` conditions. Two things differ, on purpose. ``endpointslice.kubernetes.io/
managed-by`` names this test, as the EndpointSlice API asks of any other writer, so the real
controller never claims them. And they have no owner reference to the Service: no Service is
created, because an operator running in the same session reconciles the InferenceDeployment and
owns the Services labelled for it, and the garbage collector deletes a slice whose owner is
missing. Discovery reads neither field.

The InferenceDeployment is a serverless one, so an operator of the session that reconciles it
runs no pod; its ``status.pools`` (patched here, and written the same by such an operator) names
the pool the gateway reads from a pod's name (:func:`tidepool.adapters.discovery.pool_of_pod`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tidepool_stack import GROUP, PLURAL, VERSION, apply_infd, get_infd, infd_manifest, wait_for

from tidepool.adapters import discovery
from tidepool.api import names
from tidepool.api.v1alpha1 import InferenceDeployment
from tidepool.gateway.snapshot import Endpoint, RoutingSnapshot, build_snapshot
from tidepool.render import engine as render_engine

TENANT = "llama"
POOL = "shared-a100"
#: How the API server names a pod of the pool's Deployment: ``<deployment>-<replicaset hash>-``
#: and five random characters.
POD_A = f"{names.engine_deployment(TENANT, POOL)}-6d4cf8b7c9-x7k2p"
POD_B = f"{names.engine_deployment(TENANT, POOL)}-6d4cf8b7c9-q4n8m"
#: Not loopback, so the API server stores them (nothing connects to them here).
IPV4_A, IPV4_B, IPV6_B = "10.1.2.3", "10.1.2.4", "fd00:10:1::4"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MERGE_PATCH = "application/merge-patch+json"
#: The routing snapshot follows the API server within PUBLISH_INTERVAL_S; this leaves room for a
#: loaded two-core machine.
CONVERGE_S = 20.0

READY = {"ready": True, "serving": True, "terminating": False}
#: A pod being deleted: it still serves what it has (``serving``) but takes nothing new.
DRAINING = {"ready": False, "serving": True, "terminating": True}


class Routes:
    """The snapshots discovery hands the gateway, the latest kept (``on_change`` runs on a
    watch thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: RoutingSnapshot | None = None

    def on_change(self, snapshot: RoutingSnapshot) -> None:
        with self._lock:
            self._latest = snapshot

    def endpoints(self) -> tuple[Endpoint, ...]:
        with self._lock:
            return () if self._latest is None else self._latest.endpoints

    def of_pod(self, pod: str) -> list[Endpoint]:
        return [e for e in self.endpoints() if e.pod == pod]

    def the_one(self, pod: str, host: str) -> Endpoint | None:
        """The pod's one endpoint when it is at ``host``, else None (not there yet)."""
        found = self.of_pod(pod)
        return found[0] if len(found) == 1 and found[0].host == host else None


@pytest.fixture
def tenant(kube: client.ApiClient, namespace: str) -> InferenceDeployment:
    """The InferenceDeployment whose engine Service the slices belong to, with the status the
    snapshot reads: its pool, and the gateway may route to it."""
    apply_infd(kube, infd_manifest(TENANT, namespace, mode="serverless"))
    status = {
        "pools": [
            {
                "name": POOL,
                "tenancy": "shared",
                "role": "primary",
                "replicas": 2,
                "readyReplicas": 2,
                "deployment": names.engine_deployment(TENANT, POOL),
            }
        ],
        "routablePools": [POOL],
    }
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, TENANT, {"status": status}, _content_type=MERGE_PATCH
    )
    return InferenceDeployment.model_validate(get_infd(kube, namespace, TENANT))


@pytest.fixture
def routes(kubeconfig: Path, namespace: str, tenant: InferenceDeployment) -> Iterator[Routes]:
    """The gateway's discovery on EndpointSlices, watching the test's namespace with a client of
    its own, as the gateway process has."""
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    found = Routes()
    watch = discovery.KubeDiscovery(
        api, build_snapshot, namespace, source=discovery.EndpointSource.ENDPOINT_SLICES
    )
    watch.start(found.on_change)
    try:
        yield found
    finally:
        watch.stop()
        api.close()


def _endpoint(pod: str, namespace: str, address: str, conditions: dict[str, bool]) -> Any:
    return {
        "addresses": [address],
        "conditions": conditions,
        "targetRef": {
            "kind": "Pod",
            "namespace": namespace,
            "name": pod,
            # One uid per pod, whichever slice (address family) lists it.
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{pod}")),
        },
    }


def _slice(tenant: InferenceDeployment, family: str, endpoints: list[Any]) -> dict[str, Any]:
    """An EndpointSlice of the tenant's engine Service as the operator renders it."""
    service = render_engine.engine_service(tenant)
    meta = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": {
                **meta["labels"],
                discovery.SERVICE_NAME_LABEL: meta["name"],
                MANAGED_BY: "tidepool-integration-test",
            },
        },
        "addressType": family,
        "ports": [
            {"name": p["name"], "port": tenant.spec.engine.port, "protocol": p["protocol"]}
            for p in service["spec"]["ports"]
        ],
        "endpoints": endpoints,
    }


def _create(kube: client.ApiClient, body: dict[str, Any]) -> str:
    api = client.DiscoveryV1Api(kube)
    slice_ = client.V1EndpointSlice.from_dict(body)
    assert slice_ is not None
    created = api.create_namespaced_endpoint_slice(body["metadata"]["namespace"], slice_)
    assert created.metadata is not None
    return str(created.metadata.name)


def _set_endpoints(kube: client.ApiClient, namespace: str, name: str, endpoints: list[Any]) -> None:
    """Replace the slice's endpoints, as the controller's update does (a merge patch replaces a
    list whole)."""
    client.DiscoveryV1Api(kube).patch_namespaced_endpoint_slice(
        name, namespace, {"endpoints": endpoints}, _content_type=MERGE_PATCH
    )


def test_a_ready_endpoint_is_routed_until_it_drains_or_its_slice_is_deleted(
    kube: client.ApiClient, namespace: str, tenant: InferenceDeployment, routes: Routes
) -> None:
    ready = [_endpoint(POD_A, namespace, IPV4_A, READY)]
    name = _create(kube, _slice(tenant, "IPv4", ready))

    found = wait_for(
        lambda: routes.the_one(POD_A, IPV4_A),
        timeout=CONVERGE_S,
        what=f"{POD_A} routed at {IPV4_A}",
    )
    assert (found.namespace, found.deployment, found.pool, found.port, found.engine) == (
        namespace,
        TENANT,
        POOL,
        tenant.spec.engine.port,
        "",
    )
    assert found.url == f"http://{IPV4_A}:{tenant.spec.engine.port}"

    _set_endpoints(kube, namespace, name, [_endpoint(POD_A, namespace, IPV4_A, DRAINING)])
    wait_for(
        lambda: not routes.of_pod(POD_A),
        timeout=CONVERGE_S,
        what=f"{POD_A}, terminating, taken off the routes",
    )

    _set_endpoints(kube, namespace, name, ready)
    wait_for(
        lambda: routes.the_one(POD_A, IPV4_A), timeout=CONVERGE_S, what=f"{POD_A} routed again"
    )
    client.DiscoveryV1Api(kube).delete_namespaced_endpoint_slice(name, namespace)
    wait_for(
        lambda: not routes.endpoints(),
        timeout=CONVERGE_S,
        what="no endpoint once the slice is deleted",
    )


def test_a_dual_stack_pod_is_one_endpoint_at_its_ipv4_address(
    kube: client.ApiClient, namespace: str, tenant: InferenceDeployment, routes: Routes
) -> None:
    """A dual-stack Service has one slice per address family, each listing every pod."""
    _create(kube, _slice(tenant, "IPv6", [_endpoint(POD_B, namespace, IPV6_B, READY)]))
    wait_for(
        lambda: routes.the_one(POD_B, f"[{IPV6_B}]"),
        timeout=CONVERGE_S,
        what=f"{POD_B} routed at its IPv6 address while only that slice lists it",
    )

    _create(kube, _slice(tenant, "IPv4", [_endpoint(POD_B, namespace, IPV4_B, READY)]))
    found = wait_for(
        lambda: routes.the_one(POD_B, IPV4_B),
        timeout=CONVERGE_S,
        what=f"{POD_B} as one endpoint at {IPV4_B} once both slices list it",
    )
    assert (found.pool, found.port) == (POOL, tenant.spec.engine.port)
    assert len(routes.endpoints()) == 1, routes.endpoints()


def test_the_api_server_refuses_a_loopback_address_in_a_slice(
    kube: client.ApiClient, namespace: str, tenant: InferenceDeployment
) -> None:
    """Why the rest of the suite runs the gateway on pods: kwok's pod IPs are loopback ones."""
    loopback = [_endpoint(POD_A, namespace, "127.0.0.2", READY)]
    with pytest.raises(ApiException) as refused:
        _create(kube, _slice(tenant, "IPv4", loopback))
    assert refused.value.status == 422, refused.value.body
