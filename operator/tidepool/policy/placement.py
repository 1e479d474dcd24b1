"""Placement: should a tenant run serverless (shared pool), dedicated, or hybrid, and why.

Role: one pure function, :func:`decide`, of a :class:`PlacementInputs` snapshot and ``now``. The
operator and ``tidepool simulate`` both call it. It only *chooses*; the make-before-break migration
that follows is the reconciler's job.

**Spend, not a bill.** Tidepool runs on the platform's own GPUs, so every option is priced as
the GPU-hours it holds, at each GPUPool's price per GPU-hour (:func:`project`):

* serverless: the tenant's own replicas on the shared pool, up only while it is active (they
  scale to zero after ``scaleToZeroAfter``), sized for its offered load at the autoscaler's
  target utilization;
* dedicated: replicas sized for the busiest minute, kept warm, counted as *whole nodes* because
  a single-tenant node cannot be shared (one GPU of an 8-GPU node pays for 8);
* hybrid: a warm dedicated floor (whole nodes) plus shared replicas for the expected overflow.

The shared pool's per-token price is the *chargeback*, what the platform bills the tenant. It is
projected and printed beside spend, and never decides anything.

**Offered load, never the backlog.** Sizes come from the gateway's counters (arrival rate and
tokens over the window) and the engine's throughput (:mod:`tidepool.policy.capacity`), in
*replicas of work*: ``input tokens/s / prefill tokens/s + output tokens/s / decode tokens/s``.
A queue that built while replicas were loading is not demand. Worked example (test
``work-8k-in-400-out``): 8,000 input and 400 output tokens/s on a replica that prefills 40,000
and decodes 2,000 tokens/s is ``0.2 + 0.2 = 0.4`` replicas of work.

**Utilization** is mean work over the dedicated replicas sized for the peak: with a mean of 0.4
and a peak of 0.9 replicas of work at a target utilization of 0.875, 2 replicas, utilization 0.2.

**The SLO.** A serverless tenant that idles out pays a model load on its next request, and the
requests that arrive during it wait. The policy estimates the share of active time spent
cold-starting, ``wakes x cold start / active seconds``; above :data:`COLD_START_BUDGET`, serverless
cannot meet a p99 queue-wait SLO, and the evidence favours a warm GPU floor whatever it costs.
That floor is sized for the wakes themselves (:func:`wake_floor`): the load the tenant brings
while active over the last hour, which dedicated and hybrid are priced with and the plan keeps
warm through the silences between busy spells, where a floor sized from one quiet window would
fall to a single replica just before the next spell.

**The choice** (only for ``spec.mode: auto``; a fixed mode is obeyed, reason ``FixedMode``):

* the evidence *favours GPUs* when serverless would miss the SLO, or the cheaper of
  dedicated/hybrid spends ``cost_margin`` (15%) less than serverless, or utilization is above
  ``promote_above`` (0.5) and GPUs spend no more; it *favours serverless* when serverless meets
  the SLO and spends ``cost_margin`` less than the current option, or utilization is below
  ``demote_below`` (0.3) and serverless spends less;
* promote from serverless once the evidence has favoured GPUs without a break for the hold of
  :func:`evidence_hold`; demote likewise;
* between dedicated and hybrid, move only when the other spends ``cost_margin`` less;
* never move within ``min_dwell`` of the last move or on unknown traffic (and the plan does not
  ask while a migration is in flight).

**Hysteresis.** ``status.utilizationAboveSince`` / ``utilizationBelowSince`` record since when the
evidence has favoured GPUs / serverless; a decision where it does not clears the timer. A move
commits the tenant for ``min_dwell`` and costs a model load on both sides, and one window of
bursty traffic is a poor forecast of the next half hour, so the evidence must cover at least two
windows and the commitment: ``window + hold >= max(2 x window, min_dwell)``.

**A LoRA tenant of a SharedEngine** (``inputs.engine``): its serverless option is that engine,
priced as the capacity it forces the fleet to add (what a promotion would save; its token share
of the rest stays with the others), with the engine's SLO (the fleet can grow to its load, and
has an adapter slot) in place of the cold-start budget (:mod:`tidepool.policy.lora_promotion`).
The utilization rule does not promote it: the fleet is warm, so there is no cold start for a busy
tenant to escape, and a promotion at equal spend only trades the fleet's pooled headroom for
replicas of its own. Everything else above applies unchanged, so a promotion to replicas of its
own and a demotion back obey the same margin, hold and dwell.

**A new tenant** (``placement_since is None``) starts serverless because nothing is known. Its
first evidence decides without the hold: the declared ``expectedTokensPerMinute`` at once, else
its first minutes of arrivals (at least :data:`FIRST_EVIDENCE`, not a full window).

This module must not import ``policy.autoscale`` (an import-linter independence contract), read
the clock, do I/O, or import ``kopf``/``kubernetes``/``prometheus_api_client``.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from tidepool.api import durations, v1alpha1
from tidepool.api.v1alpha1 import DeploymentMode, Tenancy
from tidepool.policy import cost, lora_promotion, signals
from tidepool.policy.capacity import EngineCapacity


class PlacementReason(StrEnum):
    """CamelCase reasons for :attr:`PlacementDecision.reason`."""

    PROMOTED = "Promoted"
    DEMOTED = "Demoted"
    HYBRID_CHOSEN = "HybridChosen"
    HOLDING = "Holding"
    DWELL_NOT_ELAPSED = "DwellNotElapsed"
    METRICS_UNKNOWN = "MetricsUnknown"
    FIXED_MODE = "FixedMode"
    NO_POOL = "NoPool"


@dataclass(frozen=True, slots=True)
class PlacementPolicy:
    """The placement knobs, parsed from ``spec.placement``."""

    promote_above: float
    demote_below: float
    window: timedelta
    min_dwell: timedelta
    cost_margin: float

    @classmethod
    def from_spec(cls, spec: v1alpha1.PlacementSpec) -> "PlacementPolicy":
        return cls(
            promote_above=spec.promote_above,
            demote_below=spec.demote_below,
            window=spec.window.delta,
            min_dwell=spec.min_dwell.delta,
            cost_margin=spec.cost_margin,
        )


#: The share of a serverless tenant's active time that may be spent loading the model after a
#: wake. Requests that arrive during a load wait for it, and a 60 s load breaks a 10 s p99 queue
#: wait once more than 1% of requests fall into one; half of that leaves room for bursts at wake.
COLD_START_BUDGET: Final = 0.005
#: How far back idle gaps are counted for :func:`cold_start_share`. Wakes are rare events: one
#: placement window sees none or one, so a window-sized count would swing the evidence on and
#: off; an hour sees the tenant's rhythm.
WAKE_HORIZON: Final = timedelta(hours=1)
#: Pod start to Ready assumed for an 8B model on a node that already holds its weights: llm-d
#: measured 85 s for a 32B model (llm-d#2492), and a quarter of the parameters loads faster.
DEFAULT_COLD_START: Final = timedelta(seconds=60)
#: A new tenant's first placement may use this much traffic instead of a full window.
FIRST_EVIDENCE: Final = timedelta(minutes=3)
#: Output tokens per input token assumed when only a total (``expectedTokensPerMinute``) is
#: declared: chat traffic is prompt-heavy (the Azure 2023 conversation trace averages 1,155
#: input and 211 output tokens per request, about 5.5 to 1).
DECLARED_OUTPUT_SHARE: Final = 0.15


@dataclass(frozen=True, slots=True)
class PoolPrice:
    """What a GPUPool costs. ``price_per_million_tokens`` (shared pools) is the chargeback."""

    name: str
    tenancy: Tenancy
    gpu_type: str
    price_per_gpu_hour: float
    price_per_million_tokens: float | None
    gpus_per_node: int = 1

    def gpus_held(self, replicas: float, gpus_per_replica: int) -> float:
        """GPUs paid for: whole nodes on a dedicated pool, GPUs on a shared one.

        E.g. 1 replica of 1 GPU on 8-GPU dedicated nodes holds 8 GPUs; on a shared pool, 1.
        """
        gpus = replicas * gpus_per_replica
        if self.tenancy == Tenancy.DEDICATED and gpus > 0:
            return math.ceil(gpus / self.gpus_per_node - 1e-9) * self.gpus_per_node
        return gpus


@dataclass(frozen=True, slots=True)
class Load:
    """Offered load: arrivals and tokens per second, as the gateway counts them."""

    requests_per_second: float
    input_tokens_per_second: float
    output_tokens_per_second: float

    @property
    def tokens_per_second(self) -> float:
        return self.input_tokens_per_second + self.output_tokens_per_second


@dataclass(frozen=True, slots=True)
class Traffic:
    """Offered load over the placement window (or the part of it seen so far)."""

    mean: Load
    peak: Load
    """The busiest minute of the window."""
    span: timedelta
    """How much traffic history ``mean`` and ``peak`` cover."""
    active_fraction: float
    """Share of ``horizon`` in which the tenant had requests within its idle window (0..1)."""
    wakes: float
    """Requests that came after a whole idle window without one in ``horizon``: the wakes a
    serverless placement pays (counted from arrivals, so a warm tenant shows them too)."""
    horizon: timedelta = WAKE_HORIZON
    """How much history ``active_fraction`` and ``wakes`` cover."""
    recent: Load | None = None
    """The last minute's load, which the autoscaler holds replicas for (``None``: not known,
    e.g. a declared load)."""
    horizon_mean: Load | None = None
    """The mean load over ``horizon``: with ``active_fraction``, the load a tenant brings while
    it is active, steadier than one window's (``None``: not known)."""


def work(load: Load, cap: EngineCapacity) -> float:
    """Replicas of work ``load`` keeps busy: ``input/prefill + output/decode``."""
    return cap.seconds_per_request(load.input_tokens_per_second, load.output_tokens_per_second)


def declared(tokens_per_minute: float) -> Traffic:
    """Traffic as a tenant declares it (``spec.placement.expectedTokensPerMinute``): steady."""
    tps = tokens_per_minute / 60.0
    load = Load(0.0, tps * (1 - DECLARED_OUTPUT_SHARE), tps * DECLARED_OUTPUT_SHARE)
    return Traffic(
        mean=load,
        peak=load,
        span=timedelta(0),
        active_fraction=1.0,
        wakes=0.0,
        horizon=timedelta(0),
    )


@dataclass(frozen=True, slots=True)
class PlacementInputs:
    requested_mode: DeploymentMode
    current_mode: DeploymentMode
    policy: PlacementPolicy
    traffic: Traffic | signals.NoData
    capacity: EngineCapacity
    gpus_per_replica: int
    min_replicas: int
    #: Busy share of a replica the autoscaler aims for (targetQueueDepth / maxNumSeqs).
    target_utilization: float
    shared: PoolPrice | None
    dedicated: PoolPrice | None
    #: When the current placement was chosen; ``None`` for a tenant never placed on evidence.
    placement_since: datetime | None
    #: Since when the evidence has favoured GPUs / serverless (module docstring, "Hysteresis").
    above_since: datetime | None
    below_since: datetime | None
    #: In-flight requests one dedicated replica takes before the gateway spills to the shared pool
    #: (``spec.hybrid.overflowConcurrencyPerReplica``); ``None`` means its whole batch.
    overflow_concurrency_per_replica: int | None = None
    #: The tenant's declared load, used until its own traffic is known.
    expected_tokens_per_minute: float | None = None
    #: Pod start to Ready: what a wake costs the requests that arrive during it.
    cold_start: timedelta = DEFAULT_COLD_START
    #: For a LoRA tenant of a base model with a SharedEngine: that engine, which then *is* the
    #: serverless option (priced by :func:`tidepool.policy.lora_promotion.engine_spend`).
    engine: lora_promotion.EngineShare | None = None
    #: ``spec.scaling.maxReplicas``: no option runs more replicas in total, so none is priced
    #: (or sized) for more; ``None``: no limit.
    max_replicas: int | None = None


@dataclass(frozen=True, slots=True)
class CostProjection:
    """Monthly spend of each option at the measured traffic; ``inf`` when the pool is missing."""

    serverless_monthly: float
    dedicated_monthly: float
    hybrid_monthly: float
    #: What the shared pool's per-token price would bill the tenant (never part of spend).
    chargeback_monthly: float | None
    #: Dedicated replicas sized for the peak, and the cheapest hybrid floor.
    dedicated_replicas: int = 0
    hybrid_floor_replicas: int = 0
    #: The floor wakes need (:func:`wake_floor`; 0: none), which a hybrid tenant keeps warm
    #: whatever floor it chose when it moved.
    wake_floor_replicas: int = 0
    #: Share of active time a serverless tenant would spend cold-starting (module docstring).
    cold_start_share: float = 0.0
    #: The SharedEngine option of a LoRA tenant (then ``serverless_monthly`` is its decision
    #: cost there, and the engine's SLO replaces the cold-start budget).
    engine: lora_promotion.EngineSpend | None = None

    @property
    def serverless_meets_slo(self) -> bool:
        if self.engine is not None:
            return self.engine.meets_slo
        return self.cold_start_share <= COLD_START_BUDGET

    @property
    def serverless_slo_note(self) -> str:
        """Why serverless misses the SLO, for messages ("" when it meets it)."""
        if self.engine is not None:
            return self.engine.slo_note
        if self.serverless_meets_slo:
            return ""
        return (
            f"serverless would spend {self.cold_start_share:.1%} of its active time"
            f" cold-starting (budget {COLD_START_BUDGET:.1%})"
        )


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    mode: DeploymentMode
    move: bool
    reason: str
    message: str
    utilization: float | None
    above_since: datetime | None
    below_since: datetime | None
    cost: CostProjection | None
    #: For ``mode == hybrid``: dedicated replicas to keep as the floor (0 for other modes).
    floor_replicas: int = 0


_EFFECTIVE: Final = (DeploymentMode.SERVERLESS, DeploymentMode.DEDICATED, DeploymentMode.HYBRID)


def evidence_hold(policy: PlacementPolicy) -> timedelta:
    """How long the evidence must favour a move, on top of the window it is measured over.

    ``max(2 x window, min_dwell) - window`` (module docstring, "Hysteresis"): with the defaults
    (window 10 min, dwell 30 min) 20 minutes, so 30 minutes of traffic back the 30-minute
    commitment; with a 1-hour window and the same dwell, one more window (1 hour).
    """
    return max(2 * policy.window, policy.min_dwell) - policy.window


def dedicated_replicas(peak_work: float, target_utilization: float, min_replicas: int) -> int:
    """Replicas a dedicated deployment sized for ``peak_work`` runs: at least 1 and the minimum.

    E.g. 1.2 replicas of work at a target utilization of 0.875: ``ceil(1.37) = 2``.
    """
    return max(1, min_replicas, math.ceil(peak_work / target_utilization - 1e-9))


def utilization(
    mean_work: float, peak_work: float, target_utilization: float, min_replicas: int
) -> float:
    """Mean work over the dedicated replicas sized for the peak: ``0.4 / 2 = 0.2``."""
    return mean_work / dedicated_replicas(peak_work, target_utilization, min_replicas)


def expected_overflow(mean: float, peak: float, threshold: float) -> float:
    """Expected load above ``threshold``, knowing only the mean and the peak.

    Why an approximation: the window gives two numbers, not a distribution. We take the load as
    uniform on ``[lo, peak]`` with ``lo = 2*mean - peak``; when that is negative (a spiky
    window), as idle (0) with probability ``1 - w`` and uniform on ``[0, peak]`` with probability
    ``w = 2*mean/peak``, which keeps the mean. Above ``lo``,
    ``E[(C - x)+] = w * (peak - x)^2 / (2 (peak - lo))``. E.g. mean 40, peak 100, floor at 64:
    ``w = 0.8``, ``0.8 * 36^2 / 200 = 5.18`` spills on average, 13% of the traffic.
    """
    if peak <= threshold or peak <= 0:
        return 0.0
    lo = max(0.0, 2.0 * mean - peak)
    if peak - lo <= 1e-12:
        return max(0.0, mean - threshold)
    if threshold <= lo:
        return max(0.0, mean - threshold)
    w = min(1.0, 2.0 * mean / (lo + peak))
    return w * (peak - threshold) ** 2 / (2.0 * (peak - lo))


def cold_start_share(traffic: Traffic, cold_start: timedelta) -> float:
    """Share of active time spent loading after wakes: 3 wakes x 60 s in 30 active min is 10%."""
    active = traffic.active_fraction * traffic.horizon.total_seconds()
    if traffic.wakes <= 0:
        return 0.0
    if active <= 0:
        return 1.0
    return min(1.0, traffic.wakes * cold_start.total_seconds() / active)


def wake_floor(traffic: Traffic, inputs: PlacementInputs, seats_share: float) -> int:
    """The smallest hybrid floor that keeps wakes off the cold overflow, or 0 if none is needed.

    Overflow replicas idle out and cold-start exactly as serverless ones do. When wakes would
    break the SLO (:func:`cold_start_share` over :data:`COLD_START_BUDGET`), the requests that
    arrive in the first model load after a wake can only be served by the warm floor, so the
    floor must carry the tenant's load while active: its mean over the wake horizon divided by
    the share of the horizon it was active. The horizon, not one window, because the floor has
    to be there when the *next* wake comes, typically after a window of silence.

    Worked example (test ``wake-floor-active-third``): over an hour, 0.6 replicas of work on
    average, active a third of the time, so 1.8 replicas of work while active; with the spill
    threshold at 56 of 64 seats (0.875 of a replica), ``ceil(1.8 / 0.875) = 3``.
    """
    if traffic.horizon_mean is None or traffic.active_fraction <= 0:
        return 0
    if cold_start_share(traffic, inputs.cold_start) <= COLD_START_BUDGET:
        return 0
    while_active = work(traffic.horizon_mean, inputs.capacity) / traffic.active_fraction
    return math.ceil(while_active / seats_share - 1e-9)


def project(inputs: PlacementInputs, traffic: Traffic) -> CostProjection:
    """Monthly spend of serverless, dedicated and hybrid at ``traffic`` (module docstring).

    Worked example (test ``spend-h100-one-replica``): a steady 0.5 replicas of work, target
    utilization 0.875, H100s at $7.79/GPU-hour on both pools, dedicated nodes of 8 GPUs:
    serverless holds ``max(1, 0.5/0.875) = 1`` GPU while active (always): ``7.79 x 730 =
    $5,687``/month; dedicated holds 1 replica, i.e. a whole node of 8 GPUs: $45,494/month.

    Every option is held to ``maxReplicas`` in total, as the autoscaler holds it: a load that
    needs more is priced at the limit (its excess goes unserved whichever option runs), and a
    hybrid floor is at most the limit with its overflow in what is left. E.g. a peak needing
    3,044 replicas under ``maxReplicas: 1000``: dedicated 1,000, and no floor above 1,000.
    """
    cap = inputs.capacity
    target = inputs.target_utilization
    gpr = inputs.gpus_per_replica
    mean = work(traffic.mean, cap)
    peak = max(work(traffic.peak, cap), mean)
    active = max(1e-9, traffic.active_fraction)
    most = inputs.max_replicas if inputs.max_replicas is not None else math.inf
    n_ded = int(min(dedicated_replicas(peak, target, inputs.min_replicas), most))

    def monthly(pool: PoolPrice, replicas: float) -> float:
        return cost.dedicated_monthly(pool.gpus_held(replicas, gpr), pool.price_per_gpu_hour)

    serverless = dedicated = hybrid = math.inf
    chargeback: float | None = None
    floor = wake = 0
    on_engine: lora_promotion.EngineSpend | None = None
    if inputs.engine is not None:
        on_engine = lora_promotion.engine_spend(
            inputs.engine,
            input_tokens_per_second=traffic.mean.input_tokens_per_second,
            output_tokens_per_second=traffic.mean.output_tokens_per_second,
            peak_input_tokens_per_second=traffic.peak.input_tokens_per_second,
            peak_output_tokens_per_second=traffic.peak.output_tokens_per_second,
        )
        serverless = on_engine.decision_monthly
        chargeback = on_engine.chargeback_monthly
    elif inputs.shared is not None:
        # While active it runs what its load needs, at least one replica; idle, nothing.
        up = max(float(inputs.min_replicas), active * min(most, max(1.0, mean / active / target)))
        serverless = monthly(inputs.shared, up)
        if inputs.shared.price_per_million_tokens is not None:
            chargeback = cost.serverless_monthly(
                traffic.mean.tokens_per_second, inputs.shared.price_per_million_tokens
            )
    if inputs.dedicated is not None:
        limit = (inputs.overflow_concurrency_per_replica or cap.max_num_seqs) / cap.max_num_seqs
        # Dedicated GPUs too keep what wakes need warm (the plan holds them at that floor).
        wake = int(min(wake_floor(traffic, inputs, limit), most))
        n_ded = max(n_ded, wake)
        dedicated = monthly(inputs.dedicated, n_ded)
        if inputs.shared is not None:
            # From the floor wakes need, up to the one that carries the peak without spilling
            # (beyond n_ded when the spill threshold is below a full batch), within the limit.
            lowest = int(min(max(1, inputs.min_replicas, wake), most))
            top = int(min(max(n_ded, lowest, math.ceil(peak / limit - 1e-9)), most))
            for f in range(lowest, top + 1):
                spill = min(expected_overflow(mean, peak, f * limit) / target, most - f)
                price = monthly(inputs.dedicated, f) + monthly(inputs.shared, spill)
                if price < hybrid:
                    hybrid, floor = price, f
    return CostProjection(
        serverless_monthly=serverless,
        dedicated_monthly=dedicated,
        hybrid_monthly=hybrid,
        chargeback_monthly=chargeback,
        dedicated_replicas=n_ded,
        hybrid_floor_replicas=floor,
        wake_floor_replicas=wake,
        cold_start_share=cold_start_share(traffic, inputs.cold_start),
        engine=on_engine,
    )


def spend_of(proj: CostProjection, mode: DeploymentMode) -> float:
    """Monthly spend of running in ``mode``: on a SharedEngine, the apportioned share (what the
    tenant costs the platform), not the decision cost with the replicas it forces."""
    if mode == DeploymentMode.SERVERLESS and proj.engine is not None:
        return proj.engine.spend_monthly
    return _monthly(proj, mode)


def _monthly(proj: CostProjection, mode: DeploymentMode) -> float:
    if mode == DeploymentMode.DEDICATED:
        return proj.dedicated_monthly
    if mode == DeploymentMode.HYBRID:
        return proj.hybrid_monthly
    return proj.serverless_monthly


def spend_text(proj: CostProjection) -> str:
    """Spend of each option and the chargeback, for status and events.

    E.g. ``spend/mo: dedicated $5,687 (1 replicas) vs hybrid $5,687 (floor 1) vs serverless
    $2,843; chargeback $1,051/mo``.
    """
    charge = (
        f"; chargeback {cost.money(proj.chargeback_monthly)}/mo"
        if proj.chargeback_monthly is not None
        else ""
    )
    if proj.engine is not None:
        shared = lora_promotion.engine_text(proj.engine)
    else:
        slo = "" if proj.serverless_meets_slo else f" (cold starts {proj.cold_start_share:.1%})"
        shared = f"serverless {cost.money(proj.serverless_monthly)}{slo}"
    return (
        f"spend/mo: dedicated {cost.money(proj.dedicated_monthly)}"
        f" ({proj.dedicated_replicas} replicas) vs hybrid {cost.money(proj.hybrid_monthly)}"
        f" (floor {proj.hybrid_floor_replicas}) vs {shared}{charge}"
    )


def _fmt(td: timedelta) -> str:
    return durations.format_seconds(td.total_seconds())


@dataclass(frozen=True, slots=True)
class _Evidence:
    """The traffic a decision may act on (``None``: not enough) and, without it, why not."""

    traffic: Traffic | None
    unknown_why: str = ""


@dataclass(frozen=True, slots=True)
class _Measured:
    """The numbers every decision on evidence reports: utilization and the spend of each option."""

    utilization: float
    cost: CostProjection


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What one rule concluded: the part of a :class:`PlacementDecision` that differs per rule.

    The rules return verdicts and :func:`_decision` alone builds the decision, so what every
    decision carries (utilization, spend, the evidence timers) is set in one place.
    """

    mode: DeploymentMode
    move: bool
    reason: PlacementReason
    message: str
    floor_replicas: int = 0
    #: A move starts the evidence afresh: both timers are cleared (module docstring,
    #: "Hysteresis").
    clears_timers: bool = False


@dataclass(frozen=True, slots=True)
class _Comparison:
    """What the rules of an ``auto`` tenant compare, once its traffic is known and a pool exists.

    Built once by :func:`_compare` so the promotion, demotion and switch rules read the same
    costs and timers, and none recomputes them.
    """

    inputs: PlacementInputs
    now: datetime
    current: DeploymentMode
    measured: _Measured
    #: The options whose pools exist, in :data:`_EFFECTIVE` order (ties go to the first).
    available: tuple[DeploymentMode, ...]
    #: The cheaper of dedicated and hybrid, where either is available.
    best_gpu: DeploymentMode | None
    gpu_cost: float
    srv_cost: float
    cur_cost: float
    above_since: datetime | None
    below_since: datetime | None

    @property
    def first(self) -> bool:
        """A tenant never placed on evidence decides on its first evidence, without the hold."""
        return self.inputs.placement_since is None

    @property
    def utilization_text(self) -> str:
        return f"utilization {self.measured.utilization:.2f}"


@dataclass(frozen=True, slots=True)
class _Move:
    """Where a rule would move the tenant, and why (before the dwell is checked)."""

    target: DeploymentMode
    why: str


def decide(inputs: PlacementInputs, now: datetime) -> PlacementDecision:
    """The effective mode wanted at ``now``, with the numbers behind it. Pure.

    The rules of the module docstring in their order: a fixed mode is obeyed; unknown traffic
    or no pool holds; otherwise the options are compared and a move, if any, waits for the dwell.
    """
    current = (
        inputs.current_mode if inputs.current_mode in _EFFECTIVE else DeploymentMode.SERVERLESS
    )
    evidence = _evidence(inputs)
    measured = _measure(inputs, evidence.traffic) if evidence.traffic is not None else None
    if inputs.requested_mode != DeploymentMode.AUTO:
        return _decision(
            _fixed_mode(inputs, measured),
            utilization=measured.utilization if measured is not None else None,
            cost=measured.cost if measured is not None else None,
            above_since=inputs.above_since,
            below_since=inputs.below_since,
        )
    if measured is None:
        return _decision(
            _Verdict(
                current,
                False,
                PlacementReason.METRICS_UNKNOWN,
                f"{evidence.unknown_why}: holding {current}",
            ),
            utilization=None,
            cost=None,
            above_since=inputs.above_since,
            below_since=inputs.below_since,
        )
    if inputs.shared is None and inputs.dedicated is None and inputs.engine is None:
        return _decision(
            _Verdict(
                current, False, PlacementReason.NO_POOL, "no shared or dedicated GPUPool found"
            ),
            utilization=measured.utilization,
            cost=None,
            above_since=inputs.above_since,
            below_since=inputs.below_since,
        )
    c = _compare(inputs, now, current, measured)
    return _decision(
        _hold_or_move(c, _move(c)),
        utilization=measured.utilization,
        cost=measured.cost,
        above_since=c.above_since,
        below_since=c.below_since,
    )


def _decision(
    verdict: _Verdict,
    *,
    utilization: float | None,
    cost: CostProjection | None,
    above_since: datetime | None,
    below_since: datetime | None,
) -> PlacementDecision:
    """The one place a :class:`PlacementDecision` is built: a rule's verdict plus the numbers."""
    return PlacementDecision(
        mode=verdict.mode,
        move=verdict.move,
        reason=verdict.reason,
        message=verdict.message,
        utilization=utilization,
        above_since=None if verdict.clears_timers else above_since,
        below_since=None if verdict.clears_timers else below_since,
        cost=cost,
        floor_replicas=verdict.floor_replicas,
    )


def _evidence(inputs: PlacementInputs) -> _Evidence:
    """The traffic to decide on: a full window of it, a new tenant's first minutes of it (at
    least :data:`FIRST_EVIDENCE`), else a new tenant's declared load; otherwise none, with why.

    The one place the traffic signal's type is looked at, so the rules after it see
    :class:`Traffic` or nothing.
    """
    t, p = inputs.traffic, inputs.policy
    first = inputs.placement_since is None
    if isinstance(t, Traffic):
        if t.span >= p.window or (first and t.span >= FIRST_EVIDENCE):
            return _Evidence(t)
        why = f"traffic seen for {_fmt(t.span)} of a {_fmt(p.window)} window"
    else:
        why = f"traffic {signals.describe(t)}"
    if first and inputs.expected_tokens_per_minute is not None:
        return _Evidence(declared(inputs.expected_tokens_per_minute))
    return _Evidence(None, why)


def _measure(inputs: PlacementInputs, traffic: Traffic) -> _Measured:
    """Utilization and spend at ``traffic``: what a fixed mode reports and ``auto`` compares."""
    mean_work = work(traffic.mean, inputs.capacity)
    peak_work = max(work(traffic.peak, inputs.capacity), mean_work)
    return _Measured(
        utilization=utilization(
            mean_work, peak_work, inputs.target_utilization, inputs.min_replicas
        ),
        cost=project(inputs, traffic),
    )


def _fixed_mode(inputs: PlacementInputs, measured: _Measured | None) -> _Verdict:
    """A mode other than ``auto`` is obeyed, with the numbers shown when they are known; a
    fixed hybrid keeps the warm minimum as its floor (the evidence may not exist to size one)."""
    mode = inputs.requested_mode
    text = f"spec.mode is {mode}"
    if measured is not None:
        text += f"; utilization {measured.utilization:.2f}; {spend_text(measured.cost)}"
    return _Verdict(
        mode,
        mode != inputs.current_mode,
        PlacementReason.FIXED_MODE,
        text,
        floor_replicas=max(1, inputs.min_replicas) if mode == DeploymentMode.HYBRID else 0,
    )


def _available(inputs: PlacementInputs) -> tuple[DeploymentMode, ...]:
    """The options whose pools exist: serverless needs the shared pool or a SharedEngine,
    dedicated its pool, hybrid both pools."""
    has_shared = inputs.shared is not None
    has_dedicated = inputs.dedicated is not None
    exists = {
        DeploymentMode.SERVERLESS: has_shared or inputs.engine is not None,
        DeploymentMode.DEDICATED: has_dedicated,
        DeploymentMode.HYBRID: has_shared and has_dedicated,
    }
    return tuple(m for m in _EFFECTIVE if exists[m])


def _compare(
    inputs: PlacementInputs, now: datetime, current: DeploymentMode, measured: _Measured
) -> _Comparison:
    """The costs the rules compare, and the evidence timers (module docstring, "Hysteresis"),
    recomputed on every decision: a timer runs while the evidence favours its side and is
    cleared by the first decision where it does not."""
    p, proj, u = inputs.policy, measured.cost, measured.utilization
    available = _available(inputs)
    margin = p.cost_margin
    cur_cost = _monthly(proj, current)
    gpu_options: list[DeploymentMode] = [m for m in available if m != DeploymentMode.SERVERLESS]
    best_gpu: DeploymentMode | None = (
        min(gpu_options, key=lambda m: _monthly(proj, m)) if gpu_options else None
    )
    gpu_cost = _monthly(proj, best_gpu) if best_gpu is not None else math.inf
    srv_cost = proj.serverless_monthly if DeploymentMode.SERVERLESS in available else math.inf
    ref = cur_cost if current != DeploymentMode.SERVERLESS else gpu_cost
    slo_ok = proj.serverless_meets_slo
    # The utilization rule (promote a busy tenant when GPUs spend no more) is for serverless
    # replicas of its own, which idle out and cold-start; a SharedEngine stays warm for its
    # tenants, so there a promotion needs the margin (or the SLO) like any other saving.
    busy_enough = u > p.promote_above and inputs.engine is None
    favours_gpus = (
        gpu_cost < math.inf and (not slo_ok or gpu_cost <= (1.0 - margin) * srv_cost)
    ) or (busy_enough and gpu_cost <= srv_cost)
    favours_serverless = slo_ok and (
        srv_cost <= (1.0 - margin) * ref or (u < p.demote_below and srv_cost < ref)
    )
    return _Comparison(
        inputs=inputs,
        now=now,
        current=current,
        measured=measured,
        available=available,
        best_gpu=best_gpu,
        gpu_cost=gpu_cost,
        srv_cost=srv_cost,
        cur_cost=cur_cost,
        above_since=(inputs.above_since or now) if favours_gpus else None,
        below_since=(inputs.below_since or now) if favours_serverless else None,
    )


def _sustained(c: _Comparison, since: datetime | None) -> bool:
    """Whether the evidence has favoured a side for the hold (at once for a new tenant)."""
    return since is not None and (c.first or c.now - since >= evidence_hold(c.inputs.policy))


def _because(
    c: _Comparison,
    since: datetime | None,
    cheaper: float,
    base: float,
    target_is_serverless: bool = False,
) -> str:
    """Why a sustained move is made: the saving, else the utilization rule, else the SLO."""
    assert since is not None
    p = c.inputs.policy
    held = "first window of a new tenant" if c.first else f"held {_fmt(c.now - since)}"
    if cheaper < base:
        gain = f"spends {1 - cheaper / base:.0%} less"
    elif c.measured.cost.serverless_meets_slo or target_is_serverless:
        gain = f"spends no more, utilization above {p.promote_above:.2f}"
    else:
        gain = c.measured.cost.serverless_slo_note
    return (
        f"{gain}, {c.utilization_text} ({held}; evidence {_fmt(p.window)} window"
        f" + {_fmt(evidence_hold(p))} hold)"
    )


def _move(c: _Comparison) -> _Move | None:
    """The first rule that moves the tenant: promotion from serverless; from GPUs demotion,
    then a switch between dedicated and hybrid, then leaving a pool that is gone."""
    if c.current == DeploymentMode.SERVERLESS:
        return _promotion(c)
    return _demotion(c) or _gpu_switch(c) or _pool_gone(c)


def _promotion(c: _Comparison) -> _Move | None:
    """Serverless to the cheaper GPU option once the evidence has favoured GPUs for the hold."""
    if c.best_gpu is not None and _sustained(c, c.above_since):
        return _Move(c.best_gpu, _because(c, c.above_since, c.gpu_cost, c.cur_cost))
    return None


def _demotion(c: _Comparison) -> _Move | None:
    """GPUs to serverless once the evidence has favoured serverless for the hold."""
    if DeploymentMode.SERVERLESS in c.available and _sustained(c, c.below_since):
        why = _because(c, c.below_since, c.srv_cost, c.cur_cost, target_is_serverless=True)
        return _Move(DeploymentMode.SERVERLESS, why)
    return None


def _gpu_switch(c: _Comparison) -> _Move | None:
    """Dedicated and hybrid trade places only for the cost margin: both keep GPUs warm, so
    the SLO and utilization rules do not tell them apart."""
    other = (
        DeploymentMode.HYBRID if c.current == DeploymentMode.DEDICATED else DeploymentMode.DEDICATED
    )
    other_cost = _monthly(c.measured.cost, other)
    margin = c.inputs.policy.cost_margin
    if other in c.available and other_cost <= (1.0 - margin) * c.cur_cost:
        why = (
            f"{other} spends {1 - other_cost / c.cur_cost:.0%} less"
            f" (>= margin {margin:.0%}); {c.utilization_text}"
        )
        return _Move(other, why)
    return None


def _pool_gone(c: _Comparison) -> _Move | None:
    """A tenant whose pool was deleted moves to the cheapest option that still exists."""
    if c.current not in c.available:
        target = min(c.available, key=lambda m: _monthly(c.measured.cost, m))
        return _Move(target, f"the {c.current} pool is gone")
    return None


def _hold_or_move(c: _Comparison, move: _Move | None) -> _Verdict:
    """No move holds; a move within ``min_dwell`` of the last one waits; otherwise it is made."""
    p, proj, current = c.inputs.policy, c.measured.cost, c.current
    held_floor = proj.hybrid_floor_replicas if current == DeploymentMode.HYBRID else 0
    if move is None:
        band = (
            f"{c.utilization_text} (promote above {p.promote_above:.2f},"
            f" demote below {p.demote_below:.2f})"
        )
        return _Verdict(
            current,
            False,
            PlacementReason.HOLDING,
            f"staying {current}: {band}; {spend_text(proj)}",
            floor_replicas=held_floor,
        )
    since = c.inputs.placement_since
    if since is not None and c.now - since < p.min_dwell:
        left = p.min_dwell - (c.now - since)
        return _Verdict(
            current,
            False,
            PlacementReason.DWELL_NOT_ELAPSED,
            f"would move {current} -> {move.target} ({move.why}) but placed"
            f" {_fmt(c.now - since)} ago; min dwell {_fmt(p.min_dwell)}"
            f" ({_fmt(left)} left); {spend_text(proj)}",
            floor_replicas=held_floor,
        )
    return _moved(c, move)


def _moved(c: _Comparison, move: _Move) -> _Verdict:
    """The move itself: its reason names the direction, and a hybrid target takes the
    cheapest floor the projection found."""
    proj = c.measured.cost
    floor = proj.hybrid_floor_replicas if move.target == DeploymentMode.HYBRID else 0
    if move.target == DeploymentMode.HYBRID:
        reason = PlacementReason.HYBRID_CHOSEN
        verb = f"hybrid chosen (floor {floor} dedicated + shared overflow)"
    elif move.target == DeploymentMode.SERVERLESS:
        reason = PlacementReason.DEMOTED
        verb = "demoted to serverless"
    else:
        reason = PlacementReason.PROMOTED
        verb = "promoted to dedicated"
    return _Verdict(
        move.target,
        True,
        reason,
        f"{verb}: {move.why}; {spend_text(proj)}",
        floor_replicas=floor,
        clears_timers=True,
    )
