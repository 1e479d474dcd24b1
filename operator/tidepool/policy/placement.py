"""Placement: should a tenant run serverless (shared pool), dedicated, or hybrid, and why.

Role: one pure function, :func:`decide`, of a :class:`PlacementInputs` snapshot and ``now``. The
operator and ``tidepool simulate`` both call it. It only *chooses*; the make-before-break migration
that follows is the reconciler's job.

**Utilization** is busy capacity over the capacity a dedicated deployment would provision::

    replicas_dedicated = max(1, min_replicas, ceil(peak_concurrency / capacity_per_replica))
    utilization        = mean_concurrency / (capacity_per_replica * replicas_dedicated)

i.e. seed 001's "average utilization you would see on a dedicated instance sized for your peak".
Worked example (test ``utilization-mean-46-peak-60-capacity-64-is-0.72``): mean 46.08 in-flight
requests, peak 60, ``maxNumSeqs`` 64: one replica covers the peak, so utilization is
``46.08 / 64 = 0.72``. With peak 100 instead, two replicas are needed and utilization is 0.36.

**The choice** (only for ``spec.mode: auto``; a fixed mode is obeyed, reason ``FixedMode``):

* the evidence *favours GPUs* when the cheaper of dedicated/hybrid beats serverless by
  ``cost_margin`` (15%), or utilization is above ``promote_above`` (0.5) and GPUs are not
  more expensive; it *favours serverless* when serverless beats the current (or, while
  serverless, the cheapest GPU) option by ``cost_margin``, or utilization is below
  ``demote_below`` (0.3) and serverless is cheaper;
* promote from serverless (to the cheaper of dedicated and hybrid) once the evidence has
  favoured GPUs without a break for the hold of :func:`evidence_hold`; demote likewise;
* between dedicated and hybrid, move only when the other is cheaper by ``cost_margin``: a steady
  base with large spikes makes hybrid (a dedicated floor plus per-token overflow) the cheapest;
* never move within ``min_dwell`` of the last move, during a migration, or on unknown metrics.

**Hysteresis.** ``status.utilizationAboveSince`` / ``utilizationBelowSince`` record since when the
evidence has favoured GPUs / serverless; any decision where it does not clears the timer. Why
not move on the first window that is cheaper by the margin: a move commits the tenant to the
new placement for ``min_dwell`` (30 min) and costs a model load on both sides, but one 10-minute
window of bursty traffic is a poor forecast of the next 30 minutes. On the Azure code trace a
single window showed dedicated 27% cheaper; the following 30 minutes were 8% *dearer* on
dedicated, and the promotion plus the forced dwell cost more than either static choice. So the
evidence must cover at least two independent windows and at least the commitment:
``window + hold >= max(2 x window, min_dwell)`` (defaults: 10 min window + 20 min hold).

**A new tenant** (``placement_since is None``: never placed) starts serverless because nothing
is known, not because evidence chose it. Its first full window is all the evidence there is and
nothing contradicts it, so it moves as soon as that window favours GPUs, without the hold:
waiting 20 more minutes on a placement nobody chose would cost real money (17% of the
one-hour Azure conversation trace was spent that way). A tenant that has been placed, even by
default, passes its ``placement_since`` and gets the full hold.

Why both utilization and cost: the seeds' 30%/50% band is the rule people recognise and brackets
the economics (seed 002's crossover is at 45% of saturation, see
:func:`tidepool.policy.cost.crossover_utilization`); the projected monthly cost is what actually
decides, and it is printed in every message.

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
from tidepool.policy import cost, signals


class PlacementReason(StrEnum):
    """CamelCase reasons for :attr:`PlacementDecision.reason`."""

    PROMOTED = "Promoted"
    DEMOTED = "Demoted"
    HYBRID_CHOSEN = "HybridChosen"
    HOLDING = "Holding"
    DWELL_NOT_ELAPSED = "DwellNotElapsed"
    METRICS_UNKNOWN = "MetricsUnknown"
    FIXED_MODE = "FixedMode"
    MIGRATION_IN_PROGRESS = "MigrationInProgress"
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
            window=durations.parse(spec.window),
            min_dwell=durations.parse(spec.min_dwell),
            cost_margin=spec.cost_margin,
        )


@dataclass(frozen=True, slots=True)
class PoolPrice:
    """What a GPUPool costs. ``price_per_million_tokens`` is set only for shared pools."""

    name: str
    tenancy: Tenancy
    gpu_type: str
    price_per_gpu_hour: float
    price_per_million_tokens: float | None


@dataclass(frozen=True, slots=True)
class Traffic:
    """Demand measured over the placement window."""

    mean_concurrency: signals.Signal
    peak_concurrency: signals.Signal
    tokens_per_second: signals.Signal


@dataclass(frozen=True, slots=True)
class PlacementInputs:
    requested_mode: DeploymentMode
    current_mode: DeploymentMode
    policy: PlacementPolicy
    traffic: Traffic
    capacity_per_replica: int
    gpus_per_replica: int
    min_replicas: int
    shared: PoolPrice | None
    dedicated: PoolPrice | None
    #: When the current placement was chosen; ``None`` for a tenant never placed on evidence
    #: (a new tenant's default). The caller sets it when a move completes, and also on the first
    #: decision with known metrics that holds (that window confirmed the default placement).
    placement_since: datetime | None
    #: Since when the evidence has favoured GPUs / serverless (module docstring, "Hysteresis").
    above_since: datetime | None
    below_since: datetime | None
    migration_in_progress: bool
    #: In-flight requests one dedicated replica takes before the gateway spills to the shared pool
    #: (``spec.hybrid.overflowConcurrencyPerReplica``); ``None`` means ``capacity_per_replica``.
    overflow_concurrency_per_replica: int | None = None


@dataclass(frozen=True, slots=True)
class CostProjection:
    """Monthly cost of each option at the measured traffic; ``inf`` when the pool is missing."""

    serverless_monthly: float
    dedicated_monthly: float
    hybrid_monthly: float
    break_even_tokens_per_month: float | None
    #: Dedicated replicas sized for the peak, and the hybrid floor, behind the two projections.
    dedicated_replicas: int = 0
    hybrid_floor_replicas: int = 0


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


def dedicated_replicas(peak: float, capacity_per_replica: int, min_replicas: int) -> int:
    """Replicas a dedicated deployment sized for ``peak`` runs: at least 1 and the warm minimum."""
    return max(1, min_replicas, math.ceil(peak / capacity_per_replica - 1e-9))


def utilization(mean: float, peak: float, capacity_per_replica: int, min_replicas: int) -> float:
    """Busy over provisioned capacity (module docstring): ``46.08 / (64 * 1) = 0.72``."""
    n = dedicated_replicas(peak, capacity_per_replica, min_replicas)
    return mean / (capacity_per_replica * n)


def expected_overflow(mean: float, peak: float, threshold: float) -> float:
    """Expected in-flight requests above ``threshold``, knowing only the mean and the peak.

    Why an approximation: the window gives two numbers, not a distribution. We take concurrency
    as uniform on ``[lo, peak]`` with ``lo = 2*mean - peak``; when that is negative (a spiky
    window), as idle (0) with probability ``1 - w`` and uniform on ``[0, peak]`` with probability
    ``w = 2*mean/peak``, which keeps the mean. Above ``lo``,
    ``E[(C - x)+] = w * (peak - x)^2 / (2 (peak - lo))``. E.g. mean 40, peak 100, floor at 64:
    ``w = 0.8``, ``0.8 * 36^2 / 200 = 5.18`` requests spill on average, 13% of the traffic.
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


def project(inputs: PlacementInputs, mean: float, peak: float, tps: float) -> CostProjection:
    """Monthly cost of serverless, dedicated and hybrid at the measured traffic.

    * serverless: ``tokens/s x 2,628,000 s x $/1M`` (shared pool's per-token price);
    * dedicated: replicas sized for the peak x GPUs x $/GPU-h x 730 h;
    * hybrid: a floor of ``max(1, floor(mean / overflow_limit))`` dedicated replicas, plus the
      tokens of the expected overflow (:func:`expected_overflow`) billed per token.
    """
    cap = inputs.capacity_per_replica
    n_ded = dedicated_replicas(peak, cap, inputs.min_replicas)
    token_price = (
        inputs.shared.price_per_million_tokens
        if inputs.shared is not None and inputs.shared.price_per_million_tokens is not None
        else None
    )
    serverless = math.inf if token_price is None else cost.serverless_monthly(tps, token_price)
    dedicated = math.inf
    hybrid = math.inf
    floor = 0
    break_even: float | None = None
    if inputs.dedicated is not None:
        gpu_price = inputs.dedicated.price_per_gpu_hour
        dedicated = cost.dedicated_monthly(n_ded * inputs.gpus_per_replica, gpu_price)
        if token_price is not None and token_price > 0:
            break_even = cost.break_even_tokens(
                n_ded * inputs.gpus_per_replica * gpu_price, cost.HOURS_PER_MONTH, token_price
            )
            limit = inputs.overflow_concurrency_per_replica or cap
            floor = max(1, inputs.min_replicas, math.floor(mean / limit))
            spill = expected_overflow(mean, peak, floor * limit)
            spill_share = min(1.0, spill / mean) if mean > 0 else 0.0
            hybrid = cost.dedicated_monthly(
                floor * inputs.gpus_per_replica, gpu_price
            ) + cost.serverless_monthly(tps * spill_share, token_price)
    return CostProjection(
        serverless_monthly=serverless,
        dedicated_monthly=dedicated,
        hybrid_monthly=hybrid,
        break_even_tokens_per_month=break_even,
        dedicated_replicas=n_ded,
        hybrid_floor_replicas=floor,
    )


def _monthly(proj: CostProjection, mode: DeploymentMode) -> float:
    if mode == DeploymentMode.DEDICATED:
        return proj.dedicated_monthly
    if mode == DeploymentMode.HYBRID:
        return proj.hybrid_monthly
    return proj.serverless_monthly


def _costs_text(proj: CostProjection) -> str:
    return (
        f"dedicated {cost.money(proj.dedicated_monthly)}/mo ({proj.dedicated_replicas} replicas)"
        f" vs hybrid {cost.money(proj.hybrid_monthly)}/mo (floor {proj.hybrid_floor_replicas})"
        f" vs serverless {cost.money(proj.serverless_monthly)}/mo"
    )


def _fmt(td: timedelta) -> str:
    return durations.format_seconds(td.total_seconds())


def decide(inputs: PlacementInputs, now: datetime) -> PlacementDecision:
    """The effective mode wanted at ``now``, with the numbers behind it. Pure."""
    p = inputs.policy
    current = (
        inputs.current_mode if inputs.current_mode in _EFFECTIVE else DeploymentMode.SERVERLESS
    )
    t = inputs.traffic

    def hold(
        reason: PlacementReason,
        message: str,
        *,
        utilization: float | None = None,
        above_since: datetime | None = inputs.above_since,
        below_since: datetime | None = inputs.below_since,
        cost: CostProjection | None = None,
        floor: int = 0,
    ) -> PlacementDecision:
        return PlacementDecision(
            mode=current,
            move=False,
            reason=reason,
            message=message,
            utilization=utilization,
            above_since=above_since,
            below_since=below_since,
            cost=cost,
            floor_replicas=floor,
        )

    known = (
        isinstance(t.mean_concurrency, signals.Sample)
        and isinstance(t.peak_concurrency, signals.Sample)
        and isinstance(t.tokens_per_second, signals.Sample)
    )
    u: float | None = None
    proj: CostProjection | None = None
    above, below = inputs.above_since, inputs.below_since
    if (
        isinstance(t.mean_concurrency, signals.Sample)
        and isinstance(t.peak_concurrency, signals.Sample)
        and isinstance(t.tokens_per_second, signals.Sample)
    ):
        mean = t.mean_concurrency.value
        peak = max(t.peak_concurrency.value, mean)
        u = utilization(mean, peak, inputs.capacity_per_replica, inputs.min_replicas)
        proj = project(inputs, mean, peak, t.tokens_per_second.value)

    if inputs.requested_mode != DeploymentMode.AUTO:
        mode = inputs.requested_mode
        text = f"spec.mode is {mode}"
        if proj is not None and u is not None:
            text += f"; utilization {u:.2f}; {_costs_text(proj)}"
        return PlacementDecision(
            mode=mode,
            move=mode != inputs.current_mode,
            reason=PlacementReason.FIXED_MODE,
            message=text,
            utilization=u,
            above_since=above,
            below_since=below,
            cost=proj,
            floor_replicas=(max(1, inputs.min_replicas) if mode == DeploymentMode.HYBRID else 0),
        )
    if inputs.migration_in_progress:
        return hold(
            PlacementReason.MIGRATION_IN_PROGRESS,
            f"a migration is in progress; staying {current} until it completes",
            utilization=u,
            cost=proj,
        )
    if not known or proj is None or u is None:
        reasons = [
            f"{name} {signals.describe(sig)}"
            for name, sig in (
                ("mean concurrency", t.mean_concurrency),
                ("peak concurrency", t.peak_concurrency),
                ("tokens/s", t.tokens_per_second),
            )
            if isinstance(sig, signals.NoData)
        ]
        return hold(
            PlacementReason.METRICS_UNKNOWN,
            f"{'; '.join(reasons)}: holding {current}",
        )
    if inputs.shared is None and inputs.dedicated is None:
        return hold(PlacementReason.NO_POOL, "no shared or dedicated GPUPool found", utilization=u)

    available = [
        m
        for m in _EFFECTIVE
        if (m == DeploymentMode.SERVERLESS and inputs.shared is not None)
        or (m == DeploymentMode.DEDICATED and inputs.dedicated is not None)
        or (
            m == DeploymentMode.HYBRID
            and inputs.shared is not None
            and inputs.dedicated is not None
        )
    ]
    margin = p.cost_margin
    cur_cost = _monthly(proj, current)
    ut = f"utilization {u:.2f}"
    # The evidence timers (module docstring, "Hysteresis"): recomputed on every decision.
    gpu_options: list[DeploymentMode] = [m for m in available if m != DeploymentMode.SERVERLESS]
    best_gpu: DeploymentMode | None = (
        min(gpu_options, key=lambda m: _monthly(proj, m)) if gpu_options else None
    )
    gpu_cost = _monthly(proj, best_gpu) if best_gpu is not None else math.inf
    srv_cost = proj.serverless_monthly if DeploymentMode.SERVERLESS in available else math.inf
    ref = cur_cost if current != DeploymentMode.SERVERLESS else gpu_cost
    favours_gpus = gpu_cost <= (1.0 - margin) * srv_cost or (
        u > p.promote_above and gpu_cost <= srv_cost
    )
    favours_serverless = srv_cost <= (1.0 - margin) * ref or (u < p.demote_below and srv_cost < ref)
    above = (above or now) if favours_gpus else None
    below = (below or now) if favours_serverless else None
    hold_for = evidence_hold(p)
    first = inputs.placement_since is None

    def sustained(since: datetime | None) -> bool:
        return since is not None and (first or now - since >= hold_for)

    def because(since: datetime | None, cheaper: float, base: float) -> str:
        assert since is not None
        held = "first window of a new tenant" if first else f"held {_fmt(now - since)}"
        return (
            f"{1 - cheaper / base:.0%} cheaper, {ut} ({held}; evidence"
            f" {_fmt(p.window)} window + {_fmt(hold_for)} hold)"
        )

    target: DeploymentMode = current
    why = ""
    if current == DeploymentMode.SERVERLESS:
        if best_gpu is not None and sustained(above):
            target = best_gpu
            why = because(above, gpu_cost, cur_cost)
    else:
        other = (
            DeploymentMode.HYBRID
            if current == DeploymentMode.DEDICATED
            else DeploymentMode.DEDICATED
        )
        if DeploymentMode.SERVERLESS in available and sustained(below):
            target = DeploymentMode.SERVERLESS
            why = because(below, srv_cost, cur_cost)
        elif other in available and _monthly(proj, other) <= (1.0 - margin) * cur_cost:
            target = other
            why = (
                f"{other} is cheaper by {1 - _monthly(proj, other) / cur_cost:.0%}"
                f" (>= margin {margin:.0%}); {ut}"
            )
        elif current not in available:
            target = min(available, key=lambda m: _monthly(proj, m))
            why = f"the {current} pool is gone"

    floor = proj.hybrid_floor_replicas if target == DeploymentMode.HYBRID else 0
    if target == current:
        band = f"{ut} (promote above {p.promote_above:.2f}, demote below {p.demote_below:.2f})"
        return hold(
            PlacementReason.HOLDING,
            f"staying {current}: {band}; {_costs_text(proj)}",
            utilization=u,
            above_since=above,
            below_since=below,
            cost=proj,
            floor=proj.hybrid_floor_replicas if current == DeploymentMode.HYBRID else 0,
        )
    if inputs.placement_since is not None and now - inputs.placement_since < p.min_dwell:
        left = p.min_dwell - (now - inputs.placement_since)
        return hold(
            PlacementReason.DWELL_NOT_ELAPSED,
            f"would move {current} -> {target} ({why}) but placed"
            f" {_fmt(now - inputs.placement_since)} ago; min dwell {_fmt(p.min_dwell)}"
            f" ({_fmt(left)} left); {_costs_text(proj)}",
            utilization=u,
            above_since=above,
            below_since=below,
            cost=proj,
            floor=proj.hybrid_floor_replicas if current == DeploymentMode.HYBRID else 0,
        )
    if target == DeploymentMode.HYBRID:
        reason = PlacementReason.HYBRID_CHOSEN
        verb = f"hybrid chosen (floor {floor} dedicated + shared overflow)"
    elif target == DeploymentMode.SERVERLESS:
        reason = PlacementReason.DEMOTED
        verb = "demoted to serverless"
    else:
        reason = PlacementReason.PROMOTED
        verb = "promoted to dedicated"
    return PlacementDecision(
        mode=target,
        move=True,
        reason=reason,
        message=f"{verb}: {why}; {_costs_text(proj)}",
        utilization=u,
        above_since=None,
        below_since=None,
        cost=proj,
        floor_replicas=floor,
    )
