"""Reconcile one SharedEngine: observe, plan, actuate, as :mod:`tidepool.reconcile.inference`.

:func:`sync_shared_engine` is the only entry point, called by the Kopf shell on create, update,
a timer, and when a tenant with an adapter changes.

1. **observe**: the engine's GPUPool, its Deployment, its pods (address and readiness), and from
   each ready pod the adapters it serves and its queue (vLLM's ``GET /v1/models`` and
   ``/metrics``); every InferenceDeployment, and for the engine's tenants what the gateway holds;
2. **plan**: :func:`tidepool.policy.shared_engine.plan_shared_engine`, pure;
3. **actuate**: apply the engine Deployment and Service, then unload and load adapters through
   vLLM's runtime endpoints (``/v1/unload_lora_adapter``, ``/v1/load_lora_adapter``); a failed
   load is remembered for its tenant in :class:`SharedEngineCache`, and the plan runs once more on
   what the loads left, so the status written describes the fleet after this sync, not before.

The ports here are this reconciler's own (:mod:`tidepool.reconcile.ports` is the
InferenceDeployment's); the value types crossing them, such as :class:`EnginePodAddress`, belong
to the functional core. The Kubernetes side is ``adapters.kube.Kube``, the engine
side ``adapters.lora.HttpLoraClient``.
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from tidepool.api import names
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, SharedEngine
from tidepool.policy import autoscale
from tidepool.policy import shared_engine as planning
from tidepool.policy.plan import Event, History, ObservedDeployment
from tidepool.policy.shared_engine import EnginePodAddress
from tidepool.policy.signals import NoData, Sample, Signal
from tidepool.reconcile.ports import MetricsPort
from tidepool.render import shared_engine as render

JSON = dict[str, Any]

__all__ = [
    "EnginePodAddress",
    "LoraClient",
    "SharedEngineCache",
    "SharedEngineKubePort",
    "SharedSyncResult",
    "sync_shared_engine",
]


class SharedEngineKubePort(Protocol):
    """The cluster, as a SharedEngine's reconcile needs it."""

    def list_pools(self) -> list[GPUPool]: ...
    def inference_deployments(self) -> list[InferenceDeployment]: ...
    def shared_engine_deployment(self, namespace: str, name: str) -> ObservedDeployment | None: ...
    def shared_engine_pods(
        self, namespace: str, engine_label: str, port: int
    ) -> list[EnginePodAddress]: ...
    def apply(self, obj: JSON) -> None: ...
    def patch_shared_engine_status(self, name: str, status: JSON) -> None: ...
    def patch_tenant_status(self, namespace: str, name: str, status: JSON) -> None: ...


class LoraClient(Protocol):
    """One engine replica's adapters through vLLM's OpenAI-compatible server.

    ``load`` and ``unload`` return None on success and the engine's message otherwise; they never
    raise, so one bad replica cannot stop the others from being reconciled.
    """

    def load(self, endpoint: str, name: str, path: str) -> str | None: ...
    def unload(self, endpoint: str, name: str) -> str | None: ...
    def loaded(self, endpoint: str) -> frozenset[str] | None: ...
    def queue(self, endpoint: str) -> float | None: ...


@dataclass(slots=True)
class SharedEngineCache:
    """Rebuildable per-engine memory (Kopf memo). Losing it changes no decision's safety."""

    history: tuple[autoscale.Recommendation, ...] = ()
    load_errors: dict[str, str] = field(default_factory=dict)
    """Tenant key -> the engine's message from the last failed load (cleared by a success)."""


@dataclass(frozen=True, slots=True)
class SharedSyncResult:
    status: JSON
    events: tuple[Event, ...]
    requeue_after: timedelta
    tenant_updates: tuple[planning.TenantUpdate, ...]


def sync_shared_engine(
    engine: SharedEngine,
    *,
    namespace: str,
    kube: SharedEngineKubePort,
    lora: LoraClient,
    metrics: MetricsPort,
    cache: SharedEngineCache,
    operator_started_at: datetime,
    now: datetime,
) -> SharedSyncResult:
    """Bring ``engine``'s fleet one step closer to its tenants and write both sides' status.

    ``namespace``: where the operator runs shared fleets (a SharedEngine is cluster-scoped).
    """
    every = kube.inference_deployments()
    tenants = [t for t in every if planning.serves(engine, t)]
    observed = observe(
        engine,
        tenants,
        namespace=namespace,
        kube=kube,
        lora=lora,
        metrics=metrics,
        cache=cache,
        operator_started_at=operator_started_at,
        now=now,
    )
    history = History(cache.history)
    result = planning.plan_shared_engine(engine, every, observed, history, now)
    cache.history = result.history.recommendations
    final = result
    if result.pool is not None:
        kube.apply(
            render.shared_engine_deployment(
                engine, result.pool, result.replicas, namespace=namespace
            )
        )
        kube.apply(render.shared_engine_service(engine, namespace=namespace))
        if result.loads or result.unloads:
            after = actuate_adapters(result, observed, lora=lora, cache=cache)
            final = planning.plan_shared_engine(engine, every, after, history, now)
    status = final.status.model_dump(mode="json", by_alias=True)
    kube.patch_shared_engine_status(engine.name, status)
    for update in final.tenants:
        kube.patch_tenant_status(update.namespace, update.name, tenant_status(update))
    return SharedSyncResult(
        status=status,
        events=result.events,
        requeue_after=final.requeue_after,
        tenant_updates=final.tenants,
    )


def observe(
    engine: SharedEngine,
    tenants: list[InferenceDeployment],
    *,
    namespace: str,
    kube: SharedEngineKubePort,
    lora: LoraClient,
    metrics: MetricsPort,
    cache: SharedEngineCache,
    operator_started_at: datetime,
    now: datetime,
) -> planning.SharedObserved:
    """Every read the plan needs, made before deciding anything."""
    pool = next((p for p in kube.list_pools() if p.name == engine.spec.pool), None)
    deployment = kube.shared_engine_deployment(namespace, names.shared_engine(engine.name))
    addresses = kube.shared_engine_pods(
        namespace, names.shared_engine_label(engine.name), engine.spec.engine.port
    )
    pods = []
    for pod in sorted(addresses, key=lambda p: p.name):
        asked = pod.ready and bool(pod.endpoint)
        queue = lora.queue(pod.endpoint) if asked else None
        pods.append(
            planning.EnginePod(
                name=pod.name,
                endpoint=pod.endpoint,
                ready=asked,
                loaded=lora.loaded(pod.endpoint) if asked else None,
                queue=Sample(queue, now)
                if queue is not None
                else NoData(f"replica {pod.name} did not report its queue"),
            )
        )
    held: dict[str, Signal] = {}
    for infd in tenants:
        # The tenant runs no engine pods of its own, so only what the gateway holds for its
        # model is its own; what it runs on the fleet is in the replicas' queues above.
        held[planning.tenant_key(infd)] = metrics.demand(
            namespace=infd.namespace,
            name=infd.name,
            served_model=infd.served_model,
            ready_replicas=0,
            now=now,
        )
    keys = set(held)
    cache.load_errors = {k: v for k, v in cache.load_errors.items() if k in keys}
    return planning.SharedObserved(
        pool=pool,
        deployment=deployment,
        pods=tuple(pods),
        held=held,
        load_errors=dict(cache.load_errors),
        operator_started_at=operator_started_at,
    )


def actuate_adapters(
    result: planning.SharedEnginePlan,
    observed: planning.SharedObserved,
    *,
    lora: LoraClient,
    cache: SharedEngineCache,
) -> planning.SharedObserved:
    """Unload, then load (freeing slots first); return what the fleet holds afterwards."""
    loaded = {p.name: set(p.loaded or ()) for p in observed.pods}
    for op in result.unloads:
        if lora.unload(op.endpoint, op.adapter) is None:
            loaded[op.pod].discard(op.adapter)
    failed: dict[str, str] = {}
    succeeded: set[str] = set()
    for op in result.loads:
        assert op.path is not None  # a load always carries the adapter's source
        error = lora.load(op.endpoint, op.adapter, op.path)
        if error is None:
            loaded[op.pod].add(op.adapter)
            succeeded.add(op.tenant)
        else:
            failed.setdefault(op.tenant, f"replica {op.pod}: {error}")
    for tenant in succeeded - set(failed):
        cache.load_errors.pop(tenant, None)
    cache.load_errors.update(failed)
    pods = tuple(
        dataclasses.replace(p, loaded=frozenset(loaded[p.name]) if p.loaded is not None else None)
        for p in observed.pods
    )
    return dataclasses.replace(observed, pods=pods, load_errors=dict(cache.load_errors))


def tenant_status(update: planning.TenantUpdate) -> JSON:
    """The merge patch of a tenant's status: only the fields the SharedEngine owns."""
    return {
        "engine": update.engine,
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in update.conditions],
        "lastWakeHandled": update.last_wake_handled,
    }
