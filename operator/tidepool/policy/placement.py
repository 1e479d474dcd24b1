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

* promote from serverless when utilization has stayed above ``promote_above`` (0.5) for
  ``window`` and dedicated (or hybrid) is not more expensive, or at once when the cheaper of
  dedicated/hybrid beats serverless by ``cost_margin`` (the window is already in the
  measurement: traffic is averaged over it);
* demote to serverless when utilization has stayed below ``demote_below`` (0.3) for ``window`` and
  serverless is cheaper, or at once when serverless is cheaper by ``cost_margin``;
* between dedicated and hybrid, move only when the other is cheaper by ``cost_margin``: a steady
  base with large spikes makes hybrid (a dedicated floor plus per-token overflow) the cheapest;
* never move within ``min_dwell`` of the last move, during a migration, or on unknown metrics.

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
    placement_since: datetime | None
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
        above = (above or now) if u > p.promote_above else None
        below = (below or now) if u < p.demote_below else None

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
    held_above = above is not None and now - above >= p.window
    held_below = below is not None and now - below >= p.window

    target = current
    why = ""
    if current == DeploymentMode.SERVERLESS:
        options = [m for m in available if m != DeploymentMode.SERVERLESS]
        if options:
            best = min(options, key=lambda m: _monthly(proj, m))
            best_cost = _monthly(proj, best)
            if best_cost <= (1.0 - margin) * cur_cost:
                target = best
                why = (
                    f"{best} is cheaper by {1 - best_cost / cur_cost:.0%} (>= margin {margin:.0%})"
                    f"; {ut}"
                )
            elif held_above and best_cost <= cur_cost:
                assert above is not None
                target = best
                why = f"{ut} > {p.promote_above:.2f} for {_fmt(now - above)}"
    else:
        serverless_cost = proj.serverless_monthly
        other = (
            DeploymentMode.HYBRID
            if current == DeploymentMode.DEDICATED
            else DeploymentMode.DEDICATED
        )
        if DeploymentMode.SERVERLESS in available and serverless_cost <= (1.0 - margin) * cur_cost:
            target = DeploymentMode.SERVERLESS
            why = (
                f"serverless is cheaper by {1 - serverless_cost / cur_cost:.0%}"
                f" (>= margin {margin:.0%}); {ut}"
            )
        elif DeploymentMode.SERVERLESS in available and held_below and serverless_cost < cur_cost:
            assert below is not None
            target = DeploymentMode.SERVERLESS
            why = f"{ut} < {p.demote_below:.2f} for {_fmt(now - below)}"
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
