"""What reconcile needs from the outside world, as Protocols (fakes in tests, adapters in prod).

The value types that cross these ports belong to the functional core
(:mod:`tidepool.policy.plan` and :mod:`tidepool.policy.placement`); the adapters import them.
"""

from datetime import datetime
from typing import Any, Protocol

from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, SharedEngine
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.children import ObservedDeployment, PodProblem
from tidepool.policy.cold_start import PodTimeline
from tidepool.policy.placement import Traffic
from tidepool.policy.signals import NoData, Signal


class KubePort(Protocol):
    def list_pools(self) -> list[GPUPool]: ...
    def engine_deployments(self, namespace: str, infd_name: str) -> list[ObservedDeployment]: ...
    def engine_services(self, namespace: str, infd_name: str) -> list[str]: ...
    def pod_problems(self, namespace: str, infd_name: str) -> list[PodProblem]: ...
    def pod_timelines(
        self, namespace: str, infd_name: str, since: datetime
    ) -> list[PodTimeline]: ...
    def first_responses(self, namespace: str, infd_name: str) -> list[datetime]: ...
    def apply(self, obj: dict[str, Any]) -> None: ...
    def delete_deployments(self, namespace: str, names: list[str]) -> None: ...
    def delete_services(self, namespace: str, names: list[str]) -> None: ...
    def shared_engines(self) -> list[SharedEngine]: ...
    def inference_deployments(self) -> list[InferenceDeployment]: ...


class MetricsPort(Protocol):
    def demand(
        self, *, namespace: str, name: str, served_model: str, ready_replicas: int, now: datetime
    ) -> Signal: ...
    def pool_inflight(self, *, namespace: str, name: str, pool: str, now: datetime) -> Signal: ...
    def gateway_inflight(
        self, *, namespace: str, served_model: str, pool: str, now: datetime
    ) -> Signal: ...
    def traffic(
        self,
        *,
        namespace: str,
        name: str,
        served_model: str,
        window_seconds: int,
        idle_seconds: int,
        now: datetime,
    ) -> Traffic | NoData: ...
    def time_to_first_byte_p99(
        self, *, namespace: str, served_model: str, window_seconds: int
    ) -> float | None: ...
    def engine_throughput(
        self,
        *,
        namespace: str,
        name: str,
        max_num_seqs: int,
        window_seconds: int,
        now: datetime,
        pool: str | None = None,
    ) -> EngineThroughput: ...
