"""Reconcile one InferenceDeployment: observe, decide, render, apply, and compose its status.

``sync`` is the only entry point, called on create/update/resume, on a timer, and at once when
the gateway pushes a wake. It is idempotent: with nothing changed in the cluster or the metrics it
applies nothing (the per-object apply cache short-cuts identical objects, and server-side apply of
an identical object is a no-op anyway) and returns the same status.

Every durable timer it relies on is read from, and written back to, ``status``
(``lastActiveTime``, ``placementSince``, the hysteresis timers, ``migration``), so an operator
restart resumes decisions where they were. Only the autoscaler's recommendation history lives in
memory; an empty history after a restart makes the autoscaler hold instead of scaling down.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from tidepool.adapters.kube import ObservedDeployment, PodProblem
from tidepool.api import conditions, durations, labels
from tidepool.api.conditions import ConditionType, Reason
from tidepool.api.v1alpha1 import (
    Condition,
    DeploymentMode,
    GPUPool,
    HybridSpec,
    InferenceDeployment,
    InferenceDeploymentStatus,
    LastDecision,
    MigrationPhase,
    PoolStatus,
    Tenancy,
)
from tidepool.policy import autoscale, migration, placement
from tidepool.policy.signals import NoData, Sample, Signal
from tidepool.reconcile.ports import KubePort, MetricsPort
from tidepool.render import engine, names

JSON = dict[str, Any]
DEFAULT_REQUEUE: Final = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to emit on the InferenceDeployment (the handler posts it)."""

    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass(slots=True)
class ObjectCache:
    """Rebuildable per-object memory (Kopf memo). Losing it changes no decision's safety."""

    history: tuple[autoscale.Recommendation, ...] = ()
    applied: dict[str, str] = field(default_factory=dict)
    """Child object name -> hash of what was last applied, to skip identical applies."""


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


class InvalidPlacementError(ValueError):
    """The spec passed the schema but cannot be placed (no pool, wrong tenancy, too few GPUs)."""

    reason: Reason = Reason.INVALID_SPEC


class _PoolNotFoundError(InvalidPlacementError):
    """A preferred GPUPool is missing or has the wrong tenancy."""

    reason = Reason.POOL_NOT_FOUND


# ------------------------------------------------------------------------------------- pools


def _pick_pool(pools: list[GPUPool], tenancy: Tenancy, preferred: str | None) -> GPUPool | None:
    if preferred:
        match = next((p for p in pools if p.name == preferred), None)
        if match is None:
            raise _PoolNotFoundError(
                f"placement.pools.{tenancy}: GPUPool {preferred!r} does not exist"
                f" (have: {', '.join(p.name for p in pools) or 'none'})"
            )
        if match.spec.tenancy != tenancy:
            raise _PoolNotFoundError(
                f"placement.pools.{tenancy}: GPUPool {preferred!r} has tenancy"
                f" {match.spec.tenancy}, not {tenancy}"
            )
        return match
    candidates = [p for p in pools if p.spec.tenancy == tenancy]  # sorted by name
    default = [
        p
        for p in candidates
        if str(p.metadata.get("annotations", {}).get(labels.DEFAULT_POOL, "")).lower() == "true"
    ]
    if default:
        return default[0]
    return candidates[0] if candidates else None


def _check_fits(infd: InferenceDeployment, pool: GPUPool) -> None:
    need = infd.spec.engine.gpus_per_replica
    if need > pool.spec.gpus_per_node:
        raise InvalidPlacementError(
            f"engine.gpusPerReplica: {need} GPUs per replica cannot fit GPUPool {pool.name!r},"
            f" whose nodes have {pool.spec.gpus_per_node}; allowed: 1..{pool.spec.gpus_per_node}"
        )


def _price(pool: GPUPool | None) -> placement.PoolPrice | None:
    if pool is None:
        return None
    return placement.PoolPrice(
        name=pool.name,
        tenancy=pool.spec.tenancy,
        gpu_type=pool.spec.gpu_type,
        price_per_gpu_hour=pool.spec.price_per_gpu_hour,
        price_per_million_tokens=pool.spec.price_per_million_tokens,
    )


# ------------------------------------------------------------------------------------ replicas


def _split(mode: DeploymentMode, infd: InferenceDeployment, total: int) -> dict[str, int]:
    """Replicas per role for ``total``: hybrid keeps its dedicated floor, overflow takes the rest.

    E.g. hybrid, minReplicas 2, maxOverflow 4: total 5 -> primary 2, overflow 3.
    """
    if mode != DeploymentMode.HYBRID:
        return {"primary": total, "overflow": 0}
    floor = max(1, infd.spec.scaling.min_replicas)
    max_overflow = infd.spec.hybrid.max_overflow_replicas if infd.spec.hybrid else 4
    primary = min(total, floor) if total else floor
    return {"primary": primary, "overflow": min(max(0, total - primary), max_overflow)}


def _wake_pending(infd: InferenceDeployment) -> str | None:
    value = infd.metadata.get("annotations", {}).get(labels.WAKE_REQUESTED_AT)
    if value and value != infd.status.last_wake_handled:
        return str(value)
    return None


def _digest(obj: JSON) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------- sync


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
    status = infd.status
    events: list[Event] = []
    gen = infd.generation
    conds = list(status.conditions)

    def cond(type_: ConditionType, ok: bool | None, reason: Reason, message: str) -> None:
        nonlocal conds
        conds, _ = conditions.set_condition(
            conds, type_=type_, status=ok, reason=reason, message=message, generation=gen, now=now
        )

    # -- pools and the spec checks the schema cannot do --------------------------------------
    pools = kube.list_pools()
    prefs = infd.spec.placement.pools
    try:
        shared = _pick_pool(pools, Tenancy.SHARED, prefs.shared)
        dedicated = _pick_pool(pools, Tenancy.DEDICATED, prefs.dedicated)
        requested = infd.spec.mode
        current_mode = status.effective_mode or (
            DeploymentMode.SERVERLESS if requested == DeploymentMode.AUTO else requested
        )
        pools_kw = {
            "shared": shared.name if shared else None,
            "dedicated": dedicated.name if dedicated else None,
        }
        current_layout = migration.layout_for(current_mode, **pools_kw)
        # Every pool this spec may run on must exist and fit: the current layout, the requested
        # mode's (checked here, not when a migration to it starts), any migration target, and for
        # auto every pool it may choose. A pool nothing will use does not block the spec.
        needed = set(current_layout.pools)
        if requested == DeploymentMode.AUTO:
            needed |= {p.name for p in (shared, dedicated) if p is not None}
        else:
            needed |= set(migration.layout_for(requested, **pools_kw).pools)
        if status.migration is not None:
            needed |= set(migration.layout_for(status.migration.to_mode, **pools_kw).pools)
        for candidate in (shared, dedicated):
            if candidate is not None and candidate.name in needed:
                _check_fits(infd, candidate)
    except ValueError as exc:
        # migration.layout_for raises a plain ValueError naming the missing pool tenancy.
        reason = exc.reason if isinstance(exc, InvalidPlacementError) else Reason.POOL_NOT_FOUND
        cond(ConditionType.READY, False, reason, str(exc))
        if status.conditions != conds:
            events.append(Event("Warning", reason, str(exc)))
        return SyncResult(
            status=status.model_copy(update={"conditions": conds, "observed_generation": gen}),
            events=tuple(events),
            requeue_after=timedelta(seconds=30),
        )
    by_name = {p.name: p for p in pools}

    # -- observe ------------------------------------------------------------------------------
    observed = {d.pool: d for d in kube.engine_deployments(infd.namespace, infd.name)}
    problems = kube.pod_problems(infd.namespace, infd.name)
    ready_total = sum(d.ready_replicas for d in observed.values())
    demand = metrics.demand(
        namespace=infd.namespace,
        name=infd.name,
        served_model=infd.served_model,
        ready_replicas=ready_total,
        now=now,
    )

    # -- placement: migrations in progress first, else ask the policy -------------------------
    last_decision = status.last_decision
    mig = status.migration
    effective = current_mode
    roles: tuple[tuple[str, str], ...] = current_layout.roles
    routable: tuple[str, ...] = current_layout.pools
    # None until the first window with known metrics confirms (or changes) the initial placement:
    # a brand-new tenant may move on its first window, without waiting out a dwell.
    placement_since = status.placement_since
    last_migration_time = status.last_migration_time
    above_since, below_since = status.utilization_above_since, status.utilization_below_since
    utilization = status.utilization

    if mig is None:
        decision = _decide_placement(
            infd,
            metrics=metrics,
            current=current_mode,
            shared=shared,
            dedicated=dedicated,
            placement_since=placement_since,
            now=now,
        )
        above_since, below_since = decision.above_since, decision.below_since
        if placement_since is None and decision.reason in ("Holding", "FixedMode"):
            placement_since = now
        utilization = decision.utilization if decision.utilization is not None else utilization
        if decision.move and decision.mode != current_mode:
            if context.may_start_migration:
                target_layout = migration.layout_for(decision.mode, **pools_kw)
                mig = migration.start(
                    from_mode=current_mode,
                    to_mode=decision.mode,
                    source=current_layout,
                    target=target_layout,
                    reason=decision.message,
                    now=now,
                )
                events.append(Event("Normal", decision.reason, decision.message))
                last_decision = LastDecision(
                    time=now,
                    action=decision.reason,
                    reason=decision.reason,
                    message=decision.message,
                )
            else:
                events.append(
                    Event(
                        "Normal",
                        "MigrationDeferred",
                        f"{decision.message}; deferred: migration budget in use",
                    )
                )

    if mig is not None:
        source = migration.layout_for(current_mode, **pools_kw)
        target = migration.layout_for(mig.to_mode, **pools_kw)
        observations = {
            pool: migration.PoolObservation(
                ready_replicas=observed[pool].ready_replicas if pool in observed else 0,
                inflight=metrics.pool_inflight(
                    namespace=infd.namespace, name=infd.name, pool=pool, now=now
                ),
            )
            for pool in set(source.pools) | set(target.pools)
        }
        stepped = migration.step(mig, source=source, target=target, observed=observations, now=now)
        roles, routable = stepped.roles, stepped.routable
        if stepped.status is None or stepped.status.phase != mig.phase:
            kind = (
                "MigrationComplete"
                if stepped.completed
                else (
                    "MigrationRolledBack"
                    if stepped.rolled_back
                    else str(stepped.status.phase if stepped.status else "")
                )
            )
            events.append(
                Event("Warning" if stepped.rolled_back else "Normal", kind, stepped.message)
            )
            last_decision = LastDecision(
                time=now, action=kind, reason=kind, message=stepped.message
            )
        if stepped.completed:
            effective = mig.to_mode
            placement_since = now
            last_migration_time = now
            above_since = below_since = None
        mig = None if stepped.completed or stepped.rolled_back else stepped.status

    # -- autoscaling ------------------------------------------------------------------------
    serving = [p for p, r in roles if r in ("primary", "overflow")]
    current_replicas = sum(observed[p].replicas for p in serving if p in observed)
    ready_serving = sum(observed[p].ready_replicas for p in serving if p in observed)
    wake = _wake_pending(infd)
    policy = autoscale.AutoscalePolicy.from_spec(infd.spec.scaling)
    if effective in (DeploymentMode.DEDICATED, DeploymentMode.HYBRID) and policy.min_replicas < 1:
        # auto promoted the tenant onto dedicated GPUs: those keep a warm replica, as an
        # explicit dedicated deployment must (the CRD refuses minReplicas 0 there).
        policy = dataclasses.replace(
            policy, min_replicas=1, max_replicas=max(1, policy.max_replicas)
        )
    initial = (
        infd.spec.scaling.initial_replicas
        if infd.spec.scaling.initial_replicas is not None
        else infd.spec.scaling.min_replicas
    )
    if not observed and status.last_scale_time is None:
        current_replicas = initial
    scale = autoscale.decide(
        autoscale.AutoscaleInputs(
            policy=policy,
            current_replicas=current_replicas,
            ready_replicas=ready_serving,
            queue=demand,
            wake_requested=wake is not None,
            pinned_replicas=infd.spec.replicas,
            last_active_at=status.last_active_time,
            history=cache.history,
            operator_started_at=context.operator_started_at,
        ),
        now,
    )
    cache.history = scale.history
    total = scale.replicas
    final_mode = mig.to_mode if mig is not None else effective
    # Until traffic shifts, the pools serve in the current mode's roles; from ShiftingTraffic on
    # they hold the target mode's roles, so they must be split the target mode's way (else after
    # hybrid -> dedicated the new sole primary would be capped at the hybrid floor).
    serving_mode = (
        current_mode
        if mig is not None and mig.phase == MigrationPhase.STARTING_TARGET
        else final_mode
    )
    split_now = _split(serving_mode, infd, total)
    split_target = _split(final_mode, infd, total)
    replicas_by_pool: dict[str, int] = {}
    for pool_name, role in roles:
        if role == "draining":
            live = observed.get(pool_name)
            replicas_by_pool[pool_name] = live.replicas if live else 0
        elif role == "target":
            final_layout = migration.layout_for(final_mode, **pools_kw)
            target_role = final_layout.role(pool_name) or "primary"
            replicas_by_pool[pool_name] = max(1, split_target[target_role])
        else:
            replicas_by_pool[pool_name] = split_now[role]
    # What the serving pools really get: hybrid caps overflow at maxOverflowReplicas, so the
    # autoscaler's total may not be reachable. Compare that, or a capped count would be announced
    # as a scale (an Event and a new lastDecision) on every sync.
    rendered = sum(replicas_by_pool[p] for p, r in roles if r in ("primary", "overflow"))
    scaled = rendered != current_replicas
    if scaled:
        message = scale.message
        if rendered != total:
            message += f"; capped at {rendered} (hybrid floor plus hybrid.maxOverflowReplicas)"
        events.append(Event("Normal", scale.reason, message))
        last_decision = LastDecision(
            time=now,
            action=f"scale {current_replicas}->{rendered}",
            reason=scale.reason,
            message=message,
        )

    # -- apply ---------------------------------------------------------------------------------
    for pool_name, role in roles:
        obj = engine.engine_deployment(
            infd, by_name[pool_name], replicas=replicas_by_pool[pool_name], role=role
        )
        _apply_if_changed(kube, cache, obj, observed.get(pool_name))
    _apply_if_changed(kube, cache, engine.engine_service(infd), None, always_if_unseen=True)
    stale = [d.name for p, d in observed.items() if p not in dict(roles)]
    if stale:
        kube.delete_deployments(infd.namespace, stale)
        for name in stale:
            cache.applied.pop(name, None)

    # -- status --------------------------------------------------------------------------------
    pool_status = [
        PoolStatus(
            name=pool_name,
            tenancy=by_name[pool_name].spec.tenancy,
            role=role,
            replicas=replicas_by_pool[pool_name],
            ready_replicas=observed[pool_name].ready_replicas if pool_name in observed else 0,
            deployment=names.engine_deployment(infd.name, pool_name),
        )
        for pool_name, role in roles
    ]
    desired = sum(p.replicas for p in pool_status if p.role in ("primary", "overflow"))
    _ready_condition(cond, desired, ready_serving, pool_status, mig is not None)
    _scheduling_condition(cond, problems, events, status.conditions)
    metrics_known = isinstance(demand, Sample)
    if metrics_known:
        cond(ConditionType.METRICS_AVAILABLE, True, Reason.METRICS_FRESH, "queue depth is known")
    else:
        reason_text = demand.reason if isinstance(demand, NoData) else "unknown"
        msg = f"metrics unknown ({reason_text}); holding {total} replicas, never scaling to zero"
        cond(ConditionType.METRICS_AVAILABLE, False, Reason.METRICS_UNKNOWN, msg)
        prev = conditions.find(status.conditions, ConditionType.METRICS_AVAILABLE)
        if prev is None or prev.status != "False":
            events.append(Event("Warning", Reason.METRICS_UNKNOWN, msg))
    cond(
        ConditionType.SCALING,
        scale.metrics_known or scale.replicas > 0,
        scale.reason,
        scale.message,
    )
    if mig is not None:
        cond(ConditionType.MIGRATING, True, Reason(str(mig.phase)), mig.reason)
    else:
        cond(
            ConditionType.MIGRATING,
            False,
            Reason.NOT_MIGRATING,
            f"running {effective} on {', '.join(p for p, _ in roles)}",
        )

    if last_decision is None:
        where = ", ".join(f"{p.name} ({p.role})" for p in pool_status)
        last_decision = LastDecision(
            time=now,
            action="created",
            reason="Created",
            message=f"placed {effective} on {where} with {desired} replica(s): {scale.message}",
        )
    new_status = InferenceDeploymentStatus(
        observed_generation=gen,
        conditions=conds,
        replicas=sum(d.replicas for d in observed.values()),
        ready_replicas=ready_total,
        desired_replicas=desired,
        ready=f"{ready_serving}/{desired}",
        selector=",".join(f"{k}={v}" for k, v in sorted(labels.selector_labels(infd.name).items())),
        served_model=infd.served_model,
        endpoint=engine.endpoint_url(infd),
        effective_mode=effective,
        pool=engine.pool_summary(pool_status),
        pools=pool_status,
        routable_pools=list(routable),
        queue_depth=int(demand.value) if isinstance(demand, Sample) else None,
        utilization=utilization,
        last_active_time=scale.last_active_at,
        last_scale_time=now if scaled else status.last_scale_time or now,
        last_wake_handled=wake or status.last_wake_handled,
        placement_since=placement_since,
        utilization_above_since=above_since,
        utilization_below_since=below_since,
        migration=mig,
        last_migration_time=last_migration_time,
        last_decision=last_decision,
    )
    requeue = min(scale.requeue_after, DEFAULT_REQUEUE) if mig else scale.requeue_after
    return SyncResult(status=new_status, events=tuple(events), requeue_after=requeue)


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


def _decide_placement(
    infd: InferenceDeployment,
    *,
    metrics: MetricsPort,
    current: DeploymentMode,
    shared: GPUPool | None,
    dedicated: GPUPool | None,
    placement_since: datetime | None,
    now: datetime,
) -> placement.PlacementDecision:
    policy = placement.PlacementPolicy.from_spec(infd.spec.placement)
    if infd.spec.mode == DeploymentMode.AUTO:
        window = metrics.traffic(
            namespace=infd.namespace,
            name=infd.name,
            served_model=infd.served_model,
            window_seconds=max(
                15, int(durations.parse(infd.spec.placement.window).total_seconds())
            ),
            now=now,
        )
        traffic = placement.Traffic(
            mean_concurrency=window.mean_concurrency,
            peak_concurrency=window.peak_concurrency,
            tokens_per_second=window.tokens_per_second,
        )
    else:
        unknown: Signal = NoData("fixed mode: not measured")
        traffic = placement.Traffic(unknown, unknown, unknown)
    return placement.decide(
        placement.PlacementInputs(
            requested_mode=infd.spec.mode,
            current_mode=current,
            policy=policy,
            traffic=traffic,
            capacity_per_replica=infd.spec.engine.max_num_seqs,
            gpus_per_replica=infd.spec.engine.gpus_per_replica,
            min_replicas=infd.spec.scaling.min_replicas,
            shared=_price(shared),
            dedicated=_price(dedicated),
            placement_since=placement_since,
            above_since=infd.status.utilization_above_since,
            below_since=infd.status.utilization_below_since,
            migration_in_progress=False,
            overflow_concurrency_per_replica=(
                infd.spec.hybrid or HybridSpec()
            ).overflow_concurrency_per_replica,
        ),
        now,
    )


def _ready_condition(
    cond: Any, desired: int, ready: int, pools: list[PoolStatus], migrating: bool
) -> None:
    where = ", ".join(p.name for p in pools if p.role in ("primary", "overflow")) or "-"
    if desired == 0 and not migrating:
        cond(
            ConditionType.READY,
            True,
            Reason.SCALED_TO_ZERO,
            "scaled to zero; the gateway holds the first request and wakes it",
        )
    elif ready >= 1:
        cond(
            ConditionType.READY,
            True,
            Reason.REPLICAS_READY,
            f"{ready}/{desired} replicas ready on {where}",
        )
    else:
        cond(
            ConditionType.READY,
            False,
            Reason.WAITING_FOR_REPLICAS,
            f"0/{desired} replicas ready on {where} (model loading or no GPU free)",
        )


def _scheduling_condition(
    cond: Any, problems: list[PodProblem], events: list[Event], before: list[Condition]
) -> None:
    if not problems:
        cond(
            ConditionType.SCHEDULED, True, Reason.ALL_PODS_SCHEDULED, "every engine pod has a node"
        )
        return
    first = problems[0]
    msg = (
        f"{len(problems)} engine pod(s) cannot be scheduled in pool {first.pool}:"
        f" {first.message or first.reason}"
    )
    cond(ConditionType.SCHEDULED, False, Reason.UNSCHEDULABLE, msg)
    prev = conditions.find(before, ConditionType.SCHEDULED)
    if prev is None or prev.status != "False":
        events.append(Event("Warning", Reason.UNSCHEDULABLE, msg))
