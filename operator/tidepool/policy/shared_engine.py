"""The plan of one SharedEngine: how many replicas, which adapter on which replica, what to report.

Role: :func:`plan_shared_engine` is to a SharedEngine what :func:`tidepool.policy.plan.plan` is to
an InferenceDeployment: a pure function of the engine, its tenants, what was observed, the
autoscaler's memory and ``now``, returning a frozen :class:`SharedEnginePlan`. The reconciler
(``tidepool.reconcile.shared_engine``) observes, calls it, and carries it out.

Who is a tenant (:func:`serves`): an InferenceDeployment with ``spec.model.adapter`` whose base
model ``spec.model.name`` is the engine's, and that runs serverless (``mode: serverless``, or
``auto`` while its effective mode is serverless or not yet decided). A tenant promoted to
dedicated or hybrid runs its own replicas with its one adapter (``render.lora.tenant_lora_args``).

Replicas (:func:`decide_fleet`): :func:`tidepool.policy.autoscale.decide` on the *aggregate* queue
of the fleet (what its replicas run and queue, plus what the gateway holds for each tenant),
because adapters share a replica's batch, with the fleet's *offered load* beside it
(:func:`fleet_load`): the sum over its tenants of the in-flight requests the last minute's
arrivals keep busy (Little's law on each tenant's gateway counters, as an InferenceDeployment's
autoscaler has it), and the replicas whose batches run every adapter with a request in flight at
once (``maxLoras`` per batch). The scale-down window remembers what the *arrivals* asked for, not
the queue: with many tenants a queue above the offered load is a backlog one tenant's burst left,
drained once by the replicas already there, not demand to hold replicas for ten minutes.
Unknown traffic (any tenant's) leaves the queue's rule as it was. A wake of any tenant (the
gateway's wake annotation, newer than the fleet's last activity: :func:`requested_wake`) scales
0 -> 1; the idle clock (``status.lastActiveTime``) restarts whenever any tenant has demand, so
the fleet scales to zero only once every tenant has been idle for ``scaleToZeroAfter``. An
awake fleet never runs fewer replicas than its tenants' adapters need (:func:`adapter_floor`), so
a wake brings up room for every tenant at once.

Adapter placement (:func:`place_adapters`), over the *ready* replicas in name order and the tenants
in ``namespace/name`` order, with ``S`` adapter slots per replica (``lora.maxCpuLoras``, else
``lora.maxLoras``: vLLM keeps at most that many adapters in CPU memory, its ``--max-cpu-loras``).
Each adapter aims for ``c`` copies: every ready replica while ``T <= S`` tenants (any replica then
serves any tenant), else ``c = max(1, min(R, R*S // T))`` of the ``R``. Placement is *stable*:

* an adapter stays on the replicas that hold it (the engine's record,
  ``status.adapters[].replicas``) while they are ready and have a slot, up to ``c`` of them;
* what is still missing goes to the least-loaded ready replicas with a free slot (ties by name),
  tenants with the fewest copies first, so a new tenant gets a slot before anyone a second copy.

So a new tenant, even one that sorts first, moves no other tenant's adapter while there is room:
no unload and reload elsewhere, and the GPU slots the other adapters warmed stay theirs. Placed
from nothing, this spreads the adapters evenly (each replica holds ``floor`` or ``ceil`` of
``T*c/R <= S``). A replica never holds more than ``S``. More tenants than the fleet has slots
(``T > R*S``): those without a slot report ``AdapterLoaded=False`` (``NoAdapterSlot``) until the
fleet grows or a tenant leaves; the ones placed before them keep their slots.

An adapter loaded on a replica that should not hold it (its tenant left, or the spread moved) is
unloaded. A replica whose adapters could not be listed is left alone this round. The engine's
``status.adapters`` names the pods holding each adapter (``replicas``): the gateway routes a
tenant only to those.

This module must not read the clock, do I/O, or import ``kopf``/``kubernetes``.
"""

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from tidepool.api import conditions, labels, names
from tidepool.api.conditions import ConditionType, EventType, Reason
from tidepool.api.v1alpha1 import (
    Condition,
    DeploymentMode,
    GPUPool,
    InferenceDeployment,
    LoadedAdapter,
    MigrationPhase,
    ScalingSpec,
    SharedEngine,
    SharedEngineStatus,
)
from tidepool.policy import autoscale, capacity, fair_share, placement
from tidepool.policy.capacity import EngineCapacity
from tidepool.policy.children import ObservedDeployment
from tidepool.policy.plan import Event, History, offered_concurrency, released_conditions
from tidepool.policy.signals import NoData, Sample, Signal

#: How soon to look again while an adapter failed to load or waits for a replica.
RETRY_REQUEUE: Final = timedelta(seconds=10)
#: Standard deviations above the mean of the adapters in flight that the fleet's batches make
#: room for: the normal distribution's 99th percentile, so that an adapter finds no free batch
#: slot at most 1% of the time, as the queue-wait SLO is stated at the p99. Seats need no such
#: margin: ``targetQueueDepth`` already leaves an eighth of each batch free.
ADAPTERS_P99_Z: Final = 2.326


# ------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class EnginePodAddress:
    """An engine pod of the fleet as the cluster shows it (what the Kubernetes adapter reads)."""

    name: str
    endpoint: str
    """``http://<pod IP>:<port>``, or "" while the pod has no IP."""
    ready: bool


@dataclass(frozen=True, slots=True)
class EnginePod:
    """One engine replica of the fleet, as its pod and its own API showed it."""

    name: str
    endpoint: str
    """``http://<pod IP>:<port>``: where vLLM's adapter endpoints of this replica answer."""
    ready: bool
    loaded: frozenset[str] | None
    """Adapters ``GET /v1/models`` lists with the base model as ``parent``; None: not asked or
    no answer (a replica not ready yet, or one that failed to answer)."""
    queue: Signal
    """Requests running plus waiting on this replica."""


@dataclass(frozen=True, slots=True)
class SharedObserved:
    """Everything the plan may look at besides the engine and its tenants, read before deciding."""

    pool: GPUPool | None
    """The engine's GPUPool, or None when ``spec.pool`` names none that exists."""
    deployment: ObservedDeployment | None
    pods: tuple[EnginePod, ...]
    held: Mapping[str, Signal]
    """Tenant key (``namespace/name``) -> requests the gateway holds for it."""
    load_errors: Mapping[str, str]
    """Tenant key -> the engine's message from the last failed load of its adapter."""
    operator_started_at: datetime
    traffic: Mapping[str, placement.Traffic | NoData] = field(default_factory=dict)
    """Tenant key -> its offered load from the gateway's counters (the read an ``auto``
    InferenceDeployment's plan makes); a tenant missing here is unknown."""
    cold_start: timedelta = placement.DEFAULT_COLD_START
    """Pod start to Ready of a fleet replica: how soon a replica started now could serve."""
    base_model_served_by: str | None = None
    """The SharedEngine that serves this engine's base model (:func:`engine_of`); None: not
    looked up, which reads as this engine."""


@dataclass(frozen=True, slots=True)
class FleetLoad:
    """What the fleet's tenants offer together, in the autoscaler's units (:func:`fleet_load`)."""

    in_flight: float
    """Requests the last minute's arrivals keep in flight with no queue, summed over tenants."""
    requests_per_second: float
    """The last minute's arrivals, summed over tenants."""
    active_adapters: float
    """Distinct adapters with a request in flight at a random instant, in expectation."""
    tenants: int

    @property
    def busiest_adapters(self) -> float:
        """Distinct adapters in flight that the count exceeds at most 1% of the time: its mean
        plus :data:`ADAPTERS_P99_Z` standard deviations, at most one per tenant. The count is a
        sum of independent yes/no with variance ``sum p(1 - p)``, at most its mean ``sum p``
        (Poisson's); the bound takes the mean, so more load never lowers it. E.g. 13.1 adapters
        of 18 tenants: ``min(18, 13.1 + 2.326 x 3.62) = 18``; 2.0 of 200: 5.3.
        """
        mean = self.active_adapters
        return min(float(self.tenants), mean + ADAPTERS_P99_Z * math.sqrt(mean))


@dataclass(frozen=True, slots=True)
class FleetScaleInputs:
    """Everything :func:`decide_fleet` looks at: the queue's snapshot (its ``offered`` unset),
    the offered load, and the adapter bounds of a replica."""

    queue: autoscale.AutoscaleInputs
    load: FleetLoad | NoData
    max_loras: int
    """Adapters one batch mixes (vLLM's ``--max-loras``)."""
    max_num_seqs: int
    """Batch seats of a replica (vLLM's ``--max-num-seqs``)."""
    adapter_floor: int
    """Replicas an awake fleet needs to hold every tenant's adapter (:func:`adapter_floor`)."""
    cold_start: timedelta = placement.DEFAULT_COLD_START
    """How soon a replica started now would serve."""


@dataclass(frozen=True, slots=True)
class FleetScaleDecision:
    """The fleet's replica count and why; ``scale`` carries the autoscaler's state onward."""

    replicas: int
    reason: Reason
    message: str
    scale: autoscale.ScaleDecision


# ----------------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class AdapterOp:
    """Load (``path`` set) or unload (``path`` None) adapter ``adapter`` on one replica."""

    pod: str
    endpoint: str
    adapter: str
    tenant: str
    path: str | None = None


@dataclass(frozen=True, slots=True)
class TenantUpdate:
    """The status fields of one tenant this plan writes (a merge patch of these only)."""

    namespace: str
    name: str
    engine: str
    conditions: tuple[Condition, ...]
    last_wake_handled: str | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class SharedEnginePlan:
    """What to do now. ``pool`` None: write the status, touch nothing else."""

    pool: GPUPool | None
    replicas: int
    loads: tuple[AdapterOp, ...]
    unloads: tuple[AdapterOp, ...]
    status: SharedEngineStatus
    tenants: tuple[TenantUpdate, ...]
    events: tuple[Event, ...]
    history: History
    requeue_after: timedelta


# ------------------------------------------------------------------------------------- rules


def tenant_key(infd: InferenceDeployment) -> str:
    return f"{infd.namespace}/{infd.name}"


def engine_of(model: str, engines: Iterable[SharedEngine]) -> SharedEngine | None:
    """The SharedEngine that serves base model ``model``: the oldest of those declaring it
    (by creation time, then name), or None.

    Why one: two SharedEngines of one base model would each load every tenant's adapter and
    each write its ``status.engine``, so the tenant's routing would flip between two fleets. Why
    the oldest: a second one created by mistake never takes the tenants from the fleet serving
    them; it serves nobody and says so (:func:`plan_shared_engine`) until it is deleted or
    re-pointed. E.g. ``base`` created at 09:00 and ``a-base`` at 10:00, both of one model:
    ``base``.
    """
    same = [e for e in engines if e.spec.model.name == model]
    return min(
        same, key=lambda e: (str(e.metadata.get("creationTimestamp") or ""), e.name), default=None
    )


def serves(engine: SharedEngine, infd: InferenceDeployment) -> bool:
    """Whether ``engine`` holds ``infd``'s adapter (the rule of the module docstring).

    An ``auto`` tenant moving between the fleet and replicas of its own is a member for the
    whole move, make-before-break both ways: promoted, until it has drained off the fleet (its
    effective mode stays serverless until the move completes); demoted, from the start, so that
    loading its adapter is how the move starts its target.
    """
    if infd.spec.model.adapter is None or infd.spec.model.name != engine.spec.model.name:
        return False
    if infd.spec.mode == DeploymentMode.SERVERLESS:
        return True
    if infd.spec.mode != DeploymentMode.AUTO:
        return False
    mig = infd.status.migration
    return infd.status.effective_mode in (None, DeploymentMode.SERVERLESS) or (
        mig is not None and mig.to_mode == DeploymentMode.SERVERLESS
    )


def routes(engine: SharedEngine, infd: InferenceDeployment) -> bool:
    """Whether the gateway should send ``infd``'s requests to the fleet: ``status.engine``.

    A member, except while a move has not shifted its traffic yet: promoted, the fleet routes
    until the move's ``ShiftingTraffic``; demoted, from then on. The tenant's own plan writes the
    same field by the same rule (:func:`tidepool.policy.plan.plan`), so neither undoes the other.
    """
    if not serves(engine, infd):
        return False
    mig = infd.status.migration
    if mig is None:
        return True
    starting = mig.phase == MigrationPhase.STARTING_TARGET
    return starting != (mig.to_mode == DeploymentMode.SERVERLESS)


def joining(infd: InferenceDeployment) -> bool:
    """A tenant being demoted onto the fleet, waiting for its adapter: a wake for the fleet."""
    mig = infd.status.migration
    return (
        mig is not None
        and mig.to_mode == DeploymentMode.SERVERLESS
        and mig.phase == MigrationPhase.STARTING_TARGET
    )


def adapter_slots(engine: SharedEngine) -> int:
    """Adapters one replica holds (:attr:`LoraSpec.adapter_slots`)."""
    return engine.spec.lora.adapter_slots


def place_adapters(
    tenants: list[str],
    replicas: list[str],
    slots: int,
    held: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Tenant -> the replicas that should hold its adapter, in ``replicas`` order (unplaced: []).

    ``held``: tenant -> the replicas holding its adapter now (the engine's record); they are kept
    while ready and within the copies and slots (module docstring). E.g. ``p0, p1`` at 2 slots,
    ``a`` on ``p0``, ``c`` and ``d`` on ``p1``: ``b`` joins and gets the one free slot, ``p0``,
    and the others stay (placed by position, ``b`` would have taken ``p1`` and moved ``c``).
    """
    if not replicas:
        return {t: [] for t in tenants}
    order = {r: i for i, r in enumerate(replicas)}
    copies = len(replicas)
    if len(tenants) > slots:
        copies = max(1, min(copies, copies * slots // len(tenants)))
    load = dict.fromkeys(replicas, 0)
    placed: dict[str, list[str]] = {t: [] for t in tenants}
    for tenant in tenants:
        for replica in sorted({*(held or {}).get(tenant, ())} & set(order), key=order.__getitem__):
            if len(placed[tenant]) < copies and load[replica] < slots:
                placed[tenant].append(replica)
                load[replica] += 1
    ring = len(replicas)
    for tenant in sorted(tenants, key=lambda t: len(placed[t])):  # stable: name order within
        mine = placed[tenant]
        while len(mine) < copies:
            free = [r for r in replicas if load[r] < slots and r not in mine]
            if not free:
                break
            # Among the least loaded, the next one around the ring after the tenant's last copy:
            # adapters held one per replica then pair up with their neighbours', and no tenant
            # is left with its only candidates full (a on p0, b on p1, c on p2 at 2 slots: a
            # takes p1, b p2, c p0; by name, b would take p0 and leave c only p0 and p1, full).
            after = order[mine[-1]] if mine else -1
            replica = min(free, key=lambda r: (load[r], (order[r] - after - 1) % ring))
            mine.append(replica)
            load[replica] += 1
    return {t: sorted(rs, key=order.__getitem__) for t, rs in placed.items()}


def adapter_floor(engine: SharedEngine, tenants: int) -> int:
    """Replicas an awake fleet needs so that every tenant's adapter has a home: ``ceil(T / S)``
    for ``T`` tenants at ``S`` adapter slots per replica, at most ``scaling.maxReplicas``.

    Why a floor and not only the queue: a tenant placed on no replica cannot be served at all
    (vLLM answers 404 for an adapter it has not loaded), however short the queue. E.g. 20
    tenants at maxLoras 4 (maxCpuLoras unset): 5 replicas; at maxCpuLoras 32: 1.
    """
    slots = adapter_slots(engine)
    return min(engine.spec.scaling.max_replicas, -(-tenants // slots))


def requested_wake(
    annotations: Mapping[str, str] | None, last_active: datetime | None
) -> str | None:
    """The tenant's ``wake-requested-at`` value if it asks for a wake after the fleet's last
    activity (``status.lastActiveTime``), else None.

    Why not ``status.lastWakeHandled`` (:func:`labels.pending_wake`): that field is the tenant's
    own daemon's record of the wakes *it* handled, and it marks a wake handled as soon as it has
    read it, often before this plan runs; the fleet would then never see the wake. The fleet's
    own clock is the one it writes itself: acting on a wake makes the fleet active at ``now``,
    which is after the wake, so the same wake is never acted on twice. The gateway stamps the
    wake with its clock and the operator the activity with its own; they need only agree to
    well within the idle window. E.g. a wake at 12:00:05.000Z on a fleet last active at
    11:50:00Z: pending; once acted on at 12:00:05.4Z: not. A value that is no RFC 3339 time
    (written by hand) asks for nothing.
    """
    value = (annotations or {}).get(labels.WAKE_REQUESTED_AT)
    if not value:
        return None
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return str(value) if last_active is None or at > last_active else None


def scaling_policy(engine: SharedEngine) -> autoscale.AutoscalePolicy:
    """The autoscaler's knobs: the SharedEngine's, and an InferenceDeployment's defaults for the
    stabilization windows and rate a SharedEngine does not expose."""
    s = engine.spec.scaling
    return autoscale.AutoscalePolicy.from_spec(
        ScalingSpec(
            min_replicas=s.min_replicas,
            max_replicas=s.max_replicas,
            target_queue_depth=s.target_queue_depth,
            scale_to_zero_after=s.scale_to_zero_after,
        )
    )


def fleet_load(
    traffic: Mapping[str, placement.Traffic | NoData], tenants: Iterable[str], cap: EngineCapacity
) -> FleetLoad | NoData:
    """The offered load of ``tenants`` together, or :class:`NoData` naming the first unknown one.

    Each tenant's last minute keeps ``x = work x maxNumSeqs`` requests in flight
    (:func:`tidepool.policy.plan.offered_concurrency`); the fleet's is the sum. Requests in
    flight with no queue are an M/G/inf system, so a tenant's count at an instant is Poisson
    with mean ``x`` and it has at least one in flight ``1 - e^-x`` of the time: the expected
    distinct adapters in flight is ``sum(1 - e^-x)``. E.g. three tenants at 0.5, 1 and 20 in
    flight: 21.5 in flight, ``0.39 + 0.63 + 1.0 = 2.03`` adapters. Why one unknown tenant makes
    the whole unknown: a sum missing a part would read as less load, and shrink the fleet.
    """
    in_flight = 0.0
    arrivals = 0.0
    active = 0.0
    count = 0
    for key in sorted(tenants):
        seen = traffic.get(key, NoData("traffic not read"))
        x = offered_concurrency(seen, cap)
        if x is None or isinstance(seen, NoData) or seen.recent is None:
            why = seen.reason if isinstance(seen, NoData) else "its last minute is not measured"
            return NoData(f"offered load of tenant {key} unknown: {why}")
        in_flight += x
        arrivals += seen.recent.requests_per_second
        active += 1.0 - math.exp(-x)
        count += 1
    return FleetLoad(
        in_flight=in_flight,
        requests_per_second=arrivals,
        active_adapters=active,
        tenants=count,
    )


def adapter_replicas(load: FleetLoad, max_loras: int, utilization: float) -> int:
    """Replicas whose batches make room for the busiest adapters in flight
    (:attr:`FleetLoad.busiest_adapters`): ``maxLoras`` per batch (one adapter more and vLLM's
    scheduler skips that request), filled to the share of a batch the autoscaler fills with
    requests (``targetQueueDepth / maxNumSeqs``), for the same reason: a slot freed only when
    every request of its adapter has finished is no slot for the next arrival.

    E.g. 2.0 adapters of 200 tenants in flight (5.3 at the 99th percentile), maxLoras 4 at
    56/64: ``ceil(5.3 / 3.5) = 2`` replicas; 13.1 of 18 (18): 6.
    """
    return math.ceil(load.busiest_adapters / (max_loras * utilization) - 1e-9)


def clearing_queue(queue: float, load: FleetLoad, cold_start: timedelta) -> float:
    """The queue the fleet sizes for: the offered load's requests in flight, plus enough seats
    to clear the backlog beyond them within a model load, not at once.

    A backlog ``B`` (queue above the offered in flight) of requests holding a seat ``W`` each
    (Little's law: ``W = in flight / arrivals``) clears within a start ``T`` on ``B x W / T``
    more seats. Why not ``B`` seats (what the queue asks): a replica started for the backlog is
    Ready a model load later, when a backlog drained by the fleet as it is has gone already; and
    held through the scale-down window, ``B`` seats keep a burst's peak for ten minutes. E.g.
    2,930 in flight at 586 requests/s (W = 5 s), queue 2,983: 2,934 (the 53 backlog needs 4.4
    seats); a burst's queue 17,000: ``2,930 + 14,070 x 5 / 60 = 4,103``. A queue at or below the
    offered load is taken as it is.
    """
    backlog = queue - load.in_flight
    if backlog <= 0 or load.requests_per_second <= 0:
        return queue
    service_s = load.in_flight / load.requests_per_second
    return load.in_flight + backlog * min(1.0, service_s / cold_start.total_seconds())


def decide_fleet(inputs: FleetScaleInputs, now: datetime) -> FleetScaleDecision:
    """The fleet's replica count at ``now`` (module docstring, "Replicas"). Pure.

    :func:`tidepool.policy.autoscale.decide` on the queue the fleet sizes for: the measured
    queue with a backlog counted as :func:`clearing_queue` counts it, and at least the
    adapters' need (:func:`adapter_replicas`) in the queue's unit; the offered load's requests
    in flight (or its adapters' need, if more) are its ``offered``, so a step up to what the
    arrivals need is one step, not rate-limited doublings. The scale-down window then remembers
    what the arrivals and their adapters asked for, and a burst at the seats that clear it within
    a start. Unknown traffic: the measured queue as it is. Awake and not pinned: never below the
    adapter floor (every adapter placed).

    Worked example (test ``a-burst-held-at-what-clears-it-within-a-start``): target 56 of 64
    seats, maxLoras 4, 70 replicas ready, 2,930 in flight at 586 requests/s, 22 adapters in
    flight; a burst leaves a queue of 17,000. Queue-only: ``ceil(17000/56) = 304`` wanted, 140
    at the rate limit, then held for ten minutes. Here: ``ceil(4103/56) = 74``.
    """
    p = inputs.queue.policy
    target = p.target_queue_depth
    load = inputs.load
    queue = inputs.queue.queue
    offered: float | None = None
    note = f"; {load.reason}: sizing on the queue alone" if isinstance(load, NoData) else ""
    if isinstance(load, FleetLoad):
        adapters = adapter_replicas(load, inputs.max_loras, target / inputs.max_num_seqs)
        # What the arrivals need, requests and adapters: no backlog, so no rate limit.
        offered = max(load.in_flight, float(adapters * target))
        note = (
            f"; offered load {load.in_flight:.0f} in flight, {load.active_adapters:.1f} adapters"
            f" of {load.tenants} tenants at once ({load.busiest_adapters:.1f} at the 99th"
            f" percentile: {adapters} replicas at maxLoras {inputs.max_loras})"
        )
        if isinstance(queue, Sample):
            sized = max(clearing_queue(queue.value, load, inputs.cold_start), adapters * target)
            if sized != queue.value:
                note += f"; sized for {sized:.0f} of queue {queue.value:g}"
            queue = Sample(value=sized, at=queue.at)
    scale = autoscale.decide(dataclasses.replace(inputs.queue, queue=queue, offered=offered), now)
    replicas, message = scale.replicas, scale.message + note
    floor = inputs.adapter_floor
    if replicas > 0 and inputs.queue.pinned_replicas is None and replicas < floor:
        message = f"{floor} replicas hold every tenant's adapter ({message})"
        replicas = floor
    return FleetScaleDecision(replicas=replicas, reason=scale.reason, message=message, scale=scale)


def aggregate_queue(pods: tuple[EnginePod, ...], held: Mapping[str, Signal]) -> Signal:
    """The fleet's queue: every ready replica's plus what the gateway holds for every tenant.

    Unknown if any part is: the autoscaler then holds, never scaling to zero on a missing number.
    """
    parts = [p.queue for p in pods if p.ready] + [held[k] for k in sorted(held)]
    total = 0.0
    at: datetime | None = None
    for part in parts:
        if isinstance(part, NoData):
            return part
        total += part.value
        at = part.at if at is None else min(at, part.at)
    if at is None:
        return NoData("no tenant and no ready replica to measure")
    return Sample(value=total, at=at)


def _set(
    conds: list[Condition],
    type_: ConditionType,
    ok: bool | None,
    reason: Reason,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    out, _ = conditions.set_condition(
        conds,
        type_=type_,
        status=ok,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    return out


# -------------------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class _Round:
    """One call of :func:`plan_shared_engine`: the engine, its members and what was observed."""

    engine: SharedEngine
    members: Mapping[str, InferenceDeployment]
    """Tenant key -> the InferenceDeployments the engine serves, in key order."""
    observed: SharedObserved
    pool: GPUPool
    ready_pods: tuple[EnginePod, ...]
    """The ready replicas in name order: the only ones adapters are placed on."""
    now: datetime

    @property
    def current(self) -> int:
        dep = self.observed.deployment
        return dep.replicas if dep is not None else 0

    @property
    def ready(self) -> int:
        dep = self.observed.deployment
        return dep.ready_replicas if dep is not None else 0


@dataclass(frozen=True, slots=True)
class _AdapterOps:
    """What the replicas must load and unload, and where wanted adapters already are."""

    loads: tuple[AdapterOp, ...]
    unloads: tuple[AdapterOp, ...]
    loaded_on: Mapping[str, list[str]]
    """Adapter name -> the ready replicas that hold it and should."""


@dataclass(frozen=True, slots=True)
class _Tenants:
    """The members' status updates, the engine's ``status.adapters``, and whether to look
    again soon (an adapter not loaded yet)."""

    updates: tuple[TenantUpdate, ...]
    adapters: tuple[LoadedAdapter, ...]
    retry: bool


def plan_shared_engine(
    engine: SharedEngine,
    tenants: list[InferenceDeployment],
    observed: SharedObserved,
    history: History,
    now: datetime,
) -> SharedEnginePlan:
    """Decide everything for ``engine`` at ``now``. Pure.

    ``tenants``: every InferenceDeployment there is; the plan picks those :func:`serves` accepts,
    and releases those whose status still names this engine but that it serves no more.

    The steps: without its GPUPool only the status is written; otherwise the fleet's replicas,
    then where each adapter goes, then each tenant's condition, then the engine's status.
    """
    selector = _selector(engine)
    serving = observed.base_model_served_by
    if serving is not None and serving != engine.name:
        return _served_elsewhere(engine, serving, tenants, observed, history=history, now=now)
    members = sorted((t for t in tenants if serves(engine, t)), key=tenant_key)
    if observed.pool is None:
        return _without_pool(engine, len(members), observed, history=history, now=now)
    r = _Round(
        engine=engine,
        members={tenant_key(t): t for t in members},
        observed=observed,
        pool=observed.pool,
        ready_pods=tuple(sorted((p for p in observed.pods if p.ready), key=lambda p: p.name)),
        now=now,
    )
    wakes = {
        key: requested_wake(t.metadata.get("annotations"), engine.status.last_active_time)
        for key, t in r.members.items()
    }
    fleet = _fleet(r, wakes, history)
    placed = place_adapters(
        list(r.members),
        [p.name for p in r.ready_pods],
        adapter_slots(engine),
        {a.tenant: a.replicas for a in engine.status.adapters},
    )
    ops = _adapter_ops(r, placed)
    members_now = _member_updates(r, placed, ops.loaded_on, wakes, fleet.replicas)
    requeue = fleet.scale.requeue_after
    if members_now.retry or ops.loads or ops.unloads:
        requeue = min(requeue, RETRY_REQUEUE)
    return SharedEnginePlan(
        pool=r.pool,
        replicas=fleet.replicas,
        loads=ops.loads,
        unloads=ops.unloads,
        status=_engine_status(r, fleet, selector, members_now.adapters),
        tenants=members_now.updates + _released(engine, tenants, r.members),
        events=(
            (Event(EventType.NORMAL, fleet.reason, fleet.message),)
            if fleet.replicas != r.current
            else ()
        ),
        history=History(fleet.scale.history),
        requeue_after=requeue,
    )


def _selector(engine: SharedEngine) -> str:
    """The label selector of the fleet's pods, as the scale subresource reports it."""
    return ",".join(
        f"{k}={v}"
        for k, v in sorted(
            labels.shared_engine_selector_labels(names.shared_engine_label(engine.name)).items()
        )
    )


def _served_elsewhere(
    engine: SharedEngine,
    serving: str,
    tenants: list[InferenceDeployment],
    observed: SharedObserved,
    *,
    history: History,
    now: datetime,
) -> SharedEnginePlan:
    """An older SharedEngine serves this one's base model (:func:`engine_of`): serve no tenant
    (releasing any whose status names this one), keep no replica, and say why in Ready (a
    warning the first time), naming the engine that serves the model and what to do."""
    message = (
        f"spec.model.name: base model {engine.spec.model.name!r} is served by SharedEngine"
        f" {serving!r}, created first; this one serves no tenant and keeps no replica"
        " (delete it, or set another base model)"
    )
    return _not_serving(
        engine,
        Reason.BASE_MODEL_SERVED_ELSEWHERE,
        message,
        pool=observed.pool,
        replicas=0,
        status_update={"tenants": 0, "adapters": []},
        released=_released(engine, tenants, {}),
        history=history,
        now=now,
    )


def _without_pool(
    engine: SharedEngine,
    members: int,
    observed: SharedObserved,
    *,
    history: History,
    now: datetime,
) -> SharedEnginePlan:
    """``spec.pool`` names no GPUPool: say so (a warning the first time), keep the replicas
    there are, and touch nothing else, since there is no GPU type to size or render for."""
    dep = observed.deployment
    return _not_serving(
        engine,
        Reason.POOL_NOT_FOUND,
        f"pool: GPUPool {engine.spec.pool!r} does not exist",
        pool=None,
        replicas=dep.replicas if dep is not None else 0,
        status_update={"tenants": members},
        released=(),
        history=history,
        now=now,
    )


def _not_serving(
    engine: SharedEngine,
    reason: Reason,
    message: str,
    *,
    pool: GPUPool | None,
    replicas: int,
    status_update: Mapping[str, object],
    released: tuple[TenantUpdate, ...],
    history: History,
    now: datetime,
) -> SharedEnginePlan:
    """The plan of an engine that cannot serve as declared: Ready False with ``reason`` and
    ``message`` (a Warning event when that is news), no adapter loaded or unloaded."""
    status, generation = engine.status, engine.generation
    conds = _set(
        list(status.conditions),
        ConditionType.READY,
        False,
        reason,
        message,
        generation=generation,
        now=now,
    )
    changed = conds != status.conditions
    return SharedEnginePlan(
        pool=pool,
        replicas=replicas,
        loads=(),
        unloads=(),
        status=status.model_copy(
            update={
                "conditions": conds,
                "observed_generation": generation,
                "selector": _selector(engine),
                **status_update,
            }
        ),
        tenants=released,
        events=(Event(EventType.WARNING, reason, message),) if changed else (),
        history=history,
        requeue_after=autoscale.DEFAULT_REQUEUE,
    )


def _fleet(r: _Round, wakes: Mapping[str, str | None], history: History) -> FleetScaleDecision:
    """The fleet's replicas (:func:`decide_fleet`) on the aggregate queue and offered load.

    A wake of any member, or a member joining, asks for a replica; the load counts who sends
    to the fleet or is about to (a demoted tenant joining: make before break), and a promoted
    tenant whose traffic has shifted away no more.
    """
    engine, observed = r.engine, r.observed
    held = {k: v for k, v in observed.held.items() if k in wakes}
    cap = capacity.for_spec(engine.spec.engine, engine.spec.model.name, r.pool.spec.gpu_type)
    members = list(r.members.values())
    return decide_fleet(
        FleetScaleInputs(
            queue=autoscale.AutoscaleInputs(
                policy=scaling_policy(engine),
                current_replicas=r.current,
                ready_replicas=r.ready,
                queue=aggregate_queue(observed.pods, held),
                wake_requested=any(w is not None for w in wakes.values())
                or any(joining(t) for t in members),
                pinned_replicas=engine.spec.replicas,
                last_active_at=engine.status.last_active_time,
                history=history.recommendations,
                operator_started_at=observed.operator_started_at,
            ),
            load=fleet_load(
                observed.traffic,
                (tenant_key(t) for t in members if routes(engine, t) or joining(t)),
                cap,
            ),
            max_loras=engine.spec.lora.max_loras,
            max_num_seqs=engine.spec.engine.max_num_seqs,
            adapter_floor=adapter_floor(engine, len(members)),
            cold_start=observed.cold_start,
        ),
        r.now,
    )


def _adapter_ops(r: _Round, placed: Mapping[str, list[str]]) -> _AdapterOps:
    """The loads and unloads that make each ready replica hold what ``placed`` gives it.

    A replica whose adapters could not be listed is left alone this round; an adapter nobody
    wants there (its tenant left, or the spread moved) is unloaded.
    """
    wanted: dict[str, set[str]] = {p.name: set() for p in r.ready_pods}
    adapter_of: dict[str, str] = {}
    for key, infd in r.members.items():
        adapter = infd.spec.model.adapter
        assert adapter is not None  # serves() checked it
        adapter_of[adapter.name] = key
        for pod_name in placed[key]:
            wanted[pod_name].add(adapter.name)
    loads: list[AdapterOp] = []
    unloads: list[AdapterOp] = []
    loaded_on: dict[str, list[str]] = {}
    for pod in r.ready_pods:
        if pod.loaded is None:
            continue
        for name in sorted(pod.loaded):
            if name in wanted[pod.name]:
                loaded_on.setdefault(name, []).append(pod.name)
            else:
                unloads.append(
                    AdapterOp(pod.name, pod.endpoint, name, adapter_of.get(name, ""), None)
                )
        for name in sorted(wanted[pod.name] - pod.loaded):
            key = adapter_of[name]
            adapter = r.members[key].spec.model.adapter
            assert adapter is not None
            loads.append(AdapterOp(pod.name, pod.endpoint, name, key, adapter.source))
    return _AdapterOps(tuple(loads), tuple(unloads), loaded_on)


def _member_updates(
    r: _Round,
    placed: Mapping[str, list[str]],
    loaded_on: Mapping[str, list[str]],
    wakes: Mapping[str, str | None],
    desired: int,
) -> _Tenants:
    """Each member's ``AdapterLoaded`` condition, the engine it routes through, and the wake
    this round handled; and the engine's record of which replicas hold each adapter."""
    updates: list[TenantUpdate] = []
    adapters: list[LoadedAdapter] = []
    retry = False
    for key, infd in r.members.items():
        adapter = infd.spec.model.adapter
        assert adapter is not None
        holders = loaded_on.get(adapter.name, [])
        ok, reason, message = _adapter_condition(r, key, len(holders), len(placed[key]), desired)
        retry = retry or ok is not True
        tenant_conds = _set(
            list(infd.status.conditions),
            ConditionType.ADAPTER_LOADED,
            ok,
            reason,
            message,
            generation=infd.generation,
            now=r.now,
        )
        updates.append(
            TenantUpdate(
                namespace=infd.namespace,
                name=infd.name,
                engine=r.engine.name if routes(r.engine, infd) else "",
                conditions=tuple(tenant_conds),
                last_wake_handled=wakes[key] or infd.status.last_wake_handled,
            )
        )
        adapters.append(
            LoadedAdapter(
                name=adapter.name, tenant=key, loaded_replicas=len(holders), replicas=holders
            )
        )
    return _Tenants(tuple(updates), tuple(adapters), retry)


def _adapter_condition(
    r: _Round, key: str, loaded: int, placed: int, desired: int
) -> tuple[bool | None, Reason, str]:
    """A member's ``AdapterLoaded`` (status, reason, message): a failed load first, then
    loaded anywhere, then why not yet (scaled to zero, no ready replica, no slot, loading)."""
    name = r.engine.name
    error = r.observed.load_errors.get(key)
    if error is not None:
        return (False, Reason.ADAPTER_LOAD_FAILED, f"SharedEngine {name}: {error}")
    if loaded >= 1:
        return (True, Reason.ADAPTER_LOADED, f"loaded on {loaded} of {placed} replicas")
    if desired == 0 and not r.ready_pods:
        return (
            None,
            Reason.ENGINE_SCALED_TO_ZERO,
            f"SharedEngine {name} is scaled to zero; the adapter loads when it wakes",
        )
    if not r.ready_pods:
        return (
            None,
            Reason.WAITING_FOR_REPLICAS,
            f"waiting for a ready replica of SharedEngine {name}",
        )
    if placed == 0:
        return (
            False,
            Reason.NO_ADAPTER_SLOT,
            f"SharedEngine {name} holds {len(r.ready_pods)} x {adapter_slots(r.engine)}"
            f" adapters and serves {len(r.members)} tenants: raise lora.maxCpuLoras or"
            " scaling.maxReplicas",
        )
    return (None, Reason.ADAPTER_LOADING, f"loading on {placed} replica(s)")


def _released(
    engine: SharedEngine,
    tenants: list[InferenceDeployment],
    members: Mapping[str, InferenceDeployment],
) -> tuple[TenantUpdate, ...]:
    """Tenants this engine served before and serves no more (promoted, or re-pointed at another
    base model): routed through no engine, and this engine's condition dropped.

    Served before: the status names the engine, or it still carries the AdapterLoaded
    condition (a promoted tenant's status stopped naming the engine when its traffic shifted).
    """
    return tuple(
        TenantUpdate(
            namespace=infd.namespace,
            name=infd.name,
            engine="",
            conditions=tuple(released_conditions(infd)),
            last_wake_handled=infd.status.last_wake_handled,
        )
        for infd in sorted(tenants, key=tenant_key)
        if tenant_key(infd) not in members and _served_before(engine, infd)
    )


def _served_before(engine: SharedEngine, infd: InferenceDeployment) -> bool:
    """Whether ``infd``'s status shows this engine served it (see :func:`_released`)."""
    return infd.status.engine == engine.name or (
        not infd.status.engine
        and infd.spec.model.adapter is not None
        and infd.spec.model.name == engine.spec.model.name
        and conditions.find(list(infd.status.conditions), ConditionType.ADAPTER_LOADED) is not None
    )


def _engine_status(
    r: _Round, fleet: FleetScaleDecision, selector: str, adapters: tuple[LoadedAdapter, ...]
) -> SharedEngineStatus:
    """The engine's status: Ready and Scaling from the fleet's decision, the replica counts,
    the adapters' placement, and the autoscaler's idle clock."""
    status, desired, ready, current = r.engine.status, fleet.replicas, r.ready, r.current
    conds = _ready_condition(r, desired)
    conds = _set(
        conds,
        ConditionType.SCALING,
        fleet.scale.metrics_known or fleet.scale.replicas > 0,
        fleet.reason,
        fleet.message,
        generation=r.engine.generation,
        now=r.now,
    )
    return SharedEngineStatus(
        observed_generation=r.engine.generation,
        conditions=conds,
        replicas=current,
        ready_replicas=ready,
        ready=f"{ready}/{desired}",
        selector=selector,
        tenants=len(r.members),
        adapters=list(adapters),
        last_active_time=fleet.scale.last_active_at,
        last_scale_time=r.now if desired != current else status.last_scale_time or r.now,
        spend=status.spend,
        scheduling_policy=fleet_scheduling_policy(
            r.observed.deployment, fair_share.rendered_policy(r.engine.spec.engine.extra_args)
        ),
    )


def fleet_scheduling_policy(dep: ObservedDeployment | None, rendered: str) -> str:
    """The scheduling policy the gateway may count on at every replica of the fleet: the pod
    template's once the Deployment controller has seen it, no replica of an older template (or
    an older name) is left, and the spec renders the same (else a rollout is about to start);
    otherwise vLLM's default ``fcfs``, under which a request with a priority other than 0 is
    refused. E.g. right after an operator upgrade adds ``--scheduling-policy priority`` the old
    replicas still run ``fcfs``: ``fcfs`` until the rollout has replaced them; and a user who
    adds ``--scheduling-policy fcfs`` to ``extraArgs`` gets ``fcfs`` from that reconcile on,
    before any replica of the new template is up."""
    if dep is None or not dep.generation_observed or dep.outdated_replicas > 0:
        return fair_share.FCFS
    return dep.scheduling_policy if dep.scheduling_policy == rendered else fair_share.FCFS


def _ready_condition(r: _Round, desired: int) -> list[Condition]:
    """The engine's conditions with Ready set: true at zero (the gateway wakes it) or with a
    ready replica, false while none is ready yet."""
    pool = r.pool.name
    ready = r.ready
    if desired == 0:
        verdict: tuple[bool, Reason, str] = (
            True,
            Reason.SCALED_TO_ZERO,
            "scaled to zero; the gateway holds the first request of any tenant and wakes it",
        )
    elif ready >= 1:
        verdict = (True, Reason.REPLICAS_READY, f"{ready}/{desired} replicas ready on {pool}")
    else:
        verdict = (
            False,
            Reason.WAITING_FOR_REPLICAS,
            f"0/{desired} replicas ready on {pool} (model loading or no GPU free)",
        )
    ok, reason, message = verdict
    return _set(
        list(r.engine.status.conditions),
        ConditionType.READY,
        ok,
        reason,
        message,
        generation=r.engine.generation,
        now=r.now,
    )


__all__ = [
    "AdapterOp",
    "EnginePod",
    "EnginePodAddress",
    "FleetLoad",
    "FleetScaleDecision",
    "FleetScaleInputs",
    "SharedEnginePlan",
    "SharedObserved",
    "TenantUpdate",
    "adapter_replicas",
    "aggregate_queue",
    "clearing_queue",
    "decide_fleet",
    "engine_of",
    "fleet_load",
    "place_adapters",
    "plan_shared_engine",
    "serves",
]
