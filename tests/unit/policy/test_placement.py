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
CASES = [
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 8000)),
        D,
        True,
        "Promoted",
        id="promotes-when-dedicated-cheaper-by-margin",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 5800), above_since=ago(11)),
        D,
        True,
        "Promoted",
        id="promotes-on-utilization-held-for-window-when-not-dearer",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 5800), above_since=ago(5)),
        S,
        False,
        "Holding",
        id="holds-until-utilization-window-elapsed",
    ),
    pytest.param(
        inputs(traffic=traffic(46.08, 60, 3000), above_since=ago(30)),
        S,
        False,
        "Holding",
        id="does-not-promote-into-a-dearer-option",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(5, 10, 500), placement_since=ago(60)),
        S,
        True,
        "Demoted",
        id="demotes-when-serverless-cheaper-by-margin",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(5, 10, 500), placement_since=ago(10)),
        D,
        False,
        "DwellNotElapsed",
        id="dwell-blocks-demotion",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(15, 60, 5500), below_since=ago(20)),
        S,
        True,
        "Demoted",
        id="demotes-on-low-utilization-when-serverless-cheaper",
    ),
    pytest.param(
        inputs(current_mode=D, traffic=traffic(46, 60, 6000)),
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
    d = placement.decide(inputs(traffic=traffic(46.08, 60, 5000)), NOW)
    assert (d.above_since, d.below_since) == (NOW, None)
    d = placement.decide(inputs(traffic=traffic(5, 60, 100), above_since=ago(3)), NOW)
    assert (d.above_since, d.below_since) == (None, NOW)


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
