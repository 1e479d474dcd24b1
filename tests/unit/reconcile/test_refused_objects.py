"""A spec the schema accepts but whose objects the API server refuses gets a status, not a
traceback at every backoff.

The API server refuses what the CRD's schema does not check: here an image with a trailing space,
which Kubernetes' container validation refuses. Before, the refusal propagated to Kopf, which logged
its traceback every 10 s while ``kubectl get infd`` showed an empty STATUS.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from fakes import FakeKube, FakeMetrics
from tidepool.adapters.kube import RefusedKubeError
from tidepool.api.v1alpha1 import GPUPool
from tidepool.handlers import inference
from tidepool.handlers.deps import Deps, Telemetry

JSON = dict[str, Any]
REFUSAL = (
    'Deployment.apps "llama-shared-a100" is invalid: spec.template.spec.containers[0].image:'
    ' Invalid value: "vllm ": must not have leading or trailing whitespace'
)


@dataclass
class RefusingKube(FakeKube):
    """The cluster in memory, refusing as the API server does an image with a trailing space."""

    statuses: list[JSON] = field(default_factory=list)

    def apply(self, obj: JSON) -> None:
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c["image"] != c["image"].strip():
                raise RefusedKubeError(REFUSAL)
        super().apply(obj)

    def apply_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: JSON
    ) -> None:
        self.statuses.append(status)


def _pool() -> GPUPool:
    return GPUPool.model_validate(
        {
            "metadata": {"name": "shared-a100"},
            "spec": {"tenancy": "shared", "gpuType": "NVIDIA-A100-SXM4-80GB", "pricePerGpuHour": 2},
        }
    )


def _reconcile(obj: JSON, kube: RefusingKube) -> float:
    deps = Deps(
        kube=kube,  # type: ignore[arg-type]  # the KubePort part plus apply_status
        metrics=FakeMetrics(),  # type: ignore[arg-type]
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        tick_seconds=1.0,
        max_concurrent_migrations=1,
        telemetry=Telemetry(),
    )
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # no event queue outside a running operator
    return inference._reconcile_once(
        obj,
        body=kopf.Body(obj),
        deps=deps,
        cache=inference.inference.ObjectCache(),
        writes=inference.OwnWrites(5.0),
        logger=kopf.ObjectLogger(body=kopf.Body(obj), settings=settings),
        key="default/llama",
    )


def test_a_refused_child_object_is_ready_false_with_the_servers_reason() -> None:
    obj = {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"namespace": "default", "name": "llama", "generation": 2},
        "spec": {
            "model": {"name": "m"},
            "scaling": {"minReplicas": 0, "initialReplicas": 1},
            "engine": {"image": "vllm "},
        },
    }
    kube = RefusingKube(pools=[_pool()])

    wait = _reconcile(obj, kube)

    assert wait == inference.INVALID_SPEC_REQUEUE_SECONDS
    (status,) = kube.statuses
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert 'containers[0].image: Invalid value: "vllm "' in ready["message"]
    assert ready["observedGeneration"] == 2
