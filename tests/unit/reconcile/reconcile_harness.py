"""A reconcile loop in miniature: ``sync`` against fakes, with the status fed back each time.

The status goes through JSON (``model_dump(mode="json")`` and back), as it does through the API
server, so a field that does not survive serialization fails here too.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fakes import FakeKube, FakeMetrics, ManualClock
from tidepool.api import labels
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, InferenceDeploymentStatus
from tidepool.reconcile import inference

JSON = dict[str, Any]
NAME, NS = "llama", "default"
MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct"}


def pool(name: str, tenancy: str, gpus_per_node: int = 8) -> GPUPool:
    spec: JSON = {
        "tenancy": tenancy,
        "gpuType": "NVIDIA-A100-SXM4-80GB",
        "gpusPerNode": gpus_per_node,
        "nodeSelector": {labels.POOL: name},
        "pricePerGpuHour": 4.0,
    }
    if tenancy == "shared":
        spec["pricePerMillionTokens"] = 0.2
    return GPUPool.model_validate({"metadata": {"name": name}, "spec": spec})


SHARED = "shared-a100"
DEDICATED = "dedicated-a100"


def default_pools() -> list[GPUPool]:
    return [pool(SHARED, "shared"), pool(DEDICATED, "dedicated")]


def dep(pool_name: str) -> str:
    """Name of the engine Deployment of the test InferenceDeployment in ``pool_name``."""
    return f"{NAME}-{pool_name}"


@dataclass
class Harness:
    spec: JSON
    kube: FakeKube = field(default_factory=lambda: FakeKube(pools=default_pools()))
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    clock: ManualClock = field(default_factory=ManualClock)
    cache: inference.ObjectCache = field(default_factory=inference.ObjectCache)
    annotations: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    status: InferenceDeploymentStatus = field(default_factory=InferenceDeploymentStatus)
    operator_started_at_offset: timedelta = timedelta(hours=-1)
    may_start_migration: bool = True
    results: list[inference.SyncResult] = field(default_factory=list)
    name: str = NAME

    def __post_init__(self) -> None:
        self.operator_started_at = self.clock.now + self.operator_started_at_offset

    @property
    def infd(self) -> InferenceDeployment:
        return InferenceDeployment.model_validate(
            {
                "apiVersion": "tidepool.dev/v1alpha1",
                "kind": "InferenceDeployment",
                "metadata": {
                    "name": self.name,
                    "namespace": NS,
                    "uid": "uid-1",
                    "generation": self.generation,
                    "annotations": dict(self.annotations),
                },
                "spec": {"model": MODEL, **self.spec},
                "status": self.status.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        )

    def sync(self, advance: float = 0.0) -> inference.SyncResult:
        self.clock.advance(advance)
        result = inference.sync(
            self.infd,
            kube=self.kube,
            metrics=self.metrics,
            cache=self.cache,
            context=inference.Context(
                operator_started_at=self.operator_started_at,
                may_start_migration=self.may_start_migration,
            ),
            now=self.clock.now,
        )
        self.status = result.status
        self.results.append(result)
        return result

    def restart(self) -> None:
        """The operator restarts: memo (the object cache) is gone, status is all that is left."""
        self.cache = inference.ObjectCache()
        self.operator_started_at = self.clock.now

    def change_spec(self, **changes: Any) -> None:
        self.spec = {**self.spec, **changes}
        self.generation += 1

    def replicas(self) -> dict[str, int]:
        """Pool -> spec.replicas of every engine Deployment in the fake cluster."""
        return {
            self.kube.deployment(name)["metadata"]["labels"][labels.POOL]: self.kube.deployment(
                name
            )["spec"]["replicas"]
            for name in self.kube.deployment_names()
        }

    def condition(self, type_: str) -> tuple[str, str, str]:
        cond = next(c for c in self.status.conditions if c.type == type_)
        return cond.status, cond.reason, cond.message

    def events(self, reason: str | None = None) -> list[inference.Event]:
        last = self.results[-1].events
        return [e for e in last if reason is None or e.reason == reason]
