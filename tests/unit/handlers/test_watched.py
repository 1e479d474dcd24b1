"""The reads each tick makes, from Kopf's indices: what each index keeps of a watched object,
and what the reconcile then reads, from bodies shaped like the API server's watch events.

An index is a mapping from a key to the values of every object filed under it; Kopf's own
``kopf.Index`` is one, and a dict of lists stands for it here with the same lookups.
"""

from typing import Any

import kopf
import pytest

from tidepool.api import labels, names
from tidepool.api.conditions import Reason
from tidepool.handlers import watched
from tidepool.handlers.watched import Indices, WatchedKube
from tidepool.policy.children import ObservedDeployment

JSON = dict[str, Any]
NAMESPACE = "team-a"


def owner(kind: str, name: str) -> JSON:
    return {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": f"uid-{name}",
        "controller": True,
    }


def deployment(name: str, tenant: str, *, controller: JSON | None, ready: int) -> JSON:
    meta: JSON = {
        "name": name,
        "namespace": NAMESPACE,
        "generation": 3,
        "labels": {
            **labels.selector_labels(tenant),
            labels.POOL: "shared-a100",
        },
    }
    if controller is not None:
        meta["ownerReferences"] = [controller]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels.selector_labels(tenant)},
            "template": {
                "metadata": {"labels": labels.selector_labels(tenant)},
                "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.11.0"}]},
            },
        },
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "readyReplicas": ready,
            "updatedReplicas": 2,
        },
    }


def pod(name: str, tenant: str, *, unschedulable: bool, deleting: bool = False) -> JSON:
    meta: JSON = {
        "name": name,
        "namespace": NAMESPACE,
        "labels": {**labels.selector_labels(tenant), labels.POOL: "shared-a100"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
    conditions = [
        {
            "type": "PodScheduled",
            "status": "False" if unschedulable else "True",
            "reason": "Unschedulable" if unschedulable else None,
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
            if unschedulable
            else None,
        }
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.11.0"}]},
        "status": {"phase": "Pending", "conditions": conditions},
    }


def gpupool(name: str, **spec: Any) -> JSON:
    return {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "GPUPool",
        "metadata": {"name": name},
        "spec": {
            "tenancy": "shared",
            "gpuType": "A100",
            "nodeSelector": {"pool": name},
            "pricePerGpuHour": 4.0,
            **spec,
        },
    }


def index_of(handler: Any, *bodies: JSON) -> dict[Any, list[Any]]:
    """What Kopf's index holds after ``handler`` has seen ``bodies``: key -> values."""
    index: dict[Any, list[Any]] = {}
    for body in bodies:
        for key, value in handler(body=kopf.Body(body)).items():
            index.setdefault(key, []).append(value)
    return index


def kube_over(**indices: dict[Any, list[Any]]) -> WatchedKube:
    empty: dict[Any, list[Any]] = {}
    every = {name: indices.get(name, empty) for name in Indices.__dataclass_fields__}
    return WatchedKube(None, Indices.from_kwargs(every))  # type: ignore[arg-type]


def test_a_deployment_is_filed_under_its_tenant_with_what_the_plan_reads() -> None:
    index = index_of(
        watched.engine_deployment_index,
        deployment(
            "llama-shared-a100", "llama", controller=owner("InferenceDeployment", "llama"), ready=1
        ),
    )
    ((key, (owned,)),) = index.items()
    assert key == (NAMESPACE, names.label_value("llama"))
    assert owned.controller == ("InferenceDeployment", "llama")
    assert owned.deployment == ObservedDeployment(
        name="llama-shared-a100",
        pool="shared-a100",
        replicas=2,
        ready_replicas=1,
        updated_replicas=2,
        generation_observed=True,
    )


@pytest.mark.parametrize(
    ("controller", "listed"),
    [
        pytest.param(owner("InferenceDeployment", "llama"), True, id="ours"),
        pytest.param(owner("SharedEngine", "llama"), False, id="another-kind"),
        pytest.param(None, False, id="no-controller-same-labels"),
    ],
)
def test_only_deployments_the_tenant_controls_are_its_engines(
    controller: JSON | None, listed: bool
) -> None:
    index = index_of(
        watched.engine_deployment_index,
        deployment("llama-shared-a100", "llama", controller=controller, ready=2),
    )
    found = kube_over(engine_deployment_index=index).engine_deployments(NAMESPACE, "llama")
    assert [d.name for d in found] == (["llama-shared-a100"] if listed else [])


def test_another_tenants_deployments_are_not_read() -> None:
    index = index_of(
        watched.engine_deployment_index,
        deployment(
            "mistral-shared-a100",
            "mistral",
            controller=owner("InferenceDeployment", "mistral"),
            ready=2,
        ),
    )
    assert kube_over(engine_deployment_index=index).engine_deployments(NAMESPACE, "llama") == []


def test_pod_problems_in_the_schedulers_words_and_not_for_a_pod_going_away() -> None:
    index = index_of(
        watched.engine_pod_index,
        pod("llama-a-1", "llama", unschedulable=True),
        pod("llama-a-2", "llama", unschedulable=False),
        pod("llama-a-3", "llama", unschedulable=True, deleting=True),
    )
    (problem,) = kube_over(engine_pod_index=index).pod_problems(NAMESPACE, "llama")
    assert problem.pod == "llama-a-1"
    assert problem.pool == "shared-a100"
    assert problem.reason == Reason.UNSCHEDULABLE
    assert "Insufficient nvidia.com/gpu" in problem.message


def test_pools_sorted_by_name_and_an_invalid_one_left_out() -> None:
    index = index_of(
        watched.gpupool_index,
        gpupool("shared-l4"),
        gpupool("dedicated-h100", tenancy="dedicated", gpuType="H100"),
        gpupool("broken", tenancy="sometimes"),
    )
    pools = kube_over(gpupool_index=index).list_pools()
    assert [p.name for p in pools] == ["dedicated-h100", "shared-l4"]


@pytest.mark.parametrize(
    ("resource", "labels_wanted", "fields_wanted"),
    [
        pytest.param(
            kopf.Resource("apps", "v1", "deployments", kind="Deployment", namespaced=True),
            ["tidepool.dev/component=engine,tidepool.dev/inference-deployment"],
            [],
            id="tenant-engine-deployments-only",
        ),
        pytest.param(
            kopf.Resource("", "v1", "pods", kind="Pod", namespaced=True),
            ["tidepool.dev/component=engine"],
            [],
            id="engine-pods-only",
        ),
        pytest.param(
            kopf.Resource("", "v1", "events", kind="Event", namespaced=True),
            [],
            ["reason=WakeRequested"],
            id="wake-events-only",
        ),
        pytest.param(
            kopf.Resource("tidepool.dev", "v1alpha1", "inferencedeployments", namespaced=True),
            [],
            [],
            id="tenants-all",
        ),
    ],
)
def test_the_api_server_sends_only_what_the_handlers_use(
    resource: kopf.Resource, labels_wanted: list[str], fields_wanted: list[str]
) -> None:
    settings = kopf.OperatorSettings()
    watched.narrow_watches(settings)
    assert list(settings.watching.label_selectors.collect(resource)) == labels_wanted
    assert list(settings.watching.field_selectors.collect(resource)) == fields_wanted


def test_a_shared_engine_finds_its_tenants_and_pool_in_the_indices_not_the_api() -> None:
    """The SharedEngine daemon's per-tick reads: a Kube of None fails on any API call."""
    tenants = index_of(
        watched.inference_deployment_index,
        {
            "apiVersion": "tidepool.dev/v1alpha1",
            "kind": "InferenceDeployment",
            "metadata": {"name": "support-bot", "namespace": NAMESPACE, "generation": 1},
            "spec": {
                "model": {
                    "name": "meta-llama/Llama-3.1-8B-Instruct",
                    "adapter": {"name": "support-bot", "source": "/models/support-bot"},
                }
            },
        },
    )
    pools = index_of(watched.gpupool_index, gpupool("shared-a100"))
    every = {name: {} for name in Indices.__dataclass_fields__}
    fleet = watched.WatchedFleetKube(
        None,  # type: ignore[arg-type]
        Indices.from_kwargs(
            {**every, "inference_deployment_index": tenants, "gpupool_index": pools}
        ),
    )
    assert [t.name for t in fleet.inference_deployments()] == ["support-bot"]
    assert [p.name for p in fleet.list_pools()] == ["shared-a100"]
