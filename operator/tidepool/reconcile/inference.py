"""Reconcile one InferenceDeployment: observe, plan, actuate.

``sync`` is the only entry point, called on create/update/resume, on a timer, and at once when
the gateway pushes a wake. It does three things, in order:

1. **observe**: every read, up front: the GPUPools, this tenant's engine Deployments and pod
   problems, the queue, the offered load over the placement window (``auto`` only), and the
   in-flight requests of every pool a migration may be draining;
2. **plan**: :func:`tidepool.policy.plan.plan`, the pure function ``tidepool simulate`` runs too;
3. **actuate**: apply the engine Deployments and the Service the plan asks for (server-side, with
   a cache that skips identical applies) and delete the Deployments (and Services) it drops.

Children named by an older operator's naming rule are handed over make-before-break: observe
splits them off as ``stale``, and the plan sizes each pool from the Deployment that serves it and
drops an older one once the current one serves as many replicas (see
:func:`tidepool.policy.children.retired`).

It is idempotent: with nothing changed in the cluster or the metrics it applies nothing and
returns the same status. Every durable timer lives in ``status`` (see :mod:`tidepool.policy.plan`),
so an operator restart resumes decisions where they were.
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from tidepool.api import names
from tidepool.api.v1alpha1 import (
    DeploymentMode,
    InferenceDeployment,
    InferenceDeploymentStatus,
    SharedEngine,
)
from tidepool.policy import autoscale, children, migration, placement, shared_engine
from tidepool.policy import plan as planning
from tidepool.policy.children import ObservedDeployment
from tidepool.policy.cold_start import PodTimeline
from tidepool.policy.plan import Event
from tidepool.policy.pools import InvalidPlacementError
from tidepool.policy.signals import NoData, Signal
from tidepool.reconcile.ports import KubePort, MetricsPort
from tidepool.render import engine

JSON = dict[str, Any]
#: The window vLLM's token counters are read over to refine the engine's capacity: long enough
#: for several scrapes, short enough that "busy" describes the whole of it.
THROUGHPUT_WINDOW_SECONDS: Final = 120

__all__ = ["Context", "Event", "InvalidPlacementError", "ObjectCache", "SyncResult", "sync"]


@dataclass(slots=True)
class ObjectCache:
    """Rebuildable per-object memory (Kopf memo). Losing it changes no decision's safety."""

    history: tuple[autoscale.Recommendation, ...] = ()
    applied: dict[str, str] = field(default_factory=dict)
    """Child object name -> hash of what was last applied, to skip identical applies."""
    services_swept: bool = False
    """Whether this process has seen the engine Service by its current name and none by an
    older one left: only an older operator makes those, so one sweep per process is enough."""


@dataclass(frozen=True, slots=True)
class SyncResult:
    status: InferenceDeploymentStatus
    events: tuple[Event, ...]
    requeue_after: timedelta


@dataclass(frozen=True, slots=True)
class Context:
    """Operator-wide facts the shell supplies."""

    operator_started_at: datetime
    may_start_migration: bool = True
    """False when the operator-wide migration budget is used up."""


def sync(
    infd: InferenceDeployment,
    *,
    kube: KubePort,
    metrics: MetricsPort,
    cache: ObjectCache,
    context: Context,
    now: datetime,
) -> SyncResult:
    """Bring the cluster one step closer to ``infd`` and return the status to write."""
    observed = observe(
        infd,
        kube=kube,
        metrics=metrics,
        context=context,
        now=now,
        look_at_services=not cache.services_swept,
    )
    result = planning.plan(infd, observed, planning.History(cache.history), now)
    cache.history = result.history.recommendations
    if result.actuate:
        actuate(result, infd, kube=kube, cache=cache, observed=observed)
    if observed.services is not None and names.engine_service(infd.name) in observed.services:
        cache.services_swept = True  # and the plan's delete_services are gone
    return SyncResult(
        status=result.status, events=result.events, requeue_after=result.requeue_after
    )


def observe(
    infd: InferenceDeployment,
    *,
    kube: KubePort,
    metrics: MetricsPort,
    context: Context,
    now: datetime,
    look_at_services: bool = True,
) -> planning.Observed:
    """Every read the plan needs, made before deciding anything."""
    pools = tuple(kube.list_pools())
    deployments, stale = children.split_renamed(
        kube.engine_deployments(infd.namespace, infd.name),
        lambda pool: names.engine_deployment(infd.name, pool),
    )
    serving = children.serving_deployments(deployments, stale)
    problems = tuple(kube.pod_problems(infd.namespace, infd.name))
    timelines, responses = _cold_start_marks(infd, kube)
    ready_total = sum(d.ready_replicas for d in serving.values())
    demand = metrics.demand(
        namespace=infd.namespace,
        name=infd.name,
        served_model=infd.served_model,
        ready_replicas=ready_total,
        now=now,
    )
    fleet, fellows = _shared_engine(infd, kube)
    traffic: placement.Traffic | NoData = NoData("fixed mode: not measured")
    # A LoRA tenant of a SharedEngine is measured whatever its mode: its tokens apportion the
    # fleet's spend among the tenants, and its status shows its share.
    if infd.spec.mode == DeploymentMode.AUTO or fleet is not None:
        traffic = read_traffic(infd, metrics=metrics, now=now)
    # And its latency there: whether the fleet meets its SLO (policy.lora_promotion).
    ttfb = (
        metrics.time_to_first_byte_p99(
            namespace=infd.namespace,
            served_model=infd.served_model,
            window_seconds=placement_window_seconds(infd),
        )
        if fleet is not None
        else None
    )
    throughput = None
    if ready_total:
        throughput = metrics.engine_throughput(
            namespace=infd.namespace,
            name=infd.name,
            max_num_seqs=infd.spec.engine.max_num_seqs,
            window_seconds=THROUGHPUT_WINDOW_SECONDS,
            now=now,
        )
    return planning.Observed(
        pools=pools,
        deployments=deployments,
        pod_problems=problems,
        demand=demand,
        traffic=traffic,
        inflight=_draining_inflight(infd, set(serving), fleet, metrics=metrics, now=now),
        operator_started_at=context.operator_started_at,
        may_start_migration=context.may_start_migration,
        throughput=throughput,
        shared_engine=fleet,
        engine_tenants=fellows,
        p99_time_to_first_byte_s=ttfb,
        stale=stale,
        services=(
            tuple(kube.engine_services(infd.namespace, infd.name)) if look_at_services else None
        ),
        pod_timelines=timelines,
        first_responses=responses,
    )


def _draining_inflight(
    infd: InferenceDeployment,
    serving: set[str],
    fleet: SharedEngine | None,
    *,
    metrics: MetricsPort,
    now: datetime,
) -> dict[str, Signal]:
    """Requests in flight on every pool a migration in flight may be draining (none without
    one): the pools serving now and the migration's source and target."""
    inflight: dict[str, Signal] = {}
    mig = infd.status.migration
    if mig is None:
        return inflight
    draining = serving | set(mig.from_pool.split(",")) | set(mig.to_pool.split(","))
    for pool in sorted(p for p in draining if p):
        if fleet is not None and pool == migration.engine_pool(fleet.name):
            # The fleet's pods serve every tenant: only the gateway knows which are this
            # one's (its requests on the fleet's GPUPool).
            inflight[pool] = metrics.gateway_inflight(
                namespace=infd.namespace,
                served_model=infd.served_model,
                pool=fleet.spec.pool,
                now=now,
            )
        else:
            inflight[pool] = metrics.pool_inflight(
                namespace=infd.namespace, name=infd.name, pool=pool, now=now
            )
    return inflight


def _cold_start_marks(
    infd: InferenceDeployment, kube: KubePort
) -> tuple[tuple[PodTimeline, ...], tuple[datetime, ...]]:
    """The pods' marks and the gateways' first-response reports, read only while a cold start
    is being measured (:mod:`tidepool.policy.cold_start`): otherwise no read at all."""
    cold = infd.status.cold_start
    if cold is None or cold.completed_at is not None:
        return (), ()
    timelines = kube.pod_timelines(infd.namespace, infd.name, cold.requested_at)
    return tuple(timelines), tuple(kube.first_responses(infd.namespace, infd.name))


def read_traffic(
    infd: InferenceDeployment, *, metrics: MetricsPort, now: datetime
) -> placement.Traffic | NoData:
    """``infd``'s offered load over its placement window, from the gateway's counters: the one
    read its own plan and its SharedEngine's fleet autoscaler both size from."""
    return metrics.traffic(
        namespace=infd.namespace,
        name=infd.name,
        served_model=infd.served_model,
        window_seconds=placement_window_seconds(infd),
        idle_seconds=max(60, int(infd.spec.scaling.scale_to_zero_after.seconds)),
        now=now,
    )


def placement_window_seconds(infd: InferenceDeployment) -> int:
    """The window placement's evidence is read over: ``spec.placement.window``, at least one
    15 s scrape, in whole seconds for PromQL."""
    return max(15, int(infd.spec.placement.window.seconds))


def _shared_engine(
    infd: InferenceDeployment, kube: KubePort
) -> tuple[SharedEngine | None, tuple[InferenceDeployment, ...]]:
    """For a LoRA tenant: the SharedEngine of its base model (the oldest, as every engine's
    reconcile agrees: :func:`shared_engine.engine_of`) and the tenants
    it holds adapters for; else ``(None, ())``, without a read."""
    if infd.spec.model.adapter is None:
        return None, ()
    fleet = shared_engine.engine_of(infd.spec.model.name, kube.shared_engines())
    if fleet is None:
        return None, ()
    members = (t for t in kube.inference_deployments() if shared_engine.serves(fleet, t))
    return fleet, tuple(members)


def actuate(
    result: planning.Plan,
    infd: InferenceDeployment,
    *,
    kube: KubePort,
    cache: ObjectCache,
    observed: planning.Observed,
) -> None:
    """Apply what ``result`` wants to exist, then delete what it drops."""
    for pool_plan in result.pools:
        obj = engine.engine_deployment(
            infd, pool_plan.pool, replicas=pool_plan.replicas, role=pool_plan.role
        )
        _apply_if_changed(kube, cache, obj, observed.deployments.get(pool_plan.pool.name))
    _apply_if_changed(kube, cache, engine.engine_service(infd), None, always_if_unseen=True)
    if result.delete:
        kube.delete_deployments(infd.namespace, list(result.delete))
        for name in result.delete:
            cache.applied.pop(name, None)
    if result.delete_services:
        kube.delete_services(infd.namespace, list(result.delete_services))


def _digest(obj: JSON) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _apply_if_changed(
    kube: KubePort,
    cache: ObjectCache,
    obj: JSON,
    seen: ObservedDeployment | None,
    *,
    always_if_unseen: bool = False,
) -> None:
    name = obj["metadata"]["name"]
    digest = _digest(obj)
    live_matches = seen is None or seen.replicas == obj["spec"].get("replicas", seen.replicas)
    if (
        cache.applied.get(name) == digest
        and live_matches
        and not (always_if_unseen and name not in cache.applied)
    ):
        return
    kube.apply(obj)
    cache.applied[name] = digest
