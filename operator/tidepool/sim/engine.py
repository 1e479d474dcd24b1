"""The simulator's clock and physics: replicas that take a model load to start, batch slots,
a FIFO queue at the gateway, and the two bills (GPU-hours and tokens).

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

* billing: GPU-hours for every provisioned replica, starting ones included (a loading GPU is
  rented); tokens are billed when a request is admitted to a shared-pool replica;
* a replica removed while busy lets its running requests finish (make-before-break) and stops
  billing at once (a small under-count, equal for every policy);
* the queue is unbounded: nothing is dropped; requests still queued at the end count with their
  wait so far.

This module must not decide how many replicas to run (controllers do) and must not read files.
"""

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from tidepool.sim import config, traces

#: (mean in-flight, peak in-flight, tokens/s) over the last ``seconds``; ``None`` until that much
#: time has been observed.
WindowFn = Callable[[float], tuple[float, float, float] | None]


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
    window: WindowFn

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
    """One tenant under one controller: totals, the wait distribution and timelines."""

    tenant: str
    controller: str
    dt: float
    gpu_hours_shared: float
    gpu_hours_dedicated: float
    dedicated_cost: float
    token_cost: float
    tokens_shared: float
    tokens_total: float
    requests: float
    replica_starts: int
    wait_weights: np.ndarray  # weight of requests per whole-step wait
    shared_timeline: np.ndarray
    dedicated_timeline: np.ndarray
    demand_timeline: np.ndarray
    cost_timeline: np.ndarray  # cumulative dollars
    modes: tuple[tuple[float, str], ...]  # (elapsed s, mode) on change

    @property
    def cost(self) -> float:
        return self.dedicated_cost + self.token_cost

    @property
    def gpu_hours(self) -> float:
        return self.gpu_hours_shared + self.gpu_hours_dedicated


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


class _WindowStats:
    """Window statistics over the steps simulated so far (up to ``last``, inclusive)."""

    __slots__ = ("conc", "dt", "last", "percentile", "tokens")

    def __init__(self, conc: np.ndarray, tokens: np.ndarray, dt: float, percentile: float) -> None:
        self.conc = conc
        self.tokens = tokens
        self.dt = dt
        self.percentile = percentile
        self.last = -1

    def __call__(self, seconds: float) -> tuple[float, float, float] | None:
        k = max(1, round(seconds / self.dt))
        lo = self.last + 1 - k
        if lo < 0:
            return None
        seg = self.conc[lo : self.last + 1]
        tps = float(self.tokens[lo : self.last + 1].sum()) / (k * self.dt)
        return float(seg.mean()), float(np.percentile(seg, self.percentile)), tps


def simulate(
    load: traces.TenantLoad,
    controller: Controller,
    cfg: config.SimConfig,
    *,
    dt: float,
    start: datetime,
) -> TenantRun:
    """Run ``load`` under ``controller``; see the module docstring for the model."""
    n = len(load.arrivals)
    cap = cfg.engine.max_num_seqs
    gpus = cfg.engine.gpus_per_replica
    cold = max(1, math.ceil(cfg.engine.cold_start_s / dt))
    arrivals = load.arrivals.tolist()
    svc_steps = np.maximum(1e-3, load.service_s / dt).tolist()
    per_req = np.divide(
        load.tokens, load.arrivals, out=np.zeros(n), where=load.arrivals > 0
    ).tolist()
    horizon = n + math.ceil(max(svc_steps, default=1.0)) + 2
    done_sh = [0.0] * horizon
    done_de = [0.0] * horizon
    waits = [0.0] * (n + 1)
    conc = np.zeros(n)
    shared_tl = np.zeros(n, dtype=np.float32)
    ded_tl = np.zeros(n, dtype=np.float32)
    cost_tl = np.zeros(n)
    token_price = cfg.prices.shared_per_million_tokens / 1e6
    ded_price_step = cfg.prices.dedicated_per_gpu_hour * gpus * dt / 3600.0

    signal_k = max(1, round(cfg.queue_signal_s / dt))
    window = _WindowStats(conc, load.tokens, dt, cfg.peak_percentile)

    # Warm start: size from the first minute's offered load (Little's law).
    first = max(1, round(60.0 / dt))
    offered0 = float((load.arrivals[:first] * load.service_s[:first]).sum()) / (first * dt)
    cmd = controller.initial(offered0, start)
    shared = _Pool(cmd.shared)
    ded = _Pool(cmd.dedicated)
    run_sh = run_de = 0.0
    queue: deque[list[float]] = deque()
    qlen = 0.0
    next_tick = 0
    gh_sh = gh_de = 0.0
    tokens_sh = 0.0
    token_cost = ded_cost = 0.0
    modes: list[tuple[float, str]] = [(0.0, cmd.mode)]
    eps = 1e-9

    for i in range(n):
        run_sh -= done_sh[i]
        run_de -= done_de[i]
        shared.promote(i)
        ded.promote(i)
        a = arrivals[i]
        if a > 0:
            queue.append([float(i), a, svc_steps[i], per_req[i]])
            qlen += a
        ready_total = shared.ready + ded.ready
        wake_now = controller.push_wake and qlen > 0 and ready_total == 0 and a > 0
        if i >= next_tick or wake_now:
            window.last = i - 1
            now_demand = qlen + run_sh + run_de
            lo = max(0, i - signal_k + 1)
            recent = (float(conc[lo:i].sum()) + now_demand) / (i - lo + 1)
            obs = Observation(
                now=start + timedelta(seconds=i * dt),
                elapsed_s=i * dt,
                demand=now_demand,
                recent_demand=recent,
                queued=qlen,
                shared=shared.provisioned,
                shared_ready=shared.ready,
                dedicated=ded.provisioned,
                dedicated_ready=ded.ready,
                window=window,
            )
            cmd = controller.tick(obs)
            shared.resize(cmd.shared, i, cold)
            ded.resize(cmd.dedicated, i, cold)
            next_tick = i + max(1, math.ceil(cmd.next_tick_s / dt - 1e-9))
            if cmd.mode != modes[-1][1]:
                modes.append((i * dt, cmd.mode))
        if qlen > eps:
            limit = cmd.dedicated_limit or cap
            free_de = ded.ready * limit - run_de if cmd.route_dedicated else 0.0
            free_sh = shared.ready * cap - run_sh if cmd.route_shared else 0.0
            while queue and (free_de > eps or free_sh > eps):
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
                if take_de > 0:
                    slots = take_de * unit
                    done_de[end] += slots * (1.0 - frac)
                    done_de[end + 1] += slots * frac
                    run_de += slots
                    free_de -= slots
                if take_sh > 0:
                    slots = take_sh * unit
                    done_sh[end] += slots * (1.0 - frac)
                    done_sh[end + 1] += slots * frac
                    run_sh += slots
                    free_sh -= slots
                    tokens_sh += take_sh * c[3]
                    token_cost += take_sh * c[3] * token_price
                waits[i - int(c[0])] += take
                c[1] -= take
                qlen -= take
                if c[1] <= eps:
                    queue.popleft()
            if not queue:
                qlen = 0.0
        conc[i] = qlen + run_sh + run_de
        gh_sh += shared.provisioned * gpus * dt / 3600.0
        gh_de += ded.provisioned * gpus * dt / 3600.0
        ded_cost += ded.provisioned * ded_price_step
        shared_tl[i] = shared.provisioned
        ded_tl[i] = ded.provisioned
        cost_tl[i] = ded_cost + token_cost
    for c in queue:  # still waiting at the end of the trace
        waits[n - int(c[0])] += c[1]
    return TenantRun(
        tenant=load.name,
        controller=controller.name,
        dt=dt,
        gpu_hours_shared=gh_sh,
        gpu_hours_dedicated=gh_de,
        dedicated_cost=ded_cost,
        token_cost=token_cost,
        tokens_shared=tokens_sh,
        tokens_total=float(load.tokens.sum()),
        requests=float(load.arrivals.sum()),
        replica_starts=shared.starts + ded.starts,
        wait_weights=np.asarray(waits),
        shared_timeline=shared_tl,
        dedicated_timeline=ded_tl,
        demand_timeline=conc,
        cost_timeline=cost_tl,
        modes=tuple(modes),
    )


def offered_concurrency(load: traces.TenantLoad, dt: float, smooth_s: float = 60.0) -> np.ndarray:
    """In-flight requests the trace would keep busy with no queueing (Little's law per step),
    smoothed over ``smooth_s``: ``arrivals/s x mean service time``."""
    raw = load.arrivals * load.service_s / dt
    k = max(1, round(smooth_s / dt))
    return np.convolve(raw, np.ones(k) / k, mode="same")
