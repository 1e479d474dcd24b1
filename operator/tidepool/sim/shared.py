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
  the adapter, in the order :func:`tidepool.policy.adapter_affinity.preference` gives them (the
  very function :func:`tidepool.gateway.picking.choose` calls): first those already running it
  with a free seat, the one running the most of it (so a heavy adapter stays on the fewest
  replicas its load fills, and the others keep their ``max_loras`` slots); then the other
  holders with a free seat, the one whose batch runs the fewest adapters. A replica with no free
  seat takes nothing: the request stays held at the gateway (in vLLM, in the replica's waiting
  queue). Tenants are served in the engines' priority order
  (:func:`tidepool.policy.fair_share.priority`, which the gateway sends as each request's
  ``priority``): tenants within their fair share of the fleet's seats before those beyond it,
  so one tenant's burst does not hold every other tenant's requests behind it;
* the fleet starts from zero on any tenant's request: the gateway's wake push (the tenant's
  wake annotation, stamped with the time) makes the operator reconcile at once, and a replica is
  Ready a model load (``cold_start_s``) later. While replicas are up, a tenant's first request
  costs only the adapter's load. The operator looks again at the plan's requeue interval, as its
  daemon does.

Spend: the fleet's GPU-hours on the shared pool (every provisioned replica, starting ones
included), priced once at the end. Each tenant's spend is the fleet's apportioned by the tokens
the fleet served for it; its chargeback, beside it, is those tokens at the pool's per-token price.
Queue waits are whole steps, as in :mod:`tidepool.sim.engine`; after the trace the fleet drains
what is queued, for at most :data:`~tidepool.sim.engine.DRAIN_CAP_S`. Each step a tenant's
requests stay held counts toward why (:func:`hold_cause`, :attr:`FleetRun.held`): no replica
serving its adapter, every serving replica's seats busy, or batches out of ``max_loras`` slots.

Promotion (``promote=True``), once a simulated minute and make-before-break as the operator
moves a tenant: a tenant promoted at step ``i`` (to dedicated replicas of its own, or a hybrid
floor) keeps sending to the fleet until its own replicas are Ready a model load later, then to
them; its adapter leaves the fleet once its requests queued there are served. A tenant demoted
goes back to the fleet's members at once (the plan loads its adapter) and keeps sending to its
own replicas until a ready replica of the fleet holds its adapter (if the fleet is at zero, until
another tenant wakes it). A move between dedicated and hybrid starts the new replicas first too.
:meth:`FleetRun.own_segments` gives the steps each tenant sent to its own replicas, and in which
mode; the caller simulates those with the per-tenant simulator (:mod:`tidepool.sim.shared_compare`).
The rule reads what the operator's plan reads: each tenant's offered tokens, and its p99 time to
first byte on the fleet over the placement window (its requests' waits plus their prompts'
prefill, as the gateway's histogram measures them), so a tenant the fleet keeps waiting past its
SLO is promoted on that observation as the operator would promote it.

This module must not read files or decide replica counts, adapter placement or promotion itself.
"""

import dataclasses
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

import numpy as np

from tidepool.api import labels
from tidepool.api.v1alpha1 import (
    AdapterSpec,
    DeploymentMode,
    InferenceDeployment,
    LoraSpec,
    SharedEngine,
)
from tidepool.policy import adapter_affinity as affinity
from tidepool.policy import children, cost, fair_share, lora_promotion, lora_timing, placement, plan
from tidepool.policy import shared_engine as policy
from tidepool.policy.signals import NoData, Sample
from tidepool.sim import config, engine, report, traces

#: Name of the simulated SharedEngine and of its engine Deployment.
ENGINE_NAME: Final = "fleet"
#: The gateway counters' window the fleet's autoscaler reads: it sizes on each tenant's last
#: minute (``Traffic.recent``), so asking the simulated counters for more would only cost time.
OFFERED_WINDOW_S: Final = 60.0
#: How often the promotion rule looks at every tenant: once a simulated minute (the placement
#: window is 10 minutes and the evidence must hold 20 more, so a finer grid changes nothing).
PROMOTION_EVERY_S: Final = 60.0
_EPS: Final = 1e-9
#: Why a tenant's requests still wait after a step's admission (:func:`hold_cause`): the columns
#: of :attr:`FleetRun.held`.
HOLD_CAUSES: Final = ("no adapter", "seats", "maxLoras")


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
                "model": {"name": cfg.model_name()},
                "pool": config.SHARED_POOL,
                "engine": cfg.engine_spec(),
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
    held: np.ndarray = field(default_factory=lambda: np.zeros((0, len(HOLD_CAUSES))))
    """``held[t, c]``: request-steps tenant ``t``'s requests waited on the fleet for cause ``c``
    of :data:`HOLD_CAUSES` (:func:`hold_cause`), so a missed SLO can be told apart: a cold or
    loading fleet, a fleet too small for the load, or batches out of adapter slots."""

    def held_shares(self, tenants: Sequence[int]) -> np.ndarray:
        """The share of ``tenants``' held request-steps by cause (zeros when none waited). E.g.
        held ``[[0, 9, 1], [0, 0, 0]]``: ``[0, 0.9, 0.1]`` for both tenants."""
        total = self.held[list(tenants)].sum(axis=0) if len(self.held) else np.zeros(3)
        whole = float(total.sum())
        return total / whole if whole > 0 else np.zeros(len(HOLD_CAUSES))

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


def hold_cause(cands: Sequence[_Replica], seats: int) -> int:
    """Why a tenant's requests still wait once the gateway has placed all it could of them
    (:meth:`_FleetLoop._admit`), as an index of :data:`HOLD_CAUSES`, over ``cands``, the ready
    replicas serving its adapter:

    * 0, no adapter: none (the fleet is at zero or starting, or the adapter is still loading);
    * 1, seats: every one has its ``seats`` (vLLM's ``--max-num-seqs``) busy: the fleet is
      smaller than the load, as after a burst until new replicas are Ready a model load later;
    * 2, maxLoras: one still has free seats, so what stopped the gateway there is its batch
      running ``maxLoras`` adapters already (:func:`_adapter_room`; vLLM's scheduler skips the
      request).

    Why it matters: only the first two are cured by more replicas of the same kind.
    """
    if not cands:
        return 0
    return 2 if any(seats - r.total > _EPS for r in cands) else 1


@dataclass(slots=True)
class _Cohort:
    arrived: int
    count: float
    svc_steps: float
    tokens_per_request: float
    prefill_s: float
    """One of its prompts' prefill on a replica: what its time to first byte adds to the wait."""


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
    run = _FleetLoop(loads, cfg, fleet, dt=dt, start=start, own=own, promote=promote)
    run.warm_start()
    i = 0
    while run.running(i):
        run.step(i)
        i += 1
        if progress is not None and i % run.hour_steps == 0:
            progress(
                f"fleet{' with promotions' if promote else ''}: hour {i // run.hour_steps} of"
                f" {math.ceil(run.n / run.hour_steps)}, {len(run.fleet_pods)} replicas"
            )
    return run.result(i)


@dataclass(frozen=True, slots=True)
class _Demand:
    """Every tenant's arrivals as the fleet loop reads them, one row a tenant: requests per step,
    their service time in steps and their tokens per request; and per step the tenants that sent
    any (most of a long tail is idle most steps, so the loop visits only those)."""

    arrivals: np.ndarray
    svc: np.ndarray
    per_req: np.ndarray
    prefill_s: np.ndarray
    busy_steps: list[list[int]]

    @classmethod
    def of(
        cls, loads: Sequence[traces.TenantLoad], dt: float, n: int, prefill_tokens_per_s: float
    ) -> "_Demand":
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
        prefill_s = (
            np.stack(
                [
                    np.divide(ld.input_tokens, ld.arrivals, out=np.zeros(n), where=ld.arrivals > 0)
                    for ld in loads
                ]
            )
            / prefill_tokens_per_s
            if loads
            else arrivals
        )
        busy_steps = [np.flatnonzero(arrivals[:, i]).tolist() for i in range(n)]
        return cls(arrivals, svc, per_req, prefill_s, busy_steps)


class _FleetLoop:
    """The mutable state of one :func:`simulate_fleet` run and its steps.

    Why a class: the fleet's replicas, the tenants' queues and routes, the operator's plan history
    and the counters the result reports all change every step, and each step runs several phases
    (finish, route, arrive, reconcile, promote, admit, account) that read and write them. Holding
    them here lets each phase be a named method while the run stays one loop
    (:func:`simulate_fleet`)."""

    def __init__(
        self,
        loads: Sequence[traces.TenantLoad],
        cfg: config.SimConfig,
        fleet: FleetSettings,
        *,
        dt: float,
        start: datetime,
        own: frozenset[int],
        promote: bool,
    ) -> None:
        self.loads, self.cfg, self.dt, self.start = loads, cfg, dt, start
        self.own, self.promote = own, promote
        self.n_t = n_t = len(loads)
        self.n = n = len(loads[0].arrivals) if loads else 0
        self.limit = limit = n + math.ceil(engine.DRAIN_CAP_S / dt)
        self.cap = cfg.engine.max_num_seqs
        self.gpr = cfg.engine.gpus_per_replica
        self.shared_price, _ = engine.pool_prices(cfg)
        self.pool, _ = cfg.pools()
        self.cold = max(1, math.ceil(cfg.engine.cold_start_s / dt))
        self.load_steps = max(
            1, math.ceil(lora_timing.load_seconds(fleet.adapter_rank) / dt - _EPS)
        )
        self.swap_steps = lora_timing.SWAP_IN_SECONDS / dt
        self.max_loras = fleet.max_loras
        self.eng = shared_engine(cfg, fleet, n_t)
        self.names = [load.name for load in loads]
        self.state = [_Tenant(lora_tenant(cfg, fleet, t)) for t in range(n_t)]
        for t in own:
            s = self.state[t]
            s.route = Route.OWN
            s.mode = DeploymentMode.DEDICATED
            s.infd = _with_status(s.infd, effective_mode=DeploymentMode.DEDICATED)
        self.key_of = [policy.tenant_key(s.infd) for s in self.state]
        self.index_of = {adapter_name(t): t for t in range(n_t)}
        self.demand = _Demand.of(loads, dt, n, cfg.capacity().prefill_tokens_per_s)
        horizon = limit + math.ceil(float(self.demand.svc.max(initial=1.0)) + self.swap_steps) + 3
        self.done: list[list[tuple[_Replica, int, float]]] = [[] for _ in range(horizon)]
        self.waits = np.zeros((n_t, limit + 1))
        # Each tenant's admissions within the placement window, (step, time to first byte,
        # requests): what the gateway's histogram shows the promotion rule (promote=True only).
        self.first_bytes: list[deque[tuple[int, float, float]]] = [deque() for _ in range(n_t)]
        self.tok = np.zeros((n_t, limit + 1))  # tokens admitted per step
        self.held = np.zeros((n_t, len(HOLD_CAUSES)))  # request-steps held, by cause
        self.sent = np.zeros(n_t)
        self.own_mode = np.zeros((n_t, max(1, n)), dtype=np.int8)
        self.own_floor = np.zeros((n_t, max(1, n)), dtype=np.int16)
        self.replicas_tl = np.zeros(limit, dtype=np.float32)
        self.spend_tl = np.zeros(limit)
        self.gpu_steps = 0.0
        self.step_h = dt / 3600.0
        self.fleet_pods: list[_Replica] = []
        self.made = self.starts = self.adapter_loads = self.swaps = 0
        self.max_batch = 0.0
        self.history = plan.History()
        self.started_at = start - timedelta(days=1)
        self.decisions: list[str] = []
        # Each tenant's offered load, as the gateway's counters show it to the operator: the
        # fleet's autoscaler reads every member's, the promotion rule every tenant's.
        self.offered = [
            engine.OfferedLoad(ld, dt, cfg.capacity(), cfg.scaling.scale_to_zero_after.seconds)
            for ld in loads
        ]
        self._init_promotion()
        self.hour_steps = max(1, round(3600.0 / dt))
        self.next_tick = 0
        self.busy_until = 0
        self.next_eval = self.window_steps
        self.queued_total = 0.0

    def _init_promotion(self) -> None:
        """The placement policy's window and each tenant's cumulative tokens, which promotion
        reads as the operator's plan does for a LoRA tenant (its offered tokens per second)."""
        cfg, dt, n = self.cfg, self.dt, self.n
        self.rule_window_s = placement.PlacementPolicy.from_spec(
            cfg.placement
        ).window.total_seconds()
        self.window_steps = max(1, round(self.rule_window_s / dt))
        self.eval_steps = max(1, round(PROMOTION_EVERY_S / dt))
        self.cum_in = np.zeros((self.n_t, n + 1))
        self.cum_out = np.zeros((self.n_t, n + 1))
        if self.promote and n:
            self.cum_in[:, 1:] = np.cumsum(np.stack([ld.input_tokens for ld in self.loads]), axis=1)
            self.cum_out[:, 1:] = np.cumsum(
                np.stack([ld.output_tokens for ld in self.loads]), axis=1
            )
        self.pools = cfg.pools()
        self.cold_start = timedelta(seconds=cfg.engine.cold_start_s)

    # -- the fleet's replicas and the operator's reconcile -------------------------------------

    def now_at(self, i: int) -> datetime:
        return self.start + timedelta(seconds=i * self.dt)

    def ready(self, i: int) -> list[_Replica]:
        return [r for r in self.fleet_pods if r.ready_at <= i]

    def resize(self, target: int, i: int, ready_at: int | None = None) -> None:
        """Carry out the plan's replica count as the engine Deployment's ReplicaSet would."""
        while len(self.fleet_pods) < target:
            self.made += 1
            self.fleet_pods.append(
                _Replica(
                    f"{ENGINE_NAME}-{self.made:06d}",
                    i + self.cold if ready_at is None else ready_at,
                )
            )
            if ready_at is None:
                self.starts += 1
        while len(self.fleet_pods) > target:
            # A ReplicaSet deletes pods that are not ready first, then the newest.
            loading = [r for r in self.fleet_pods if r.ready_at > i]
            victim = loading[-1] if loading else self.fleet_pods[-1]
            victim.alive = False
            self.fleet_pods.remove(victim)

    def observe(self, i: int, pods: list[_Replica]) -> policy.SharedObserved:
        """What the operator's SharedEngine reconcile sees: the engine Deployment, its ready pods
        with their adapters and queues, the gateway's held requests and every member's traffic."""
        now = self.now_at(i)
        state, key_of = self.state, self.key_of
        return policy.SharedObserved(
            pool=self.pool,
            deployment=children.ObservedDeployment(
                name=ENGINE_NAME,
                pool=config.SHARED_POOL,
                replicas=len(self.fleet_pods),
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
            held={key_of[t]: Sample(state[t].shown, now) for t in range(self.n_t)},
            load_errors={},
            operator_started_at=self.started_at,
            cold_start=timedelta(seconds=self.cfg.engine.cold_start_s),
            traffic={
                key_of[t]: self.offered[t](OFFERED_WINDOW_S) or NoData("no traffic observed yet")
                for t in range(self.n_t)
                if state[t].route.member
            },
        )

    def tick(
        self, i: int, usable_from: int, ready_at: int | None = None, seen_until: int | None = None
    ) -> policy.SharedEnginePlan:
        """One reconcile of the SharedEngine: the operator's plan, carried out. The gateway's
        counters show the arrivals up to step ``seen_until`` (default: the last step, ``i - 1``)."""
        pods = self.ready(i)
        for load in self.offered:
            load.last = i - 1 if seen_until is None else seen_until
        result = policy.plan_shared_engine(
            self.eng,
            [s.infd for s in self.state],
            self.observe(i, pods),
            self.history,
            self.now_at(i),
        )
        self.history = result.history
        self.eng = self.eng.model_copy(update={"status": result.status})
        for update in result.tenants:
            t = self.index_of[update.name]
            infd = self.state[t].infd
            if update.last_wake_handled != infd.status.last_wake_handled:
                status = infd.status.model_copy(
                    update={"last_wake_handled": update.last_wake_handled}
                )
                self.state[t].infd = infd.model_copy(update={"status": status})
        self.resize(result.replicas, i, ready_at)
        self._apply_adapter_ops(result, usable_from)
        return result

    def _apply_adapter_ops(self, result: policy.SharedEnginePlan, usable_from: int) -> None:
        """The plan's adapter unloads (at once) and loads (serving from ``usable_from``), as the
        operator calls vLLM's ``/v1/unload_lora_adapter`` and ``/v1/load_lora_adapter``."""
        by_name = {r.name: r for r in self.fleet_pods}
        for op in result.unloads:
            r = by_name.get(op.pod)
            u = self.index_of.get(op.adapter)
            if r is not None and u is not None:
                r.usable.pop(u, None)
                r.gpu.pop(u, None)
        for op in result.loads:
            r = by_name.get(op.pod)
            u = self.index_of.get(op.adapter)
            if r is not None and u is not None and u not in r.usable:
                r.usable[u] = usable_from
                self.adapter_loads += 1

    def warm_start(self) -> None:
        """The fleet was serving this traffic before the trace began: as the per-tenant warm
        start, plan until the fleet is steady with the in-flight requests of the busiest recent
        minute spread over its replicas, every one Ready and holding its adapters. The plan
        reads the trace's first minute as the minute before it: the gateway's counters had been
        counting that traffic, so the fleet has the replicas its adapters need (read as unknown,
        a fleet of ServeGen's mm-image pool started at 1 replica with 5 adapters in flight, and
        a tenant waited a model load for a ``maxLoras`` slot)."""
        seen_until = min(self.n, round(60.0 / self.dt)) - 1
        fleet_loads = [self.loads[t] for t in range(self.n_t) if t not in self.own]
        if not fleet_loads:
            return
        total = aggregate(fleet_loads, "fleet")
        concurrency = engine.warm_start_concurrency(
            total, self.dt, self.cfg.scaling.scale_down_stabilization.seconds
        )
        target = math.ceil(concurrency / self.cfg.scaling.target_queue_depth - _EPS)
        self.resize(target, 0, ready_at=-1)
        for _ in range(16):
            before = len(self.fleet_pods)
            for r in self.fleet_pods:
                r.total = r.shown = concurrency / len(self.fleet_pods)
            self.tick(0, usable_from=0, ready_at=-1, seen_until=seen_until)
            if len(self.fleet_pods) == before:
                break
        for r in self.fleet_pods:
            r.total = r.shown = 0.0
        self.tick(0, usable_from=0, ready_at=-1, seen_until=seen_until)

    # -- one step --------------------------------------------------------------------------------

    def running(self, i: int) -> bool:
        """The trace's steps, then the drain: while anything is queued or running, up to
        :data:`~tidepool.sim.engine.DRAIN_CAP_S` past the trace."""
        return i < self.n or (i < self.limit and (self.queued_total > _EPS or i < self.busy_until))

    def step(self, i: int) -> None:
        """Step ``i``: requests finish, routes change, arrivals queue (waking the fleet), the
        operator reconciles when due, promotion looks once a minute, the gateway admits, and
        the step's metrics and spend are recorded."""
        for r, t, slots in self.done[i]:
            if r.alive:
                r.run(t, -slots)
        pods = self.ready(i)
        if self.promote:
            _reroute(self.state, pods, i, self.limit)
            if i < self.n:
                self._record_own_routes(i)
        wake_now = self._arrive(i, pods)
        if i >= self.next_tick or wake_now:
            result = self.tick(i, usable_from=i + self.load_steps)
            requeue = result.requeue_after.total_seconds() / self.dt
            self.next_tick = i + max(1, math.ceil(requeue - _EPS))
            if len(self.ready(i)) < result.replicas:
                # The reconcile looks again within a second while a replica is starting (nothing
                # pokes it when a pod turns Ready), so its adapters load as soon as it is up.
                self.next_tick = i + 1
            pods = self.ready(i)
        if self.promote and i >= self.next_eval and i < self.n:
            self.evaluate(i)
            self.next_eval = i + self.eval_steps
        if self.queued_total > _EPS and pods:
            self._admit(i, pods)
        elif self.queued_total > _EPS:
            for t, s in enumerate(self.state):
                self.held[t, 0] += s.waiting
        self._account(i)

    def _record_own_routes(self, i: int) -> None:
        """Which tenants sent step ``i``'s arrivals to replicas of their own, in which mode
        (:meth:`FleetRun.own_segments` replays those with the per-tenant simulator)."""
        for t, s in enumerate(self.state):
            if not s.route.sends_to_fleet and t not in self.own:
                self.own_mode[t, i] = OWN_MODES.index(s.mode) + 1 if s.mode in OWN_MODES else 1
                self.own_floor[t, i] = s.floor

    def _arrive(self, i: int, pods: list[_Replica]) -> bool:
        """Queue step ``i``'s arrivals of the tenants sending to the fleet at the gateway; with no
        replica ready, a tenant's first held request pushes a wake. Whether one was pushed."""
        wake_now = False
        if i >= self.n:
            return wake_now
        demand = self.demand
        for t in demand.busy_steps[i]:
            s = self.state[t]
            a = float(demand.arrivals[t, i])
            if not s.route.sends_to_fleet:
                continue
            s.queue.append(
                _Cohort(
                    i,
                    a,
                    float(demand.svc[t, i]),
                    float(demand.per_req[t, i]),
                    float(demand.prefill_s[t, i]),
                )
            )
            s.waiting += a
            self.queued_total += a
            self.sent[t] += a
            if not pods and _wake(s):
                s.infd = _annotate_wake(s.infd, self.now_at(i).isoformat())
                wake_now = True
        return wake_now

    def _admit(self, i: int, pods: list[_Replica]) -> None:
        """The held requests go to replicas whose adapter for the tenant is usable, in the
        engines' priority order (:func:`tidepool.policy.fair_share.priority`: tenants within
        their fair share of the ready replicas' seats first, counting their requests running or
        held; then the oldest head)."""
        state = self.state
        in_flight = [s.waiting for s in state]
        for r in pods:
            for t, seats in r.running.items():
                in_flight[t] += seats
        share = fair_share.fair_share(self.cap * len(pods), sum(1 for x in in_flight if x > _EPS))
        order = sorted(
            (t for t in range(self.n_t) if state[t].waiting > _EPS),
            key=lambda t: (fair_share.priority(in_flight[t], share), state[t].queue[0].arrived),
        )
        for t in order:
            s = state[t]
            cands = [r for r in pods if r.usable.get(t, self.limit) <= i]
            while s.queue and cands:
                c = s.queue[0]
                cands.sort(
                    key=lambda r: affinity.preference(
                        in_flight=r.total,
                        seats=self.cap,
                        this_adapter=r.running.get(t, 0.0),
                        adapters=r.adapters,
                    )
                )
                for r in cands:
                    self._place(i, r, t, c)
                if c.count <= _EPS:
                    s.waiting -= c.count
                    s.queue.popleft()
                else:
                    break  # no replica takes more of this tenant this step
            if not s.queue:
                s.waiting = 0.0
            else:
                self.held[t, hold_cause(cands, self.cap)] += s.waiting
        self.queued_total = sum(s.waiting for s in state)

    def _place(self, i: int, r: _Replica, t: int, c: _Cohort) -> None:
        """As much of cohort ``c`` of tenant ``t`` as replica ``r`` has free seats and adapter
        room for (module docstring), its seats held until the requests finish."""
        free = self.cap - r.total
        if free <= _EPS or c.count <= _EPS:
            return
        room = _adapter_room(r, t, self.max_loras)
        if room <= _EPS:
            return
        steps_held = c.svc_steps + self._swap_in(r, t)
        unit = min(1.0, steps_held)
        span_steps = max(1.0, steps_held)
        take = min(c.count, min(free, room) / unit)
        slots = take * unit
        whole = int(span_steps)
        frac = span_steps - whole
        self.done[i + whole].append((r, t, slots * (1.0 - frac)))
        if frac > 0:
            self.done[i + whole + 1].append((r, t, slots * frac))
        self.busy_until = max(self.busy_until, i + whole + (1 if frac > 0 else 0))
        r.run(t, slots)
        self.max_batch = max(self.max_batch, r.adapters)
        wait = i - c.arrived
        self.waits[t, wait] += take
        if self.promote:
            self.first_bytes[t].append((i, wait * self.dt + c.prefill_s, take))
        self.tok[t, i] += take * c.tokens_per_request
        c.count -= take
        s = self.state[t]
        s.waiting -= take
        self.queued_total -= take

    def _swap_in(self, r: _Replica, t: int) -> float:
        """Steps added to the requests that bring ``t``'s adapter into one of ``r``'s GPU slots
        (0 when it is there already, refreshed as most recently used)."""
        if t in r.gpu:
            r.gpu.move_to_end(t)
            return 0.0
        if len(r.gpu) >= self.max_loras:
            # The least recently used adapter no request runs, else (in the fluid batch, more
            # than max_loras tenants may each run a fraction of a request) the least recently used.
            idle = next((a for a in r.gpu if a not in r.running), None)
            del r.gpu[next(iter(r.gpu)) if idle is None else idle]
        r.gpu[t] = None
        self.swaps += 1
        return self.swap_steps

    def _account(self, i: int) -> None:
        """What the replicas' and the gateway's metrics show the next reconcile, and the step's
        GPUs and spend. Recorded after admission: this step's requests admitted, each short one
        holding its fraction of a seat (Little's law at any dt, as the per-tenant simulator's
        queue signal), the rest still held; counted before it, a whole step's arrivals would read
        as held at once."""
        for r in self.fleet_pods:
            r.shown = r.total
        for s in self.state:
            s.shown = s.waiting
        self.replicas_tl[i] = len(self.fleet_pods)
        self.gpu_steps += self.shared_price.gpus_held(len(self.fleet_pods), self.gpr)
        self.spend_tl[i] = cost.dedicated_cost(
            self.gpu_steps, self.shared_price.price_per_gpu_hour, self.step_h
        )

    # -- promotion: the placement policy, as the operator's plan calls it for a LoRA tenant ----

    def evaluate(self, i: int) -> None:
        """Placement for every tenant not moving: :func:`tidepool.policy.placement.decide` with
        the SharedEngine as its serverless option (:func:`tidepool.policy.plan.engine_share`),
        the tenants' offered load recorded in their status as the operator records it."""
        now = self.now_at(i)
        self._record_offered_tokens(i)
        observed = self._placement_view()
        for t, s in enumerate(self.state):
            if t in self.own or s.route in (Route.TO_OWN, Route.TO_FLEET, Route.OWN_DRAINING):
                continue
            if s.switch_at > i:  # an own -> own move still starting its new replicas
                continue
            first_bytes = self._p99_time_to_first_byte(t, i)
            seen = dataclasses.replace(observed, p99_time_to_first_byte_s=first_bytes)
            decision = self._decide(t, s, i, now, seen)
            if decision is not None:
                self._start_move(t, s, i, now, decision)

    def _record_offered_tokens(self, i: int) -> None:
        """Each member's offered tokens per second over the placement window, in its status,
        where the operator records them for the SharedEngine's share (engine_share)."""
        lo = max(0, i - self.window_steps)
        span = max(1, i - lo) * self.dt
        mean_in = (self.cum_in[:, i] - self.cum_in[:, lo]) / span
        mean_out = (self.cum_out[:, i] - self.cum_out[:, lo]) / span
        for t, s in enumerate(self.state):
            if s.route.member:
                status = s.infd.status.model_copy(
                    update={
                        "offered_input_tokens_per_second": float(mean_in[t]),
                        "offered_output_tokens_per_second": float(mean_out[t]),
                    }
                )
                s.infd = s.infd.model_copy(update={"status": status})

    def _p99_time_to_first_byte(self, t: int, i: int) -> float | None:
        """Tenant ``t``'s p99 time to first byte over the placement window before step ``i``, of
        its requests the fleet served (its own replicas' are simulated elsewhere, and the plan
        reads the figure only while the tenant is on the fleet), as the gateway's histogram shows
        it: a request's wait plus its prompt's prefill. ``None`` with no request in the window,
        as PromQL's quantile of zero rates is NaN, or with fewer than
        ``lora_promotion.MIN_REQUESTS_FOR_P99``. E.g. 990 requests at 0.5 s and 10 at 12 s:
        0.5 s; 11 at 12 s: 12 s; 99 at 12 s alone: None."""
        window = self.first_bytes[t]
        while window and window[0][0] < i - self.window_steps:
            window.popleft()
        seconds = np.array([ttfb for _, ttfb, _ in window])
        requests = np.array([count for _, _, count in window])
        if float(requests.sum()) < lora_promotion.MIN_REQUESTS_FOR_P99:
            return None  # too few for a p99: unknown, as the operator's query says
        order = np.argsort(seconds, kind="stable")
        return float(seconds[order][report.weighted_percentile(requests[order], 99.0)])

    def _placement_view(self) -> plan.Observed:
        """The part of the operator's observation placement reads: the pools and the
        SharedEngine with its members (no per-tenant demand: that is the offered load)."""
        return plan.Observed(
            pools=self.pools,
            deployments={},
            pod_problems=(),
            demand=NoData("not needed for placement"),
            traffic=NoData("per tenant below"),
            inflight={},
            operator_started_at=self.started_at,
            cold_start=self.cold_start,
            shared_engine=self.eng,
            engine_tenants=tuple(s.infd for s in self.state if s.route.member),
        )

    def _decide(
        self, t: int, s: _Tenant, i: int, now: datetime, observed: plan.Observed
    ) -> placement.PlacementDecision | None:
        """Tenant ``t``'s placement decision, its timers kept in its status as the operator
        keeps them; the decision when it moves the tenant, else None."""
        self.offered[t].last = i - 1
        traffic = self.offered[t](self.rule_window_s) or NoData("no traffic observed yet")
        current = s.mode
        pools = self.pools
        decision = placement.decide(
            plan.placement_inputs(
                s.infd,
                traffic,
                current,
                shared=pools[0],
                dedicated=pools[1],
                cap=self.cfg.capacity(),
                cold_start=self.cold_start,
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
        return decision if moved else None

    def _start_move(
        self, t: int, s: _Tenant, i: int, now: datetime, decision: placement.PlacementDecision
    ) -> None:
        """Begin a move (module docstring, "Promotion"): a demotion returns to the fleet at
        once; a promotion or an own -> own move starts its new replicas first."""
        self.decisions.append(f"{now:%H:%M} {self.names[t]} {decision.reason}: {decision.message}")
        floor = decision.floor_replicas if decision.mode == DeploymentMode.HYBRID else 0
        current = s.mode
        if current == DeploymentMode.SERVERLESS:
            s.route = Route.TO_OWN
            s.promoted_at.append(i)
        elif decision.mode == DeploymentMode.SERVERLESS:
            s.route = Route.TO_FLEET
            s.infd = _with_status(s.infd, effective_mode=DeploymentMode.SERVERLESS)
            s.mode = DeploymentMode.SERVERLESS
            return
        s.switch_at = i + self.cold  # make-before-break: its new replicas load first
        s.next_mode, s.next_floor = decision.mode, floor

    # -- the result ------------------------------------------------------------------------------

    def result(self, i: int) -> FleetRun:
        """The run after ``i`` steps: what is still queued counts as waiting to the end."""
        n_t, state = self.n_t, self.state
        unserved = np.zeros(n_t)
        for t, s in enumerate(state):
            for c in s.queue:
                self.waits[t, min(self.limit, i - c.arrived)] += c.count
                unserved[t] += c.count
        price = self.shared_price
        return FleetRun(
            tenants=tuple(self.names),
            dt=self.dt,
            trace_steps=self.n,
            gpu_hours=self.gpu_steps * self.step_h,
            spend=cost.dedicated_cost(self.gpu_steps, price.price_per_gpu_hour, self.step_h),
            price_per_million_tokens=price.price_per_million_tokens or 0.0,
            tokens=self.tok.sum(axis=1),
            requests=self.sent,
            wait_weights=tuple(self.waits[t, : i + 1].copy() for t in range(n_t)),
            unserved=unserved,
            replicas_timeline=self.replicas_tl[:i],
            spend_timeline=self.spend_tl[:i],
            replica_starts=self.starts,
            adapter_loads=self.adapter_loads,
            adapter_swaps=self.swaps,
            max_batch_adapters=self.max_batch,
            own_mode=self.own_mode,
            own_floor=self.own_floor,
            promoted_at=tuple(tuple(s.promoted_at) for s in state),
            decisions=tuple(self.decisions),
            held=self.held,
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
