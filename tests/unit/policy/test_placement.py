"""Table-driven tests and properties for tidepool.policy.placement.decide."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api.v1alpha1 import DeploymentMode, PlacementSpec, Tenancy
from tidepool.policy import placement, signals

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SHARED = placement.PoolPrice("shared", Tenancy.SHARED, "A100", 4.0, 0.20)
DEDICATED = placement.PoolPrice("dedicated", Tenancy.DEDICATED, "A100", 4.0, None)
S, D, H, A = (
    DeploymentMode.SERVERLESS,
    DeploymentMode.DEDICATED,
    DeploymentMode.HYBRID,
    DeploymentMode.AUTO,
)


def traffic(mean: float, peak: float, tps: float) -> placement.Traffic:
    return placement.Traffic(
        signals.Sample(mean, NOW), signals.Sample(peak, NOW), signals.Sample(tps, NOW)
    )


def inputs(**kw: object) -> placement.PlacementInputs:
    base = placement.PlacementInputs(
        requested_mode=A,
        current_mode=S,
        policy=placement.PlacementPolicy.from_spec(PlacementSpec()),
        traffic=traffic(10, 20, 500),
        capacity_per_replica=64,
        gpus_per_replica=1,
        min_replicas=0,
        shared=SHARED,
        dedicated=DEDICATED,
        placement_since=None,
        above_since=None,
        below_since=None,
        migration_in_progress=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def test_utilization_mean_46_peak_60_capacity_64_is_0_72() -> None:
    assert placement.utilization(46.08, 60, 64, 0) == pytest.approx(0.72)


def test_utilization_peak_100_needs_two_replicas_so_0_36() -> None:
    assert placement.utilization(46.08, 100, 64, 0) == pytest.approx(0.36)


def test_expected_overflow_mean_40_peak_100_floor_64_is_5_18() -> None:
    assert placement.expected_overflow(40, 100, 64) == pytest.approx(5.184)


def test_expected_overflow_nothing_above_peak() -> None:
    assert placement.expected_overflow(40, 60, 64) == 0.0


# At $0.20/1M tokens, 1 replica ($2,920/mo) breaks even at 5,556 tokens/s.
PLACED = ago(120)  # placed two hours ago: dwell long elapsed, the full hold applies
CASES = [
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 8000)),
        D,
        True,
        "Promoted",
        id="new-tenant-promotes-on-its-first-window-cheaper-by-margin",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 8000), placement_since=PLACED),
        S,
        False,
        "Holding",
        id="placed-tenant-does-not-promote-on-a-single-cheaper-window",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 8000), placement_since=PLACED, above_since=ago(19)),
        S,
        False,
        "Holding",
        id="placed-tenant-holds-until-evidence-covers-the-dwell",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 8000), placement_since=PLACED, above_since=ago(20)),
        D,
        True,
        "Promoted",
        id="placed-tenant-promotes-after-window-plus-20m-hold",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 5800), placement_since=PLACED, above_since=ago(21)),
        D,
        True,
        "Promoted",
        id="promotes-on-utilization-held-when-not-dearer",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 5800), above_since=ago(5)),
        D,
        True,
        "Promoted",
        id="new-tenant-promotes-on-utilization-when-not-dearer",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 3000), above_since=ago(30)),
        S,
        False,
        "Holding",
        id="does-not-promote-into-a-dearer-option",
    ),
    pytest.param(
        inputs(
            current_mode=D, traffic=traffic(5, 10, 500), placement_since=PLACED, below_since=ago(25)
        ),
        S,
        True,
        "Demoted",
        id="demotes-when-serverless-cheaper-by-margin-held",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(5, 10, 500), placement_since=PLACED),
        D,
        False,
        "Holding",
        id="does-not-demote-on-a-single-quiet-window",
    ),
    pytest.param(
        inputs(
            current_mode=D,
            traffic=traffic(5, 10, 500),
            placement_since=ago(10),
            below_since=ago(25),
        ),
        D,
        False,
        "DwellNotElapsed",
        id="dwell-blocks-demotion",
    ),
    pytest.param(
        inputs(
            current_mode=D,
            traffic=traffic(15, 60, 5500),
            placement_since=PLACED,
            below_since=ago(20),
        ),
        S,
        True,
        "Demoted",
        id="demotes-on-low-utilization-when-serverless-cheaper",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(46, 60, 6000), below_since=ago(60)),
        D,
        False,
        "Holding",
        id="holds-dedicated-inside-the-band",
    ),
    pytest.param(
        inputs(traffic=traffic(70, 400, 40000)),
        H,
        True,
        "HybridChosen",
        id="steady-base-with-large-spikes-goes-hybrid",
    ),
    pytest.param(
        inputs(
            traffic=placement.Traffic(
                signals.NoData("no series"), signals.Sample(1, NOW), signals.Sample(1, NOW)
            )
        ),
        S,
        False,
        "MetricsUnknown",
        id="unknown-metrics-hold",
    ),
    pytest.param(
        inputs(requested_mode=D),
        D,
        True,
        "FixedMode",
        id="fixed-mode-is-obeyed",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 8000), migration_in_progress=True),
        S,
        False,
        "MigrationInProgress",
        id="no-decision-during-migration",
    ),
    pytest.param(
        inputs(shared=None, dedicated=None),
        S,
        False,
        "NoPool",
        id="no-pools",
    ),
]


@pytest.mark.parametrize(("given_inputs", "mode", "move", "reason"), CASES)
def test_decide(
    given_inputs: placement.PlacementInputs, mode: DeploymentMode, move: bool, reason: str
) -> None:
    d = placement.decide(given_inputs, NOW)
    assert (d.mode, d.move, d.reason) == (mode, move, reason), d.message


def test_promotion_message_carries_the_numbers() -> None:
    d = placement.decide(inputs(traffic=traffic(46.08, 60, 8000)), NOW)
    assert d.message.startswith("promoted to dedicated:")
    assert "utilization 0.72" in d.message
    assert "dedicated $2,920/mo" in d.message
    assert "serverless $4,205/mo" in d.message
    assert d.utilization == pytest.approx(0.72)
    assert d.cost is not None
    assert d.cost.break_even_tokens_per_month == pytest.approx(14.6e9)


def test_timers_start_and_clear() -> None:
    # 8,000 tokens/s: dedicated ($2,920) beats serverless ($4,205) by 31%: evidence for GPUs.
    d = placement.decide(inputs(traffic=traffic(46.08, 60, 8000), placement_since=PLACED), NOW)
    assert (d.above_since, d.below_since) == (NOW, None)
    # Utilization 0.72 but dedicated dearer than serverless: no evidence either way.
    d = placement.decide(inputs(traffic=traffic(46.08, 60, 5000), above_since=ago(3)), NOW)
    assert (d.above_since, d.below_since) == (None, None)
    # Quiet: serverless far cheaper; a running timer keeps its start.
    d = placement.decide(
        inputs(traffic=traffic(5, 60, 100), above_since=ago(3), below_since=ago(7)), NOW
    )
    assert (d.above_since, d.below_since) == (None, ago(7))


def test_evidence_hold_is_two_windows_and_at_least_the_dwell() -> None:
    policy = placement.PlacementPolicy.from_spec(PlacementSpec())
    assert placement.evidence_hold(policy) == timedelta(minutes=20)
    assert placement.evidence_hold(
        placement.PlacementPolicy.from_spec(PlacementSpec(window="1h"))
    ) == timedelta(hours=1)
    assert placement.evidence_hold(
        placement.PlacementPolicy.from_spec(PlacementSpec(min_dwell="5m"))
    ) == timedelta(minutes=10)


def test_unknown_metrics_keep_timers() -> None:
    nd = signals.NoData("prometheus unreachable")
    d = placement.decide(inputs(traffic=placement.Traffic(nd, nd, nd), above_since=ago(3)), NOW)
    assert d.above_since == ago(3)
    assert "prometheus unreachable" in d.message


# ---- properties ------------------------------------------------------------------------------

snapshots = st.builds(
    lambda cur, mean, spread, tps, since, above, below: inputs(
        current_mode=cur,
        traffic=traffic(mean, mean + spread, tps),
        placement_since=None if since is None else ago(since),
        above_since=None if above is None else ago(above),
        below_since=None if below is None else ago(below),
    ),
    st.sampled_from([S, D, H]),
    st.floats(0, 1000),
    st.floats(0, 1000),
    st.floats(0, 1e6),
    st.none() | st.floats(0, 120),
    st.none() | st.floats(0, 120),
    st.none() | st.floats(0, 120),
)


@given(snapshots)
def test_move_only_when_mode_changes_and_dwell_elapsed(s: placement.PlacementInputs) -> None:
    d = placement.decide(s, NOW)
    assert d.move == (d.mode != s.current_mode)
    if d.move and s.placement_since is not None:
        assert NOW - s.placement_since >= s.policy.min_dwell


@given(snapshots)
def test_moves_never_to_a_clearly_dearer_option(s: placement.PlacementInputs) -> None:
    d = placement.decide(s, NOW)
    if d.move:
        assert d.cost is not None
        price = {
            S: d.cost.serverless_monthly,
            D: d.cost.dedicated_monthly,
            H: d.cost.hybrid_monthly,
        }
        assert price[d.mode] <= price[s.current_mode] + 1e-6


@given(snapshots)
def test_utilization_is_a_fraction_of_provisioned(s: placement.PlacementInputs) -> None:
    d = placement.decide(s, NOW)
    assert d.utilization is not None
    assert 0.0 <= d.utilization <= 1.0 + 1e-9


# ---- hysteresis over time: the decision loop as the operator and the simulator run it -------


def run_loop(
    tps_per_minute: list[float], *, placed: bool = True
) -> list[tuple[datetime, placement.PlacementInputs, placement.PlacementDecision]]:
    """Decide once a minute on a 10-minute window whose tokens/s is the given series, carrying
    the state the caller carries in status; return the moves."""
    mode, since = S, (NOW - timedelta(days=1) if placed else None)
    above: datetime | None = None
    below: datetime | None = None
    moves = []
    for i, tps in enumerate(tps_per_minute):
        now = NOW + timedelta(minutes=i)
        s = inputs(
            current_mode=mode,
            traffic=traffic(20, 40, tps),
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


# 1 replica costs $2,920/mo = 5,556 tokens/s serverless; +-15% margin: 4,722 and 6,536 tokens/s.
CHEAP_GPU, CHEAP_SRV = 8000.0, 1000.0


@given(st.lists(st.integers(1, 19), min_size=1, max_size=30))
def test_bursts_shorter_than_the_hold_never_move_a_placed_tenant(runs: list[int]) -> None:
    # Alternate bursts (GPUs 31% cheaper) and lulls (serverless 82% cheaper), each shorter than
    # the 20-minute hold: no evidence is ever sustained, so nothing flaps.
    series: list[float] = []
    for k, n in enumerate(runs):
        series += [CHEAP_GPU if k % 2 == 0 else CHEAP_SRV] * n
    assert run_loop(series) == []


@given(st.lists(st.floats(4800, 6400), min_size=1, max_size=240))
def test_noise_inside_the_margin_band_never_moves(series: list[float]) -> None:
    # Utilization 0.31 (inside the 0.3-0.5 band) and costs within the 15% margin either way.
    assert run_loop(series) == []
    assert run_loop(series, placed=False) == []


@given(st.lists(st.sampled_from([CHEAP_GPU, CHEAP_SRV, 5500.0]), min_size=1, max_size=360))
def test_moves_respect_dwell_and_sustained_evidence(series: list[float]) -> None:
    moves = run_loop(series)
    hold = placement.evidence_hold(placement.PlacementPolicy.from_spec(PlacementSpec()))
    dwell = placement.PlacementPolicy.from_spec(PlacementSpec()).min_dwell
    last: datetime | None = None
    for now, s, d in moves:
        if last is not None:
            assert now - last >= dwell
        since = s.above_since if d.mode != S else s.below_since
        assert since is not None, d.message
        assert now - since >= hold, d.message
        last = now
