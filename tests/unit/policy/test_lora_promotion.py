"""Spend on a SharedEngine and the promote/demote rule of a LoRA tenant (placement with an engine).

One made-up engine throughout, as in ``test_placement``: prefill 40,000 and decode 2,000
tokens/s, so ``20,000 w`` input plus ``1,000 w`` output tokens/s is exactly ``w`` replicas of
work. H100s at $7.79/GPU-hour: one GPU for a month is ``GPU_MONTH`` = $5,686.70.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidepool.api.v1alpha1 import DeploymentMode, PlacementSpec, Tenancy
from tidepool.policy import lora_promotion, placement
from tidepool.policy.capacity import EngineCapacity
from tidepool.policy.lora_promotion import EngineShare
from tidepool.policy.placement import Load, PlacementInputs, PlacementReason, PoolPrice, Traffic

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
PRICE = 7.79
GPU_MONTH = PRICE * 730
DEDICATED = PoolPrice("dedicated", Tenancy.DEDICATED, "H100", PRICE, None, gpus_per_node=1)
DEDICATED_8 = replace(DEDICATED, gpus_per_node=8)
#: A dedicated pool at half the fleet's price per GPU-hour (GPUs reserved for a term are priced
#: well below on-demand ones): the case where replicas of its own can beat the fleet on spend.
RESERVED = replace(DEDICATED, price_per_gpu_hour=PRICE / 2)
SHARED = PoolPrice("shared", Tenancy.SHARED, "H100", PRICE, 0.20, gpus_per_node=8)
POLICY = placement.PlacementPolicy.from_spec(PlacementSpec())
PLACED = NOW - timedelta(hours=2)


def engine(others: float = 1.2, **kw: Any) -> EngineShare:
    """A fleet whose other tenants keep ``others`` replicas busy."""
    base = EngineShare(
        engine="base-8b",
        others_input_tokens_per_second=20_000.0 * others,
        others_output_tokens_per_second=1_000.0 * others,
        capacity=CAPACITY,
        gpus_per_replica=1,
        price_per_gpu_hour=PRICE,
        min_replicas=0,
        max_replicas=8,
        target_utilization=0.875,
        slo_p99_ttfb_s=10.0,
        price_per_million_tokens=0.20,
    )
    return replace(base, **kw)


def spend(share: EngineShare, mean: float, peak: float | None = None) -> Any:
    p = mean if peak is None else peak
    return lora_promotion.engine_spend(
        share,
        input_tokens_per_second=20_000.0 * mean,
        output_tokens_per_second=1_000.0 * mean,
        peak_input_tokens_per_second=20_000.0 * p,
        peak_output_tokens_per_second=1_000.0 * p,
    )


def busy(w: float) -> Load:
    return Load(10.0 * w, 20_000.0 * w, 1_000.0 * w)


def traffic(mean: float, peak: float | None = None) -> Traffic:
    return Traffic(
        mean=busy(mean),
        peak=busy(mean if peak is None else peak),
        span=timedelta(minutes=10),
        active_fraction=1.0,
        wakes=0.0,
        horizon=timedelta(minutes=10),
    )


def inputs(**kw: Any) -> PlacementInputs:
    base = PlacementInputs(
        requested_mode=A,
        current_mode=S,
        policy=POLICY,
        traffic=traffic(0.1),
        capacity=CAPACITY,
        gpus_per_replica=1,
        min_replicas=0,
        target_utilization=0.875,
        shared=None,
        dedicated=DEDICATED,
        placement_since=PLACED,
        above_since=None,
        below_since=None,
        engine=engine(),
    )
    return replace(base, **kw)


def busy_on_reserved_gpus(held: timedelta) -> PlacementInputs:
    """3 replicas of work beside the others' 1.2, its own GPUs at half the fleet's price, the
    evidence for GPUs held for ``held``."""
    return inputs(traffic=traffic(3.0), dedicated=RESERVED, above_since=NOW - held)


# ------------------------------------------------------------------------- worked examples


def test_engine_share_forced_replica() -> None:
    """Others 1.2 replicas of work (2 replicas), the tenant 1.0 more: 2.2 / 0.875 -> 3, it
    forces 1.0 / 0.875 = 1.14 replicas of capacity and sends 1/2.2 of the tokens; then the module
    docstring's 40% tenant."""
    got = spend(engine(), 1.0)
    assert got.fleet_replicas == 3
    assert got.forced_replicas == pytest.approx(1.0 / 0.875)
    assert got.token_share == pytest.approx(1.0 / 2.2)
    assert got.spend_monthly == pytest.approx(3 * GPU_MONTH / 2.2)
    # What a promotion would save: the forced capacity only; its share of the others' 2
    # replicas stays with them.
    assert got.decision_monthly == pytest.approx(GPU_MONTH / 0.875)
    # 40% of the tokens: others 1.5 (2 replicas), the tenant 1.0: 2.5 / 0.875 -> 3.
    forty = spend(engine(others=1.5), 1.0)
    assert forty.token_share == pytest.approx(0.4)
    assert forty.forced_replicas == pytest.approx(1.14, abs=0.005)
    assert round(forty.spend_monthly) == 6_824
    assert round(forty.decision_monthly) == 6_499
    assert lora_promotion.engine_text(forty) == (
        "SharedEngine base-8b $6,824 (40% of the tokens on 3 replica(s); $6,499 for the 1.14"
        " replica(s) of capacity it adds)"
    )


def test_a_small_tenant_is_not_charged_a_whole_replica_for_tipping_the_fleet() -> None:
    # Others at 1.74 replicas of work (2 replicas at 0.875); a tenant with 0.02 more tips the
    # fleet to 3 replicas, but the capacity it forces is 0.02 / 0.875 = 0.023 of a replica.
    got = spend(engine(others=1.74), 0.02)
    assert got.fleet_replicas == 3
    assert got.forced_replicas == pytest.approx(0.02 / 0.875)
    assert got.decision_monthly < 0.1 * GPU_MONTH


@pytest.mark.parametrize(
    ("share", "load", "fleet", "forced", "slo"),
    [
        pytest.param(
            engine(), (0.5, None), 2, 0.5 / 0.875, True, id="fits-in-the-fleet-it-would-have"
        ),
        pytest.param(engine(), (1.0, None), 3, 1.0 / 0.875, True, id="tips-it-to-three"),
        pytest.param(engine(others=0.0), (0.1, None), 1, 1.0, True, id="alone-forces-the-first"),
        pytest.param(
            engine(others=0.0, min_replicas=2), (0.1, None), 2, 0.0, True, id="warm-minimum-free"
        ),
        pytest.param(
            engine(max_replicas=2), (0.5, 1.0), 2, 0.5 / 0.875, False, id="peak-beyond-max"
        ),
        pytest.param(
            engine(has_slot=False), (0.1, None), 2, 0.1 / 0.875, False, id="no-adapter-slot"
        ),
        pytest.param(engine(), (0.0, None), 2, 0.0, True, id="silent-tenant-pays-nothing"),
    ],
)
def test_engine_spend(
    share: EngineShare, load: tuple[float, float | None], fleet: int, forced: float, slo: bool
) -> None:
    mean, peak = load
    got = spend(share, mean, peak)
    assert (got.fleet_replicas, got.meets_slo) == (fleet, slo)
    assert got.forced_replicas == pytest.approx(forced)
    assert bool(got.slo_note) != slo
    if mean == 0:
        assert got.spend_monthly == got.decision_monthly == 0.0


@pytest.mark.parametrize(
    ("observed", "meets_slo"),
    [
        pytest.param(14.2, False, id="above-the-slo"),
        pytest.param(10.0, True, id="at-the-slo"),
        pytest.param(9.99, True, id="just-below"),
        pytest.param(0.4, True, id="well-below"),
        pytest.param(None, True, id="unknown-is-not-a-miss"),
    ],
)
def test_engine_spend_with_the_observed_time_to_first_byte(
    observed: float | None, meets_slo: bool
) -> None:
    """0.5 replicas of work beside the others' 1.2 fits the fleet with room (2 replicas, under
    maxReplicas 8): only the observation can miss the SLO, and it changes no number but that."""
    got = spend(engine(observed_p99_ttfb_s=observed), 0.5)
    unobserved = spend(engine(), 0.5)
    assert got.meets_slo is meets_slo
    assert bool(got.slo_note) is not meets_slo
    assert replace(got, meets_slo=True, slo_note="") == unobserved


def test_the_observed_miss_names_the_figure_and_the_slo() -> None:
    got = spend(engine(observed_p99_ttfb_s=14.2, slo_p99_ttfb_s=10.0), 0.5)
    assert got.slo_note == (
        "its p99 time to first byte on SharedEngine base-8b was 14.2 s over the placement"
        " window, above its 10 s SLO"
    )
    assert lora_promotion.engine_text(got).endswith(f"(misses SLO: {got.slo_note})")
    # A tenant with a tighter SLO misses it on a figure another meets.
    assert not spend(engine(observed_p99_ttfb_s=3.0, slo_p99_ttfb_s=2.0), 0.5).meets_slo
    assert spend(engine(observed_p99_ttfb_s=3.0), 0.5).meets_slo


def test_chargeback_is_beside_spend_never_in_it() -> None:
    priced = spend(engine(), 0.5)
    free = spend(engine(price_per_million_tokens=None), 0.5)
    assert free.chargeback_monthly is None
    # 10,500 tokens/s x 2,628,000 s/month / 1e6 x $0.20.
    assert priced.chargeback_monthly == pytest.approx(10_500 * 2_628_000 / 1e6 * 0.20)
    assert (priced.spend_monthly, priced.decision_monthly) == (
        free.spend_monthly,
        free.decision_monthly,
    )


# --------------------------------------------------------------- the decision (placement)


CASES = [
    pytest.param(inputs(), S, False, PlacementReason.HOLDING, id="quiet-tenant-stays-on-engine"),
    pytest.param(
        # 3 replicas of work on top of 1.2: the fleet sheds 3 / 0.875 = 3.43 replicas without
        # it, and its own 4 dedicated 1-GPU replicas at the same price spend more than that.
        inputs(traffic=traffic(3.0), above_since=NOW - timedelta(minutes=25)),
        S,
        False,
        PlacementReason.HOLDING,
        id="busy-tenant-whose-own-replicas-cost-more-stays",
    ),
    pytest.param(
        busy_on_reserved_gpus(held=timedelta(minutes=5)),
        S,
        False,
        PlacementReason.HOLDING,
        id="busy-tenant-held-until-the-evidence-is-sustained",
    ),
    pytest.param(
        inputs(
            traffic=traffic(0.2, 3.0),
            engine=engine(max_replicas=2),
            dedicated=DEDICATED_8,
            above_since=NOW - timedelta(minutes=25),
        ),
        D,
        True,
        PlacementReason.PROMOTED,
        id="promoted-on-slo-though-dearer",
    ),
    pytest.param(
        inputs(
            current_mode=D,
            traffic=traffic(0.1),
            dedicated=DEDICATED_8,
            below_since=NOW - timedelta(minutes=25),
        ),
        S,
        True,
        PlacementReason.DEMOTED,
        id="quiet-dedicated-tenant-demoted-to-engine",
    ),
    pytest.param(
        inputs(
            current_mode=D,
            traffic=traffic(0.1),
            dedicated=DEDICATED_8,
            engine=engine(has_slot=False),
            below_since=NOW - timedelta(minutes=25),
        ),
        D,
        False,
        PlacementReason.HOLDING,
        id="never-demoted-onto-an-engine-without-a-slot",
    ),
    pytest.param(
        inputs(
            current_mode=D,
            traffic=traffic(0.1),
            dedicated=DEDICATED_8,
            placement_since=NOW - timedelta(minutes=10),
            below_since=NOW - timedelta(minutes=25),
        ),
        D,
        False,
        PlacementReason.DWELL_NOT_ELAPSED,
        id="demotion-waits-for-the-dwell",
    ),
    pytest.param(
        # The same 3 replicas of work, own GPUs at half the price: 4 x $2,843 = $11,373 <=
        # 0.85 x $19,497 (the 3.43 replicas the fleet sheds).
        busy_on_reserved_gpus(held=timedelta(minutes=25)),
        D,
        True,
        PlacementReason.PROMOTED,
        id="busy-tenant-promoted-to-cheaper-gpus",
    ),
    pytest.param(
        # 3.5 replicas of work, steady: its own ceil(3.5 / 0.875) = 4 replicas cost exactly the
        # 4 the fleet sheds, at utilization 0.875 (> promoteAbove 0.5). The fleet is warm, so the
        # utilization rule does not promote it at equal spend.
        inputs(traffic=traffic(3.5), above_since=NOW - timedelta(minutes=25)),
        S,
        False,
        PlacementReason.HOLDING,
        id="steady-tenant-at-equal-spend-stays-on-the-engine",
    ),
]


@pytest.mark.parametrize(("given_inputs", "mode", "move", "reason"), CASES)
def test_decide_with_an_engine(
    given_inputs: PlacementInputs, mode: DeploymentMode, move: bool, reason: str
) -> None:
    got = placement.decide(given_inputs, NOW)
    assert (got.mode, got.move, got.reason) == (mode, move, reason)
    assert got.cost is not None
    assert got.cost.engine is not None
    assert "SharedEngine base-8b" in got.message


def test_observed_miss_promotes_after_the_hold_though_dearer() -> None:
    """0.5 replicas of work beside the others' 1.2: no spend case for its own replicas (a whole
    8-GPU node, $45,494, against the 0.57 replica it forces, $3,250) and no predicted miss; its
    p99 time to first byte on the fleet, 14.2 s, is the only evidence. Observed for the 20-minute
    hold it promotes; for 5 minutes it holds; at 9 s it never does."""

    def observed(p99: float, held: timedelta) -> placement.PlacementDecision:
        return placement.decide(
            inputs(
                traffic=traffic(0.5),
                engine=engine(observed_p99_ttfb_s=p99),
                dedicated=DEDICATED_8,
                above_since=NOW - held,
            ),
            NOW,
        )

    held = observed(14.2, timedelta(minutes=20))
    assert (held.mode, held.move, held.reason) == (D, True, PlacementReason.PROMOTED)
    assert "p99 time to first byte on SharedEngine base-8b was 14.2 s" in held.message
    early = observed(14.2, timedelta(minutes=5))
    assert (early.move, early.reason, early.above_since) == (
        False,
        PlacementReason.HOLDING,
        NOW - timedelta(minutes=5),
    )
    within = observed(9.0, timedelta(minutes=20))
    assert (within.move, within.above_since) == (False, None)


def test_promotion_message_names_the_engine_share_and_the_slo() -> None:
    got = placement.decide(CASES[3].values[0], NOW)
    assert "busiest minute needs" in got.message
    assert "maxReplicas 2" in got.message


def test_numeric_promotion_example() -> None:
    """3 replicas of work beside the others' 1.2: the fleet needs ceil(4.2 / 0.875) = 5 replicas
    instead of ceil(1.2 / 0.875) = 2; without the tenant it sheds 3 / 0.875 = 3.43 replicas of
    capacity, $19,497/month, and that is all a promotion saves (its token share of the other 2,
    $7,583, stays with the others). Its own: ceil(3 / 0.875) = 4 dedicated 1-GPU replicas,
    $22,747/month at the fleet's price: no evidence for GPUs (charging it the share too, $27,621,
    promoted it and raised the platform's spend by $3,250/month). At half the price, $11,373 <=
    0.85 x $19,497: the evidence favours GPUs."""
    same_price = placement.decide(inputs(traffic=traffic(3.0)), NOW)
    assert same_price.cost is not None
    assert same_price.cost.engine is not None
    assert same_price.cost.engine.forced_replicas == pytest.approx(3 / 0.875)
    assert same_price.cost.serverless_monthly == pytest.approx(3 / 0.875 * GPU_MONTH)
    assert round(same_price.cost.serverless_monthly) == 19_497
    assert round(same_price.cost.engine.spend_monthly) == round(5 * GPU_MONTH * 3 / 4.2) == 20_310
    assert same_price.cost.dedicated_monthly == pytest.approx(4 * GPU_MONTH)
    assert same_price.above_since is None
    cheaper = placement.decide(inputs(traffic=traffic(3.0), dedicated=RESERVED), NOW)
    assert cheaper.cost is not None
    assert round(cheaper.cost.dedicated_monthly) == 11_373
    assert cheaper.above_since == NOW


# ------------------------------------------------------------------------------ properties


@given(
    st.floats(0.0, 6.0),
    st.floats(0.0, 6.0),
    st.floats(0.0, 6.0),
    st.integers(0, 3),
    st.integers(1, 16),
)
@example(mine=5e-324, extra_peak=0.0, others=5e-324, min_replicas=0, max_replicas=1)
def test_spend_and_decision_cost_are_bounded(
    mine: float, extra_peak: float, others: float, min_replicas: int, max_replicas: int
) -> None:
    share = engine(others=others, min_replicas=min_replicas, max_replicas=max_replicas)
    got = spend(share, mine, mine + extra_peak)
    assert 0.0 <= got.token_share <= 1.0
    assert got.spend_monthly >= 0.0
    assert got.forced_replicas >= 0.0
    # The decision cost is the capacity the fleet sheds without the tenant, priced: never more
    # than its own work at the target (or the one replica it wakes alone), never more than the
    # whole fleet with it. Its work as the policy sees it, from its token rates (5e-324 of a
    # replica's tokens is no work at all once divided by throughput).
    mine_work = share.capacity.seconds_per_request(20_000.0 * mine, 1_000.0 * mine)
    assert got.decision_monthly == pytest.approx(got.forced_replicas * GPU_MONTH)
    assert got.forced_replicas <= max(1.0, mine_work / share.target_utilization) + 1e-9
    assert got.decision_monthly <= got.fleet_replicas * GPU_MONTH + 1e-6


@given(
    st.floats(0.0, 8.0),
    st.floats(0.0, 4.0),
    st.floats(0.0, 8.0),
    st.booleans(),
)
@example(mean=3.0, extra_peak=0.0, others=1.2, with_hybrid=False)
@example(mean=3.5, extra_peak=0.0, others=1.2, with_hybrid=True)
def test_at_equal_prices_only_the_slo_promotes(
    mean: float, extra_peak: float, others: float, with_hybrid: bool
) -> None:
    """The defect this rule fixes: promotions whose own replicas cost the platform more than the
    fleet shed. With its own GPUs at the fleet's price per GPU (1-GPU nodes), dedicated replicas
    sized for its peak never spend less than the capacity it forces, and a hybrid floor at most
    ``1 - target`` (12.5%) less, within the 15% margin: so a tenant the fleet serves within its
    SLO is never promoted, however busy, after any hold."""
    got = placement.decide(
        inputs(
            traffic=traffic(mean, mean + extra_peak),
            engine=engine(others=others, max_replicas=1000),
            shared=SHARED if with_hybrid else None,
            above_since=NOW - timedelta(hours=1),
        ),
        NOW,
    )
    assert got.cost is not None
    assert got.cost.engine is not None
    assert got.cost.engine.meets_slo
    assert not got.move, got.message


@given(
    st.one_of(st.none(), st.floats(0.0, 10.0)),
    st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 1.0)),
    st.floats(0.0, 3.0),
    st.sampled_from([S, D, H]),
    st.sampled_from([None, NOW - timedelta(minutes=25)]),
)
@example(observed=10.0, load=(3.0, 0.0), others=1.2, current=S, since=PLACED)
def test_an_unknown_or_met_observation_never_changes_the_decision(
    observed: float | None,
    load: tuple[float, float],
    others: float,
    current: DeploymentMode,
    since: datetime | None,
) -> None:
    """Unknown (``None``: no requests, no data) or within the 10 s SLO, the observation decides
    nothing: the decision is the one made with no observation field at all, in every mode, at
    every load (mean, and how far its busiest minute rises above it) and with either timer
    running."""
    mean, extra_peak = load

    def decided(share: EngineShare) -> placement.PlacementDecision:
        return placement.decide(
            inputs(
                current_mode=current,
                traffic=traffic(mean, mean + extra_peak),
                engine=share,
                dedicated=RESERVED,
                above_since=since,
                below_since=since,
            ),
            NOW,
        )

    plain = engine(others=others)
    assert decided(replace(plain, observed_p99_ttfb_s=observed)) == decided(plain)


@given(st.floats(10.0, 600.0, exclude_min=True), st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_an_observed_miss_is_evidence_for_gpus_never_for_the_engine(
    observed: float, mean: float, others: float
) -> None:
    """Above the SLO, however cheap the fleet, the evidence favours replicas of its own and
    never the fleet: a tenant on it starts (or keeps) the promotion timer, never the other."""
    got = placement.decide(
        inputs(
            traffic=traffic(mean),
            engine=engine(others=others, observed_p99_ttfb_s=observed),
            above_since=None,
            below_since=NOW - timedelta(hours=1),
        ),
        NOW,
    )
    assert got.cost is not None
    assert got.cost.engine is not None
    assert not got.cost.engine.meets_slo
    assert (got.above_since, got.below_since) == (NOW, None)


@given(st.floats(0.0, 29.99), st.floats(0.0, 5.0), st.sampled_from([S, D, H]))
def test_no_flapping_a_move_is_never_followed_by_another_within_the_dwell(
    minutes_since_move: float, load: float, current: DeploymentMode
) -> None:
    """After a promotion (or demotion) the plan sets placementSince to the move's completion;
    whatever the load then, placement never moves again before minDwell (30 min)."""
    got = placement.decide(
        inputs(
            current_mode=current,
            traffic=traffic(load),
            placement_since=NOW - timedelta(minutes=minutes_since_move),
            above_since=NOW - timedelta(hours=1),
            below_since=NOW - timedelta(hours=1),
        ),
        NOW,
    )
    assert not got.move


@given(st.floats(0.0, 5.0), st.floats(0.0, 3.0))
def test_promotion_then_demotion_needs_the_evidence_to_reverse(load: float, others: float) -> None:
    """With unchanged traffic, the evidence that promoted a tenant cannot also favour demoting
    it: a demotion needs the engine cheaper by the margin, a promotion needed it dearer."""
    on_engine = placement.decide(
        inputs(traffic=traffic(load), engine=engine(others=others), above_since=PLACED), NOW
    )
    if not on_engine.move:
        return
    back = placement.decide(
        inputs(
            current_mode=on_engine.mode,
            traffic=traffic(load),
            engine=engine(others=others),
            below_since=PLACED,
        ),
        NOW,
    )
    assert not back.move
