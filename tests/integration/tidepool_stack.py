"""Shared helpers for the integration tests: apply manifests, wait on status, send traffic.

Everything talks to the real local control plane and to processes on loopback only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kubernetes import client

import stack
from traffic import Reply, TrafficLoop, complete, gateway_knows
from waiting import wait_for

__all__ = ["Reply", "TrafficLoop", "complete", "gateway_knows", "wait_for"]

GROUP, VERSION, PLURAL = "tidepool.dev", "v1alpha1", "inferencedeployments"


def infd_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": f"org/{name}", "servedName": name}, **spec},
    }
    return body


def apply_infd(kube: client.ApiClient, body: dict[str, Any], manager: str = "kubectl") -> None:
    """Server-side apply as a user (or Argo CD) would."""
    api = client.CustomObjectsApi(kube)
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        body["metadata"]["namespace"],
        PLURAL,
        body["metadata"]["name"],
        body,
        field_manager=manager,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def get_infd(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def deployments(kube: client.ApiClient, namespace: str) -> dict[str, client.V1Deployment]:
    items = client.AppsV1Api(kube).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d for d in items}


def engine_pods(kube: client.ApiClient, namespace: str) -> list[client.V1Pod]:
    return [
        p
        for p in client.CoreV1Api(kube).list_namespaced_pod(namespace).items
        if p.metadata.deletion_timestamp is None
    ]


def event_reasons(kube: client.ApiClient, namespace: str, name: str) -> Counter[str]:
    """How many Events about object ``name`` carry each reason: a decision the status has since
    replaced (``status.lastDecision`` is only the latest) is still found here."""
    events = client.CoreV1Api(kube).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return Counter(e.reason for e in events.items)


def node_pool(kube: client.ApiClient, node_name: str) -> str:
    node = client.CoreV1Api(kube).read_node(node_name)
    return str((node.metadata.labels or {}).get("tidepool.dev/pool", ""))


def reconciles(operator: stack.ManagedProcess) -> float:
    """The operator process's ``tidepool_operator_reconcile_total`` over every result."""
    return stack.metric_total(operator, "tidepool_operator_reconcile_total")


def wait_for_reconciles(operator: stack.ManagedProcess, count: int, *, what: str) -> None:
    """Wait until ``operator`` has reconciled ``count`` more times from now: the condition a
    test that checks something did *not* happen over several syncs stands on."""
    start = reconciles(operator)
    wait_for(lambda: reconciles(operator) >= start + count, timeout=60, what=what)
