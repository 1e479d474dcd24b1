"""Reconcile one SharedEngine: observe, plan, actuate, as :mod:`tidepool.reconcile.inference`.

:func:`sync_shared_engine` is the only entry point, called by the Kopf shell on create, update,
a timer, and when a tenant with an adapter changes.

1. **observe**: the engine's GPUPool, its Deployment, its pods (address and readiness), and from
   each ready pod the adapters it serves and its queue (vLLM's ``GET /v1/models`` and
   ``/metrics``); every InferenceDeployment, and for the engine's tenants what the gateway holds
   and their offered load (the read each tenant's own plan makes);
2. **plan**: :func:`tidepool.policy.shared_engine.plan_shared_engine`, pure;
3. **actuate**: apply the engine Deployment and Service, then load and unload adapters through
   vLLM's runtime endpoints (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``); a failed
   load is remembered for its tenant in :class:`SharedEngineCache`, and the plan runs once more on
   what the loads left, so the status written describes the fleet after this sync, not before.

A fleet Deployment or Service by an older operator's name (:mod:`tidepool.api.names` changed) is
handed over as a tenant's is (:func:`tidepool.policy.children.retired`): the plan sizes the fleet
from the Deployment that serves it, and the older one goes once the current one has as many
ready replicas as the fleet should run.

Make-before-break for adapters: the gateway sends a tenant only to the pods the engine's record
(``status.adapters[].replicas``) names. So an adapter is unloaded from a pod only once a record
written earlier no longer names that pod for it; until then the unload waits a sync (about a
second), during which the gateway has read the record that stopped sending it there.

A tenant's ``status.lastWakeHandled`` has one writer, the tenant's own daemon, and this
reconciler never writes it: the fleet knows a wake is new by its own ``status.lastActiveTime``
(:func:`tidepool.policy.shared_engine.requested_wake`). Two writers of one field, each from its
own read, could step it back, and an old wake would look new again.

The ports here are this reconciler's own (:mod:`tidepool.reconcile.ports` is the
InferenceDeployment's); the value types crossing them, such as :class:`EnginePodAddress`, belong
to the functional core. The Kubernetes side is ``adapters.kube.Kube``, the engine
side ``adapters.lora.HttpLoraClient``.
"""

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from tidepool.api import names
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, LoadedAdapter, SharedEngine
from tidepool.policy import autoscale, children
from tidepool.policy import shared_engine as planning
from tidepool.policy.children import ObservedDeployment
from tidepool.policy.plan import Event, History
from tidepool.policy.shared_engine import EnginePodAddress
from tidepool.policy.signals import NoData, Sample, Signal
from tidepool.reconcile import inference
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
    def shared_engines(self) -> list[SharedEngine]: ...
    def shared_engine_deployments(
        self, namespace: str, engine: str
    ) -> list[ObservedDeployment]: ...
    def shared_engine_services(self, namespace: str, engine: str) -> list[str]: ...
    def delete_deployments(self, namespace: str, names: list[str]) -> None: ...
    def delete_services(self, namespace: str, names: list[str]) -> None: ...
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
    record: frozenset[tuple[str, str]] = frozenset()
    """(pod, adapter) pairs the last engine status this process wrote names: with the status
    read, what the gateway may still be routing on."""
    services_swept: bool = False
    """Whether this process has seen the fleet's Service by its current name and none by an
    older one left (only an older operator makes those: one sweep per process is enough)."""


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
    current, stale = fleet_deployments(engine, namespace=namespace, kube=kube)
    observed = observe(
        engine,
        tenants,
        deployment=children.serving_view(current, stale),
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
    final, waiting = result, False
    if result.pool is not None:
        final, waiting = _carry_out(
            engine,
            result,
            result.pool,
            observed=observed,
            every=every,
            history=history,
            namespace=namespace,
            kube=kube,
            lora=lora,
            cache=cache,
            now=now,
        )
    status = final.status.model_dump(mode="json", by_alias=True)
    kube.patch_shared_engine_status(engine.name, status)
    cache.record = recorded(final.status.adapters)
    _patch_tenants(final, every, kube)
    if result.pool is not None:
        # Last: the older Deployment's replicas served this sync's adapters and record.
        retire_renamed(current, stale, result.replicas, namespace=namespace, kube=kube)
        if not cache.services_swept:
            cache.services_swept = retire_renamed_service(engine, namespace=namespace, kube=kube)
    return SharedSyncResult(
        status=status,
        events=result.events,
        requeue_after=_requeue_after(final, observed, waiting),
        tenant_updates=final.tenants,
    )


def _carry_out(
    engine: SharedEngine,
    result: planning.SharedEnginePlan,
    pool: GPUPool,
    *,
    observed: planning.SharedObserved,
    every: list[InferenceDeployment],
    history: History,
    namespace: str,
    kube: SharedEngineKubePort,
    lora: LoraClient,
    cache: SharedEngineCache,
    now: datetime,
) -> tuple[planning.SharedEnginePlan, bool]:
    """Apply the plan's Deployment and Service, then load and unload adapters, and plan again
    on what the engines now hold (the status written must name what they serve).

    An unload of a (pod, adapter) pair the last written record (or this process's) names is
    held back: the gateway may still route on it until it reads the new record. Returns the
    plan to write and whether an unload was held back."""
    kube.apply(render.shared_engine_deployment(engine, pool, result.replicas, namespace=namespace))
    kube.apply(render.shared_engine_service(engine, namespace=namespace))
    routed = cache.record | recorded(engine.status.adapters)
    unloads = tuple(op for op in result.unloads if (op.pod, op.adapter) not in routed)
    waiting = len(unloads) < len(result.unloads)
    if not (result.loads or unloads):
        return result, waiting
    now_result = dataclasses.replace(result, unloads=unloads)
    after = actuate_adapters(now_result, observed, lora=lora, cache=cache)
    return planning.plan_shared_engine(engine, every, after, history, now), waiting


def _patch_tenants(
    final: planning.SharedEnginePlan, every: list[InferenceDeployment], kube: SharedEngineKubePort
) -> None:
    """Write each tenant's status the plan changed (:func:`tenant_status`)."""
    was = {planning.tenant_key(t): t for t in every}
    patches = [(u, p) for u in final.tenants if (p := tenant_status(u, was.get(u.key)))]
    # Side by side: a wake changes every tenant's AdapterLoaded at once, and twenty patches
    # one after another kept this daemon from its next look at the fleet for seconds.
    with ThreadPoolExecutor(max_workers=READ_THREADS) as writes:
        done = [
            writes.submit(kube.patch_tenant_status, u.namespace, u.name, patch)
            for u, patch in patches
        ]
        for f in done:
            f.result()


def _requeue_after(
    final: planning.SharedEnginePlan, observed: planning.SharedObserved, waiting: bool
) -> timedelta:
    """The plan's requeue, sooner while an unload waits for the gateway to read the record or a
    replica is starting."""
    requeue = final.requeue_after
    if waiting:
        requeue = min(requeue, UNLOAD_AFTER_RECORD)
    if sum(p.ready for p in observed.pods) < final.replicas:
        # Nothing pokes this daemon when a fleet pod turns Ready; a replica starting is looked
        # at again soon, so its adapters load (and its tenants' held requests go) right away.
        requeue = min(requeue, REPLICA_STARTING)
    return requeue


#: How soon an unload held back for the gateway to read the new record is retried.
UNLOAD_AFTER_RECORD: Final = timedelta(seconds=1)
#: How soon a fleet with a replica not yet Ready is looked at again.
REPLICA_STARTING: Final = timedelta(seconds=0.5)
#: Reads (replicas' adapters and queues, tenants' demand), replicas' adapter loads and tenants'
#: status patches made at once in one sync.
READ_THREADS: Final = 8


def recorded(adapters: list[LoadedAdapter]) -> frozenset[tuple[str, str]]:
    """The (pod, adapter) pairs an engine status names: where the gateway routes each adapter."""
    return frozenset((pod, a.name) for a in adapters for pod in a.replicas)


def fleet_deployments(
    engine: SharedEngine, *, namespace: str, kube: SharedEngineKubePort
) -> tuple[ObservedDeployment | None, tuple[ObservedDeployment, ...]]:
    """The fleet's Deployment by its current name (None before it exists), and any by an older
    name (:func:`tidepool.policy.children.split_renamed`)."""
    current, stale = children.split_renamed(
        kube.shared_engine_deployments(namespace, engine.name),
        lambda _pool: names.shared_engine(engine.name),
    )
    return next(iter(current.values()), None), stale


def retire_renamed(
    current: ObservedDeployment | None,
    stale: tuple[ObservedDeployment, ...],
    replicas: int,
    *,
    namespace: str,
    kube: SharedEngineKubePort,
) -> None:
    """Delete the fleet's Deployments of an older name once the current one serves the
    ``replicas`` the plan wants (:func:`tidepool.policy.children.may_retire`)."""
    if stale and children.may_retire(current, replicas):
        kube.delete_deployments(namespace, [d.name for d in stale])


def retire_renamed_service(
    engine: SharedEngine, *, namespace: str, kube: SharedEngineKubePort
) -> bool:
    """Delete the fleet's Services of an older name once the current one exists; whether it
    did (so this process need not look again)."""
    listed = kube.shared_engine_services(namespace, engine.name)
    current = names.shared_engine(engine.name)
    older = children.stale_services(listed, current)
    if older:
        kube.delete_services(namespace, list(older))
    return current in listed


def observe(
    engine: SharedEngine,
    tenants: list[InferenceDeployment],
    *,
    deployment: ObservedDeployment | None,
    namespace: str,
    kube: SharedEngineKubePort,
    lora: LoraClient,
    metrics: MetricsPort,
    cache: SharedEngineCache,
    operator_started_at: datetime,
    now: datetime,
) -> planning.SharedObserved:
    """Every read the plan needs, made before deciding anything. ``deployment``: the one that
    serves the fleet (:func:`tidepool.policy.children.serving_view`), read by the caller."""
    pool = next((p for p in kube.list_pools() if p.name == engine.spec.pool), None)
    addresses = kube.shared_engine_pods(
        namespace, names.shared_engine_label(engine.name), engine.spec.engine.port
    )
    addresses = sorted(addresses, key=lambda p: p.name)
    asked = [p for p in addresses if p.ready and p.endpoint]
    # Every replica's and every tenant's reads at once: one by one, 20 tenants' queries and
    # 5 replicas' answers made a sync take seconds, and a wake waited for it.
    with ThreadPoolExecutor(max_workers=READ_THREADS) as reads:
        queues = {p.name: reads.submit(lora.queue, p.endpoint) for p in asked}
        adapters = {p.name: reads.submit(lora.loaded, p.endpoint) for p in asked}
        # The tenant runs no engine pods of its own, so only what the gateway holds for its
        # model is its own; what it runs on the fleet is in the replicas' queues above.
        demands = {
            planning.tenant_key(infd): reads.submit(
                metrics.demand,
                namespace=infd.namespace,
                name=infd.name,
                served_model=infd.served_model,
                ready_replicas=0,
                now=now,
            )
            for infd in tenants
        }
        # Each tenant's offered load, as its own plan reads it: the fleet's autoscaler sizes on
        # the sum of what the tenants send, not only on what its replicas hold right now.
        offered = {
            planning.tenant_key(infd): reads.submit(
                inference.read_traffic, infd, metrics=metrics, now=now
            )
            for infd in tenants
        }
        held: dict[str, Signal] = {key: f.result() for key, f in demands.items()}
        traffic = {key: f.result() for key, f in offered.items()}
        pods = []
        for pod in addresses:
            queue = queues[pod.name].result() if pod.name in queues else None
            pods.append(
                planning.EnginePod(
                    name=pod.name,
                    endpoint=pod.endpoint,
                    ready=pod.name in queues,
                    loaded=adapters[pod.name].result() if pod.name in adapters else None,
                    queue=Sample(queue, now)
                    if queue is not None
                    else NoData(f"replica {pod.name} did not report its queue"),
                )
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
        traffic=traffic,
        base_model_served_by=_serving(engine, kube),
    )


def _serving(engine: SharedEngine, kube: SharedEngineKubePort) -> str:
    """The name of the SharedEngine that serves ``engine``'s base model (itself, unless an
    older one declares the same model: :func:`planning.engine_of`)."""
    serving = planning.engine_of(engine.spec.model.name, [*kube.shared_engines(), engine])
    return serving.name if serving is not None else engine.name


def actuate_adapters(
    result: planning.SharedEnginePlan,
    observed: planning.SharedObserved,
    *,
    lora: LoraClient,
    cache: SharedEngineCache,
) -> planning.SharedObserved:
    """Load, then unload (make before break); return what the fleet holds afterwards.

    vLLM takes a load beyond ``--max-cpu-loras`` (it evicts the least recently used adapter
    from CPU memory, which stays servable), so a load never waits for an unload.
    """
    loaded = {p.name: set(p.loaded or ()) for p in observed.pods}
    failed: dict[str, str] = {}
    succeeded: set[str] = set()
    ops = [*result.loads, *result.unloads]
    for op, error in zip(ops, per_replica(ops, lora), strict=True):
        if op.path is None:
            if error is None:
                loaded[op.pod].discard(op.adapter)
        elif error is None:
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


def per_replica(ops: list[planning.AdapterOp], lora: LoraClient) -> list[str | None]:
    """Carry out ``ops`` (a load where ``path`` is set, else an unload): each replica's in
    their order, the replicas side by side (a woken fleet loads every replica's adapters at
    once). The engines' answers (None: done), in the order of ``ops``."""
    by_pod: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        by_pod.setdefault(op.pod, []).append(i)
    answers: list[str | None] = [None] * len(ops)

    def run(indexes: list[int]) -> None:
        for i in indexes:
            op = ops[i]
            answers[i] = (
                lora.unload(op.endpoint, op.adapter)
                if op.path is None
                else lora.load(op.endpoint, op.adapter, op.path)
            )

    if by_pod:
        with ThreadPoolExecutor(max_workers=min(len(by_pod), READ_THREADS)) as replicas:
            list(replicas.map(run, by_pod.values()))
    return answers


def tenant_status(update: planning.TenantUpdate, was: InferenceDeployment | None = None) -> JSON:
    """The merge patch of a tenant's status: the fields the SharedEngine owns (``engine`` and
    ``AdapterLoaded``, written as the whole conditions list a merge patch replaces), and of
    those only what differs from ``was`` (the tenant as read); empty when nothing does.
    ``lastWakeHandled`` is the tenant's own daemon's (see the module docstring)."""
    patch: JSON = {}
    conditions = [c.model_dump(mode="json", by_alias=True) for c in update.conditions]
    old = was.status if was is not None else None
    if old is None or update.engine != (old.engine or ""):
        patch["engine"] = update.engine
    before = (
        [] if old is None else [c.model_dump(mode="json", by_alias=True) for c in old.conditions]
    )
    if old is None or conditions != before:
        patch["conditions"] = conditions
    return patch
