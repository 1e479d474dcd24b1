"""In-memory stand-ins for the reconciler's ports, and a clock the test moves by hand.

``FakeKube`` implements :class:`tidepool.reconcile.ports.KubePort`: it keeps applied objects as a
server-side apply would (the last body wins), records every apply and delete so tests can assert
idempotency, and plays the Deployment controller only when told (``make_ready``), so a test decides
exactly when a model has "loaded". ``FakeMetrics`` implements
:class:`tidepool.reconcile.ports.MetricsPort` with configured :class:`Signal` values.

No ``MagicMock``: a fake that is wrong fails loudly with a ``KeyError`` or a type error, instead of
answering anything.
"""

import copy
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tidepool.api import labels
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, SharedEngine
from tidepool.handlers.deps import Deps, Telemetry
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.children import ObservedDeployment, PodProblem
from tidepool.policy.cold_start import PodTimeline
from tidepool.policy.placement import Load, Traffic
from tidepool.policy.shared_engine import EnginePodAddress
from tidepool.policy.signals import NoData, Sample, Signal

JSON = dict[str, Any]
T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        self.now += timedelta(seconds=seconds, **delta)
        return self.now

    def __call__(self) -> datetime:
        return self.now

    def seconds(self) -> float:
        """The same clock for code that takes seconds (``time.monotonic``'s shape)."""
        return self.now.timestamp()


@dataclass
class FakeKube:
    """The cluster, in memory. Keys are ``(kind, namespace, name)``."""

    pools: list[GPUPool] = field(default_factory=list)
    objects: dict[tuple[str, str, str], JSON] = field(default_factory=dict)
    ready: dict[str, int] = field(default_factory=dict)
    """Deployment name -> ready replicas, as the Deployment controller would report."""
    problems: list[PodProblem] = field(default_factory=list)
    replica_failures: dict[str, str] = field(default_factory=dict)
    """Deployment name -> its ReplicaFailure message, as the Deployment controller reports a
    ReplicaSet that cannot create pods."""
    applies: list[JSON] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    engines: list[SharedEngine] = field(default_factory=list)
    tenants: list[InferenceDeployment] = field(default_factory=list)
    """What ``inference_deployments`` lists (the test keeps it current)."""
    service_deletes: list[str] = field(default_factory=list)
    timelines: list[PodTimeline] = field(default_factory=list)
    """The engine pods' cold-start marks (what ``pod_timelines`` reads)."""
    responses: list[datetime] = field(default_factory=list)
    """The gateways' first-response reports (what ``first_responses`` reads)."""
    timeline_reads: int = 0

    # ---------------------------------------------------------------- KubePort

    def list_pools(self) -> list[GPUPool]:
        return sorted(self.pools, key=lambda p: p.name)

    def _children(self, kind: str, namespace: str, infd_name: str) -> list[tuple[str, JSON]]:
        """(name, object) of ``kind`` with the tenant's pod labels that the tenant controls,
        as the adapter's label-selected, owner-filtered list."""
        value = labels.selector_labels(infd_name)[labels.INFERENCE_DEPLOYMENT]
        return [
            (name, obj)
            for (k, ns, name), obj in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and obj["metadata"].get("labels", {}).get(labels.INFERENCE_DEPLOYMENT) == value
            and controlled_by(obj, "InferenceDeployment", infd_name)
        ]

    def engine_deployments(self, namespace: str, infd_name: str) -> list[ObservedDeployment]:
        out = []
        for name, obj in self._children("Deployment", namespace, infd_name):
            meta_labels = obj["metadata"].get("labels", {})
            replicas = int(obj["spec"].get("replicas", 1))
            ready = min(self.ready.get(name, 0), replicas)
            out.append(
                ObservedDeployment(
                    name=name,
                    pool=meta_labels.get(labels.POOL, ""),
                    replicas=replicas,
                    ready_replicas=ready,
                    updated_replicas=ready,
                    generation_observed=True,
                    replica_failure=self.replica_failures.get(name),
                )
            )
        return sorted(out, key=lambda d: d.name)

    def engine_services(self, namespace: str, infd_name: str) -> list[str]:
        return [name for name, _ in self._children("Service", namespace, infd_name)]

    def pod_problems(self, namespace: str, infd_name: str) -> list[PodProblem]:
        return list(self.problems)

    def pod_timelines(self, namespace: str, infd_name: str, since: datetime) -> list[PodTimeline]:
        self.timeline_reads += 1
        return [t for t in self.timelines if t.created >= since.replace(microsecond=0)]

    def first_responses(self, namespace: str, infd_name: str) -> list[datetime]:
        return list(self.responses)

    def apply(self, obj: JSON) -> None:
        for key in ("apiVersion", "kind"):
            assert key in obj, f"applied object lacks {key}"
        assert obj["metadata"].get("name"), "applied object lacks metadata.name"
        body = copy.deepcopy(obj)
        self.applies.append(body)
        meta = body["metadata"]
        self.objects[(body["kind"], meta.get("namespace", ""), meta["name"])] = body

    def delete_deployments(self, namespace: str, names: list[str]) -> None:
        for name in names:
            self.deletes.append(name)
            self.objects.pop(("Deployment", namespace, name), None)
            self.ready.pop(name, None)

    def delete_services(self, namespace: str, names: list[str]) -> None:
        for name in names:
            self.service_deletes.append(name)
            self.objects.pop(("Service", namespace, name), None)

    def shared_engines(self) -> list[SharedEngine]:
        return sorted(self.engines, key=lambda e: e.name)

    def inference_deployments(self) -> list[InferenceDeployment]:
        return list(self.tenants)

    # ---------------------------------------------------------------- test controls

    def deployment(self, name: str, namespace: str = "default") -> JSON:
        return self.objects[("Deployment", namespace, name)]

    def deployment_names(self, namespace: str = "default") -> list[str]:
        return sorted(n for (k, ns, n) in self.objects if k == "Deployment" and ns == namespace)

    def services(self, namespace: str = "default") -> list[str]:
        return sorted(n for (k, ns, n) in self.objects if k == "Service" and ns == namespace)

    def make_ready(self, name: str | None = None, count: int | None = None) -> None:
        """Play the Deployment controller: ``count`` (default: all desired) replicas are Ready.

        Without ``name``, every Deployment becomes fully ready.
        """
        targets = [name] if name else self.deployment_names()
        for target in targets:
            desired = int(self.deployment(target)["spec"]["replicas"])
            self.ready[target] = desired if count is None else count

    def rename(self, kind: str, name: str, to: str, namespace: str = "default") -> None:
        """Give a child the name an older operator gave it (as if that operator had made it)."""
        obj = self.objects.pop((kind, namespace, name))
        obj["metadata"]["name"] = to
        self.objects[(kind, namespace, to)] = obj
        if name in self.ready:
            self.ready[to] = self.ready.pop(name)

    def clear_records(self) -> None:
        self.applies.clear()
        self.deletes.clear()
        self.service_deletes.clear()


@dataclass
class FakeMetrics:
    """Prometheus, as configured signals. ``inflight`` is per pool, with a default."""

    queue: Signal = field(default_factory=lambda: Sample(0.0, T0))
    inflight: dict[str, Signal] = field(default_factory=dict)
    default_inflight: Signal = field(default_factory=lambda: Sample(0.0, T0))
    window: Traffic | NoData = field(default_factory=lambda: NoData("not configured"))
    throughput: EngineThroughput = field(
        default_factory=lambda: EngineThroughput(
            NoData("not configured"), NoData("not configured"), NoData("not configured")
        )
    )
    p99_time_to_first_byte_s: float | None = None

    def demand(
        self, *, namespace: str, name: str, served_model: str, ready_replicas: int, now: datetime
    ) -> Signal:
        return self.queue

    def pool_inflight(self, *, namespace: str, name: str, pool: str, now: datetime) -> Signal:
        return self.inflight.get(pool, self.default_inflight)

    def gateway_inflight(
        self, *, namespace: str, served_model: str, pool: str, now: datetime
    ) -> Signal:
        return self.inflight.get(f"gateway/{pool}", self.default_inflight)

    def traffic(
        self,
        *,
        namespace: str,
        name: str,
        served_model: str,
        window_seconds: int,
        idle_seconds: int,
        now: datetime,
    ) -> Traffic | NoData:
        return self.window

    def engine_throughput(
        self,
        *,
        namespace: str,
        name: str,
        max_num_seqs: int,
        window_seconds: int,
        now: datetime,
        pool: str | None = None,
    ) -> EngineThroughput:
        return self.throughput

    def time_to_first_byte_p99(
        self, *, namespace: str, served_model: str, window_seconds: int
    ) -> float | None:
        return self.p99_time_to_first_byte_s


def steady_traffic(load: Load) -> Traffic:
    """What the gateway's counters show for a tenant sending ``load`` every minute of its
    window: mean, busiest and last minute alike."""
    return Traffic(
        mean=load,
        peak=load,
        span=timedelta(minutes=10),
        active_fraction=1.0,
        wakes=0.0,
        recent=load,
    )


def controlled_by(obj: JSON, kind: str, name: str) -> bool:
    """Whether ``obj``'s controller owner reference is the Tidepool ``kind`` named ``name``."""
    return any(
        ref.get("controller") and ref.get("kind") == kind and ref.get("name") == name
        for ref in obj["metadata"].get("ownerReferences", [])
    )


# ------------------------------------------------------------------------ SharedEngine ports


@dataclass
class FakeSharedCluster:
    """The cluster for :func:`tidepool.reconcile.shared_engine.sync_shared_engine`.

    Implements :class:`tidepool.reconcile.shared_engine.SharedEngineKubePort`. The test plays the
    Deployment controller by setting ``pods`` (the fleet's pods, with their readiness): a
    Deployment's ready replicas are its entry in ``ready`` if it has one, else the ready pods.
    """

    pools: list[GPUPool] = field(default_factory=list)
    tenants: list[InferenceDeployment] = field(default_factory=list)
    pods: list[EnginePodAddress] = field(default_factory=list)
    engines: list[SharedEngine] = field(default_factory=list)
    """Every SharedEngine there is besides the one being reconciled."""
    objects: dict[tuple[str, str, str], JSON] = field(default_factory=dict)
    engine_status: dict[str, JSON] = field(default_factory=dict)
    tenant_status: dict[tuple[str, str], JSON] = field(default_factory=dict)
    applies: list[JSON] = field(default_factory=list)
    ready: dict[str, int] = field(default_factory=dict)
    deletes: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name) of every delete, in order."""

    def list_pools(self) -> list[GPUPool]:
        return sorted(self.pools, key=lambda p: p.name)

    def inference_deployments(self) -> list[InferenceDeployment]:
        return list(self.tenants)

    def shared_engines(self) -> list[SharedEngine]:
        return sorted(self.engines, key=lambda e: e.name)

    def _fleet(self, kind: str, namespace: str, engine: str) -> list[tuple[str, JSON]]:
        return [
            (name, obj)
            for (k, ns, name), obj in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and labels.SHARED_ENGINE in obj["metadata"].get("labels", {})
            and controlled_by(obj, "SharedEngine", engine)
        ]

    def shared_engine_deployments(self, namespace: str, engine: str) -> list[ObservedDeployment]:
        pods_ready = sum(1 for p in self.pods if p.ready)
        return [
            ObservedDeployment(
                name=name,
                pool=obj["metadata"]["labels"].get(labels.POOL, ""),
                replicas=int(obj["spec"]["replicas"]),
                ready_replicas=self.ready.get(name, pods_ready),
                updated_replicas=int(obj["spec"]["replicas"]),
                generation_observed=True,
            )
            for name, obj in self._fleet("Deployment", namespace, engine)
        ]

    def shared_engine_services(self, namespace: str, engine: str) -> list[str]:
        return [name for name, _ in self._fleet("Service", namespace, engine)]

    def delete_deployments(self, namespace: str, names: list[str]) -> None:
        for name in names:
            self.deletes.append(("Deployment", name))
            self.objects.pop(("Deployment", namespace, name), None)

    def delete_services(self, namespace: str, names: list[str]) -> None:
        for name in names:
            self.deletes.append(("Service", name))
            self.objects.pop(("Service", namespace, name), None)

    def shared_engine_pods(
        self, namespace: str, engine_label: str, port: int
    ) -> list[EnginePodAddress]:
        return list(self.pods)

    def apply(self, obj: JSON) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = copy.deepcopy(obj)
        self.applies.append(copy.deepcopy(obj))

    def patch_shared_engine_status(self, name: str, status: JSON) -> None:
        self.engine_status[name] = copy.deepcopy(status)

    def patch_tenant_status(self, namespace: str, name: str, status: JSON) -> None:
        before = self.tenant_status.get((namespace, name), {})
        self.tenant_status[(namespace, name)] = {**before, **copy.deepcopy(status)}

    def replicas(self, namespace: str, name: str) -> int:
        return int(self.objects[("Deployment", namespace, name)]["spec"]["replicas"])


@dataclass
class FakeLora:
    """Engine replicas' adapters, in memory. Implements ``reconcile.shared_engine.LoraClient``.

    ``refuse`` maps an adapter name to the message the engine answers a load of it with.
    """

    adapters: dict[str, set[str]] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    queues: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def load(self, endpoint: str, name: str, path: str) -> str | None:
        self.calls.append(("load", endpoint, name))
        if name in self.refuse:
            return self.refuse[name]
        held = self.adapters.setdefault(endpoint, set())
        if name in held:
            return f"The lora adapter '{name}' has already been loaded."
        held.add(name)
        return None

    def unload(self, endpoint: str, name: str) -> str | None:
        self.calls.append(("unload", endpoint, name))
        held = self.adapters.setdefault(endpoint, set())
        if name not in held:
            return f"The lora adapter '{name}' cannot be found."
        held.discard(name)
        return None

    def loaded(self, endpoint: str) -> frozenset[str] | None:
        return frozenset(self.adapters.setdefault(endpoint, set()))

    def queue(self, endpoint: str) -> float | None:
        return self.queues.get(endpoint, 0.0)


def make_deps(executor: Executor, tick: float) -> Deps:
    """The operator's dependencies for handler tests whose reconciles are plain functions: no
    cluster, no Prometheus, only the executor, the tick and real telemetry."""
    return Deps(
        kube=None,  # type: ignore[arg-type]
        metrics=None,  # type: ignore[arg-type]
        started_at=T0,
        tick_seconds=tick,
        max_concurrent_migrations=1,
        telemetry=Telemetry(),
        executor=executor,
    )
