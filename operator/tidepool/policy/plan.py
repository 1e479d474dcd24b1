"""The plan: everything one reconcile of an InferenceDeployment decides, as one pure function.

Role: :func:`plan` takes the tenant (its spec and its durable status), what the cluster and the
metrics showed (:class:`Observed`), the autoscaler's rebuildable memory (:class:`History`) and
``now``, and returns a :class:`Plan`: which pools to run and in which role, how many replicas
each gets, which engine Deployments go, where the gateway may route, and the status, conditions
and events to write. It chooses the pools, asks the placement policy whether to move, steps a
make-before-break migration, asks the autoscaler for a replica count, and splits it per pool.

Two callers run it, and only it:

* the operator's ``reconcile.sync`` (observe every read up front, ``plan``, then apply and delete);
* ``tidepool simulate``, whose Tidepool controller turns its simulated replicas and traffic into an
  :class:`Observed` and the :class:`Plan` into its commands.

So what the simulator measures is what the operator does; a parity test runs one scripted
scenario through both and compares the replicas per pool at every step.

Every timer the decisions depend on lives in the returned status (``lastActiveTime``,
``placementSince``, the evidence timers, ``migration``, ``hybridFloor``), so an operator restart
resumes where it stopped. Only :class:`History` (the autoscaler's recent recommendations) lives in
memory; an empty history makes the autoscaler hold instead of scaling down.

This module must not read the clock, do I/O, or import ``kopf``/``kubernetes``/
``prometheus_api_client``.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from tidepool.api import conditions, labels, names
from tidepool.api.conditions import ConditionType, EventType, Reason
from tidepool.api.v1alpha1 import (
    ColdStartStatus,
    Condition,
    DeploymentMode,
    GPUPool,
    HybridSpec,
    InferenceDeployment,
    InferenceDeploymentStatus,
    LastDecision,
    MigrationPhase,
    MigrationStatus,
    PoolRole,
    PoolStatus,
    SharedEngine,
    Tenancy,
)
from tidepool.policy import autoscale, capacity, cold_start, lora_promotion, migration, placement
from tidepool.policy.capacity import EngineCapacity, EngineThroughput
from tidepool.policy.children import (
    ObservedDeployment,
    PodProblem,
    replica_failures,
    retired,
    serving_deployments,
    stale_services,
)
from tidepool.policy.cold_start import PodTimeline
from tidepool.policy.pools import (
    InvalidPlacementError,
    capacity_status,
    check_fits,
    engine_capacity,
    hybrid_floor,
    pick_pool,
    pool_price,
    split,
    target_utilization,
)
from tidepool.policy.signals import NoData, Sample, Signal

#: How soon to look again while a migration is in flight: each phase waits on the cluster.
MIGRATION_REQUEUE: Final = timedelta(seconds=5)
#: How soon to look again after an invalid spec: a user edit re-triggers at once anyway.
INVALID_REQUEUE: Final = timedelta(seconds=30)


SERVING_ROLES: Final = (PoolRole.PRIMARY, PoolRole.OVERFLOW)


# ------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything the plan may look at besides the tenant itself, read before deciding."""

    pools: tuple[GPUPool, ...]
    deployments: Mapping[str, ObservedDeployment]
    """Pool name -> this tenant's engine Deployment in it, by the name it has now
    (:func:`tidepool.api.names.engine_deployment`)."""
    pod_problems: tuple[PodProblem, ...]
    demand: Signal
    """Requests waiting plus running on the engines, plus held at the gateway."""
    traffic: placement.Traffic | NoData
    """Offered load over the placement window (``auto`` only; ``NoData`` otherwise)."""
    inflight: Mapping[str, Signal]
    """Pool -> requests in flight on it, for every pool a migration may drain."""
    operator_started_at: datetime
    may_start_migration: bool = True
    """False when the operator-wide migration budget is used up."""
    throughput: EngineThroughput | None = None
    """What the tenant's busy replicas did lately, from vLLM's counters, to refine capacity."""
    cold_start: timedelta = placement.DEFAULT_COLD_START
    """Pod start to Ready: what a wake costs the requests that arrive during it."""
    shared_engine: SharedEngine | None = None
    """For a LoRA tenant: the SharedEngine of its base model, if the platform runs one."""
    engine_tenants: tuple[InferenceDeployment, ...] = ()
    """The other tenants that SharedEngine holds adapters for (their offered load, recorded in
    their status, apportions the fleet's spend)."""
    p99_time_to_first_byte_s: float | None = None
    """For a LoRA tenant of a SharedEngine: its p99 time to first byte at the gateway over the
    placement window (``None``: unknown, e.g. no requests). Evidence about the fleet only while
    the fleet serves it (:func:`engine_share`)."""
    stale: tuple[ObservedDeployment, ...] = ()
    """This tenant's engine Deployments by a name it no longer gets (an older operator's naming
    rule): they may still serve their pool's traffic, see :func:`retired`."""
    services: tuple[str, ...] | None = None
    """The names of this tenant's engine Services, or None when they were not looked at."""
    pod_timelines: tuple[PodTimeline, ...] = ()
    """The tenant's engine pods' marks, read only while a cold start is being measured."""
    first_responses: tuple[datetime, ...] = ()
    """When the gateways routed a first response after a wake, read with ``pod_timelines``."""


@dataclass(frozen=True, slots=True)
class History:
    """The autoscaler's recent recommendations: memory only, safe to lose."""

    recommendations: tuple[autoscale.Recommendation, ...] = ()


# ----------------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to emit on the InferenceDeployment."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """One engine Deployment that must exist: its pool, role and replica count."""

    pool: GPUPool
    role: PoolRole
    replicas: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now. No pools: a spec that cannot be placed (write the status, touch nothing),
    or a tenant a SharedEngine serves (remove its own engines)."""

    pools: tuple[PoolPlan, ...]
    delete: tuple[str, ...]
    """Names of engine Deployments to remove: those of pools no longer used, and those of an
    older name once the current one serves their pool (:func:`retired`)."""
    overflow_limit: int
    """Hybrid: requests in flight per primary replica before the gateway spills (0: no spill)."""
    status: InferenceDeploymentStatus
    events: tuple[Event, ...]
    history: History
    requeue_after: timedelta
    delete_services: tuple[str, ...] = ()
    """Names of engine Services of an older name, to remove (:func:`stale_services`)."""

    @property
    def actuate(self) -> bool:
        """Whether there is anything to apply or remove: every placeable spec runs on at least
        one pool, and a tenant a SharedEngine serves removes the engines it ran before."""
        return bool(self.pools or self.delete or self.delete_services)

    def replicas(self, role: PoolRole | None = None) -> dict[str, int]:
        """Pool name -> replicas, optionally only for one role."""
        return {p.pool.name: p.replicas for p in self.pools if role is None or p.role == role}


# ------------------------------------------------------------------ a LoRA tenant of a fleet


def shared_engine_serving(infd: InferenceDeployment) -> str | None:
    """The SharedEngine serving ``infd``'s adapter, once it holds the adapter; else None.

    The SharedEngine's plan writes ``status.engine`` and ``AdapterLoaded``; until the adapter is
    loaded the tenant keeps whatever replicas of its own it runs (make-before-break), and from
    then on it needs none.
    """
    if infd.spec.model.adapter is None or not infd.status.engine:
        return None
    loaded = conditions.find(list(infd.status.conditions), ConditionType.ADAPTER_LOADED)
    return infd.status.engine if loaded is not None and loaded.status == "True" else None


def fixed_member(infd: InferenceDeployment, engine: SharedEngine | None) -> str | None:
    """The name of ``engine`` if it serves ``infd`` in a fixed mode, else None: ``infd`` is a
    ``mode: serverless`` LoRA tenant of its base model (the rule of
    :func:`tidepool.policy.shared_engine.serves`, which imports this module). An ``auto`` one
    runs on the fleet as its serverless layout instead (:func:`plan`)."""
    if (
        engine is None
        or infd.spec.mode != DeploymentMode.SERVERLESS
        or infd.spec.model.adapter is None
        or engine.spec.model.name != infd.spec.model.name
    ):
        return None
    return engine.name


def _without_gone_engine(
    infd: InferenceDeployment, engine: SharedEngine | None
) -> InferenceDeployment:
    """``infd`` released from the SharedEngine its status names when that engine no longer
    serves its base model (deleted, re-pointed at another model, or the tenant's adapter
    removed), as the engine's own plan releases a tenant it stops serving: ``status.engine``
    cleared, so the gateway routes to replicas of its own, and ``AdapterLoaded`` dropped.
    Kept, the tenant reported Ready with no replica anywhere, and its requests waited for a
    fleet that no longer existed."""
    named = infd.status.engine
    if not named or (engine is not None and engine.name == named):
        return infd
    status = infd.status.model_copy(update={"engine": "", "conditions": released_conditions(infd)})
    return infd.model_copy(update={"status": status})


def released_conditions(infd: InferenceDeployment) -> list[Condition]:
    """The tenant's conditions once no SharedEngine serves it: ``AdapterLoaded`` dropped (it
    describes a fleet), the others kept. One rule for the engine's plan releasing a tenant it
    stops serving and the tenant's plan releasing itself from an engine that is gone."""
    return [c for c in infd.status.conditions if c.type != ConditionType.ADAPTER_LOADED]


#: The fleet's verdicts (``AdapterLoaded``) under which it is still making the tenant's target:
#: the engine Deployments the tenant ran before wait for it (make-before-break).
_FLEET_MAKING: Final = frozenset({Reason.ADAPTER_LOADING, Reason.WAITING_FOR_REPLICAS})


def _served_by_shared_engine(
    infd: InferenceDeployment,
    fleet: SharedEngine,
    observed: Observed,
    history: History,
    now: datetime,
) -> Plan:
    """The plan of a tenant that SharedEngine ``fleet`` serves: no engine of its own,
    whatever state its adapter is in, so that its scale from zero is an adapter load on the fleet
    and its wake is the fleet's (the SharedEngine's plan wakes on any tenant's wake newer than
    its last activity; this plan leaves ``lastWakeHandled`` alone).

    Ready is what the fleet recorded. The engine Deployments the tenant ran before it moved onto
    the fleet stay while the fleet is loading its adapter or starting a replica for it
    (make-before-break), and go once the adapter is loaded, or when the fleet is not making it
    (asleep, no slot, a failed load): kept then, they would hold GPUs that serve nobody.
    """
    status = infd.status
    cond = _Conditions(infd, now)
    making = _fleet_verdict(cond, infd, fleet)
    action = f"served by SharedEngine {fleet.name}"
    last_decision = status.last_decision
    if last_decision is None or last_decision.action != action:
        last_decision = LastDecision(
            time=now,
            action=action,
            reason="SharedEngine",
            message=f"{action}: its adapter loads there on demand; no engine of its own",
        )
    own = tuple(sorted(d.name for d in (*observed.deployments.values(), *observed.stale)))
    if making:
        own = ()
    removing = f"served by SharedEngine {fleet.name}: removing {', '.join(own)}"
    return Plan(
        pools=(),
        delete=own,
        overflow_limit=0,
        status=status.model_copy(
            update={
                "conditions": cond.items,
                "observed_generation": infd.generation,
                "replicas": 0,
                "ready_replicas": 0,
                "desired_replicas": 0,
                "ready": "0/0",
                # kubectl get shows what it is called and where it runs, as for any tenant:
                # the fleet's pool, its replicas being the fleet's.
                "served_model": infd.served_model,
                "pool": fleet.spec.pool,
                "pools": [],
                "routable_pools": [],
                "engine": fleet.name,
                "last_decision": last_decision,
                # Its own replicas go: a cold start being measured ends with what it measured.
                "cold_start": cold_start.step(
                    status.cold_start,
                    from_zero=False,
                    wake=None,
                    pods=observed.pod_timelines,
                    responses=observed.first_responses,
                    desired=0,
                    now=now,
                ),
                **_fleet_spend(infd, observed),
            }
        ),
        events=(Event(EventType.NORMAL, Reason.ADAPTER_LOADED, removing),) if own else (),
        history=history,
        requeue_after=autoscale.DEFAULT_REQUEUE,
        delete_services=stale_services(observed.services, names.engine_service(infd.name)),
    )


def _fleet_verdict(cond: "_CondFn", infd: InferenceDeployment, engine: SharedEngine) -> bool:
    """Set Ready from what the fleet recorded; return whether the fleet is still making the
    tenant's target, so that the engines it ran before stay (make-before-break)."""
    verdict = conditions.find(list(infd.status.conditions), ConditionType.ADAPTER_LOADED)
    _fleet_ready_condition(cond, infd, engine)
    return not replicas_holding_adapter(infd, engine) and (
        verdict is None or verdict.reason in _FLEET_MAKING
    )


def _fleet_spend(infd: InferenceDeployment, observed: Observed) -> dict[str, object]:
    """The status fields of the tenant's share of the fleet's spend, where its traffic is
    measured (nothing otherwise: the last figures stay)."""
    share = engine_share(infd, observed, on_engine=True)
    if share is None or not isinstance(observed.traffic, placement.Traffic):
        return {}
    on = lora_promotion.engine_spend(
        share,
        input_tokens_per_second=observed.traffic.mean.input_tokens_per_second,
        output_tokens_per_second=observed.traffic.mean.output_tokens_per_second,
        peak_input_tokens_per_second=observed.traffic.peak.input_tokens_per_second,
        peak_output_tokens_per_second=observed.traffic.peak.output_tokens_per_second,
    )
    offered_in, offered_out = _offered(observed.traffic)
    return {
        "spend": f"spend/mo: {lora_promotion.engine_text(on)}",
        "spend_per_month": _dollars(on.spend_monthly),
        "chargeback_per_month": _dollars(on.chargeback_monthly),
        "offered_input_tokens_per_second": offered_in,
        "offered_output_tokens_per_second": offered_out,
    }


def engine_share(
    infd: InferenceDeployment, observed: Observed, *, on_engine: bool
) -> lora_promotion.EngineShare | None:
    """The SharedEngine of ``infd``'s base model as the placement policy prices it, or None
    (no adapter, no engine, or the engine's GPUPool is missing).

    The others' load is what their status recorded (``offeredInputTokensPerSecond``); the slot
    check is the fleet's own verdict while ``on_engine``, else whether one more adapter fits
    ``maxReplicas`` x the adapter slots of a replica. The observed p99 time to first byte is the
    fleet's only while ``on_engine``: on replicas of its own the gateway measures those, and
    taking their latency for the fleet's would keep a promoted tenant that is slow there from
    being demoted however little the fleet would cost it.
    """
    engine = observed.shared_engine
    if (
        engine is None
        or infd.spec.model.adapter is None
        or engine.spec.model.name != infd.spec.model.name
    ):
        return None
    pool = next((p for p in observed.pools if p.name == engine.spec.pool), None)
    if pool is None:
        return None
    others = [
        t for t in observed.engine_tenants if (t.namespace, t.name) != (infd.namespace, infd.name)
    ]
    spec = engine.spec
    if on_engine:
        loaded = conditions.find(list(infd.status.conditions), ConditionType.ADAPTER_LOADED)
        has_slot = loaded is None or loaded.reason != Reason.NO_ADAPTER_SLOT
    else:
        has_slot = len(others) + 1 <= spec.scaling.max_replicas * spec.lora.adapter_slots
    return lora_promotion.EngineShare(
        engine=engine.name,
        others_input_tokens_per_second=sum(
            t.status.offered_input_tokens_per_second or 0.0 for t in others
        ),
        others_output_tokens_per_second=sum(
            t.status.offered_output_tokens_per_second or 0.0 for t in others
        ),
        capacity=capacity.for_spec(spec.engine, spec.model.name, pool.spec.gpu_type),
        gpus_per_replica=spec.engine.gpus_per_replica,
        price_per_gpu_hour=pool.spec.price_per_gpu_hour,
        min_replicas=spec.scaling.min_replicas,
        max_replicas=spec.scaling.max_replicas,
        target_utilization=min(1.0, spec.scaling.target_queue_depth / spec.engine.max_num_seqs),
        slo_p99_ttfb_s=infd.spec.placement.slo_p99_time_to_first_byte.seconds,
        price_per_million_tokens=pool.spec.price_per_million_tokens,
        has_slot=has_slot,
        observed_p99_ttfb_s=observed.p99_time_to_first_byte_s if on_engine else None,
    )


def replicas_holding_adapter(infd: InferenceDeployment, engine: SharedEngine) -> int:
    """Fleet replicas holding ``infd``'s adapter, as the SharedEngine last recorded them."""
    key = f"{infd.namespace}/{infd.name}"
    return next((a.loaded_replicas for a in engine.status.adapters if a.tenant == key), 0)


def _dollars(amount: float | None) -> float | None:
    """Cents for status (kubectl prints a number column as stored); None for unknown or inf."""
    if amount is None or not math.isfinite(amount):
        return None
    return round(amount, 2)


def _offered(traffic: placement.Traffic | NoData) -> tuple[float | None, float | None]:
    if isinstance(traffic, NoData):
        return None, None
    return traffic.mean.input_tokens_per_second, traffic.mean.output_tokens_per_second


# -------------------------------------------------------------------------------------- plan


class _Conditions:
    """The tenant's conditions as one plan rewrites them, in the shape of :class:`_CondFn`.

    ``conditions.set_condition`` keeps a condition's transition time while its status holds, so
    every setter of one plan writes through this one list.
    """

    def __init__(self, infd: InferenceDeployment, now: datetime) -> None:
        self.items = list(infd.status.conditions)
        self._generation = infd.generation
        self._now = now

    def __call__(self, type_: ConditionType, ok: bool | None, reason: Reason, message: str) -> None:
        items, gen, now = self.items, self._generation, self._now
        self.items, _ = conditions.set_condition(
            items, type_=type_, status=ok, reason=reason, message=message, generation=gen, now=now
        )


@dataclass(frozen=True, slots=True)
class _Pools:
    """The GPUPools this spec runs on, chosen and checked before anything is decided."""

    shared: GPUPool | None
    dedicated: GPUPool | None
    fleet_pool: str | None
    """The SharedEngine's pseudo-pool when the fleet is the tenant's serverless layout."""
    current_mode: DeploymentMode
    """The mode the pools serve in now; a new ``auto`` tenant starts serverless."""

    @property
    def current_layout(self) -> migration.Layout:
        """The pools the current mode runs on, in their roles."""
        return self.layout(self.current_mode)

    def layout(self, mode: DeploymentMode) -> migration.Layout:
        """The pools ``mode`` runs on (ValueError naming a missing pool tenancy)."""
        return migration.layout_for(
            mode,
            shared=self.shared.name if self.shared else None,
            dedicated=self.dedicated.name if self.dedicated else None,
            engine=self.fleet_pool,
        )


@dataclass(frozen=True, slots=True)
class _Reconcile:
    """What every step of one plan reads, fixed once the pools are checked."""

    infd: InferenceDeployment
    observed: Observed
    now: datetime
    pools: _Pools
    fleet: SharedEngine | None
    by_name: Mapping[str, GPUPool]
    deployments: Mapping[str, ObservedDeployment]
    """Per pool, the Deployment that serves it, while one of an older name may still do so."""
    cap: EngineCapacity


@dataclass(frozen=True, slots=True)
class _Course:
    """Where the tenant runs and where it is going, after placement and the migration step:
    the roles to render, the status timers they move, and the events they raise, in order."""

    effective: DeploymentMode
    serving: migration.Layout
    """The pools the effective mode runs on as status recorded them (:func:`_in_use`): the
    source of any move, whatever pools the spec names since."""
    migration: MigrationStatus | None
    roles: tuple[tuple[str, PoolRole], ...]
    routable: tuple[str, ...]
    placement_since: datetime | None
    """None until the first decision with known traffic confirms (or changes) the initial
    placement: a brand-new tenant may move on its first evidence, without a dwell."""
    last_migration_time: datetime | None
    above_since: datetime | None
    below_since: datetime | None
    utilization: float | None
    chosen_floor: int | None
    spend: str | None
    spend_per_month: float | None
    chargeback_per_month: float | None
    wake_floor: int
    last_decision: LastDecision | None
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class _Sizing:
    """The autoscaler's verdict and what it was asked with, for the split and the status."""

    final_mode: DeploymentMode
    """The mode the tenant ends in: a migration's target, else the effective mode."""
    chosen_floor: int | None
    floor: int
    policy: autoscale.AutoscalePolicy
    scale: autoscale.ScaleDecision
    current_replicas: int
    ready_serving: int
    wake: str | None


def plan(infd: InferenceDeployment, observed: Observed, history: History, now: datetime) -> Plan:
    """Decide everything for ``infd`` at ``now`` from what was ``observed``. Pure.

    The steps, each a function below: a tenant a SharedEngine serves gets that plan; the pools
    are chosen and checked (an invalid spec only writes its status); placement may start a
    move and a move in flight takes one step; the autoscaler sizes the serving pools; its total
    is split per pool; the status, conditions, events and deletions follow from all of that.
    """
    infd = _without_gone_engine(infd, observed.shared_engine)
    fleet = _fleet(infd, observed)
    engine_name = fixed_member(infd, observed.shared_engine) or shared_engine_serving(infd)
    if engine_name is not None and fleet is None and observed.shared_engine is not None:
        return _served_by_shared_engine(infd, observed.shared_engine, observed, history, now)
    try:
        pools = _choose_pools(infd, observed.pools, fleet)
    except ValueError as exc:
        return _invalid(infd, exc, history, now)
    ctx = _Reconcile(
        infd,
        observed,
        now,
        pools,
        fleet,
        by_name={p.name: p for p in observed.pools},
        deployments=serving_deployments(observed.deployments, observed.stale),
        cap=engine_capacity(infd, pools.shared or pools.dedicated, observed.throughput),
    )
    course = _migration_step(ctx, _redirect(ctx, _placement(ctx)))
    sizing = _autoscale(ctx, course, history)
    replicas_by_pool = _split_per_pool(ctx, course, sizing)
    scaled, course = _announce_scale(ctx, course, sizing, replicas_by_pool)
    return _assemble(ctx, course, sizing, replicas_by_pool, scaled=scaled)


def _fleet(infd: InferenceDeployment, observed: Observed) -> SharedEngine | None:
    """The SharedEngine that is an ``auto`` LoRA tenant's serverless layout, or None.

    Such a tenant may be promoted to replicas of its own and demoted back: the fleet is then a
    pseudo-pool (:func:`migration.engine_pool`) and the tenant goes the way of every tenant,
    through placement, a make-before-break migration and autoscaling. A fixed-mode tenant of the
    fleet needs no engine of its own (:func:`_served_by_shared_engine`).
    """
    if infd.spec.mode != DeploymentMode.AUTO:
        return None
    if engine_share(infd, observed, on_engine=True) is None:
        return None
    return observed.shared_engine


def _choose_pools(
    infd: InferenceDeployment, pools: tuple[GPUPool, ...], fleet: SharedEngine | None
) -> _Pools:
    """The pools, and the spec checks the schema cannot do (ValueError when they fail).

    Every pool this spec may run on must exist and fit: the current layout, the requested mode's
    (checked here, not when a migration to it starts), any migration target, and for auto every
    pool it may choose. A pool nothing will use does not block the spec.
    """
    prefs = infd.spec.placement.pools
    requested = infd.spec.mode
    current_mode = infd.status.effective_mode or (
        DeploymentMode.SERVERLESS if requested == DeploymentMode.AUTO else requested
    )
    shared = pick_pool(pools, Tenancy.SHARED, prefs.shared)
    dedicated = pick_pool(pools, Tenancy.DEDICATED, prefs.dedicated)
    fleet_pool = migration.engine_pool(fleet.name) if fleet is not None else None
    chosen = _Pools(shared, dedicated, fleet_pool, current_mode)
    needed = set(chosen.current_layout.pools)
    if requested == DeploymentMode.AUTO:
        needed |= {p.name for p in (shared, dedicated) if p is not None}
    else:
        needed |= set(chosen.layout(requested).pools)
    if infd.status.migration is not None:
        needed |= set(chosen.layout(infd.status.migration.to_mode).pools)
    for candidate in (shared, dedicated):
        if candidate is not None and candidate.name in needed:
            check_fits(infd, candidate)
    return chosen


def _invalid(infd: InferenceDeployment, exc: ValueError, history: History, now: datetime) -> Plan:
    """A spec that cannot be placed: say why in Ready (an Event when that is news), touch
    nothing, and look again later (a user edit re-triggers at once anyway)."""
    # migration.layout_for raises a plain ValueError naming the missing pool tenancy.
    reason = exc.reason if isinstance(exc, InvalidPlacementError) else Reason.POOL_NOT_FOUND
    conds = _Conditions(infd, now)
    conds(ConditionType.READY, False, reason, str(exc))
    status = infd.status
    return Plan(
        pools=(),
        delete=(),
        overflow_limit=0,
        status=status.model_copy(
            update={"conditions": conds.items, "observed_generation": infd.generation}
        ),
        events=(Event(EventType.WARNING, reason, str(exc)),)
        if status.conditions != conds.items
        else (),
        history=history,
        requeue_after=INVALID_REQUEUE,
    )


def _in_use(infd: InferenceDeployment, pools: _Pools) -> migration.Layout:
    """The layout the effective mode runs on, as status recorded it: a move's ``fromPool``, else
    the serving pools of ``status.pools``; the spec's when status records none (a new tenant, or
    one on its SharedEngine's fleet, which ``status.pools`` leaves out).

    Why not the spec's: a changed ``placement.pools`` names pools that run nothing yet, and
    the ones that serve must stay until those are Ready (:func:`_pool_move`)."""
    spec_layout, status = pools.current_layout, infd.status
    if status.migration is not None:
        return migration.recorded(pools.current_mode, status.migration.from_pool, spec_layout)
    serving = tuple((p.name, p.role) for p in status.pools if p.role in SERVING_ROLES)
    return migration.Layout(serving) if serving else spec_layout


def _course_from_status(ctx: _Reconcile) -> _Course:
    """Where the tenant stands as its status recorded it, before this plan decides anything."""
    status, layout = ctx.infd.status, _in_use(ctx.infd, ctx.pools)
    return _Course(
        effective=ctx.pools.current_mode,
        serving=layout,
        migration=status.migration,
        roles=layout.roles,
        routable=layout.pools,
        placement_since=status.placement_since,
        last_migration_time=status.last_migration_time,
        above_since=status.utilization_above_since,
        below_since=status.utilization_below_since,
        utilization=status.utilization,
        chosen_floor=status.hybrid_floor,
        spend=status.spend,
        spend_per_month=status.spend_per_month,
        chargeback_per_month=status.chargeback_per_month,
        wake_floor=0,
        last_decision=status.last_decision,
        events=(),
    )


def _placement(ctx: _Reconcile) -> _Course:
    """Placement: with no migration in flight, ask the policy where the tenant should run; it
    also measures the utilization, spend and warm floor the status reports."""
    course = _course_from_status(ctx)
    if course.migration is not None:
        return course
    if course.serving.roles != ctx.pools.current_layout.roles:
        return _pool_move(ctx, course)
    infd, observed, now, current_mode = ctx.infd, ctx.observed, ctx.now, ctx.pools.current_mode
    share_on = current_mode == DeploymentMode.SERVERLESS
    decision = placement.decide(
        placement_inputs(
            infd,
            observed.traffic,
            current_mode,
            shared=ctx.pools.shared,
            dedicated=ctx.pools.dedicated,
            cap=ctx.cap,
            cold_start=observed.cold_start,
            engine=engine_share(infd, observed, on_engine=share_on) if ctx.fleet else None,
        ),
        now,
    )
    confirmed = decision.reason in (
        placement.PlacementReason.HOLDING,
        placement.PlacementReason.FIXED_MODE,
    )
    course = dataclasses.replace(
        course,
        above_since=decision.above_since,
        below_since=decision.below_since,
        placement_since=now
        if course.placement_since is None and confirmed
        else course.placement_since,
        utilization=decision.utilization
        if decision.utilization is not None
        else course.utilization,
    )
    if decision.cost is not None:
        course = dataclasses.replace(
            course,
            spend=placement.spend_text(decision.cost),
            spend_per_month=_dollars(placement.spend_of(decision.cost, current_mode)),
            chargeback_per_month=_dollars(decision.cost.chargeback_monthly),
            wake_floor=decision.cost.wake_floor_replicas,
        )
    if not decision.move or decision.mode == current_mode:
        return course
    return _start_migration(ctx, course, decision)


def _pool_move(ctx: _Reconcile, course: _Course) -> _Course:
    """The spec names other pools for the mode the tenant runs in (``placement.pools``, or
    another default pool): move there make-before-break, in the same mode, as any migration;
    until then the pools in use keep serving."""
    message = (
        f"spec pools changed: moving {ctx.pools.current_mode} from"
        f" {', '.join(course.serving.pools)} to {', '.join(ctx.pools.current_layout.pools)}"
    )
    return _begin_move(ctx, course, ctx.pools.current_mode, reason="PoolsChanged", message=message)


def _start_migration(
    ctx: _Reconcile, course: _Course, decision: placement.PlacementDecision
) -> _Course:
    """The policy says move: a migration to its mode, with the hybrid floor it priced."""
    moved = _begin_move(
        ctx, course, decision.mode, reason=decision.reason, message=decision.message
    )
    if moved.migration is None or decision.mode != DeploymentMode.HYBRID:
        return moved
    return dataclasses.replace(moved, chosen_floor=decision.floor_replicas)


def _begin_move(
    ctx: _Reconcile, course: _Course, to_mode: DeploymentMode, *, reason: str, message: str
) -> _Course:
    """Start a make-before-break migration from the pools in use to ``to_mode``'s, unless the
    operator-wide migration budget is used up (then say it was deferred; the next sync asks
    again)."""
    if not ctx.observed.may_start_migration:
        deferred = Event(
            EventType.NORMAL, "MigrationDeferred", f"{message}; deferred: migration budget in use"
        )
        return dataclasses.replace(course, events=(*course.events, deferred))
    started = migration.start(
        from_mode=ctx.pools.current_mode,
        to_mode=to_mode,
        source=course.serving,
        target=ctx.pools.layout(to_mode),
        reason=message,
        now=ctx.now,
    )
    return dataclasses.replace(
        course,
        migration=started,
        events=(*course.events, Event(EventType.NORMAL, reason, message)),
        last_decision=LastDecision(time=ctx.now, action=reason, reason=reason, message=message),
    )


def _target(ctx: _Reconcile, mig: MigrationStatus) -> migration.Layout:
    """The layout a migration in flight goes to: the pools it recorded."""
    return migration.recorded(mig.to_mode, mig.to_pool, ctx.pools.layout(mig.to_mode))


def _redirect(ctx: _Reconcile, course: _Course) -> _Course:
    """A spec that asks for another mode (a fixed ``spec.mode``) or other pools than the
    migration in flight goes to turns it (:func:`migration.redirect`): the stale move is not
    finished first and undone after. ``auto``'s mode is placement's to choose once the move is
    done, so for it only the pools count."""
    mig = course.migration
    if mig is None:
        return course
    spec_mode = ctx.infd.spec.mode
    wanted_mode = mig.to_mode if spec_mode == DeploymentMode.AUTO else spec_mode
    turned = migration.redirect(
        mig,
        current_mode=course.effective,
        source=course.serving,
        target=_target(ctx, mig),
        wanted_mode=wanted_mode,
        wanted=ctx.pools.layout(wanted_mode),
        now=ctx.now,
    )
    if turned is None:
        return course
    kind = "MigrationRedirected" if turned.status is not None else "MigrationAborted"
    serving = turned.serving
    moved = turned.serving_mode != course.effective or serving.roles != course.serving.roles
    return dataclasses.replace(
        course,
        effective=turned.serving_mode,
        serving=serving,
        migration=turned.status,
        roles=serving.roles,
        routable=serving.pools,
        placement_since=ctx.now if moved else course.placement_since,
        events=(*course.events, Event(EventType.NORMAL, kind, turned.message)),
        last_decision=LastDecision(time=ctx.now, action=kind, reason=kind, message=turned.message),
    )


def _migration_step(ctx: _Reconcile, course: _Course) -> _Course:
    """A migration in flight (just started, redirected or older) takes one step on what the
    pools show: the step decides the roles to render and where the gateway may route."""
    mig = course.migration
    if mig is None:
        return course
    source, target = course.serving, _target(ctx, mig)
    observations = {
        pool: migration.PoolObservation(
            ready_replicas=_ready_on(ctx, pool),
            inflight=ctx.observed.inflight.get(pool, NoData("not observed")),
        )
        for pool in set(source.pools) | set(target.pools)
    }
    stepped = migration.step(mig, source=source, target=target, observed=observations, now=ctx.now)
    events, last_decision = course.events, course.last_decision
    if stepped.status is None or stepped.status.phase != mig.phase:
        if stepped.completed:
            kind = "MigrationComplete"
        elif stepped.rolled_back:
            kind = "MigrationRolledBack"
        else:
            kind = str(stepped.status.phase if stepped.status else "")
        severity = EventType.WARNING if stepped.rolled_back else EventType.NORMAL
        events = (*events, Event(severity, kind, stepped.message))
        last_decision = LastDecision(
            time=ctx.now, action=kind, reason=kind, message=stepped.message
        )
    course = dataclasses.replace(
        course,
        roles=stepped.roles,
        routable=stepped.routable,
        events=events,
        last_decision=last_decision,
        migration=None if stepped.completed or stepped.rolled_back else stepped.status,
    )
    if not stepped.completed:
        return course
    return dataclasses.replace(
        course,
        effective=mig.to_mode,
        serving=target,
        placement_since=ctx.now,
        last_migration_time=ctx.now,
        above_since=None,
        below_since=None,
    )


def _ready_on(ctx: _Reconcile, pool: str) -> int:
    """Ready replicas serving ``pool``: the fleet's holding the adapter for its pseudo-pool."""
    if ctx.fleet is not None and pool == ctx.pools.fleet_pool:
        return replicas_holding_adapter(ctx.infd, ctx.fleet)
    return ctx.deployments[pool].ready_replicas if pool in ctx.deployments else 0


def _floors(ctx: _Reconcile, course: _Course) -> tuple[DeploymentMode, int | None, int, int]:
    """The final mode, the placement's chosen hybrid floor (kept only while hybrid is involved),
    the hybrid floor to keep, and the warm replicas an ``auto`` tenant's wakes need."""
    infd, mig = ctx.infd, course.migration
    final_mode = mig.to_mode if mig is not None else course.effective
    chosen_floor = course.chosen_floor
    if DeploymentMode.HYBRID not in (final_mode, ctx.pools.current_mode):
        chosen_floor = None
    floor = hybrid_floor(infd, chosen_floor)
    # An auto tenant on GPUs keeps warm what its wakes need (placement.wake_floor), whatever
    # floor it chose when it moved: its idle gaps would otherwise meet a cold ramp.
    warm = course.wake_floor if mig is None and infd.spec.mode == DeploymentMode.AUTO else 0
    if final_mode == DeploymentMode.HYBRID:
        floor = max(floor, warm)
    return final_mode, chosen_floor, floor, warm


def _autoscale_policy(
    infd: InferenceDeployment, gpu_mode: DeploymentMode, floor: int, warm: int
) -> autoscale.AutoscalePolicy:
    """The spec's scaling knobs, with the floor GPUs of the tenant's own owe.

    Dedicated GPUs keep a warm replica, as an explicit dedicated deployment must (the CRD
    refuses minReplicas 0 there), and a hybrid tenant keeps its whole floor; so does a
    promotion's target, from the moment it takes traffic. The floor never exceeds
    ``maxReplicas`` (:func:`tidepool.policy.pools.hybrid_floor` caps it, and the schema keeps
    ``minReplicas`` at or below it), so the maximum stays the spec's.
    """
    policy = autoscale.AutoscalePolicy.from_spec(infd.spec.scaling)
    if gpu_mode not in (DeploymentMode.DEDICATED, DeploymentMode.HYBRID):
        return policy
    keep = floor if gpu_mode == DeploymentMode.HYBRID else max(1, warm)
    return dataclasses.replace(
        policy, min_replicas=min(policy.max_replicas, max(policy.min_replicas, keep))
    )


def _autoscale(ctx: _Reconcile, course: _Course, history: History) -> _Sizing:
    """Autoscaling: the replicas the serving pools should run in total, from the demand."""
    infd, status, deployments = ctx.infd, ctx.infd.status, ctx.deployments
    final_mode, chosen_floor, floor, warm = _floors(ctx, course)
    serving = [p for p, r in course.roles if r in SERVING_ROLES]
    current_replicas = sum(deployments[p].replicas for p in serving if p in deployments)
    ready_serving = sum(deployments[p].ready_replicas for p in serving if p in deployments)
    wake = labels.pending_wake(infd.metadata.get("annotations"), status.last_wake_handled)
    if ctx.fleet is not None and not any(p in ctx.by_name for p in serving):
        # Only the fleet serves the tenant: the wake is the SharedEngine's to act on and to mark
        # handled (its plan wakes the fleet for any tenant's pending wake).
        wake = None
    gpu_mode = final_mode if course.effective == DeploymentMode.SERVERLESS else course.effective
    policy = _autoscale_policy(infd, gpu_mode, floor, warm)
    scaling = infd.spec.scaling
    if not deployments and status.last_scale_time is None:
        current_replicas = (
            scaling.initial_replicas
            if scaling.initial_replicas is not None
            else scaling.min_replicas
        )
    scale = autoscale.decide(
        autoscale.AutoscaleInputs(
            policy=policy,
            current_replicas=current_replicas,
            ready_replicas=ready_serving,
            queue=ctx.observed.demand,
            wake_requested=wake is not None,
            pinned_replicas=infd.spec.replicas,
            last_active_at=status.last_active_time,
            history=history.recommendations,
            operator_started_at=ctx.observed.operator_started_at,
            offered=offered_concurrency(ctx.observed.traffic, ctx.cap),
            metrics_known_since=metrics_known_since(status, ctx.observed.demand, ctx.now),
        ),
        ctx.now,
    )
    return _Sizing(
        final_mode, chosen_floor, floor, policy, scale, current_replicas, ready_serving, wake
    )


def metrics_known_since(
    status: InferenceDeploymentStatus, demand: Signal, now: datetime
) -> datetime | None:
    """Since when the queue has been known without a gap, from ``MetricsAvailable`` (whose
    transition time moves only when its status does): ``now`` on the first known read after an
    outage, the condition's transition to True after that, ``None`` with no outage on record
    (or while unknown, when it does not matter)."""
    before = conditions.find(status.conditions, ConditionType.METRICS_AVAILABLE)
    if not isinstance(demand, Sample) or before is None:
        return None
    return before.last_transition_time if before.status == "True" else now


def _split_per_pool(ctx: _Reconcile, course: _Course, sizing: _Sizing) -> dict[str, int]:
    """Pool -> replicas: the autoscaler's total split by role, a draining pool left as it is,
    and a migration target sized for the load it is about to take."""
    infd, total, final_mode, floor = (
        ctx.infd,
        sizing.scale.replicas,
        sizing.final_mode,
        sizing.floor,
    )
    mig = course.migration
    # Until traffic shifts, the pools serve in the current mode's roles; from ShiftingTraffic on
    # they hold the target mode's roles, so they must be split the target mode's way (else after
    # hybrid -> dedicated the new sole primary would be capped at the hybrid floor).
    starting = mig is not None and mig.phase == MigrationPhase.STARTING_TARGET
    serving_mode = course.effective if starting else final_mode
    max_overflow = (infd.spec.hybrid or HybridSpec()).max_overflow_replicas
    split_now = split(serving_mode, total, floor, max_overflow)
    split_target = split(final_mode, total, floor, max_overflow)
    # A target pool is sized for the offered load it is about to take (its busiest minute),
    # never for the queue that built while replicas were loading.
    traffic = ctx.observed.traffic
    offered = (
        None
        if isinstance(traffic, NoData)
        else placement.dedicated_replicas(
            placement.work(traffic.peak, ctx.cap), target_utilization(infd), 0
        )
    )
    replicas_by_pool: dict[str, int] = {}
    for pool_name, role in course.roles:
        if pool_name == ctx.pools.fleet_pool:
            # The fleet's replicas are its SharedEngine's to decide; the tenant renders none.
            replicas_by_pool[pool_name] = 0
        elif role == PoolRole.DRAINING:
            live = ctx.deployments.get(pool_name)
            replicas_by_pool[pool_name] = live.replicas if live else 0
        elif role == PoolRole.TARGET:
            target_role = ctx.pools.layout(final_mode).role(pool_name) or PoolRole.PRIMARY
            want = split_target[target_role]
            if offered is not None and target_role == PoolRole.PRIMARY:
                sized = split(final_mode, sizing.policy.clamp(offered), floor, max_overflow)
                want = max(want, sized[PoolRole.PRIMARY])
            replicas_by_pool[pool_name] = max(1, want)
        else:
            replicas_by_pool[pool_name] = split_now[role]
    return replicas_by_pool


def _announce_scale(
    ctx: _Reconcile, course: _Course, sizing: _Sizing, replicas_by_pool: Mapping[str, int]
) -> tuple[bool, _Course]:
    """Whether the serving pools change size, and if so the Event and lastDecision saying so.

    What the serving pools really get is compared: hybrid caps overflow at
    maxOverflowReplicas, so the autoscaler's total may not be reachable, and a capped count
    would otherwise be announced as a scale on every sync.
    """
    scale, current = sizing.scale, sizing.current_replicas
    rendered = sum(replicas_by_pool[p] for p, r in course.roles if r in SERVING_ROLES)
    if rendered == current:
        return False, course
    message = scale.message
    if rendered != scale.replicas:
        message += f"; capped at {rendered} (hybrid floor plus hybrid.maxOverflowReplicas)"
    return True, dataclasses.replace(
        course,
        events=(*course.events, Event(EventType.NORMAL, scale.reason, message)),
        last_decision=LastDecision(
            time=ctx.now,
            action=f"scale {current}->{rendered}",
            reason=scale.reason,
            message=message,
        ),
    )


def _pool_status(
    ctx: _Reconcile, course: _Course, replicas_by_pool: Mapping[str, int]
) -> list[PoolStatus]:
    """``status.pools``: every rendered pool (not the fleet's pseudo-pool) with its role."""
    return [
        PoolStatus(
            name=pool_name,
            tenancy=ctx.by_name[pool_name].spec.tenancy,
            role=role,
            replicas=replicas_by_pool[pool_name],
            ready_replicas=(
                ctx.deployments[pool_name].ready_replicas if pool_name in ctx.deployments else 0
            ),
            deployment=names.engine_deployment(ctx.infd.name, pool_name),
        )
        for pool_name, role in course.roles
        if pool_name in ctx.by_name
    ]


def _serving_replicas(pool_status: list[PoolStatus]) -> int:
    """Replicas the serving roles should run: what ``desiredReplicas`` and Ready count."""
    return sum(p.replicas for p in pool_status if p.role in SERVING_ROLES)


def _conditions(
    ctx: _Reconcile,
    course: _Course,
    sizing: _Sizing,
    pool_status: list[PoolStatus],
    *,
    on_fleet: bool,
) -> tuple[list[Condition], tuple[Event, ...]]:
    """The conditions, and the Warning Events for a condition that just turned bad."""
    infd, observed, demand, scale = ctx.infd, ctx.observed, ctx.observed.demand, sizing.scale
    cond, events = _Conditions(infd, ctx.now), list[Event]()
    desired = _serving_replicas(pool_status)
    if ctx.fleet is not None and on_fleet:
        _fleet_ready_condition(cond, infd, ctx.fleet)
    else:
        _ready_condition(
            cond,
            desired,
            sizing.ready_serving,
            pool_status,
            course.migration is not None,
            problems=(
                *observed.pod_problems,
                *replica_failures((*observed.deployments.values(), *observed.stale)),
            ),
        )
    unschedulable = [p for p in observed.pod_problems if p.reason == Reason.UNSCHEDULABLE]
    _scheduling_condition(cond, unschedulable, events, infd.status.conditions)
    if isinstance(demand, Sample):
        cond(ConditionType.METRICS_AVAILABLE, True, Reason.METRICS_FRESH, "queue depth is known")
    else:
        reason_text = demand.reason if isinstance(demand, NoData) else "unknown"
        msg = (
            f"metrics unknown ({reason_text}); holding {scale.replicas} replicas,"
            " never scaling to zero"
        )
        cond(ConditionType.METRICS_AVAILABLE, False, Reason.METRICS_UNKNOWN, msg)
        prev = conditions.find(infd.status.conditions, ConditionType.METRICS_AVAILABLE)
        if prev is None or prev.status != "False":
            events.append(Event(EventType.WARNING, Reason.METRICS_UNKNOWN, msg))
    cond(
        ConditionType.SCALING,
        scale.metrics_known or scale.replicas > 0,
        scale.reason,
        scale.message,
    )
    if course.migration is not None:
        mig = course.migration
        cond(ConditionType.MIGRATING, True, Reason(str(mig.phase)), mig.reason)
    else:
        cond(
            ConditionType.MIGRATING,
            False,
            Reason.NOT_MIGRATING,
            f"running {course.effective} on {', '.join(p for p, _ in course.roles)}",
        )
    return cond.items, tuple(events)


def _assemble(
    ctx: _Reconcile,
    course: _Course,
    sizing: _Sizing,
    replicas_by_pool: Mapping[str, int],
    *,
    scaled: bool,
) -> Plan:
    """The plan from every step's result: the status, conditions, events and deletions."""
    infd, observed, now, scale = ctx.infd, ctx.observed, ctx.now, sizing.scale
    pool_status = _pool_status(ctx, course, replicas_by_pool)
    desired = _serving_replicas(pool_status)
    on_fleet = ctx.fleet is not None and ctx.pools.fleet_pool in course.routable
    conds, condition_events = _conditions(ctx, course, sizing, pool_status, on_fleet=on_fleet)
    last_decision = course.last_decision
    if last_decision is None:
        where = ", ".join(f"{p.name} ({p.role})" for p in pool_status)
        last_decision = LastDecision(
            time=now,
            action="created",
            reason="Created",
            message=(
                f"placed {course.effective} on {where} with {desired} replica(s): {scale.message}"
            ),
        )
    new_status = _new_status(
        ctx,
        course,
        sizing,
        pool_status,
        conds=conds,
        last_decision=last_decision,
        on_fleet=on_fleet,
        scaled=scaled,
    )
    hybrid_spec = infd.spec.hybrid or HybridSpec()
    spills = any(
        role == PoolRole.OVERFLOW and pool in course.routable for pool, role in course.roles
    )
    mig = course.migration
    delete, rename_events = _deletions(ctx, course, replicas_by_pool, on_fleet=on_fleet)
    return Plan(
        pools=tuple(
            PoolPlan(pool=ctx.by_name[p], role=r, replicas=replicas_by_pool[p])
            for p, r in course.roles
            if p in ctx.by_name
        ),
        delete=delete,
        overflow_limit=hybrid_spec.overflow_concurrency_per_replica if spills else 0,
        status=new_status,
        events=(*course.events, *condition_events, *rename_events),
        history=History(scale.history),
        requeue_after=(min(scale.requeue_after, MIGRATION_REQUEUE) if mig else scale.requeue_after),
        delete_services=stale_services(observed.services, names.engine_service(infd.name)),
    )


def _new_status(
    ctx: _Reconcile,
    course: _Course,
    sizing: _Sizing,
    pool_status: list[PoolStatus],
    *,
    conds: list[Condition],
    last_decision: LastDecision,
    on_fleet: bool,
    scaled: bool,
) -> InferenceDeploymentStatus:
    """The status to write: every timer the next plan depends on lives here (module docstring)."""
    infd, status, observed, now = ctx.infd, ctx.infd.status, ctx.observed, ctx.now
    demand, scale, fleet = observed.demand, sizing.scale, ctx.fleet
    desired = _serving_replicas(pool_status)
    offered_in, offered_out = _offered(observed.traffic)
    return InferenceDeploymentStatus(
        observed_generation=infd.generation,
        conditions=conds,
        replicas=sum(d.replicas for d in ctx.deployments.values()),
        ready_replicas=sum(d.ready_replicas for d in ctx.deployments.values()),
        desired_replicas=desired,
        ready=f"{sizing.ready_serving}/{desired}",
        selector=",".join(f"{k}={v}" for k, v in sorted(labels.selector_labels(infd.name).items())),
        served_model=infd.served_model,
        # Which fleet the gateway sends the tenant to. The SharedEngine's plan writes it too, by
        # the same rule (policy.shared_engine.routes); a tenant that cannot move (not auto)
        # carries it over.
        engine=(fleet.name if on_fleet else "") if fleet is not None else status.engine,
        endpoint=names.engine_endpoint(infd.name, infd.namespace, infd.spec.engine.port),
        effective_mode=course.effective,
        pool=pool_summary(pool_status),
        pools=pool_status,
        routable_pools=[p for p in course.routable if p in ctx.by_name],
        queue_depth=int(demand.value) if isinstance(demand, Sample) else None,
        utilization=course.utilization,
        spend=course.spend,
        spend_per_month=course.spend_per_month,
        chargeback_per_month=course.chargeback_per_month,
        offered_input_tokens_per_second=offered_in,
        offered_output_tokens_per_second=offered_out,
        hybrid_floor=sizing.chosen_floor,
        capacity=capacity_status(ctx.cap, status.capacity, now),
        last_active_time=scale.last_active_at,
        last_scale_time=now if scaled else status.last_scale_time or now,
        last_wake_handled=sizing.wake or status.last_wake_handled,
        placement_since=course.placement_since,
        utilization_above_since=course.above_since,
        utilization_below_since=course.below_since,
        migration=course.migration,
        last_migration_time=course.last_migration_time,
        last_decision=last_decision,
        cold_start=_cold_start(ctx, sizing, desired),
    )


def _cold_start(ctx: _Reconcile, sizing: _Sizing, desired: int) -> ColdStartStatus | None:
    """``status.coldStart``: opened when no replica is Ready and the serving replicas go up from
    zero, or a wake is handled (an operator that restarted between scaling and writing status
    still records it), then measured on every sync until complete."""
    from_zero = sizing.ready_serving == 0 and (sizing.current_replicas == 0 or bool(sizing.wake))
    return cold_start.step(
        ctx.infd.status.cold_start,
        from_zero=from_zero,
        wake=sizing.wake,
        pods=ctx.observed.pod_timelines,
        responses=ctx.observed.first_responses,
        desired=desired,
        now=ctx.now,
    )


def _deletions(
    ctx: _Reconcile, course: _Course, replicas_by_pool: Mapping[str, int], *, on_fleet: bool
) -> tuple[tuple[str, ...], tuple[Event, ...]]:
    """Engine Deployments to remove (:func:`retired`), with an Event per renamed one.

    Make-before-break onto the fleet for a tenant that ran replicas of its own before its
    SharedEngine held its adapter: they stay until the adapter is loaded.
    """
    fleet, observed = ctx.fleet, ctx.observed
    joining = (
        fleet is not None
        and course.migration is None
        and on_fleet
        and not replicas_holding_adapter(ctx.infd, fleet)
    )
    delete = () if joining else retired(observed.deployments, observed.stale, replicas_by_pool)
    events = tuple(
        Event(
            EventType.NORMAL,
            "Renamed",
            f"{names.engine_deployment(ctx.infd.name, old.pool)} serves pool {old.pool}:"
            f" removing {old.name}",
        )
        for old in observed.stale
        if old.name in delete and old.pool in replicas_by_pool
    )
    return delete, events


def offered_concurrency(traffic: placement.Traffic | NoData, cap: EngineCapacity) -> float | None:
    """In-flight requests the last minute's arrivals keep busy with no queue, or ``None``.

    Replicas of work times the batch (Little's law at full batches): 0.5 replicas of work on
    64-seat replicas is 32 requests in flight, what the queue signal shows with no backlog.
    """
    if isinstance(traffic, NoData) or traffic.recent is None:
        return None
    return placement.work(traffic.recent, cap) * cap.max_num_seqs


def placement_inputs(
    infd: InferenceDeployment,
    traffic: placement.Traffic | NoData,
    current: DeploymentMode,
    *,
    shared: GPUPool | None,
    dedicated: GPUPool | None,
    cap: EngineCapacity,
    cold_start: timedelta,
    engine: lora_promotion.EngineShare | None = None,
) -> placement.PlacementInputs:
    """The placement policy's snapshot of this tenant (traffic is only measured for auto)."""
    status = infd.status
    scaling = infd.spec.scaling
    return placement.PlacementInputs(
        requested_mode=infd.spec.mode,
        current_mode=current,
        policy=placement.PlacementPolicy.from_spec(infd.spec.placement),
        traffic=traffic
        if infd.spec.mode == DeploymentMode.AUTO
        else NoData("fixed mode: not measured"),
        capacity=cap,
        gpus_per_replica=infd.spec.engine.gpus_per_replica,
        min_replicas=scaling.min_replicas,
        target_utilization=target_utilization(infd),
        shared=pool_price(shared),
        dedicated=pool_price(dedicated),
        placement_since=status.placement_since,
        above_since=status.utilization_above_since,
        below_since=status.utilization_below_since,
        overflow_concurrency_per_replica=(
            infd.spec.hybrid or HybridSpec()
        ).overflow_concurrency_per_replica,
        expected_tokens_per_minute=infd.spec.placement.expected_tokens_per_minute,
        cold_start=cold_start,
        engine=engine,
        max_replicas=scaling.max_replicas,
    )


def pool_summary(pools: list[PoolStatus]) -> str:
    """``shared-a100`` or ``dedicated-a100,shared-a100(overflow)`` for ``kubectl get infd``."""
    parts = [p.name if p.role == PoolRole.PRIMARY else f"{p.name}({p.role})" for p in pools]
    return ",".join(parts) if parts else "-"


#: Pod problems that Ready=False names instead of WaitingForReplicas, most specific first:
#: each needs a person (more memory, a pullable image, a fix, a GPU) rather than patience.
POD_FAILURES: Final = (
    Reason.OOM_KILLED,
    Reason.IMAGE_PULL_BACK_OFF,
    Reason.CREATE_CONTAINER_CONFIG_ERROR,
    Reason.CRASH_LOOP_BACK_OFF,
    Reason.REPLICA_FAILURE,
    Reason.UNSCHEDULABLE,
)


def _ready_condition(
    cond: "_CondFn",
    desired: int,
    ready: int,
    pools: list[PoolStatus],
    migrating: bool,
    *,
    problems: Sequence[PodProblem] = (),
) -> None:
    where = ", ".join(p.name for p in pools if p.role in SERVING_ROLES) or "-"
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
        failing = [p for reason in POD_FAILURES for p in problems if p.reason == reason]
        if failing:
            first = failing[0]
            subject = f"pod {first.pod}: " if first.pod else ""
            cond(
                ConditionType.READY,
                False,
                Reason(first.reason),
                f"0/{desired} replicas ready on {where}: {subject}{first.message}"
                + (f" (and {len(failing) - 1} more pod(s))" if len(failing) > 1 else ""),
            )
            return
        cond(
            ConditionType.READY,
            False,
            Reason.WAITING_FOR_REPLICAS,
            f"0/{desired} replicas ready on {where} (model loading or no GPU free)",
        )


def _fleet_ready_condition(
    cond: "_CondFn", infd: InferenceDeployment, engine: SharedEngine
) -> None:
    """Ready of a tenant the fleet serves: its adapter loaded (or the fleet asleep, woken by the
    gateway's held request), as the SharedEngine recorded it."""
    n = replicas_holding_adapter(infd, engine)
    loaded = conditions.find(list(infd.status.conditions), ConditionType.ADAPTER_LOADED)
    if n:
        cond(
            ConditionType.READY,
            True,
            Reason.ADAPTER_LOADED,
            f"served by SharedEngine {engine.name}, which holds its adapter on {n} replica(s)",
        )
    elif loaded is not None and loaded.reason == Reason.ENGINE_SCALED_TO_ZERO:
        cond(ConditionType.READY, True, Reason.SCALED_TO_ZERO, loaded.message)
    else:
        why = loaded.message if loaded is not None else "adapter not loaded yet"
        cond(
            ConditionType.READY,
            False,
            Reason.WAITING_FOR_REPLICAS,
            f"SharedEngine {engine.name}: {why}",
        )


def _scheduling_condition(
    cond: "_CondFn", problems: list[PodProblem], events: list[Event], before: list[Condition]
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
        events.append(Event(EventType.WARNING, Reason.UNSCHEDULABLE, msg))


class _CondFn(Protocol):
    """Signature of the condition setter passed to the helpers above (for the type checker)."""

    def __call__(
        self, type_: ConditionType, ok: bool | None, reason: Reason, message: str
    ) -> None: ...


__all__ = [
    "Event",
    "History",
    "Observed",
    "ObservedDeployment",
    "Plan",
    "PodProblem",
    "PoolPlan",
    "plan",
    "replica_failures",
]
