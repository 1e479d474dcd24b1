"""Shared engines in the simulator: many LoRA tenants on one fleet of base-model replicas.

Role: advance every tenant of one base model through its :class:`~tidepool.sim.traces.TenantLoad`
on one SharedEngine fleet, step by step on the ``dt`` grid of :mod:`tidepool.sim.engine`, and
return what the fleet spent and what each tenant waited. The fleet's size and which replica holds
which adapter come from :func:`tidepool.policy.shared_engine.plan_shared_engine`, the very plan
the operator's SharedEngine reconcile runs (its autoscaler is :func:`tidepool.policy.shared_engine
.decide_fleet`: the aggregate queue, and every member's offered load from its arrivals as the
gateway's counters show it, :class:`tidepool.sim.engine.OfferedLoad`). The queue it reads is
what the replicas and the gateway held at the end of the previous step, after admission: busy
seats (a request shorter than a step holds its fraction of a seat, Little's law at any ``dt``, as
the per-tenant simulator counts it) plus requests still waiting. With ``promote=True`` the tenants
also move between the fleet and replicas of their own by :func:`tidepool.policy.placement.decide`
with the SharedEngine as their serverless option (:func:`tidepool.policy.plan.engine_share`), the
rule the operator's plan applies to an ``auto`` LoRA tenant.

The physics, as vLLM serves LoRA (``--enable-lora``):

* a replica has ``max_num_seqs`` batch seats and runs requests of at most ``max_loras`` distinct
  adapters at once; a request whose adapter would be one too many waits while requests of
  adapters already running go past it (vLLM's scheduler skips it). Requests move as fluid
  cohorts, so a small tenant may run a fraction of a request on a replica: ``x`` busy seats mean
  at least one of its requests is running a ``1 - e^-x`` share of the time (Poisson occupancy),
  and the batch's distinct adapters are counted in expectation, ``sum(1 - e^-x)``, which
  admission keeps at most ``max_loras`` (counting every tenant with any fraction running as a
  whole adapter would let four trickling tenants block a replica's other 60 seats). Its GPU
  slots hold ``max_loras`` adapters, evicting the least recently used one that no running needs,
  and a swap into a slot (:data:`~tidepool.policy.lora_timing.SWAP_IN_SECONDS`)
  is added to the seat time of the requests that caused it;
* a replica serves a tenant only once the operator has loaded the tenant's adapter on it (the
  plan's loads, through vLLM's ``/v1/load_lora_adapter``), which takes
  :func:`~tidepool.policy.lora_timing.load_seconds` of its rank, rounded up to a
  step; adapters the plan unloads stop taking new requests at once (running ones finish);
* the gateway holds each tenant's requests in arrival order and sends them to replicas that hold
  the adapter: first those already running it (no new adapter in their batch), then the one
  with the most free seats;
* the fleet starts from zero on any tenant's request: the gateway's wake push (the tenant's
  wake annotation, stamped with the time) makes the operator reconcile at once, and a replica is
  Ready a model load (``cold_start_s``) later. While replicas are up, a tenant's first request
  costs only the adapter's load. The operator looks again at the plan's requeue interval, as its
  daemon does.

Spend: the fleet's GPU-hours on the shared pool (every provisioned replica, starting ones
included), priced once at the end. Each tenant's spend is the fleet's apportioned by the tokens
the fleet served for it; its chargeback, beside it, is those tokens at the pool's per-token price.
Queue waits are whole steps, as in :mod:`tidepool.sim.engine`; after the trace the fleet drains
what is queued, for at most :data:`~tidepool.sim.engine.DRAIN_CAP_S`.

Promotion (``promote=True``), once a simulated minute and make-before-break as the operator
moves a tenant: a tenant promoted at step ``i`` (to dedicated replicas of its own, or a hybrid
floor) keeps sending to the fleet until its own replicas are Ready a model load later, then to
them; its adapter leaves the fleet once its requests queued there are served. A tenant demoted
goes back to the fleet's members at once (the plan loads its adapter) and keeps sending to its
own replicas until a ready replica of the fleet holds its adapter (if the fleet is at zero, until
another tenant wakes it). A move between dedicated and hybrid starts the new replicas first too.
:meth:`FleetRun.own_segments` gives the steps each tenant sent to its own replicas, and in which
mode; the caller simulates those with the per-tenant simulator (:mod:`tidepool.sim.shared_compare`).

This module must not read files or decide replica counts, adapter placement or promotion itself.
"""

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

import numpy as np

from tidepool.api import durations, labels
from tidepool.api.v1alpha1 import (
    AdapterSpec,
    DeploymentMode,
    InferenceDeployment,
    LoraSpec,
    SharedEngine,
)
from tidepool.policy import cost, lora_timing, placement, plan
from tidepool.policy import shared_engine as policy
from tidepool.policy.signals import NoData, Sample
from tidepool.sim import config, engine, traces

#: Name of the simulated SharedEngine and of its engine Deployment.
ENGINE_NAME: Final = "fleet"
#: The gateway counters' window the fleet's autoscaler reads: it sizes on each tenant's last
#: minute (``Traffic.recent``), so asking the simulated counters for more would only cost time.
OFFERED_WINDOW_S: Final = 60.0
#: How often the promotion rule looks at every tenant: once a simulated minute (the placement
#: window is 10 minutes and the evidence must hold 20 more, so a finer grid changes nothing).
PROMOTION_EVERY_S: Final = 60.0
_EPS: Final = 1e-9


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """The SharedEngine's LoRA settings and the tenants' adapters.

    Defaults are the CRD's: ``maxLoras`` 4 and adapters of rank 16. ``max_cpu_loras`` None gives
    every replica room for every tenant's adapter (``max(maxLoras, tenants)``), as a platform
    sizing ``maxCpuLoras`` for its tenants would; a smaller value makes the plan spread the
    adapters over the replicas (:func:`tidepool.policy.shared_engine.place_adapters`).

    ``min_replicas`` is the SharedEngine's ``scaling.minReplicas``. Its CRD default is 0, but a
    fleet shared by many tenants is meant to stay warm, so that a tenant's first request costs
    an adapter load and not a model load: one replica for a whole pool is a small price, and the
    simulation keeps it (``--fleet-min-replicas 0`` gives the CRD default).
    """

    max_loras: int = LoraSpec().max_loras
    max_cpu_loras: int | None = None
    adapter_rank: int = AdapterSpec(name="a", source="a").rank
    min_replicas: int = 1

    def __post_init__(self) -> None:
        if self.max_loras < 1:
            raise ValueError(f"--max-loras must be >= 1, got {self.max_loras}")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"--max-cpu-loras ({self.max_cpu_loras}) must be >= --max-loras ({self.max_loras})"
            )
        if self.adapter_rank < 1:
            raise ValueError(f"--adapter-rank must be >= 1, got {self.adapter_rank}")
        if self.min_replicas < 0:
            raise ValueError(f"--fleet-min-replicas must be >= 0, got {self.min_replicas}")


def shared_engine(cfg: config.SimConfig, fleet: FleetSettings, tenants: int) -> SharedEngine:
    """The SharedEngine a simulated fleet stands for: the tenants' base model and engine on the
    shared pool, scaling as an InferenceDeployment of the simulation scales (same target, idle
    window and bounds)."""
    eng = cfg.engine
    cap = cfg.capacity()
    scaling = cfg.scaling
    lora: dict[str, object] = {"maxLoras": fleet.max_loras, "maxLoraRank": 512}
    lora["maxCpuLoras"] = (
        fleet.max_cpu_loras
        if fleet.max_cpu_loras is not None
        else max(fleet.max_loras, min(tenants, 4096))
    )
    return SharedEngine.model_validate(
        {
            "metadata": {"name": ENGINE_NAME, "generation": 1},
            "spec": {
                "model": {"name": f"sim-{eng.model_params_b:g}b"},
                "pool": config.SHARED_POOL,
                "engine": {
                    "maxNumSeqs": eng.max_num_seqs,
                    "gpusPerReplica": eng.gpus_per_replica,
                    "capacity": {
                        "prefillTokensPerSecond": cap.prefill_tokens_per_s,
                        "decodeTokensPerSecond": cap.decode_tokens_per_s,
                    },
                },
                "scaling": {
                    "minReplicas": fleet.min_replicas,
                    "maxReplicas": scaling.max_replicas,
                    "targetQueueDepth": scaling.target_queue_depth,
                    "scaleToZeroAfter": scaling.scale_to_zero_after,
                },
                "lora": lora,
            },
        }
    )


def adapter_name(index: int) -> str:
    """The adapter (and InferenceDeployment) name of tenant ``index``: ``t-0007``."""
    return f"t-{index:04d}"


def lora_tenant(cfg: config.SimConfig, fleet: FleetSettings, index: int) -> InferenceDeployment:
    """Tenant ``index`` as an ``auto`` LoRA InferenceDeployment of the fleet's base model."""
    base = cfg.tenant(DeploymentMode.AUTO, name=adapter_name(index))
    name = adapter_name(index)
    model = base.spec.model.model_copy(
        update={
            "adapter": AdapterSpec(name=name, source=f"/adapters/{name}", rank=fleet.adapter_rank)
        }
    )
    return base.model_copy(update={"spec": base.spec.model_copy(update={"model": model})})


class Route(Enum):
    """Where a tenant's new requests go, and whether the fleet serves it (module docstring)."""

    FLEET = "fleet"
    TO_OWN = "to-own"  # promoted; own replicas loading, requests still on the fleet
    OWN_DRAINING = "own-draining"  # requests to own replicas; the fleet serves its queue
    OWN = "own"
    TO_FLEET = "to-fleet"  # demoted; requests to own replicas until the fleet holds the adapter

    @property
    def sends_to_fleet(self) -> bool:
        return self in (Route.FLEET, Route.TO_OWN)

    @property
    def member(self) -> bool:
        """Whether the fleet's plan serves the tenant (holds its adapter)."""
        return self is not Route.OWN


#: The modes of a tenant's own replicas, as :attr:`FleetRun.own_mode` codes them (index + 1).
OWN_MODES: Final = (DeploymentMode.DEDICATED, DeploymentMode.HYBRID)


@dataclass(frozen=True, slots=True)
class OwnSegment:
    """Steps ``[lo, hi)`` a tenant sent to replicas of its own, in ``mode`` (hybrid: ``floor``)."""

    lo: int
    hi: int
    mode: DeploymentMode
    floor: int = 0


def own_segments(mode_row: np.ndarray, floor_row: np.ndarray) -> list[OwnSegment]:
    """Runs of equal, nonzero (mode, floor) codes. E.g. modes ``[0, 1, 1, 2, 0]`` with floors
    ``[0, 0, 0, 3, 0]``: dedicated over steps 1-2 and hybrid (floor 3) over step 3."""
    out: list[OwnSegment] = []
    lo = 0
    for i in range(1, len(mode_row) + 1):
        if i == len(mode_row) or (mode_row[i], floor_row[i]) != (mode_row[lo], floor_row[lo]):
            if mode_row[lo]:
                out.append(OwnSegment(lo, i, OWN_MODES[int(mode_row[lo]) - 1], int(floor_row[lo])))
            lo = i
    return out


@dataclass(frozen=True, slots=True)
class FleetRun:
    """What one fleet did: its spend and replicas, and per tenant what it served and waited.

    Per-tenant arrays are indexed like the loads given to :func:`simulate_fleet`.
    """

    tenants: tuple[str, ...]
    dt: float
    trace_steps: int
    gpu_hours: float
    spend: float
    price_per_million_tokens: float
    tokens: np.ndarray
    """Tokens the fleet served for each tenant (admitted to a replica)."""
    requests: np.ndarray
    """Requests each tenant sent to the fleet."""
    wait_weights: tuple[np.ndarray, ...]
    """Per tenant, requests per whole-step wait on the fleet."""
    unserved: np.ndarray
    replicas_timeline: np.ndarray
    spend_timeline: np.ndarray
    replica_starts: int
    adapter_loads: int
    adapter_swaps: int
    max_batch_adapters: float
    """The most distinct adapters any replica's batch held, in expectation (module docstring;
    never above ``max_loras``)."""
    own_mode: np.ndarray
    """``own_mode[t, i]``: where tenant ``t``'s arrivals of step ``i`` went: 0 the fleet, else
    the :data:`OWN_MODES` index + 1 of its own replicas' mode."""
    own_floor: np.ndarray
    """``own_floor[t, i]``: the hybrid floor of those own replicas (0 when not hybrid)."""
    promoted_at: tuple[tuple[int, ...], ...]
    """Per tenant, the steps at which it was promoted (its own replicas started)."""
    decisions: tuple[str, ...] = ()

    @property
    def spend_by_tenant(self) -> np.ndarray:
        """The fleet's spend apportioned by the tokens it served for each tenant (equal shares
        when it served none). E.g. $30 of fleet spend, tokens 1M and 2M: $10 and $20."""
        total = float(self.tokens.sum())
        if total <= 0:
            n = len(self.tenants)
            return np.full(n, self.spend / n) if n else np.zeros(0)
        return self.spend * self.tokens / total

    @property
    def gpu_hours_by_tenant(self) -> np.ndarray:
        return self.spend_by_tenant * (self.gpu_hours / self.spend if self.spend else 0.0)

    @property
    def chargeback_by_tenant(self) -> np.ndarray:
        return np.array(
            [cost.serverless_cost(float(x), self.price_per_million_tokens) for x in self.tokens]
        )

    def own_segments(self, k: int) -> list[OwnSegment]:
        """Where tenant ``k`` ran on replicas of its own (:func:`own_segments`)."""
        return own_segments(self.own_mode[k], self.own_floor[k])

    def tenant_run(self, k: int, controller: str) -> engine.TenantRun:
        """Tenant ``k``'s part of the fleet as a per-tenant run: its apportioned spend, its
        chargeback and its waits (no timelines: those belong to the fleet)."""
        empty = np.zeros(0, dtype=np.float32)
        return engine.TenantRun(
            tenant=self.tenants[k],
            controller=controller,
            dt=self.dt,
            gpu_hours_shared=float(self.gpu_hours_by_tenant[k]),
            gpu_hours_dedicated=0.0,
            spend_shared=float(self.spend_by_tenant[k]),
            spend_dedicated=0.0,
            chargeback=float(self.chargeback_by_tenant[k]),
            tokens_shared=float(self.tokens[k]),
            requests=float(self.requests[k]),
            replica_starts=0,
            wait_weights=self.wait_weights[k],
            shared_timeline=empty,
            dedicated_timeline=empty,
            demand_timeline=np.zeros(0),
            spend_timeline=np.zeros(0),
            modes=((0.0, "shared-engine"),),
            trace_steps=self.trace_steps,
            unserved=float(self.unserved[k]),
        )


class _Replica:
    """One engine replica of the fleet: adapters it holds, its GPU slots and its batch."""

    __slots__ = (
        "adapters",
        "alive",
        "gpu",
        "name",
        "ready_at",
        "running",
        "shown",
        "total",
        "usable",
    )

    def __init__(self, name: str, ready_at: int) -> None:
        self.name = name
        self.ready_at = ready_at
        self.alive = True
        self.shown = 0.0  # busy seats at the end of the last step: what /metrics reports
        self.usable: dict[int, int] = {}  # tenant -> first step its adapter serves here
        self.gpu: OrderedDict[int, None] = OrderedDict()  # GPU adapter slots, LRU first
        self.running: dict[int, float] = {}  # tenant -> busy seats
        self.total = 0.0
        self.adapters = 0.0  # expected distinct adapters in the batch: sum of 1 - e^-running

    def run(self, tenant: int, seats: float) -> None:
        """Add (or, negative, remove) ``seats`` busy seats of ``tenant``."""
        before = self.running.get(tenant, 0.0)
        after = before + seats
        self.total += seats
        self.adapters += math.exp(-before) - math.exp(-max(0.0, after))
        if after <= _EPS:
            self.running.pop(tenant, None)
        else:
            self.running[tenant] = after
        if not self.running:  # no float residue left to look like a queue to the autoscaler
            self.total = self.adapters = 0.0


def _adapter_room(r: _Replica, tenant: int, max_loras: int) -> float:
    """Seats ``tenant`` may add to ``r``'s batch before its expected distinct adapters exceed
    ``max_loras`` (module docstring): the others use ``A`` of the slots, so the tenant's
    ``1 - e^-x`` may reach ``max_loras - A``. E.g. max_loras 4, others at 3.5, the tenant at 0:
    ``x <= -ln(1 - 0.5) = 0.69`` seats; others at 3.0 or less: no limit."""
    mine = r.running.get(tenant, 0.0)
    budget = max_loras - (r.adapters - (1.0 - math.exp(-mine)))
    if budget >= 1.0 - _EPS:
        return math.inf
    if budget <= 0.0:
        return 0.0
    return max(0.0, -math.log(1.0 - budget) - mine)


@dataclass(slots=True)
class _Cohort:
    arrived: int
    count: float
    svc_steps: float
    tokens_per_request: float


@dataclass(slots=True)
class _Tenant:
    """Per-tenant state of the run (the promotion side included)."""

    infd: InferenceDeployment
    route: Route = Route.FLEET
    mode: DeploymentMode = DeploymentMode.SERVERLESS
    """Where it runs now: serverless is the fleet, else replicas of its own."""
    floor: int = 0
    switch_at: int = -1
    """A move's step at which the new own replicas are Ready."""
    next_mode: DeploymentMode = DeploymentMode.SERVERLESS
    next_floor: int = 0
    queue: deque[_Cohort] = field(default_factory=deque)
    waiting: float = 0.0
    shown: float = 0.0
    """Requests the gateway held at the end of the last step: what its metric reports."""
    promoted_at: list[int] = field(default_factory=list)


def aggregate(loads: Sequence[traces.TenantLoad], name: str) -> traces.TenantLoad:
    """The loads of several tenants as one: arrivals and tokens summed, the service time the
    seat-second-weighted mean. E.g. 2 requests of 4 s and 1 of 10 s in a step: 3 requests of 6 s."""
    steps = len(loads[0].arrivals) if loads else 0
    arrivals = np.sum([ld.arrivals for ld in loads], axis=0) if loads else np.zeros(0)
    seat_s = np.sum([ld.arrivals * ld.service_s for ld in loads], axis=0) if loads else arrivals
    return traces.TenantLoad(
        name,
        arrivals,
        np.sum([ld.input_tokens for ld in loads], axis=0) if loads else np.zeros(0),
        np.sum([ld.output_tokens for ld in loads], axis=0) if loads else np.zeros(0),
        np.divide(seat_s, arrivals, out=np.zeros(steps), where=arrivals > 0),
    )


def simulate_fleet(
    loads: Sequence[traces.TenantLoad],
    cfg: config.SimConfig,
    fleet: FleetSettings,
    *,
    dt: float,
    start: datetime,
    own: frozenset[int] = frozenset(),
    promote: bool = False,
    progress: Callable[[str], None] | None = None,
) -> FleetRun:
    """Run ``loads`` on one SharedEngine fleet (module docstring). ``own``: tenants that never use
    the fleet (a static split; their requests are not simulated here). ``promote``: move tenants
    by the placement policy as the run goes (module docstring)."""
    n_t = len(loads)
    n = len(loads[0].arrivals) if loads else 0
    limit = n + math.ceil(engine.DRAIN_CAP_S / dt)
    cap = cfg.engine.max_num_seqs
    gpr = cfg.engine.gpus_per_replica
    shared_price, _ = engine.pool_prices(cfg)
    pool, _ = cfg.pools()
    cold = max(1, math.ceil(cfg.engine.cold_start_s / dt))
    load_steps = max(1, math.ceil(lora_timing.load_seconds(fleet.adapter_rank) / dt - _EPS))
    swap_steps = lora_timing.SWAP_IN_SECONDS / dt
    max_loras = fleet.max_loras
    eng = shared_engine(cfg, fleet, n_t)
    names = [load.name for load in loads]
    state = [_Tenant(lora_tenant(cfg, fleet, t)) for t in range(n_t)]
    for t in own:
        state[t].route = Route.OWN
        state[t].mode = DeploymentMode.DEDICATED
        state[t].infd = _with_status(state[t].infd, effective_mode=DeploymentMode.DEDICATED)
    key_of = [policy.tenant_key(s.infd) for s in state]
    index_of = {adapter_name(t): t for t in range(n_t)}

    arrivals = np.stack([ld.arrivals for ld in loads]) if loads else np.zeros((0, 0))
    svc = np.stack([np.maximum(1e-3, ld.service_s / dt) for ld in loads]) if loads else arrivals
    per_req = (
        np.stack(
            [
                np.divide(ld.tokens, ld.arrivals, out=np.zeros(n), where=ld.arrivals > 0)
                for ld in loads
            ]
        )
        if loads
        else arrivals
    )
    busy_steps = [np.flatnonzero(arrivals[:, i]).tolist() for i in range(n)]
    horizon = limit + math.ceil(float(svc.max(initial=1.0)) + swap_steps) + 3
    done: list[list[tuple[_Replica, int, float]]] = [[] for _ in range(horizon)]
    waits = np.zeros((n_t, limit + 1))
    served = np.zeros((n_t, limit + 1))  # admitted per step (promotion evidence)
    late = np.zeros((n_t, limit + 1))  # admitted per step after waiting past the SLO
    tok = np.zeros((n_t, limit + 1))  # tokens admitted per step
    sent = np.zeros(n_t)
    own_mode = np.zeros((n_t, max(1, n)), dtype=np.int8)
    own_floor = np.zeros((n_t, max(1, n)), dtype=np.int16)
    replicas_tl = np.zeros(limit, dtype=np.float32)
    spend_tl = np.zeros(limit)
    gpu_steps = 0.0
    step_h = dt / 3600.0
    slo_steps = cfg.slo_p99_s / dt

    fleet_pods: list[_Replica] = []
    made = 0
    starts = 0
    adapter_loads = 0
    swaps = 0
    max_batch = 0.0
    history = plan.History()
    started_at = start - timedelta(days=1)
    decisions: list[str] = []

    # Each tenant's offered load, as the gateway's counters show it to the operator: the fleet's
    # autoscaler reads every member's, the promotion rule every tenant's.
    offered = [
        engine.OfferedLoad(ld, dt, cfg.capacity(), _seconds(cfg.scaling.scale_to_zero_after))
        for ld in loads
    ]

    def now_at(i: int) -> datetime:
        return start + timedelta(seconds=i * dt)

    def ready(i: int) -> list[_Replica]:
        return [r for r in fleet_pods if r.ready_at <= i]

    def resize(target: int, i: int, ready_at: int | None = None) -> None:
        nonlocal made, starts
        while len(fleet_pods) < target:
            made += 1
            fleet_pods.append(
                _Replica(f"{ENGINE_NAME}-{made:06d}", i + cold if ready_at is None else ready_at)
            )
            if ready_at is None:
                starts += 1
        while len(fleet_pods) > target:
            # A ReplicaSet deletes pods that are not ready first, then the newest.
            loading = [r for r in fleet_pods if r.ready_at > i]
            victim = loading[-1] if loading else fleet_pods[-1]
            victim.alive = False
            fleet_pods.remove(victim)

    def observe(i: int, pods: list[_Replica]) -> policy.SharedObserved:
        now = now_at(i)
        return policy.SharedObserved(
            pool=pool,
            deployment=plan.ObservedDeployment(
                name=ENGINE_NAME,
                pool=config.SHARED_POOL,
                replicas=len(fleet_pods),
                ready_replicas=len(pods),
                updated_replicas=len(pods),
                generation_observed=True,
            ),
            pods=tuple(
                policy.EnginePod(
                    name=r.name,
                    endpoint="",
                    ready=True,
                    loaded=frozenset(adapter_name(t) for t in r.usable),
                    queue=Sample(r.shown, now),
                )
                for r in pods
            ),
            held={key_of[t]: Sample(state[t].shown, now) for t in range(n_t)},
            load_errors={},
            operator_started_at=started_at,
            cold_start=timedelta(seconds=cfg.engine.cold_start_s),
            traffic={
                key_of[t]: offered[t](OFFERED_WINDOW_S) or NoData("no traffic observed yet")
                for t in range(n_t)
                if state[t].route.member
            },
        )

    def tick(i: int, usable_from: int, ready_at: int | None = None) -> policy.SharedEnginePlan:
        """One reconcile of the SharedEngine: the operator's plan, carried out."""
        nonlocal eng, history, adapter_loads
        pods = ready(i)
        for load in offered:
            load.last = i - 1
        result = policy.plan_shared_engine(
            eng, [s.infd for s in state], observe(i, pods), history, now_at(i)
        )
        history = result.history
        eng = eng.model_copy(update={"status": result.status})
        for update in result.tenants:
            t = index_of[update.name]
            if update.last_wake_handled != state[t].infd.status.last_wake_handled:
                status = state[t].infd.status.model_copy(
                    update={"last_wake_handled": update.last_wake_handled}
                )
                state[t].infd = state[t].infd.model_copy(update={"status": status})
        resize(result.replicas, i, ready_at)
        by_name = {r.name: r for r in fleet_pods}
        for op in result.unloads:
            r = by_name.get(op.pod)
            u = index_of.get(op.adapter)
            if r is not None and u is not None:
                r.usable.pop(u, None)
                r.gpu.pop(u, None)
        for op in result.loads:
            r = by_name.get(op.pod)
            u = index_of.get(op.adapter)
            if r is not None and u is not None and u not in r.usable:
                r.usable[u] = usable_from
                adapter_loads += 1
        return result

    # -- warm start: the fleet was serving this traffic before the trace began ---------------
    fleet_loads = [loads[t] for t in range(n_t) if t not in own]
    if fleet_loads:
        total = aggregate(fleet_loads, "fleet")
        concurrency = engine.warm_start_concurrency(
            total, dt, _seconds(cfg.scaling.scale_down_stabilization)
        )
        # As the per-tenant warm start: plan until the fleet is steady with the in-flight
        # requests of the busiest recent minute spread over its replicas, every one Ready and
        # holding its adapters.
        resize(math.ceil(concurrency / cfg.scaling.target_queue_depth - _EPS), 0, ready_at=-1)
        for _ in range(16):
            before = len(fleet_pods)
            for r in fleet_pods:
                r.total = r.shown = concurrency / len(fleet_pods)
            tick(0, usable_from=0, ready_at=-1)
            if len(fleet_pods) == before:
                break
        for r in fleet_pods:
            r.total = r.shown = 0.0
        tick(0, usable_from=0, ready_at=-1)
    next_tick = 0

    # -- promotion: the placement policy, as the operator's plan calls it for a LoRA tenant ----
    rule_window_s = placement.PlacementPolicy.from_spec(cfg.placement).window.total_seconds()
    window_steps = max(1, round(rule_window_s / dt))
    eval_steps = max(1, round(PROMOTION_EVERY_S / dt))
    cum_in = np.zeros((n_t, n + 1))
    cum_out = np.zeros((n_t, n + 1))
    if promote and n:
        cum_in[:, 1:] = np.cumsum(np.stack([ld.input_tokens for ld in loads]), axis=1)
        cum_out[:, 1:] = np.cumsum(np.stack([ld.output_tokens for ld in loads]), axis=1)
    pools = cfg.pools()
    cold_start = timedelta(seconds=cfg.engine.cold_start_s)

    def evaluate(i: int) -> None:
        """Placement for every tenant not moving: :func:`tidepool.policy.placement.decide` with
        the SharedEngine as its serverless option (:func:`tidepool.policy.plan.engine_share`),
        the tenants' offered load recorded in their status as the operator records it."""
        now = now_at(i)
        lo = max(0, i - window_steps)
        span = max(1, i - lo) * dt
        mean_in = (cum_in[:, i] - cum_in[:, lo]) / span
        mean_out = (cum_out[:, i] - cum_out[:, lo]) / span
        for t, s in enumerate(state):
            if s.route.member:
                status = s.infd.status.model_copy(
                    update={
                        "offered_input_tokens_per_second": float(mean_in[t]),
                        "offered_output_tokens_per_second": float(mean_out[t]),
                    }
                )
                s.infd = s.infd.model_copy(update={"status": status})
        observed = plan.Observed(
            pools=pools,
            deployments={},
            pod_problems=(),
            demand=NoData("not needed for placement"),
            traffic=NoData("per tenant below"),
            inflight={},
            operator_started_at=started_at,
            cold_start=cold_start,
            shared_engine=eng,
            engine_tenants=tuple(s.infd for s in state if s.route.member),
        )
        for t, s in enumerate(state):
            if t in own or s.route in (Route.TO_OWN, Route.TO_FLEET, Route.OWN_DRAINING):
                continue
            if s.switch_at > i:  # an own -> own move still starting its new replicas
                continue
            offered[t].last = i - 1
            traffic = offered[t](rule_window_s) or NoData("no traffic observed yet")
            current = s.mode
            decision = placement.decide(
                plan.placement_inputs(
                    s.infd,
                    traffic,
                    current,
                    shared=pools[0],
                    dedicated=pools[1],
                    cap=cfg.capacity(),
                    cold_start=cold_start,
                    engine=plan.engine_share(
                        s.infd, observed, on_engine=current == DeploymentMode.SERVERLESS
                    ),
                ),
                now,
            )
            since = s.infd.status.placement_since
            moved = decision.move and decision.mode != current
            if moved or (
                since is None
                and decision.reason
                in (placement.PlacementReason.HOLDING, placement.PlacementReason.FIXED_MODE)
            ):
                since = now
            s.infd = _with_status(
                s.infd,
                placement_since=since,
                utilization_above_since=decision.above_since,
                utilization_below_since=decision.below_since,
            )
            if not moved:
                continue
            decisions.append(f"{now:%H:%M} {names[t]} {decision.reason}: {decision.message}")
            floor = decision.floor_replicas if decision.mode == DeploymentMode.HYBRID else 0
            if current == DeploymentMode.SERVERLESS:
                s.route = Route.TO_OWN
                s.promoted_at.append(i)
            elif decision.mode == DeploymentMode.SERVERLESS:
                s.route = Route.TO_FLEET
                s.infd = _with_status(s.infd, effective_mode=DeploymentMode.SERVERLESS)
                s.mode = DeploymentMode.SERVERLESS
                continue
            s.switch_at = i + cold  # make-before-break: its new replicas load first
            s.next_mode, s.next_floor = decision.mode, floor

    # -- the run -----------------------------------------------------------------------------
    hour_steps = max(1, round(3600.0 / dt))
    i = 0
    busy_until = 0
    next_eval = window_steps
    queued_total = 0.0
    while i < n or (i < limit and (queued_total > _EPS or i < busy_until)):
        for r, t, slots in done[i]:
            if r.alive:
                r.run(t, -slots)
        pods = ready(i)
        if promote:
            _reroute(state, pods, i, limit)
            if i < n:
                for t, s in enumerate(state):
                    if not s.route.sends_to_fleet and t not in own:
                        own_mode[t, i] = OWN_MODES.index(s.mode) + 1 if s.mode in OWN_MODES else 1
                        own_floor[t, i] = s.floor
        wake_now = False
        if i < n:
            for t in busy_steps[i]:
                s = state[t]
                a = float(arrivals[t, i])
                if not s.route.sends_to_fleet:
                    continue
                s.queue.append(_Cohort(i, a, float(svc[t, i]), float(per_req[t, i])))
                s.waiting += a
                queued_total += a
                sent[t] += a
                if not pods and _wake(s):
                    s.infd = _annotate_wake(s.infd, now_at(i).isoformat())
                    wake_now = True
        if i >= next_tick or wake_now:
            result = tick(i, usable_from=i + load_steps)
            next_tick = i + max(1, math.ceil(result.requeue_after.total_seconds() / dt - _EPS))
            if len(ready(i)) < result.replicas:
                # The reconcile looks again within a second while a replica is starting (nothing
                # pokes it when a pod turns Ready), so its adapters load as soon as it is up.
                next_tick = i + 1
            pods = ready(i)
        if promote and i >= next_eval and i < n:
            evaluate(i)
            next_eval = i + eval_steps
        if queued_total > _EPS and pods:
            order = sorted(
                (t for t in range(n_t) if state[t].waiting > _EPS),
                key=lambda t: state[t].queue[0].arrived,
            )
            for t in order:
                s = state[t]
                cands = [r for r in pods if r.usable.get(t, limit) <= i]
                while s.queue and cands:
                    c = s.queue[0]
                    cands.sort(key=lambda r: (t not in r.running, r.total))
                    for r in cands:
                        free = cap - r.total
                        if free <= _EPS or c.count <= _EPS:
                            continue
                        room = _adapter_room(r, t, max_loras)
                        if room <= _EPS:
                            continue
                        extra = 0.0
                        if t in r.gpu:
                            r.gpu.move_to_end(t)
                        else:
                            if len(r.gpu) >= max_loras:
                                # The least recently used adapter no request runs, else (in
                                # the fluid batch, more than max_loras tenants may each run a
                                # fraction of a request) the least recently used.
                                idle = next((a for a in r.gpu if a not in r.running), None)
                                del r.gpu[next(iter(r.gpu)) if idle is None else idle]
                            r.gpu[t] = None
                            swaps += 1
                            extra = swap_steps
                        steps_held = c.svc_steps + extra
                        unit = min(1.0, steps_held)
                        span_steps = max(1.0, steps_held)
                        take = min(c.count, min(free, room) / unit)
                        slots = take * unit
                        whole = int(span_steps)
                        frac = span_steps - whole
                        done[i + whole].append((r, t, slots * (1.0 - frac)))
                        if frac > 0:
                            done[i + whole + 1].append((r, t, slots * frac))
                        busy_until = max(busy_until, i + whole + (1 if frac > 0 else 0))
                        r.run(t, slots)
                        max_batch = max(max_batch, r.adapters)
                        wait = i - c.arrived
                        waits[t, wait] += take
                        served[t, i] += take
                        if wait > slo_steps:
                            late[t, i] += take
                        tok[t, i] += take * c.tokens_per_request
                        c.count -= take
                        s.waiting -= take
                        queued_total -= take
                    if c.count <= _EPS:
                        s.waiting -= c.count
                        s.queue.popleft()
                    else:
                        break  # no replica takes more of this tenant this step
                if not s.queue:
                    s.waiting = 0.0
            queued_total = sum(s.waiting for s in state)
        # What the replicas' and the gateway's metrics show the next reconcile: this step's
        # requests admitted, each short one holding its fraction of a seat (Little's law at any
        # dt, as the per-tenant simulator's queue signal), the rest still held. Counted before
        # admission, a whole step's arrivals would read as held at once.
        for r in fleet_pods:
            r.shown = r.total
        for s in state:
            s.shown = s.waiting
        replicas_tl[i] = len(fleet_pods)
        gpu_steps += shared_price.gpus_held(len(fleet_pods), gpr)
        spend_tl[i] = cost.dedicated_cost(gpu_steps, shared_price.price_per_gpu_hour, step_h)
        i += 1
        if progress is not None and i % hour_steps == 0:
            progress(
                f"fleet{' with promotions' if promote else ''}: hour {i // hour_steps} of"
                f" {math.ceil(n / hour_steps)}, {len(fleet_pods)} replicas"
            )
    unserved = np.zeros(n_t)
    for t, s in enumerate(state):
        for c in s.queue:
            waits[t, min(limit, i - c.arrived)] += c.count
            unserved[t] += c.count
    return FleetRun(
        tenants=tuple(names),
        dt=dt,
        trace_steps=n,
        gpu_hours=gpu_steps * step_h,
        spend=cost.dedicated_cost(gpu_steps, shared_price.price_per_gpu_hour, step_h),
        price_per_million_tokens=shared_price.price_per_million_tokens or 0.0,
        tokens=tok.sum(axis=1),
        requests=sent,
        wait_weights=tuple(waits[t, : i + 1].copy() for t in range(n_t)),
        unserved=unserved,
        replicas_timeline=replicas_tl[:i],
        spend_timeline=spend_tl[:i],
        replica_starts=starts,
        adapter_loads=adapter_loads,
        adapter_swaps=swaps,
        max_batch_adapters=max_batch,
        own_mode=own_mode,
        own_floor=own_floor,
        promoted_at=tuple(tuple(s.promoted_at) for s in state),
        decisions=tuple(decisions),
    )


def _reroute(state: list[_Tenant], pods: list[_Replica], i: int, limit: int) -> None:
    """Routing changes that wait for a condition (module docstring, "Promotion")."""
    for t, s in enumerate(state):
        if s.switch_at == i:  # new own replicas Ready: routing shifts to them
            s.mode, s.floor = s.next_mode, s.next_floor
            if s.route is Route.TO_OWN:
                s.route = Route.OWN_DRAINING
        if s.route is Route.OWN_DRAINING and s.waiting <= _EPS:
            s.route = Route.OWN
            s.infd = _with_status(s.infd, effective_mode=s.mode)
        if s.route is Route.TO_FLEET and any(r.usable.get(t, limit) <= i for r in pods):
            s.route = Route.FLEET


def _seconds(duration: str) -> float:
    return durations.parse(duration).total_seconds()


def _with_status(infd: InferenceDeployment, **fields: object) -> InferenceDeployment:
    """``infd`` with these status fields (``effective_mode`` is what :func:`policy.serves`
    reads; the placement timers are what :func:`tidepool.policy.plan.placement_inputs` reads)."""
    return infd.model_copy(update={"status": infd.status.model_copy(update=fields)})


def _wake(s: _Tenant) -> bool:
    """Whether the gateway has no wake of this tenant pending (it pushes one per wake)."""
    return (
        labels.pending_wake(s.infd.metadata.get("annotations"), s.infd.status.last_wake_handled)
        is None
    )


def _annotate_wake(infd: InferenceDeployment, value: str) -> InferenceDeployment:
    meta = dict(infd.metadata)
    meta["annotations"] = {**(meta.get("annotations") or {}), labels.WAKE_REQUESTED_AT: value}
    return infd.model_copy(update={"metadata": meta})
