"""The simulator's clock and physics: replicas that take a model load to start, batch slots,
a FIFO queue at the gateway, the GPU spend and the chargeback.

Role: advance one tenant through a :class:`~tidepool.sim.traces.TenantLoad` step by step, asking a
:class:`Controller` (Tidepool's policies or a baseline) what to run whenever it asked to be
called back, and on the gateway's wake push. Events between steps (arrivals, completions, a
replica becoming Ready, a controller tick) are applied at step boundaries, so the simulation is a
discrete-event one on a ``dt`` grid: 1 s for the Azure traces, 5 s for ServeGen.

Requests move as cohorts: all arrivals of one step share that step's mean service time, and a
cohort may be admitted in parts. "Running" counts busy batch slots (time-averaged concurrency).
Counts are floats, so ServeGen's millions of requests cost one cohort per step, not one object
per request. Queue waits are whole steps (a request admitted in the step it arrived waited 0).

Modelling choices, stated once:

* spend: every provisioned replica holds GPUs, starting ones included (a loading GPU is rented),
  on the shared pool as on the dedicated one; a dedicated pool is single-tenant, so it holds
  whole nodes. Each step adds the GPUs each pool holds
  (:meth:`~tidepool.policy.placement.PoolPrice.gpus_held`, the operator's rule); the GPU-hours
  are priced once, at the end, with :func:`~tidepool.policy.cost.dedicated_cost`;
* chargeback: tokens admitted to a shared-pool replica, priced once at the end at the shared
  pool's per-token price (:func:`~tidepool.policy.cost.serverless_cost`). It is what the
  platform bills tenants, reported beside spend and never added to it;
* the pools priced are the pools simulated: :func:`pool_prices` is the placement policy's view
  of the GPUPools the controllers run on;
* a replica removed while busy lets its running requests finish (make-before-break) and stops
  billing at once (a small under-count, equal for every policy);
* the queue is unbounded: nothing is dropped. When the trace ends, the simulation goes on with no
  new arrivals (the controller still ticking) until the queue and the batches are empty, so what
  is still in flight is served and paid for, with its full wait. The drain stops after
  :data:`DRAIN_CAP_S`; requests still queued then count with their wait so far and as unserved.

This module must not decide how many replicas to run (controllers do) and must not read files.
"""

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Final, Protocol

import numpy as np

from tidepool.policy import capacity, cost, placement, pools
from tidepool.sim import config, traces

#: The longest the simulation runs past the trace's end to serve what is still queued or running:
#: 2 h. A policy that needs longer than that to clear its backlog has failed the SLO anyway.
DRAIN_CAP_S: Final = 7200.0
#: Counts below this are float residue, not requests.
_EPS: Final = 1e-9

#: The offered load (arrivals and tokens the clients sent) over the last ``seconds``, as the
#: gateway's counters give it to the operator; ``None`` before the trace has started.
OfferedFn = Callable[[float], placement.Traffic | None]


def _nothing_offered(_seconds: float) -> placement.Traffic | None:
    return None


def pool_prices(cfg: config.SimConfig) -> tuple[placement.PoolPrice, placement.PoolPrice]:
    """The shared and the dedicated pool's prices, as the placement policy sees them.

    :func:`tidepool.policy.pools.pool_price` of the very GPUPools the controllers run on
    (:meth:`~tidepool.sim.config.SimConfig.pools`), so the pools priced are the pools simulated: at
    the defaults, H100s at $7.79/GPU-hour on both, the shared pool charging back $0.20/1M tokens,
    the dedicated one in single-GPU nodes.
    """
    shared_pool, dedicated_pool = cfg.pools()
    shared, dedicated = pools.pool_price(shared_pool), pools.pool_price(dedicated_pool)
    assert shared is not None
    assert dedicated is not None
    return shared, dedicated


@dataclass(frozen=True, slots=True)
class Observation:
    """What a controller sees at a tick (what Prometheus and the Deployment status would show)."""

    now: datetime
    elapsed_s: float
    demand: float  # queued at the gateway + running, right now
    #: ``demand`` averaged over the last ``SimConfig.queue_signal_s``: what a PromQL
    #: ``avg_over_time(...[30s])`` over 15 s scrapes reports, and what the autoscalers see.
    recent_demand: float
    queued: float
    shared: int  # provisioned replicas (ready + starting)
    shared_ready: int
    dedicated: int
    dedicated_ready: int
    #: Requests running on each pool's replicas (what ``vllm:num_requests_running`` shows).
    shared_running: float = 0.0
    dedicated_running: float = 0.0
    offered: OfferedFn = _nothing_offered

    @property
    def wake(self) -> bool:
        """The gateway holds requests and no replica is ready: it pushes a wake."""
        return self.queued > 0 and self.shared_ready + self.dedicated_ready == 0


@dataclass(frozen=True, slots=True)
class Command:
    """What to run until the next tick. ``dedicated_limit``: in-flight requests one dedicated
    replica takes before the gateway spills to the shared pool (0: its full batch)."""

    shared: int
    dedicated: int
    next_tick_s: float
    route_shared: bool = True
    route_dedicated: bool = True
    dedicated_limit: int = 0
    mode: str = ""


@dataclass(frozen=True, slots=True)
class LateRequests:
    """Requests that waited longer than the SLO, by what the replicas were doing.

    Why: a tenant over its p99 SLO has more than 1% of its requests late, and the remedy
    depends on why they were late. Judged at each request's arrival and over its wait:

    * ``from_zero``: no replica was Ready when it arrived (scaled to zero, or the first replica
      still loading): a cold start from zero;
    * ``while_loading``: replicas were Ready, and more were loading before it was admitted: a
      burst or a step outran the replicas, and it waited for the scale-up's model load (or
      behind the backlog that load left);
    * ``none_loading``: replicas were Ready and none was loading while it waited: too few were
      asked for (a target too high, a scale-up held back).
    """

    from_zero: float = 0.0
    while_loading: float = 0.0
    none_loading: float = 0.0

    @property
    def total(self) -> float:
        return self.from_zero + self.while_loading + self.none_loading

    def __add__(self, other: "LateRequests") -> "LateRequests":
        return LateRequests(
            self.from_zero + other.from_zero,
            self.while_loading + other.while_loading,
            self.none_loading + other.none_loading,
        )


class Controller(Protocol):
    name: str
    #: Whether the gateway's wake push reaches this controller (Tidepool: yes; KEDA: polls).
    push_wake: bool

    def initial(self, concurrency: float, now: datetime) -> Command:
        """Replicas already Ready when the trace starts (the system was running before it)."""
        ...

    def tick(self, obs: Observation) -> Command: ...


@dataclass(frozen=True, slots=True)
class TenantRun:
    """One tenant under one controller: spend, chargeback, the wait distribution and timelines.

    Timelines have one entry per simulated step: the trace's ``trace_steps``, then the drain.
    """

    tenant: str
    controller: str
    dt: float
    gpu_hours_shared: float
    gpu_hours_dedicated: float  # whole nodes
    #: GPU dollars on each pool: the GPU-hours priced once, when the run ends.
    spend_shared: float
    spend_dedicated: float
    chargeback: float  # billed to the tenant for shared-pool tokens; not part of spend
    tokens_shared: float  # admitted to shared-pool replicas: what the chargeback bills
    requests: float
    replica_starts: int
    wait_weights: np.ndarray  # weight of requests per whole-step wait
    shared_timeline: np.ndarray
    dedicated_timeline: np.ndarray
    demand_timeline: np.ndarray
    spend_timeline: np.ndarray  # cumulative spend, dollars
    modes: tuple[tuple[float, str], ...]  # (elapsed s, mode) on change
    trace_steps: int = 0
    #: Requests still queued when the drain stopped at :data:`DRAIN_CAP_S`.
    unserved: float = 0.0
    #: The requests that waited longer than ``SimConfig.slo_p99_s``, by cause.
    late: LateRequests = LateRequests()

    @property
    def spend(self) -> float:
        """GPU dollars on both pools."""
        return self.spend_shared + self.spend_dedicated

    @property
    def gpu_hours(self) -> float:
        return self.gpu_hours_shared + self.gpu_hours_dedicated

    @property
    def drain_s(self) -> float:
        """Seconds simulated past the trace's end to serve what was still in flight."""
        return max(0, len(self.shared_timeline) - self.trace_steps) * self.dt


class _Pool:
    """Replicas of one pool: ready count plus the steps at which starting ones become Ready."""

    __slots__ = ("ready", "starting", "starts")

    def __init__(self, ready: int) -> None:
        self.ready = ready
        self.starting: deque[int] = deque()
        self.starts = 0

    @property
    def provisioned(self) -> int:
        return self.ready + len(self.starting)

    def promote(self, step: int) -> None:
        while self.starting and self.starting[0] <= step:
            self.starting.popleft()
            self.ready += 1

    def resize(self, target: int, step: int, cold_steps: int) -> None:
        have = self.provisioned
        if target > have:
            self.starting.extend([step + cold_steps] * (target - have))
            self.starts += target - have
            return
        drop = have - target
        while drop and self.starting:
            self.starting.pop()
            drop -= 1
        self.ready -= drop


class OfferedLoad:
    """The offered load of one tenant's trace, windowed as the gateway's counters are.

    Built once per run from the trace's per-step arrivals, input and output tokens, then asked
    at each tick for the last ``seconds`` up to the current step (``last``). It sees arrivals and
    tokens, never the queue: the placement policy sizes from what clients sent, not from a
    backlog of cold starts.
    """

    __slots__ = ("active", "cap", "cum", "dt", "idle_steps", "last", "minute", "wake")

    def __init__(
        self, load: traces.TenantLoad, dt: float, cap: capacity.EngineCapacity, idle_s: float
    ) -> None:
        self.dt = dt
        self.cap = cap
        self.last = -1
        per_step = np.stack([load.arrivals, load.input_tokens, load.output_tokens])
        self.cum = np.concatenate([np.zeros((3, 1)), np.cumsum(per_step, axis=1)], axis=1)
        self.minute = max(1, round(60.0 / dt))
        self.idle_steps = max(1, round(idle_s / dt))
        busy = load.arrivals > 0
        # A step is active when a request arrived within the idle window up to it; a wake is an
        # arrival after a whole idle window without one (the replicas had scaled to zero).
        recent = np.convolve(busy.astype(np.float64), np.ones(self.idle_steps))[: len(busy)]
        self.active = np.concatenate([[0.0], np.cumsum(recent > 0)])
        arrived = np.flatnonzero(busy)
        # The system was running before the trace began: its first request is a wake only if
        # it comes a whole idle window after the start.
        before = np.diff(np.concatenate([[-1], arrived]))
        wakes = np.zeros(len(busy))
        wakes[arrived[before > self.idle_steps]] = 1.0
        self.wake = np.concatenate([[0.0], np.cumsum(wakes)])

    def _load(self, lo: int, hi: int) -> placement.Load:
        sums = (self.cum[:, hi] - self.cum[:, lo]) / ((hi - lo) * self.dt)
        return placement.Load(float(sums[0]), float(sums[1]), float(sums[2]))

    def __call__(self, seconds: float) -> placement.Traffic | None:
        # Past the trace's end (the run drains what is left) no request arrives: the window
        # holds fewer steps of trace, as the gateway's counters would stop rising.
        hi = min(self.last + 1, self.cum.shape[1] - 1)
        if hi <= 0:
            return None
        lo = max(0, hi - max(1, round(seconds / self.dt)))
        mean = self._load(lo, hi)
        # The busiest minute: one-minute rates on a minute grid ending at ``hi``.
        starts = range(hi - self.minute, lo - 1, -self.minute) if hi - lo >= self.minute else [lo]
        peak = max(
            (self._load(max(lo, a), max(lo, a) + min(self.minute, hi - lo)) for a in starts),
            key=lambda ld: placement.work(ld, self.cap),
        )
        steps = hi - lo
        # Wakes and activity over the longer horizon (see placement.WAKE_HORIZON).
        wlo = max(0, hi - max(steps, round(placement.WAKE_HORIZON.total_seconds() / self.dt)))
        return placement.Traffic(
            mean=mean,
            peak=peak,
            span=timedelta(seconds=steps * self.dt),
            active_fraction=float(self.active[hi] - self.active[wlo]) / (hi - wlo),
            wakes=float(self.wake[hi] - self.wake[wlo]),
            horizon=timedelta(seconds=(hi - wlo) * self.dt),
            recent=self._load(max(0, hi - self.minute), hi),
            horizon_mean=self._load(wlo, hi),
        )


def simulate(
    load: traces.TenantLoad,
    controller: Controller,
    cfg: config.SimConfig,
    *,
    dt: float,
    start: datetime,
) -> TenantRun:
    """Run ``load`` under ``controller``, then drain; see the module docstring for the model."""
    run = _TenantLoop(load, controller, cfg, dt=dt, start=start)
    i = 0
    while run.running(i):
        run.step(i)
        i += 1
    return run.result(i)


def _free_at(done: list[float], end: int, slots: float, frac: float) -> None:
    """Book ``slots`` seats to free at step ``end``, the ``frac`` of them whose service runs
    into the next step one step later (a cohort's service time is rarely whole steps)."""
    done[end] += slots * (1.0 - frac)
    done[end + 1] += slots * frac


class _TenantLoop:
    """The mutable state of one :func:`simulate` run and its steps.

    Why a class: the pools, the gateway's queue, the running batches and the sums the result
    reports change every step, and each step runs several phases (finish, arrive, tick, admit,
    account) over them; holding them here lets each phase be a named method while the run stays
    one loop (:func:`simulate`)."""

    def __init__(
        self,
        load: traces.TenantLoad,
        controller: Controller,
        cfg: config.SimConfig,
        *,
        dt: float,
        start: datetime,
    ) -> None:
        self.load, self.controller, self.cfg, self.dt, self.start = load, controller, cfg, dt, start
        self.n = n = len(load.arrivals)
        self.limit = limit = n + math.ceil(DRAIN_CAP_S / dt)
        self.cap = cfg.engine.max_num_seqs
        self.gpus = cfg.engine.gpus_per_replica
        self.shared_pool, self.dedicated_pool = pool_prices(cfg)
        self.cold = max(1, math.ceil(cfg.engine.cold_start_s / dt))
        self.arrivals = load.arrivals.tolist()
        self.svc_steps = np.maximum(1e-3, load.service_s / dt).tolist()
        self.per_req = np.divide(
            load.tokens, load.arrivals, out=np.zeros(n), where=load.arrivals > 0
        ).tolist()
        horizon = limit + math.ceil(max(self.svc_steps, default=1.0)) + 2
        self.done_sh = [0.0] * horizon
        self.done_de = [0.0] * horizon
        self.waits = [0.0] * (limit + 1)
        self.conc = np.zeros(limit)
        self.shared_tl = np.zeros(limit, dtype=np.float32)
        self.ded_tl = np.zeros(limit, dtype=np.float32)
        self.spend_tl = np.zeros(limit)
        self.step_h = dt / 3600.0
        self.signal_k = max(1, round(cfg.queue_signal_s / dt))
        self.offered = OfferedLoad(
            load,
            dt,
            cfg.capacity(),
            cfg.scaling.scale_to_zero_after.seconds,
        )
        self.cmd = self._warm_start()
        self.shared = _Pool(self.cmd.shared)
        self.ded = _Pool(self.cmd.dedicated)
        self.run_sh = self.run_de = 0.0
        self.queue: deque[list[float]] = deque()
        self.qlen = 0.0
        self.next_tick = 0
        self.gpu_steps_sh = self.gpu_steps_de = 0.0  # GPUs held by each pool, summed over steps
        self.tokens_sh = 0.0
        self.modes: list[tuple[float, str]] = [(0.0, self.cmd.mode)]
        self.busy_until = 0  # the first step at which every admitted request has finished
        # Why late requests were late (LateRequests): a wait of more than ``slo_steps`` steps
        # is over the SLO; per step, the replicas Ready once the controller has ticked, and
        # how many steps so far had a replica loading (a prefix sum, so "any loading between
        # arrival and admission" is one subtraction).
        self.slo_steps = math.floor(cfg.slo_p99_s / dt + 1e-9)
        self.ready_at = [0] * (limit + 1)
        self.loading_steps = [0] * (limit + 2)
        self.late = {f.name: 0.0 for f in fields(LateRequests)}

    def _warm_start(self) -> Command:
        """The controller's first command. The trace is cut from traffic that ran before it, and
        a system serving that traffic holds, through its scale-down window, the replicas its
        busiest recent minute needed. The trace's own first window stands in for the unseen one
        before it (Little's law per minute); sizing from the first minute alone would start short
        whenever the cut fell in a lull."""
        window_s = self.cfg.scaling.scale_down_stabilization.seconds
        return self.controller.initial(
            warm_start_concurrency(self.load, self.dt, window_s), self.start
        )

    def _spend(self, gpu_steps: float, pool: placement.PoolPrice) -> float:
        """Dollars for GPUs held summed over steps: each step is ``dt`` of a GPU-hour price."""
        return cost.dedicated_cost(gpu_steps, pool.price_per_gpu_hour, self.step_h)

    def running(self, i: int) -> bool:
        """The trace's steps, then the drain: while anything is queued or running, up to
        :data:`DRAIN_CAP_S` past the trace."""
        return i < self.n or (i < self.limit and (bool(self.queue) or i < self.busy_until))

    def step(self, i: int) -> None:
        """Step ``i``: requests finish, replicas turn Ready, arrivals queue, the controller ticks
        when it asked to (or on the gateway's wake push), the queue is admitted, and the step's
        demand, replicas and spend are recorded."""
        self.run_sh -= self.done_sh[i]
        self.run_de -= self.done_de[i]
        self.shared.promote(i)
        self.ded.promote(i)
        a = self.arrivals[i] if i < self.n else 0.0
        if a > 0:
            self.queue.append([float(i), a, self.svc_steps[i], self.per_req[i]])
            self.qlen += a
        ready_total = self.shared.ready + self.ded.ready
        wake_now = self.controller.push_wake and self.qlen > 0 and ready_total == 0 and a > 0
        if i >= self.next_tick or wake_now:
            self._tick(i)
        self.ready_at[i] = self.shared.ready + self.ded.ready
        loading = bool(self.shared.starting or self.ded.starting)
        self.loading_steps[i + 1] = self.loading_steps[i] + loading
        if self.qlen > _EPS:
            self._admit(i)
        self._account(i)

    def _tick(self, i: int) -> None:
        """Ask the controller, with what the operator would observe at step ``i``, and carry out
        its command on the pools."""
        dt = self.dt
        self.offered.last = i - 1
        now_demand = self.qlen - self._unseen_arrivals(i) + self.run_sh + self.run_de
        lo = max(0, i - self.signal_k + 1)
        recent = (float(self.conc[lo:i].sum()) + now_demand) / (i - lo + 1)
        obs = Observation(
            now=self.start + timedelta(seconds=i * dt),
            elapsed_s=i * dt,
            demand=now_demand,
            recent_demand=recent,
            queued=self.qlen,
            shared=self.shared.provisioned,
            shared_ready=self.shared.ready,
            dedicated=self.ded.provisioned,
            dedicated_ready=self.ded.ready,
            shared_running=self.run_sh,
            dedicated_running=self.run_de,
            offered=self.offered,
        )
        cmd = self.cmd = self.controller.tick(obs)
        self.shared.resize(cmd.shared, i, self.cold)
        self.ded.resize(cmd.dedicated, i, self.cold)
        self.next_tick = i + max(1, math.ceil(cmd.next_tick_s / dt - 1e-9))
        if cmd.mode != self.modes[-1][1]:
            self.modes.append((i * dt, cmd.mode))

    def _admit(self, i: int) -> None:
        """Admit the queue's head cohorts into the free seats the command routes to, dedicated
        first, each admitted part holding its seats until it finishes."""
        cmd, cap, queue = self.cmd, self.cap, self.queue
        limit_de = cmd.dedicated_limit or cap
        free_de = self.ded.ready * limit_de - self.run_de if cmd.route_dedicated else 0.0
        free_sh = self.shared.ready * cap - self.run_sh if cmd.route_shared else 0.0
        while queue and (free_de > _EPS or free_sh > _EPS):
            c = queue[0]
            # A request of x steps holds a whole slot for x steps when x >= 1; a shorter one
            # holds x of a slot for one step (a slot serves 1/x of them per step). Either
            # way it occupies x slot-steps: Little's law, at any dt.
            unit = min(1.0, c[2])
            span = max(1.0, c[2])
            take = min(c[1], (max(0.0, free_de) + max(0.0, free_sh)) / unit)
            take_de = min(take, max(0.0, free_de) / unit)
            take_sh = take - take_de
            whole = int(span)
            frac = span - whole
            end = i + whole
            self.busy_until = max(self.busy_until, end + (1 if frac > 0 else 0))
            if take_de > 0:
                slots = take_de * unit
                _free_at(self.done_de, end, slots, frac)
                self.run_de += slots
                free_de -= slots
            if take_sh > 0:
                slots = take_sh * unit
                _free_at(self.done_sh, end, slots, frac)
                self.run_sh += slots
                free_sh -= slots
                self.tokens_sh += take_sh * c[3]
            self.waits[i - int(c[0])] += take
            if i - int(c[0]) > self.slo_steps:
                self._late(int(c[0]), i, take)
            c[1] -= take
            self.qlen -= take
            if c[1] <= _EPS:
                queue.popleft()
        if not queue:
            self.qlen = 0.0

    def _unseen_arrivals(self, i: int) -> float:
        """The part of step ``i``'s arrivals a scrape would not see in flight.

        The tick comes after the step's arrivals join the queue and before they are admitted, so
        a request shorter than a step would count whole, though at any instant of the step only
        its share of the step is in flight (Little's law): 4,000 requests/s of 0.14 s are 577
        in flight, not a 5 s step's 20,000 (that count once asked for 72 replicas where 11
        serve). Requests still waiting from earlier steps count whole, as the gateway holds them.
        """
        a = self.arrivals[i] if i < self.n else 0.0
        return a * max(0.0, 1.0 - self.svc_steps[i]) if a > 0 else 0.0

    def _late(self, arrived: int, admitted: int, count: float) -> None:
        """Count ``count`` requests that arrived at step ``arrived`` and waited until
        ``admitted``, longer than the SLO, under their cause (:class:`LateRequests`)."""
        if self.ready_at[arrived] == 0:
            self.late["from_zero"] += count
        elif self.loading_steps[admitted + 1] > self.loading_steps[arrived]:
            self.late["while_loading"] += count
        else:
            self.late["none_loading"] += count

    def _account(self, i: int) -> None:
        """Step ``i``'s demand (the queue signal's history), the GPUs each pool holds (whole
        nodes on the dedicated one) and the cumulative spend."""
        shared, ded, gpus = self.shared, self.ded, self.gpus
        self.conc[i] = self.qlen + self.run_sh + self.run_de
        self.gpu_steps_sh += self.shared_pool.gpus_held(shared.provisioned, gpus)
        self.gpu_steps_de += self.dedicated_pool.gpus_held(ded.provisioned, gpus)
        self.shared_tl[i] = shared.provisioned
        self.ded_tl[i] = ded.provisioned
        self.spend_tl[i] = self._spend(self.gpu_steps_sh, self.shared_pool) + self._spend(
            self.gpu_steps_de, self.dedicated_pool
        )

    def result(self, i: int) -> TenantRun:
        """The run after ``i`` steps: what is still queued counts with its wait so far."""
        unserved = 0.0
        for c in self.queue:  # still waiting when the drain stopped
            self.waits[i - int(c[0])] += c[1]
            unserved += c[1]
            if i - int(c[0]) > self.slo_steps:
                self._late(int(c[0]), i - 1, c[1])
        shared_pool, step_h = self.shared_pool, self.step_h
        return TenantRun(
            tenant=self.load.name,
            controller=self.controller.name,
            dt=self.dt,
            gpu_hours_shared=self.gpu_steps_sh * step_h,
            gpu_hours_dedicated=self.gpu_steps_de * step_h,
            spend_shared=self._spend(self.gpu_steps_sh, shared_pool),
            spend_dedicated=self._spend(self.gpu_steps_de, self.dedicated_pool),
            # A shared pool without a per-token price bills nothing.
            chargeback=cost.serverless_cost(
                self.tokens_sh, shared_pool.price_per_million_tokens or 0.0
            ),
            tokens_shared=self.tokens_sh,
            requests=float(self.load.arrivals.sum()),
            replica_starts=self.shared.starts + self.ded.starts,
            wait_weights=np.asarray(self.waits[: i + 1]),
            shared_timeline=self.shared_tl[:i],
            dedicated_timeline=self.ded_tl[:i],
            demand_timeline=self.conc[:i],
            spend_timeline=self.spend_tl[:i],
            modes=tuple(self.modes),
            trace_steps=self.n,
            unserved=unserved,
            late=LateRequests(**self.late),
        )


def warm_start_concurrency(load: traces.TenantLoad, dt: float, window_s: float) -> float:
    """In-flight requests of the busiest minute within the first ``window_s`` (Little's law).

    E.g. minutes offering 2, 5 and 3 requests/s of 2 s each: ``max(4, 10, 6) = 10`` in flight.
    """
    minute = max(1, round(60.0 / dt))
    steps = max(minute, round(window_s / dt))
    busy = load.arrivals[:steps] * load.service_s[:steps]
    blocks = [busy[a : a + minute] for a in range(0, len(busy), minute)]
    return max((float(b.sum()) / (len(b) * dt) for b in blocks if len(b)), default=0.0)


def offered_concurrency(load: traces.TenantLoad, dt: float, smooth_s: float = 60.0) -> np.ndarray:
    """In-flight requests the trace would keep busy with no queueing (Little's law per step),
    smoothed over ``smooth_s``: ``arrivals/s x mean service time``."""
    raw = load.arrivals * load.service_s / dt
    k = max(1, round(smooth_s / dt))
    return np.convolve(raw, np.ones(k) / k, mode="same")


def lower_bound_spend(load: traces.TenantLoad, cfg: config.SimConfig, dt: float) -> float:
    """The GPU spend of an oracle that knows each minute's load and starts replicas instantly.

    Why: best-static-in-hindsight is only as good as static policies; this bound says how much a
    dynamic policy could still save. For every minute, the offered load is the request-seconds
    arriving in it over 60 s (Little's law), served at full batches:
    ``ceil(offered / max_num_seqs)`` replicas for that minute (none when idle), on whichever pool
    is cheaper for that count (the dedicated pool in whole nodes). No cold starts, no headroom.

    Worked example: 90 requests/s of 2 s each is 180 in flight; at 64 seats that is
    ``ceil(180/64) = 3`` one-GPU replicas, so a minute costs ``3 * $7.79 / 60 = $0.3895``; with
    8-GPU dedicated nodes the shared pool (3 GPUs) is the cheaper one at equal $/GPU-hour.
    """
    steps = len(load.arrivals)
    if steps == 0:
        return 0.0
    k = max(1, round(60.0 / dt))
    blocks = math.ceil(steps / k)
    work = np.zeros(blocks * k)
    work[:steps] = load.arrivals * load.service_s
    seconds = np.full(blocks, k * dt)
    seconds[-1] = (steps - (blocks - 1) * k) * dt
    offered = work.reshape(blocks, k).sum(axis=1) / seconds
    replicas = np.ceil(offered / cfg.engine.max_num_seqs - 1e-9)
    pools = pool_prices(cfg)
    gpr = cfg.engine.gpus_per_replica

    def cheapest(count: float, span_s: float) -> float:
        return min(
            cost.dedicated_cost(p.gpus_held(count, gpr), p.price_per_gpu_hour, span_s / 3600.0)
            for p in pools
        )

    return sum(cheapest(float(n), float(s)) for n, s in zip(replicas, seconds, strict=True))
