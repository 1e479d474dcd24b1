"""The foundation, against the real control plane: CR -> engine Deployments on the right pool."""

from __future__ import annotations

import subprocess

import pytest
from fixtures_stack import Tidepool
from kubernetes import client
from tidepool_stack import (
    apply_infd,
    condition,
    deployments,
    engine_pods,
    get_infd,
    infd_manifest,
    node_pool,
    wait_for,
    wait_for_reconciles,
)

import localcluster

pytestmark = pytest.mark.usefixtures("logs_on_failure")


def _when(kube: client.ApiClient, ns: str, name: str, type_: str, **field: str) -> dict:
    """The object once its ``type_`` condition has ``field`` (one, e.g. ``status="True"``)."""
    ((key, value),) = field.items()
    return wait_for(
        lambda: (o := get_infd(kube, ns, name)) and condition(o, type_).get(key) == value and o,
        timeout=60,
        what=f"{ns}/{name} {type_} {key}={value}",
    )


def _ready(kube: client.ApiClient, ns: str, name: str) -> dict:
    return _when(kube, ns, name, "Ready", status="True")


@pytest.mark.parametrize(
    ("mode", "pool"),
    [
        pytest.param("dedicated", "dedicated-a100", id="dedicated-lands-on-dedicated-nodes"),
        pytest.param("serverless", "shared-a100", id="serverless-lands-on-shared-nodes"),
    ],
)
def test_applied_cr_gets_engine_pods_bound_to_its_pool(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, mode: str, pool: str
) -> None:
    body = infd_manifest("m", namespace, mode=mode, scaling={"minReplicas": 2, "maxReplicas": 3})
    apply_infd(kube, body)

    obj = _ready(kube, namespace, "m")
    pods = wait_for(
        lambda: [p for p in engine_pods(kube, namespace) if p.spec.node_name],
        timeout=30,
        what="bound engine pods",
    )

    assert {node_pool(kube, p.spec.node_name) for p in pods} == {pool}
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["pool"] == pool
    container = pods[0].spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.args[:3] == ["org/m", "--served-model-name", "m"]


def test_invalid_cr_is_rejected_at_admission_naming_the_field(
    cluster: localcluster.Cluster, namespace: str
) -> None:
    manifest = f"""
apiVersion: tidepool.dev/v1alpha1
kind: InferenceDeployment
metadata: {{name: bad, namespace: {namespace}}}
spec:
  model: {{name: x}}
  scaling: {{minReplicas: 5, maxReplicas: 2, scaleToZeroAfter: "5 minutes"}}
"""
    result = subprocess.run(
        [
            str(cluster.bin_dir / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "apply",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert "spec.scaling.minReplicas" in result.stderr
    assert "minReplicas must be less than or equal to maxReplicas" in result.stderr
    assert "spec.scaling.scaleToZeroAfter" in result.stderr
    assert '"5 minutes"' in result.stderr


def test_deleting_the_cr_removes_its_children(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    apply_infd(kube, infd_manifest("gone", namespace, mode="dedicated", scaling={"minReplicas": 1}))
    wait_for(lambda: deployments(kube, namespace), timeout=30, what="engine deployment")

    client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        "tidepool.dev", "v1alpha1", namespace, "inferencedeployments", "gone"
    )

    wait_for(
        lambda: (
            not deployments(kube, namespace)
            and not client.CoreV1Api(kube).list_namespaced_service(namespace).items
        ),
        timeout=60,
        what="garbage collection of the Deployment and Service",
    )


def test_operator_restart_changes_nothing(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    apply_infd(
        kube,
        infd_manifest(
            "steady", namespace, mode="dedicated", scaling={"minReplicas": 1, "maxReplicas": 2}
        ),
    )
    before_obj = _ready(kube, namespace, "steady")
    wait_for_reconciles(tidepool.operator, 2, what="two more syncs: the status settled")
    before = {n: d.metadata.resource_version for n, d in deployments(kube, namespace).items()}
    svc_before = {
        s.metadata.name: s.metadata.resource_version
        for s in client.CoreV1Api(kube).list_namespaced_service(namespace).items
    }
    ready_since = condition(before_obj, "Ready")["lastTransitionTime"]

    tidepool.restart_operator()
    wait_for_reconciles(tidepool.operator, 5, what="several syncs of the new process")

    after = {n: d.metadata.resource_version for n, d in deployments(kube, namespace).items()}
    svc_after = {
        s.metadata.name: s.metadata.resource_version
        for s in client.CoreV1Api(kube).list_namespaced_service(namespace).items
    }
    assert after == before, "a restart must not rewrite (or duplicate) engine Deployments"
    assert svc_after == svc_before
    obj = get_infd(kube, namespace, "steady")
    assert condition(obj, "Ready")["lastTransitionTime"] == ready_since


def test_changing_the_spec_rolls_the_engine(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    body = infd_manifest("roll", namespace, mode="dedicated", scaling={"minReplicas": 1})
    apply_infd(kube, body)
    _ready(kube, namespace, "roll")
    old_pods = {p.metadata.name for p in engine_pods(kube, namespace)}

    body["spec"]["engine"] = {"maxModelLen": 4096}
    apply_infd(kube, body)

    def rolled() -> bool:
        pods = engine_pods(kube, namespace)
        return bool(pods) and all(
            p.metadata.name not in old_pods and "--max-model-len" in p.spec.containers[0].args
            for p in pods
        )

    wait_for(rolled, timeout=60, what="new engine pods with --max-model-len")
    _ready(kube, namespace, "roll")


def test_applying_the_same_manifest_twice_never_resets_replicas(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    """GitOps: Argo CD re-applies the manifest; the autoscaler's count stands."""
    body = infd_manifest(
        "gitops", namespace, mode="serverless", scaling={"minReplicas": 0, "maxReplicas": 3}
    )
    apply_infd(kube, body, manager="argocd-controller")
    wait_for(lambda: deployments(kube, namespace), timeout=30, what="engine deployment")
    name = next(iter(deployments(kube, namespace)))
    assert deployments(kube, namespace)[name].spec.replicas == 0

    # The autoscaler's path: a wake from the gateway scales to 1.
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        "tidepool.dev",
        "v1alpha1",
        namespace,
        "inferencedeployments",
        "gitops",
        {"metadata": {"annotations": {"tidepool.dev/wake-requested-at": "2026-01-01T00:00:00Z"}}},
    )
    wait_for(
        lambda: deployments(kube, namespace)[name].spec.replicas == 1,
        timeout=20,
        what="autoscaler scale to 1",
    )

    apply_infd(kube, body, manager="argocd-controller")
    wait_for_reconciles(tidepool.operator, 3, what="syncs after Git's apply")

    assert deployments(kube, namespace)[name].spec.replicas == 1
    assert "replicas" not in get_infd(kube, namespace, "gitops")["spec"]


def test_unschedulable_pods_surface_as_a_condition(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    # Two dedicated nodes with 8 GPUs each: a third 8-GPU replica can never be placed.
    apply_infd(
        kube,
        infd_manifest(
            "big",
            namespace,
            mode="dedicated",
            engine={"gpusPerReplica": 8},
            scaling={"minReplicas": 3, "maxReplicas": 3},
        ),
    )

    obj = _when(kube, namespace, "big", "Scheduled", status="False")

    sched = condition(obj, "Scheduled")
    assert sched["reason"] == "Unschedulable"
    assert "dedicated-a100" in sched["message"]
    assert "nvidia.com/gpu" in sched["message"] or "Insufficient" in sched["message"]


def test_a_missing_service_account_is_a_replica_failure(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    # The API server's ServiceAccount admission refuses every pod the ReplicaSet creates, so no
    # pod exists to report why; the Deployment's ReplicaFailure condition does.
    apply_infd(
        kube,
        infd_manifest(
            "nosa",
            namespace,
            mode="dedicated",
            engine={"serviceAccountName": "no-such-account"},
            scaling={"minReplicas": 1, "maxReplicas": 1},
        ),
    )

    obj = _when(kube, namespace, "nosa", "Ready", reason="ReplicaFailure")

    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert 'serviceaccount "no-such-account" not found' in ready["message"]
    assert engine_pods(kube, namespace) == []
