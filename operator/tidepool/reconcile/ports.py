"""What reconcile needs from the outside world, as Protocols (fakes in tests, adapters in prod)."""

from datetime import datetime
from typing import Any, Protocol

from tidepool.adapters.kube import ObservedDeployment, PodProblem
from tidepool.adapters.prometheus import TrafficWindow
from tidepool.api.v1alpha1 import GPUPool
from tidepool.policy.signals import Signal


class KubePort(Protocol):
    def list_pools(self) -> list[GPUPool]: ...
    def engine_deployments(self, namespace: str, infd_name: str) -> list[ObservedDeployment]: ...
    def pod_problems(self, namespace: str, infd_name: str) -> list[PodProblem]: ...
    def apply(self, obj: dict[str, Any]) -> None: ...
    def delete_deployments(self, namespace: str, names: list[str]) -> None: ...


class MetricsPort(Protocol):
    def demand(
        self, *, namespace: str, name: str, served_model: str, ready_replicas: int, now: datetime
    ) -> Signal: ...
    def pool_inflight(self, *, namespace: str, name: str, pool: str, now: datetime) -> Signal: ...
    def traffic(
        self, *, namespace: str, name: str, served_model: str, window_seconds: int, now: datetime
    ) -> TrafficWindow: ...
