"""A spec the schema accepts but whose objects the API server refuses gets a status, not a
traceback at every backoff.

The API server refuses what the CRD's schema does not check: here an image with a trailing space,
which Kubernetes' container validation refuses. Before, the refusal propagated to Kopf, which logged
its traceback every 10 s while ``kubectl get infd`` showed an empty STATUS. A SharedEngine, whose
fleet is rendered from the same engine spec, gets the same safety net.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from fakes import FakeKube, FakeLora, FakeMetrics, FakeSharedCluster
from tidepool.adapters.kube import RefusedKubeError
from tidepool.api.v1alpha1 import GPUPool
from tidepool.handlers import daemon, inference
from tidepool.handlers import shared_engine as shared_handlers
from tidepool.handlers.deps import Deps, Telemetry
from tidepool.reconcile.shared_engine import SharedEngineCache

JSON = dict[str, Any]
REFUSAL = (
    'Deployment.apps "llama-shared-a100" is invalid: spec.template.spec.containers[0].image:'
    ' Invalid value: "vllm ": must not have leading or trailing whitespace'
)


def refuse_spaced_image(obj: JSON, refusal: str) -> None:
    """Refuse, as Kubernetes' container validation does, an image with leading or trailing
    whitespace."""
    for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        if c["image"] != c["image"].strip():
            raise RefusedKubeError(refusal)


@dataclass
class RefusingKube(FakeKube):
    """The cluster in memory, refusing as the API server does an image with a trailing space."""

    statuses: list[JSON] = field(default_factory=list)

    def apply(self, obj: JSON) -> None:
        refuse_spaced_image(obj, REFUSAL)
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
        kube=deps.kube,
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


# ------------------------------------------------------------------------------ SharedEngine

FLEET_REFUSAL = (
    'Deployment.apps "sheng-llama-8b" is invalid: spec.template.spec.containers[0].image:'
    ' Invalid value: "vllm ": must not have leading or trailing whitespace'
)


@dataclass
class RefusingFleetCluster(FakeSharedCluster):
    """The fleet's cluster in memory, refusing as the API server does an image with a space."""

    statuses: list[tuple[str | None, str, JSON]] = field(default_factory=list)

    def apply(self, obj: JSON) -> None:
        refuse_spaced_image(obj, FLEET_REFUSAL)
        super().apply(obj)

    def apply_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: JSON
    ) -> None:
        self.statuses.append((namespace, name, status))


def _fleet(image: str) -> JSON:
    return {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SharedEngine",
        "metadata": {"name": "llama-8b", "generation": 4, "uid": "u1"},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "pool": "shared-a100",
            "engine": {"image": image},
        },
    }


def _reconcile_fleet(obj: JSON, kube: RefusingFleetCluster, deps: Deps) -> float:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # no event queue outside a running operator
    # Through the daemon's own wrapper: whatever escapes it is Kopf's traceback and backoff.
    return daemon.reconcile_or_raise(
        lambda: shared_handlers._reconcile_once(
            obj,
            body=kopf.Body(obj),
            deps=deps,
            cache=SharedEngineCache(),
            kube=kube,  # type: ignore[arg-type]  # the SharedEngine port plus apply_status
            lora=FakeLora(),  # type: ignore[arg-type]
            namespace="tidepool-system",
            logger=kopf.ObjectLogger(body=kopf.Body(obj), settings=settings),
        ),
        deps=deps,
    )


def test_a_refused_fleet_is_ready_false_with_the_servers_reason_and_retried() -> None:
    kube = RefusingFleetCluster(pools=[_pool()])
    deps = Deps(
        kube=kube,  # type: ignore[arg-type]
        metrics=FakeMetrics(),  # type: ignore[arg-type]
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        tick_seconds=1.0,
        max_concurrent_migrations=1,
        telemetry=Telemetry(),
    )

    waits = [_reconcile_fleet(_fleet("vllm "), kube, deps) for _ in range(2)]

    assert waits == [inference.INVALID_SPEC_REQUEUE_SECONDS] * 2
    assert deps.telemetry.reconciles.labels(result="error")._value.get() == 0
    namespace, name, status = kube.statuses[-1]
    assert (namespace, name) == (None, "llama-8b")  # cluster-scoped
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert 'containers[0].image: Invalid value: "vllm "' in ready["message"]
    assert ready["observedGeneration"] == 4
    assert not [k for k in kube.objects if k[0] == "Deployment"]

    # The platform fixes the image: the next look applies the fleet and replaces the verdict.
    wait = _reconcile_fleet(_fleet("vllm"), kube, deps)

    assert wait < inference.INVALID_SPEC_REQUEUE_SECONDS
    assert ("Deployment", "tidepool-system", "sheng-llama-8b") in kube.objects
    fixed = {c["type"]: c for c in kube.engine_status["llama-8b"]["conditions"]}
    assert fixed["Ready"]["reason"] != "InvalidSpec"
