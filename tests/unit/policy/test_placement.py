"""Placement: worked examples, table-driven decisions and properties of tidepool.policy.placement.

Every scenario runs on one made-up engine, ``CAPACITY`` (prefill 40,000 and decode 2,000 tokens/s
at 64 seats), so loads are exact in *replicas of work*: :func:`busy` ``(w)`` is ``20,000 w`` input
and ``1,000 w`` output tokens/s, ``0.5 w + 0.5 w = w`` replicas. Both pools charge $7.79 per
GPU-hour, so one GPU for a month (730 h) is ``GPU_MONTH`` = $5,686.70.
"""

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api.v1alpha1 import DeploymentMode, PlacementSpec, Tenancy
from tidepool.policy import placement, signals
from tidepool.policy.capacity import EngineCapacity
from tidepool.policy.placement import (
    CostProjection,
    Load,
    PlacementDecision,
    PlacementInputs,
    PoolPrice,
    Traffic,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
S, D, H, A = (
    DeploymentMode.SERVERLESS,
    DeploymentMode.DEDICATED,
    DeploymentMode.HYBRID,
    DeploymentMode.AUTO,
)
CAPACITY = EngineCapacity(
    prefill_tokens_per_s=40_000.0, decode_tokens_per_s=2_000.0, max_num_seqs=64, source="test"
)
H100_PRICE = 7.79
GPU_MONTH = H100_PRICE * 730  # $5,686.70
SHARED = PoolPrice("shared", Tenancy.SHARED, "H100", H100_PRICE, 0.20)
DEDICATED = PoolPrice("dedicated", Tenancy.DEDICATED, "H100", H100_PRICE, None, gpus_per_node=1)
DEDICATED_8 = replace(DEDICATED, gpus_per_node=8)
POLICY = placement.PlacementPolicy.from_spec(PlacementSpec())
PLACED = NOW - timedelta(hours=2)  # placed long ago: the dwell has elapsed, the full hold applies


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def busy(w: float) -> Load:
    """A load of exactly ``w`` replicas of work on ``CAPACITY``."""
    return Load(
        requests_per_second=10.0 * w,
        input_tokens_per_second=20_000.0 * w,
        output_tokens_per_second=1_000.0 * w,
    )


def traffic(
    mean: float,
    peak: float | None = None,
    *,
    minutes: float = 10,
    active: float = 1.0,
    wakes: float = 0.0,
) -> Traffic:
    """``mean`` and ``peak`` in replicas of work (``peak`` defaults to ``mean``: steady)."""
    return Traffic(
        mean=busy(mean),
        peak=busy(mean if peak is None else peak),
        span=timedelta(minutes=minutes),
        active_fraction=active,
        wakes=wakes,
        horizon=timedelta(minutes=minutes),
    )


def inputs(**kw: Any) -> PlacementInputs:
    base = PlacementInputs(
        requested_mode=A,
        current_mode=S,
        policy=POLICY,
        traffic=traffic(0.1, 0.2),
        capacity=CAPACITY,
        gpus_per_replica=1,
        min_replicas=0,
        target_utilization=0.875,
        shared=SHARED,
        dedicated=DEDICATED,
        placement_since=None,
        above_since=None,
        below_since=None,
    )
    return replace(base, **kw)


# Named traffic shapes used by the tables below (work in replicas, 1-GPU nodes, equal prices).
#: Steady 0.875 replicas: serverless and dedicated both hold 1 GPU, utilization 0.875: GPUs.
HOT = traffic(0.875)
#: Mean 0.1, peak 0.2, active half the time: serverless holds half a GPU, utilization 0.1.
QUIET = traffic(0.1, 0.2, active=0.5)
#: The same, with 3 wakes in 10 minutes: 3 x 60 s of 300 active seconds cold-starting (60%).
WAKEFUL = traffic(0.1, 0.2, active=0.5, wakes=3)
#: Mean 0.4, peak 0.5, active 90%: utilization 0.4 (inside the band), serverless 10% cheaper.
MIDDLING = traffic(0.4, 0.5, active=0.9)
#: Bursty (mean 1, peak 4) with serverless ruled out by cold starts: dedicated 5 replicas.
SPIKY = traffic(1.0, 4.0, wakes=5)


# ------------------------------------------------------------------------- worked examples


def test_work_8k_in_400_out_on_40k_prefill_2k_decode_is_0_4_replicas() -> None:
    load = Load(
        requests_per_second=2.0, input_tokens_per_second=8_000, output_tokens_per_second=400
    )
    assert placement.work(load, CAPACITY) == pytest.approx(0.2 + 0.2)
    assert load.tokens_per_second == 8_400


@pytest.mark.parametrize(
    ("peak_work", "target", "min_replicas", "replicas"),
    [
        pytest.param(1.2, 0.875, 0, 2, id="1.2-work-at-0.875-is-ceil-1.37-so-2"),
        pytest.param(0.875, 0.875, 0, 1, id="exactly-full-is-1-not-2"),
        pytest.param(0.0, 0.875, 0, 1, id="idle-still-runs-1"),
        pytest.param(0.1, 0.875, 3, 3, id="min-replicas-wins"),
        pytest.param(3.5, 0.875, 1, 4, id="3.5-work-is-4"),
    ],
)
def test_dedicated_replicas(
    peak_work: float, target: float, min_replicas: int, replicas: int
) -> None:
    assert placement.dedicated_replicas(peak_work, target, min_replicas) == replicas


def test_utilization_mean_0_4_over_2_replicas_sized_for_peak_0_9_is_0_2() -> None:
    assert placement.utilization(0.4, 0.9, 0.875, 0) == pytest.approx(0.2)
    assert placement.utilization(0.4, 0.5, 0.875, 0) == pytest.approx(0.4)
    assert placement.utilization(0.4, 0.5, 0.875, 4) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("pool", "replicas", "gpus_per_replica", "held"),
    [
        pytest.param(DEDICATED_8, 1, 1, 8, id="one-replica-on-8-gpu-nodes-holds-a-node"),
        pytest.param(SHARED, 1, 1, 1, id="shared-holds-its-gpu"),
        pytest.param(SHARED, 0.5, 1, 0.5, id="shared-fraction-of-a-month"),
        pytest.param(DEDICATED_8, 8, 1, 8, id="eight-replicas-fill-one-node"),
        pytest.param(DEDICATED_8, 9, 1, 16, id="nine-replicas-need-two-nodes"),
        pytest.param(DEDICATED_8, 3, 4, 16, id="three-4-gpu-replicas-need-two-nodes"),
        pytest.param(DEDICATED_8, 0, 1, 0, id="nothing-holds-nothing"),
        pytest.param(DEDICATED, 3, 2, 6, id="1-gpu-nodes-hold-gpus"),
    ],
)
def test_gpus_held(pool: PoolPrice, replicas: float, gpus_per_replica: int, held: float) -> None:
    assert pool.gpus_held(replicas, gpus_per_replica) == held


@pytest.mark.parametrize(
    ("t", "share"),
    [
        pytest.param(
            traffic(0.1, minutes=60, active=0.5, wakes=3), 0.10, id="3-wakes-x-60s-in-30-active-min"
        ),
        pytest.param(traffic(0.1, minutes=60, active=0.5, wakes=0), 0.0, id="no-wakes"),
        pytest.param(traffic(0.0, minutes=10, active=0.0, wakes=1), 1.0, id="wake-but-never-on"),
        pytest.param(traffic(0.1, minutes=10, active=0.1, wakes=50), 1.0, id="capped-at-1"),
    ],
)
def test_cold_start_share(t: Traffic, share: float) -> None:
    assert placement.cold_start_share(t, timedelta(seconds=60)) == pytest.approx(share)


#: An hour that woke once and was active a third of it, 0.6 replicas of work on average over the
#: hour (1.8 while active), but idle in the last window: what a wake floor is for.
NAPPING = replace(traffic(0.0, minutes=60, active=1 / 3, wakes=1), horizon_mean=busy(0.6))


@pytest.mark.parametrize(
    ("t", "floor"),
    [
        pytest.param(NAPPING, 3, id="wake-floor-active-third"),
        pytest.param(replace(NAPPING, wakes=0), 0, id="no-wakes-no-floor"),
        pytest.param(replace(NAPPING, horizon_mean=None), 0, id="horizon-unknown-no-floor"),
        pytest.param(
            replace(NAPPING, active_fraction=1.0, wakes=0.1), 0, id="within-the-cold-start-budget"
        ),
    ],
)
def test_wake_floor(t: Traffic, floor: int) -> None:
    # The wake_floor docstring: 0.6 / (1/3) = 1.8 replicas of work while active, spilling above
    # 56 of 64 seats (0.875): ceil(1.8 / 0.875) = ceil(2.06) = 3.
    assert placement.wake_floor(t, inputs(traffic=t), 56 / 64) == floor


def test_wake_floor_keeps_gpus_warm_through_an_idle_window() -> None:
    # Idle in the last window, so the cheapest floor alone would be 1 replica; the wakes of the
    # hour ask 3 warm, on dedicated as on hybrid, and both are priced for them.
    proj = placement.project(inputs(traffic=NAPPING, overflow_concurrency_per_replica=56), NAPPING)
    assert proj.wake_floor_replicas == 3
    assert proj.hybrid_floor_replicas == 3
    assert proj.dedicated_replicas == 3
    assert proj.dedicated_monthly == pytest.approx(3 * GPU_MONTH)


def test_spend_h100_one_replica() -> None:
    # The project() docstring: a steady 0.5 replicas of work at target 0.875, H100s at $7.79 on
    # both pools, dedicated nodes of 8 GPUs.
    t = traffic(0.5)
    proj = placement.project(inputs(dedicated=DEDICATED_8, traffic=t), t)
    assert proj.serverless_monthly == pytest.approx(7.79 * 730)
    assert proj.serverless_monthly == pytest.approx(5_686.70)
    assert proj.dedicated_monthly == pytest.approx(8 * 7.79 * 730)
    assert proj.dedicated_monthly == pytest.approx(45_493.60)
    assert proj.dedicated_replicas == 1
    assert proj.hybrid_monthly == pytest.approx(45_493.60)
    assert proj.hybrid_floor_replicas == 1
    text = placement.spend_text(proj)
    assert "serverless $5,687" in text
    assert "dedicated $45,494 (1 replicas)" in text


def test_spend_text_example() -> None:
    proj = CostProjection(
        serverless_monthly=GPU_MONTH / 2,
        dedicated_monthly=GPU_MONTH,
        hybrid_monthly=GPU_MONTH,
        chargeback_monthly=2_000 * 2_628_000 / 1e6 * 0.20,
        dedicated_replicas=1,
        hybrid_floor_replicas=1,
    )
    assert placement.spend_text(proj) == (
        "spend/mo: dedicated $5,687 (1 replicas) vs hybrid $5,687 (floor 1) vs serverless"
        " $2,843; chargeback $1,051/mo"
    )
    assert placement.spend_text(replace(proj, cold_start_share=0.6, chargeback_monthly=None)) == (
        "spend/mo: dedicated $5,687 (1 replicas) vs hybrid $5,687 (floor 1) vs serverless"
        " $2,843 (cold starts 60.0%)"
    )


@pytest.mark.parametrize(
    ("mean", "peak", "threshold", "spill"),
    [
        pytest.param(40, 100, 64, 5.184, id="mean-40-peak-100-floor-64-is-5.18"),
        pytest.param(40, 60, 64, 0.0, id="nothing-above-the-peak"),
        pytest.param(50, 50, 30, 20.0, id="steady-spills-the-excess"),
        pytest.param(50, 60, 30, 20.0, id="floor-below-the-low-end-spills-mean-minus-floor"),
        pytest.param(0, 0, 0, 0.0, id="idle"),
    ],
)
def test_expected_overflow(mean: float, peak: float, threshold: float, spill: float) -> None:
    assert placement.expected_overflow(mean, peak, threshold) == pytest.approx(spill)


def test_evidence_hold_is_two_windows_and_at_least_the_dwell() -> None:
    assert placement.evidence_hold(POLICY) == timedelta(minutes=20)
    hour = placement.PlacementPolicy.from_spec(PlacementSpec(window="1h"))
    assert placement.evidence_hold(hour) == timedelta(hours=1)
    short = placement.PlacementPolicy.from_spec(PlacementSpec(min_dwell="5m"))
    assert placement.evidence_hold(short) == timedelta(minutes=10)


def test_declared_load_is_steady_and_prompt_heavy() -> None:
    t = placement.declared(480_000)  # 8,000 tokens/s
    assert t.mean == t.peak
    assert t.mean.input_tokens_per_second == pytest.approx(6_800)
    assert t.mean.output_tokens_per_second == pytest.approx(1_200)
    assert (t.span, t.active_fraction, t.wakes) == (timedelta(0), 1.0, 0.0)
    # 6,800 / 40,000 + 1,200 / 2,000 = 0.17 + 0.6
    assert placement.work(t.mean, CAPACITY) == pytest.approx(0.77)


# --------------------------------------------------------------------------- chargeback


@pytest.mark.parametrize("price", [0.0, 0.05, 0.20, 2.0, 50.0, None])
def test_chargeback_is_never_part_of_spend(price: float | None) -> None:
    shared = replace(SHARED, price_per_million_tokens=price)
    for t in (HOT, QUIET, WAKEFUL, SPIKY, traffic(0.8, 3.0, active=0.7)):
        reference = placement.project(inputs(traffic=t), t)
        proj = placement.project(inputs(traffic=t, shared=shared), t)
        assert replace(proj, chargeback_monthly=None) == replace(reference, chargeback_monthly=None)
        if price is None:
            assert proj.chargeback_monthly is None
        else:
            tokens_per_month = t.mean.tokens_per_second * 730 * 3600
            assert proj.chargeback_monthly == pytest.approx(tokens_per_month / 1e6 * price)
        for current in (S, D, H):
            before = placement.decide(inputs(traffic=t, current_mode=current), NOW)
            after = placement.decide(inputs(traffic=t, current_mode=current, shared=shared), NOW)
            assert (after.mode, after.move, after.reason, after.floor_replicas) == (
                before.mode,
                before.move,
                before.reason,
                before.floor_replicas,
            )


def test_chargeback_of_half_a_replica_at_20_cents() -> None:
    # 0.5 replicas of work is 10,500 tokens/s: 27.6 billion tokens a month at $0.20/1M.
    proj = placement.project(inputs(), traffic(0.5))
    assert proj.chargeback_monthly == pytest.approx(10_500 * 2_628_000 / 1e6 * 0.20)
    assert "chargeback $5,519/mo" in placement.spend_text(proj)


# ------------------------------------------------------------------------------ decisions

CASES = [
    # --- fixed modes
    pytest.param(inputs(requested_mode=D), D, True, "FixedMode", id="fixed-dedicated-obeyed"),
    pytest.param(
        inputs(requested_mode=S, current_mode=D, traffic=HOT),
        S,
        True,
        "FixedMode",
        id="fixed-serverless-obeyed-against-the-evidence",
    ),
    pytest.param(
        inputs(requested_mode=H, current_mode=H, traffic=signals.NoData("no series")),
        H,
        False,
        "FixedMode",
        id="fixed-mode-obeyed-without-metrics",
    ),
    pytest.param(
        inputs(requested_mode=D, placement_since=ago(1)),
        D,
        True,
        "FixedMode",
        id="fixed-mode-beats-dwell",
    ),
    # --- holds before any evidence is weighed
    pytest.param(
        inputs(traffic=signals.NoData("prometheus unreachable"), placement_since=PLACED),
        S,
        False,
        "MetricsUnknown",
        id="unknown-metrics-hold",
    ),
    pytest.param(
        inputs(traffic=signals.NoData("no series"), current_mode=D, below_since=ago(60)),
        D,
        False,
        "MetricsUnknown",
        id="unknown-metrics-hold-a-new-tenant-without-a-declared-load",
    ),
    pytest.param(
        inputs(traffic=HOT, shared=None, dedicated=None),
        S,
        False,
        "NoPool",
        id="no-pools",
    ),
    # --- new tenants decide on their first evidence, without the hold
    pytest.param(inputs(traffic=HOT), D, True, "Promoted", id="new-tenant-promotes-at-once"),
    pytest.param(
        inputs(traffic=traffic(0.875, minutes=3)),
        D,
        True,
        "Promoted",
        id="new-tenant-decides-on-3-minutes",
    ),
    pytest.param(
        inputs(traffic=traffic(0.875, minutes=2)),
        S,
        False,
        "MetricsUnknown",
        id="new-tenant-waits-for-3-minutes",
    ),
    pytest.param(
        inputs(traffic=traffic(0.875, minutes=3), placement_since=PLACED),
        S,
        False,
        "MetricsUnknown",
        id="placed-tenant-needs-a-full-window",
    ),
    pytest.param(
        inputs(traffic=signals.NoData("no series"), expected_tokens_per_minute=480_000),
        D,
        True,
        "Promoted",
        id="new-tenant-declared-480k-tokens-per-minute-promotes",
    ),
    pytest.param(
        inputs(traffic=signals.NoData("no series"), expected_tokens_per_minute=6_000),
        S,
        False,
        "Holding",
        id="new-tenant-declared-6k-tokens-per-minute-stays",
    ),
    pytest.param(
        inputs(traffic=traffic(0.875, minutes=2), expected_tokens_per_minute=6_000),
        S,
        False,
        "Holding",
        id="new-tenant-short-traffic-falls-back-to-declared",
    ),
    pytest.param(
        inputs(traffic=traffic(0.05, minutes=3), expected_tokens_per_minute=480_000),
        S,
        False,
        "Holding",
        id="new-tenant-traffic-beats-declared",
    ),
    pytest.param(
        inputs(
            traffic=signals.NoData("no series"),
            expected_tokens_per_minute=480_000,
            placement_since=PLACED,
        ),
        S,
        False,
        "MetricsUnknown",
        id="placed-tenant-ignores-declared",
    ),
    # --- promotion: evidence held for window + hold
    pytest.param(
        inputs(traffic=HOT, placement_since=PLACED),
        S,
        False,
        "Holding",
        id="placed-tenant-does-not-promote-on-one-window",
    ),
    pytest.param(
        inputs(traffic=HOT, placement_since=PLACED, above_since=ago(19)),
        S,
        False,
        "Holding",
        id="placed-tenant-holds-until-evidence-covers-the-dwell",
    ),
    pytest.param(
        inputs(traffic=HOT, placement_since=PLACED, above_since=ago(20)),
        D,
        True,
        "Promoted",
        id="placed-tenant-promotes-on-utilization-after-20m-hold",
    ),
    pytest.param(
        inputs(
            traffic=traffic(0.5),
            shared=replace(SHARED, price_per_gpu_hour=10.0),
            placement_since=PLACED,
            above_since=ago(20),
        ),
        D,
        True,
        "Promoted",
        id="promotes-when-gpus-spend-15pct-less",
    ),
    pytest.param(
        inputs(traffic=HOT, dedicated=DEDICATED_8, above_since=ago(60)),
        S,
        False,
        "Holding",
        id="8-gpu-nodes-make-gpus-dearer-no-promotion-on-utilization",
    ),
    pytest.param(
        inputs(traffic=WAKEFUL),
        D,
        True,
        "Promoted",
        id="new-tenant-cold-starting-promoted-though-serverless-spends-less",
    ),
    pytest.param(
        inputs(traffic=WAKEFUL, placement_since=PLACED, above_since=ago(20)),
        D,
        True,
        "Promoted",
        id="cold-starting-promoted-after-hold",
    ),
    pytest.param(
        inputs(traffic=WAKEFUL, dedicated=DEDICATED_8, placement_since=PLACED, above_since=ago(20)),
        D,
        True,
        "Promoted",
        id="cold-starting-promoted-whatever-whole-nodes-cost",
    ),
    pytest.param(
        inputs(traffic=WAKEFUL, placement_since=PLACED, above_since=ago(5)),
        S,
        False,
        "Holding",
        id="cold-starting-still-needs-the-hold",
    ),
    pytest.param(
        inputs(traffic=SPIKY),
        H,
        True,
        "HybridChosen",
        id="steady-base-with-large-spikes-goes-hybrid",
    ),
    # --- demotion
    pytest.param(
        inputs(current_mode=D, traffic=QUIET, placement_since=PLACED, below_since=ago(20)),
        S,
        True,
        "Demoted",
        id="demotes-when-serverless-spends-15pct-less-held",
    ),
    pytest.param(
        inputs(current_mode=H, traffic=QUIET, placement_since=PLACED, below_since=ago(20)),
        S,
        True,
        "Demoted",
        id="hybrid-demotes-too",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=QUIET, placement_since=PLACED, below_since=ago(19)),
        D,
        False,
        "Holding",
        id="does-not-demote-before-the-hold",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=QUIET, placement_since=PLACED),
        D,
        False,
        "Holding",
        id="does-not-demote-on-one-quiet-window",
    ),
    pytest.param(
        inputs(
            current_mode=D,
            traffic=traffic(0.2, 0.25, active=0.9),
            placement_since=PLACED,
            below_since=ago(20),
        ),
        S,
        True,
        "Demoted",
        id="demotes-on-low-utilization-when-serverless-spends-less",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=WAKEFUL, placement_since=PLACED, below_since=ago(60)),
        D,
        False,
        "Holding",
        id="never-demotes-into-cold-starts",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=MIDDLING, placement_since=PLACED, below_since=ago(60)),
        D,
        False,
        "Holding",
        id="holds-dedicated-inside-the-band",
    ),
    # --- dwell
    pytest.param(
        inputs(current_mode=D, traffic=QUIET, placement_since=ago(10), below_since=ago(25)),
        D,
        False,
        "DwellNotElapsed",
        id="dwell-blocks-demotion",
    ),
    pytest.param(
        inputs(traffic=HOT, placement_since=ago(29), above_since=ago(25)),
        S,
        False,
        "DwellNotElapsed",
        id="dwell-blocks-promotion",
    ),
    pytest.param(
        inputs(traffic=HOT, placement_since=ago(30), above_since=ago(25)),
        D,
        True,
        "Promoted",
        id="dwell-ends-at-30m",
    ),
    # --- dedicated <-> hybrid: the other must spend cost_margin less
    pytest.param(
        inputs(current_mode=D, traffic=SPIKY, placement_since=PLACED),
        H,
        True,
        "HybridChosen",
        id="dedicated-to-hybrid-when-hybrid-spends-67pct-less",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(0.8, 0.85, wakes=5), placement_since=PLACED),
        D,
        False,
        "Holding",
        id="dedicated-stays-when-hybrid-spends-the-same",
    ),
    pytest.param(
        inputs(current_mode=H, traffic=traffic(0.8, 0.85, wakes=5), placement_since=PLACED),
        H,
        False,
        "Holding",
        id="hybrid-stays-when-dedicated-spends-the-same",
    ),
    pytest.param(
        inputs(
            current_mode=H,
            traffic=traffic(0.8, wakes=5),
            overflow_concurrency_per_replica=32,
            placement_since=PLACED,
        ),
        D,
        True,
        "Promoted",
        id="hybrid-to-dedicated-when-dedicated-spends-26pct-less",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=SPIKY, placement_since=ago(10)),
        D,
        False,
        "DwellNotElapsed",
        id="dwell-blocks-dedicated-to-hybrid",
    ),
    # --- a pool that went away
    pytest.param(
        inputs(current_mode=D, traffic=MIDDLING, dedicated=None, placement_since=PLACED),
        S,
        True,
        "Demoted",
        id="dedicated-pool-gone-goes-serverless",
    ),
    pytest.param(
        inputs(current_mode=H, traffic=MIDDLING, dedicated=None, placement_since=PLACED),
        S,
        True,
        "Demoted",
        id="hybrid-without-dedicated-pool-goes-serverless",
    ),
    pytest.param(
        inputs(current_mode=H, traffic=MIDDLING, shared=None, placement_since=PLACED),
        D,
        True,
        "Promoted",
        id="hybrid-without-shared-pool-goes-dedicated",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=MIDDLING, dedicated=None, placement_since=ago(10)),
        D,
        False,
        "DwellNotElapsed",
        id="pool-gone-still-respects-the-dwell",
    ),
]


@pytest.mark.parametrize(("given_inputs", "mode", "move", "reason"), CASES)
def test_decide(
    given_inputs: PlacementInputs, mode: DeploymentMode, move: bool, reason: str
) -> None:
    d = placement.decide(given_inputs, NOW)
    assert (d.mode, d.move, d.reason) == (mode, move, reason), d.message
    assert d.move == (d.mode != given_inputs.current_mode)
    if d.move and given_inputs.requested_mode == A:
        # A move resets the evidence timers; the caller starts a new dwell.
        assert (d.above_since, d.below_since) == (None, None)
    if d.mode == H and d.reason != "FixedMode":
        assert d.cost is not None
        assert d.floor_replicas == d.cost.hybrid_floor_replicas >= 1
    elif d.mode != H:
        assert d.floor_replicas == 0


# ------------------------------------------------------------------------------- messages


def test_cost_promotion_message_carries_the_numbers() -> None:
    shared = replace(SHARED, price_per_gpu_hour=10.0)  # $7,300/mo a GPU against $5,687
    d = placement.decide(
        inputs(traffic=traffic(0.5), shared=shared, placement_since=PLACED, above_since=ago(20)),
        NOW,
    )
    assert d.message == (
        "promoted to dedicated: spends 22% less, utilization 0.50 (held 20m; evidence 10m window"
        " + 20m hold); spend/mo: dedicated $5,687 (1 replicas) vs hybrid $5,687 (floor 1) vs"
        " serverless $7,300; chargeback $5,519/mo"
    )
    assert d.utilization == pytest.approx(0.5)
    assert d.cost is not None
    assert d.cost.dedicated_monthly == pytest.approx(GPU_MONTH)
    assert d.cost.serverless_monthly == pytest.approx(10.0 * 730)


def test_cold_start_promotion_says_why() -> None:
    d = placement.decide(inputs(traffic=WAKEFUL, placement_since=PLACED, above_since=ago(20)), NOW)
    assert d.cost is not None
    # Serverless spends half of dedicated, but 3 wakes x 60 s of 300 active seconds is 60%.
    assert d.cost.serverless_monthly == pytest.approx(GPU_MONTH / 2)
    assert d.cost.dedicated_monthly == pytest.approx(GPU_MONTH)
    assert d.cost.cold_start_share == pytest.approx(0.6)
    assert not d.cost.serverless_meets_slo
    assert d.message.startswith(
        "promoted to dedicated: serverless would spend 60.0% of its active time cold-starting"
        " (budget 0.5%), utilization 0.10 (held 20m; evidence 10m window + 20m hold);"
    )
    assert "serverless $2,843 (cold starts 60.0%)" in d.message


def test_cold_start_budget_boundary() -> None:
    # 1 wake x 60 s in 200 active minutes is 0.5%: exactly the budget still meets the SLO.
    at_budget = traffic(0.1, 0.2, minutes=200, wakes=1)
    over = traffic(0.1, 0.2, minutes=199, wakes=1)
    assert placement.project(inputs(), at_budget).serverless_meets_slo
    assert not placement.project(inputs(), over).serverless_meets_slo
    assert placement.decide(inputs(traffic=at_budget), NOW).mode == S
    assert placement.decide(inputs(traffic=over), NOW).mode == D


def test_utilization_promotion_message_does_not_blame_cold_starts() -> None:
    d = placement.decide(inputs(traffic=HOT), NOW)
    assert d.reason == "Promoted"
    assert d.cost is not None
    assert d.cost.serverless_meets_slo
    assert "utilization 0.88" in d.message
    assert "cold-starting" not in d.message


def test_hold_message_shows_the_band_and_spend() -> None:
    d = placement.decide(inputs(traffic=QUIET, placement_since=PLACED), NOW)
    assert d.message == (
        "staying serverless: utilization 0.10 (promote above 0.50, demote below 0.30);"
        " spend/mo: dedicated $5,687 (1 replicas) vs hybrid $5,687 (floor 1) vs serverless"
        " $2,843; chargeback $1,104/mo"
    )


def test_dwell_message_says_what_it_would_do_and_how_long_is_left() -> None:
    d = placement.decide(
        inputs(current_mode=D, traffic=QUIET, placement_since=ago(10), below_since=ago(25)), NOW
    )
    assert d.message.startswith(
        "would move dedicated -> serverless (spends 50% less, utilization 0.10 (held 25m;"
    )
    assert "but placed 10m ago; min dwell 30m (20m left)" in d.message
    assert d.below_since == ago(25)


def test_dedicated_to_hybrid_message() -> None:
    d = placement.decide(inputs(current_mode=D, traffic=SPIKY, placement_since=PLACED), NOW)
    assert d.cost is not None
    # Dedicated: ceil(4 / 0.875) = 5 replicas. Hybrid: a floor of 1 and 0.5625 replicas of
    # expected spill (uniform on [0, 4] half the time) at 0.875: 1.64 GPUs.
    assert d.cost.dedicated_replicas == 5
    assert d.cost.dedicated_monthly == pytest.approx(5 * GPU_MONTH)
    assert d.cost.hybrid_monthly == pytest.approx((1 + 0.5625 / 0.875) * GPU_MONTH)
    assert d.floor_replicas == 1
    assert d.message.startswith(
        "hybrid chosen (floor 1 dedicated + shared overflow): hybrid spends 67% less"
        " (>= margin 15%); utilization 0.20;"
    )


def test_pool_gone_message() -> None:
    d = placement.decide(
        inputs(current_mode=D, traffic=MIDDLING, dedicated=None, placement_since=PLACED), NOW
    )
    assert d.message.startswith("demoted to serverless: the dedicated pool is gone;")
    assert "dedicated n/a" in d.message


def test_fixed_mode_message_carries_the_numbers_when_known() -> None:
    d = placement.decide(inputs(requested_mode=D, traffic=QUIET), NOW)
    assert d.message.startswith("spec.mode is dedicated; utilization 0.10; spend/mo: ")
    d = placement.decide(inputs(requested_mode=D, traffic=signals.NoData("no series")), NOW)
    assert d.message == "spec.mode is dedicated"
    assert d.cost is None


@pytest.mark.parametrize(
    ("t", "text"),
    [
        pytest.param(
            signals.NoData("prometheus unreachable"),
            "traffic unknown (prometheus unreachable): holding serverless",
            id="no-data",
        ),
        pytest.param(
            traffic(0.875, minutes=3),
            "traffic seen for 3m of a 10m window: holding serverless",
            id="short-span",
        ),
    ],
)
def test_unknown_traffic_message_and_timers_kept(t: Traffic | signals.NoData, text: str) -> None:
    d = placement.decide(
        inputs(traffic=t, placement_since=PLACED, above_since=ago(3), below_since=ago(7)), NOW
    )
    assert d.reason == "MetricsUnknown"
    assert d.message == text
    assert (d.above_since, d.below_since) == (ago(3), ago(7))
    assert (d.utilization, d.cost) == (None, None)


# ------------------------------------------------------------------------------ hysteresis


@pytest.mark.parametrize(
    ("given_inputs", "above", "below"),
    [
        pytest.param(inputs(traffic=HOT, placement_since=PLACED), NOW, None, id="gpus-starts"),
        pytest.param(
            inputs(traffic=HOT, placement_since=PLACED, above_since=ago(3), below_since=ago(7)),
            ago(3),
            None,
            id="gpus-keeps-its-start-clears-below",
        ),
        pytest.param(
            inputs(traffic=QUIET, current_mode=D, placement_since=PLACED, above_since=ago(3)),
            None,
            NOW,
            id="serverless-starts-clears-above",
        ),
        pytest.param(
            inputs(traffic=QUIET, current_mode=D, placement_since=PLACED, below_since=ago(7)),
            None,
            ago(7),
            id="serverless-keeps-its-start",
        ),
        pytest.param(
            inputs(
                traffic=MIDDLING,
                current_mode=D,
                placement_since=PLACED,
                above_since=ago(3),
                below_since=ago(7),
            ),
            None,
            None,
            id="neither-clears-both",
        ),
        pytest.param(
            inputs(traffic=WAKEFUL, current_mode=D, placement_since=PLACED, below_since=ago(7)),
            NOW,
            None,
            id="cold-starts-favour-gpus-never-serverless",
        ),
    ],
)
def test_timers_start_keep_and_clear(
    given_inputs: PlacementInputs, above: datetime | None, below: datetime | None
) -> None:
    d = placement.decide(given_inputs, NOW)
    assert not d.move, d.message
    assert (d.above_since, d.below_since) == (above, below)


def run_loop(
    per_minute: list[Traffic], *, placed: bool = True
) -> list[tuple[datetime, PlacementInputs, PlacementDecision]]:
    """Decide once a minute on the given traffic, carrying the state the caller keeps in status;
    return the moves."""
    mode = S
    since: datetime | None = NOW - timedelta(days=1) if placed else None
    above: datetime | None = None
    below: datetime | None = None
    moves = []
    for i, t in enumerate(per_minute):
        now = NOW + timedelta(minutes=i)
        s = inputs(
            current_mode=mode,
            traffic=t,
            placement_since=since,
            above_since=above,
            below_since=below,
        )
        d = placement.decide(s, now)
        above, below = d.above_since, d.below_since
        if since is None and d.reason == placement.PlacementReason.HOLDING:
            since = now
        if d.move:
            moves.append((now, s, d))
            mode, since, above, below = d.mode, now, None, None
    return moves


@given(st.lists(st.integers(1, 19), min_size=1, max_size=30))
def test_bursts_shorter_than_the_hold_never_move_a_placed_tenant(runs: list[int]) -> None:
    series: list[Traffic] = []
    for k, n in enumerate(runs):
        series += [HOT if k % 2 == 0 else QUIET] * n
    assert run_loop(series) == []


@given(st.lists(st.sampled_from([HOT, QUIET, MIDDLING, WAKEFUL]), min_size=1, max_size=300))
def test_moves_respect_dwell_and_sustained_evidence(series: list[Traffic]) -> None:
    hold = placement.evidence_hold(POLICY)
    last: datetime | None = None
    for now, s, d in run_loop(series):
        if last is not None:
            assert now - last >= POLICY.min_dwell
        if S in (d.mode, s.current_mode):
            since = s.above_since if d.mode != S else s.below_since
            assert since is not None, d.message
            assert now - since >= hold, d.message
        last = now


# ------------------------------------------------------------------------------ properties

work_amounts = st.floats(0, 50, allow_nan=False, allow_infinity=False)
fractions = st.floats(0, 1, allow_nan=False, allow_infinity=False)
traffics = st.builds(
    lambda mean, extra, minutes, active, wakes: traffic(
        mean, mean + extra, minutes=minutes, active=active, wakes=wakes
    ),
    work_amounts,
    work_amounts,
    st.floats(0, 180),
    fractions,
    st.floats(0, 100),
)
shared_pools = st.builds(
    lambda price, charge: PoolPrice("s", Tenancy.SHARED, "H100", price, charge),
    st.floats(0.01, 100),
    st.none() | st.floats(0, 10),
)
dedicated_pools = st.builds(
    lambda price, node: PoolPrice("d", Tenancy.DEDICATED, "H100", price, None, node),
    st.floats(0.01, 100),
    st.sampled_from([1, 2, 4, 8]),
)
minutes_ago = st.none() | st.floats(0, 240).map(ago)
snapshots = st.builds(
    lambda current, t, since, above, below, shared, dedicated, gpr, mins, target, overflow: inputs(
        current_mode=current,
        traffic=t,
        placement_since=since,
        above_since=above,
        below_since=below,
        shared=shared,
        dedicated=dedicated,
        gpus_per_replica=gpr,
        min_replicas=mins,
        target_utilization=target,
        overflow_concurrency_per_replica=overflow,
    ),
    st.sampled_from([S, D, H]),
    traffics,
    minutes_ago,
    minutes_ago,
    minutes_ago,
    st.none() | shared_pools,
    st.none() | dedicated_pools,
    st.sampled_from([1, 2, 4]),
    st.integers(0, 3),
    st.floats(0.1, 1.0),
    st.none() | st.integers(1, 64),
)


def _spends(proj: CostProjection) -> list[float]:
    return [proj.serverless_monthly, proj.dedicated_monthly, proj.hybrid_monthly]


@given(
    s=snapshots,
    mean=work_amounts,
    extra=work_amounts,
    more_mean=work_amounts,
    more_peak=work_amounts,
    active=fractions,
    node=st.sampled_from([1, 8]),
)
def test_spend_is_finite_non_negative_and_monotone_in_load(
    *,
    s: PlacementInputs,
    mean: float,
    extra: float,
    more_mean: float,
    more_peak: float,
    active: float,
    node: int,
) -> None:
    # Hybrid is monotone only when a dedicated replica takes its whole batch before spilling
    # (see test_hybrid_spend_never_falls_as_load_rises for the other case).
    s = replace(
        s,
        shared=SHARED,
        dedicated=replace(DEDICATED, gpus_per_node=node),
        overflow_concurrency_per_replica=None,
    )
    low = traffic(mean, mean + extra, active=active)
    high = traffic(mean + more_mean, mean + extra + more_mean + more_peak, active=active)
    before, after = placement.project(s, low), placement.project(s, high)
    for a, b in zip(_spends(before), _spends(after), strict=True):
        assert math.isfinite(a)
        assert a >= 0
        assert b >= a - 1e-9 * max(1.0, a)
    assert before.chargeback_monthly is not None
    assert after.chargeback_monthly is not None
    assert after.chargeback_monthly >= before.chargeback_monthly - 1e-9


@given(snapshots)
def test_spend_is_finite_and_non_negative_for_any_pools(s: PlacementInputs) -> None:
    assert isinstance(s.traffic, Traffic)
    proj = placement.project(s, s.traffic)
    pools_present = [s.shared is not None, s.dedicated is not None]
    expected_finite = [pools_present[0], pools_present[1], all(pools_present)]
    for spend, finite in zip(_spends(proj), expected_finite, strict=True):
        assert spend >= 0
        assert math.isfinite(spend) == finite
    assert 0.0 <= proj.cold_start_share <= 1.0


def test_hybrid_spend_never_falls_as_load_rises() -> None:
    s = inputs(dedicated=DEDICATED_8, overflow_concurrency_per_replica=32)
    lighter = placement.project(s, traffic(0.8))
    heavier = placement.project(s, traffic(0.9))
    assert heavier.hybrid_monthly >= lighter.hybrid_monthly


@given(snapshots, st.sampled_from([1, 2, 4]))
def test_whole_nodes_never_spend_less_than_single_gpus(s: PlacementInputs, gpr: int) -> None:
    t = s.traffic
    assert isinstance(t, Traffic)
    s = replace(s, shared=SHARED, gpus_per_replica=gpr)
    single = placement.project(replace(s, dedicated=DEDICATED), t)
    whole = placement.project(replace(s, dedicated=DEDICATED_8), t)
    assert whole.dedicated_monthly >= single.dedicated_monthly
    assert whole.hybrid_monthly >= single.hybrid_monthly - 1e-9 * single.hybrid_monthly
    assert whole.serverless_monthly == single.serverless_monthly


@given(snapshots, st.floats(0, 29.99), st.booleans())
def test_never_moves_within_the_dwell(s: PlacementInputs, placed: float, declared: bool) -> None:
    s = replace(
        s, placement_since=ago(placed), expected_tokens_per_minute=480_000 if declared else None
    )
    d = placement.decide(s, NOW)
    assert not d.move, d.message
    assert d.mode == s.current_mode


@given(
    snapshots,
    st.sampled_from(["no series", "prometheus unreachable", "NaN"]),
    st.booleans(),
    st.booleans(),
)
def test_never_moves_on_unknown_traffic(
    s: PlacementInputs, why: str, placed: bool, declared: bool
) -> None:
    # A declared load stands in only for a new tenant's first placement (see CASES).
    s = replace(
        s,
        traffic=signals.NoData(why),
        placement_since=PLACED if placed else None,
        expected_tokens_per_minute=480_000 if declared and placed else None,
    )
    d = placement.decide(s, NOW)
    assert not d.move
    assert d.mode == s.current_mode
    assert d.reason == "MetricsUnknown"
    assert (d.above_since, d.below_since) == (s.above_since, s.below_since)
    assert why in d.message


@given(snapshots, st.sampled_from([S, D, H]), st.none() | st.floats(0, 1e7))
def test_a_fixed_mode_is_returned_as_is(
    s: PlacementInputs, requested: DeploymentMode, expected: float | None
) -> None:
    s = replace(s, requested_mode=requested, expected_tokens_per_minute=expected)
    d = placement.decide(s, NOW)
    assert d.mode == requested
    assert d.reason == "FixedMode"
    assert d.move == (requested != s.current_mode)


@given(snapshots)
def test_moves_only_when_the_mode_changes(s: PlacementInputs) -> None:
    d = placement.decide(s, NOW)
    assert d.move == (d.mode != s.current_mode)
    if d.move and s.placement_since is not None:
        assert NOW - s.placement_since >= s.policy.min_dwell
    if d.move and s.requested_mode == A:
        available = {S: s.shared is not None, D: s.dedicated is not None}
        available[H] = available[S] and available[D]
        assert available[d.mode], d.message


@given(snapshots)
def test_a_move_that_meets_the_slo_never_spends_more(s: PlacementInputs) -> None:
    d = placement.decide(s, NOW)
    if d.move and d.cost is not None and d.cost.serverless_meets_slo:
        spend = {
            S: d.cost.serverless_monthly,
            D: d.cost.dedicated_monthly,
            H: d.cost.hybrid_monthly,
        }
        assert spend[d.mode] <= spend[s.current_mode] * (1 + 1e-9), d.message


@given(snapshots)
def test_utilization_is_a_fraction_of_what_dedicated_provisions(s: PlacementInputs) -> None:
    d = placement.decide(s, NOW)
    if d.utilization is not None:
        assert 0.0 <= d.utilization <= 1.0 + 1e-9


@pytest.mark.parametrize(
    ("max_replicas", "dedicated", "floor_at_most"),
    [
        # 2,000 replicas of work, peaking at 3,000: at the target of 0.875, 3,429 for the peak.
        pytest.param(None, 3429, None, id="no-limit-sizes-for-the-peak"),
        pytest.param(1000, 1000, 1000, id="maxReplicas-1000-holds-every-option"),
        pytest.param(4, 4, 4, id="a-small-limit"),
    ],
)
def test_no_option_is_sized_or_priced_beyond_max_replicas(
    max_replicas: int | None, dedicated: int, floor_at_most: int | None
) -> None:
    """A ServeGen client at x100 asked for a hybrid floor of 3,044 under ``maxReplicas: 1000``
    and the operator ran it: the limit caps the projection, as the autoscaler caps the total."""
    t = traffic(2000.0, 3000.0)
    proj = placement.project(inputs(traffic=t, max_replicas=max_replicas), t)
    assert proj.dedicated_replicas == dedicated
    assert proj.dedicated_monthly == pytest.approx(dedicated * GPU_MONTH)
    if floor_at_most is not None:
        assert proj.hybrid_floor_replicas <= floor_at_most
        # Dedicated and hybrid are the limit's GPUs at most, serverless too.
        assert proj.hybrid_monthly <= floor_at_most * GPU_MONTH * (1 + 1e-9)
        assert proj.serverless_monthly <= floor_at_most * GPU_MONTH * (1 + 1e-9)


@given(
    mean=st.floats(0.0, 5000.0),
    burst=st.floats(1.0, 10.0),
    limit=st.integers(1, 2000),
    min_replicas=st.integers(0, 5),
)
def test_the_projection_never_exceeds_max_replicas(
    mean: float, burst: float, limit: int, min_replicas: int
) -> None:
    t = traffic(mean, mean * burst)
    lo = min(min_replicas, limit)
    proj = placement.project(inputs(traffic=t, max_replicas=limit, min_replicas=lo), t)
    assert proj.dedicated_replicas <= limit
    assert proj.hybrid_floor_replicas <= limit
    assert proj.wake_floor_replicas <= limit
