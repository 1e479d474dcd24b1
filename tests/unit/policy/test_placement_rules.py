"""Placement's named rules, each on its own: what it concludes and when it stays silent.

:func:`tidepool.policy.placement.decide` is a pipeline of these rules (module docstring, "The
choice"); the table-driven tests of ``test_placement.py`` check the decisions they add up to,
and these pin each rule to the worked example that makes it fire, so a change to one rule shows
up under its own name. Scenarios reuse ``test_placement``'s engine and named traffic shapes.
"""

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from test_lora_promotion import engine as shared_engine
from test_placement import (
    DEDICATED,
    HOT,
    NOW,
    PLACED,
    QUIET,
    SHARED,
    SPIKY,
    D,
    H,
    S,
    ago,
    inputs,
    traffic,
)

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.policy import placement, signals
from tidepool.policy.placement import PlacementInputs, Traffic

_Rule = Callable[[placement._Comparison], placement._Move | None]


def comparison(given: PlacementInputs, now: datetime = NOW) -> placement._Comparison:
    """What the comparison rules see for ``given`` (its traffic a full window, an auto tenant)."""
    assert isinstance(given.traffic, Traffic)
    current = given.current_mode
    return placement._compare(given, now, current, placement._measure(given, given.traffic))


TEN_MINUTES_LOW = traffic(0.1)
THREE_MINUTES = traffic(0.1, minutes=3)
TWO_MINUTES = traffic(0.1, minutes=2)
DECLARED = placement.declared(60_000.0)


NO_SERIES = signals.NoData("no series")
EVIDENCE: dict[str, tuple[PlacementInputs, Traffic | None, str]] = {
    "full-window": (inputs(traffic=TEN_MINUTES_LOW, placement_since=PLACED), TEN_MINUTES_LOW, ""),
    "new-tenant-3-minutes": (inputs(traffic=THREE_MINUTES), THREE_MINUTES, ""),
    "placed-tenant-needs-a-full-window": (
        inputs(traffic=THREE_MINUTES, placement_since=PLACED),
        None,
        "traffic seen for 3m of a 10m window",
    ),
    "new-tenant-under-3-minutes": (
        inputs(traffic=TWO_MINUTES),
        None,
        "traffic seen for 2m of a 10m window",
    ),
    "new-tenant-declared-load": (
        inputs(traffic=TWO_MINUTES, expected_tokens_per_minute=60_000.0),
        DECLARED,
        "",
    ),
    "declared-load-while-metrics-unknown": (
        inputs(traffic=NO_SERIES, expected_tokens_per_minute=60_000.0),
        DECLARED,
        "",
    ),
    "placed-tenant-ignores-declared-load": (
        inputs(traffic=NO_SERIES, placement_since=PLACED, expected_tokens_per_minute=60_000.0),
        None,
        "traffic unknown (no series)",
    ),
}


@pytest.mark.parametrize(
    ("given", "evidence", "unknown_why"), EVIDENCE.values(), ids=EVIDENCE.keys()
)
def test_evidence(given: PlacementInputs, evidence: Traffic | None, unknown_why: str) -> None:
    found = placement._evidence(given)
    assert found.traffic == evidence
    assert found.unknown_why == unknown_why


@pytest.mark.parametrize(
    ("shared", "dedicated", "on_engine", "available"),
    [
        pytest.param(SHARED, None, False, (S,), id="available-shared-only"),
        pytest.param(None, DEDICATED, False, (D,), id="available-dedicated-only"),
        pytest.param(SHARED, DEDICATED, False, (S, D, H), id="available-both-pools"),
        pytest.param(None, DEDICATED, True, (S, D), id="available-engine-is-serverless"),
        pytest.param(None, None, False, (), id="available-none"),
    ],
)
def test_available(
    shared: placement.PoolPrice | None,
    dedicated: placement.PoolPrice | None,
    on_engine: bool,
    available: tuple[DeploymentMode, ...],
) -> None:
    on = shared_engine() if on_engine else None
    assert placement._available(inputs(shared=shared, dedicated=dedicated, engine=on)) == available


#: Why a sustained move is made, as :func:`placement._because` words it (10-minute window).
HOLD_NOTE = "evidence 10m window + 20m hold"
MOVES_BY_RULE: dict[str, tuple[_Rule, PlacementInputs, DeploymentMode, str]] = {
    "promotion-after-the-20-minute-hold": (
        placement._promotion,
        inputs(traffic=HOT, placement_since=PLACED, above_since=ago(20)),
        D,
        f"spends no more, utilization above 0.50, utilization 0.88 (held 20m; {HOLD_NOTE})",
    ),
    "promotion-new-tenant-at-once": (
        placement._promotion,
        inputs(traffic=HOT),
        D,
        "spends no more, utilization above 0.50, utilization 0.88"
        f" (first window of a new tenant; {HOLD_NOTE})",
    ),
    "demotion-half-the-spend-after-the-hold": (
        placement._demotion,
        inputs(current_mode=D, traffic=QUIET, placement_since=PLACED, below_since=ago(20)),
        S,
        f"spends 50% less, utilization 0.10 (held 20m; {HOLD_NOTE})",
    ),
    "gpu_switch-dedicated-5-replicas-to-hybrid-floor-1": (
        placement._gpu_switch,
        inputs(current_mode=D, traffic=SPIKY, placement_since=PLACED),
        H,
        "hybrid spends 67% less (>= margin 15%); utilization 0.20",
    ),
    "pool_gone-dedicated-deleted": (
        placement._pool_gone,
        inputs(current_mode=D, traffic=HOT, dedicated=None, placement_since=PLACED),
        S,
        "the dedicated pool is gone",
    ),
}


@pytest.mark.parametrize(
    ("rule", "given", "target", "why"), MOVES_BY_RULE.values(), ids=MOVES_BY_RULE.keys()
)
def test_move_rule_fires(
    rule: _Rule, given: PlacementInputs, target: DeploymentMode, why: str
) -> None:
    assert rule(comparison(given)) == placement._Move(target, why)


SILENT_RULES: dict[str, tuple[_Rule, PlacementInputs]] = {
    "promotion-not-before-the-hold": (
        placement._promotion,
        inputs(traffic=HOT, placement_since=PLACED, above_since=ago(19)),
    ),
    "demotion-not-on-the-first-favouring-window": (
        placement._demotion,
        inputs(current_mode=D, traffic=QUIET, placement_since=PLACED),
    ),
    "gpu_switch-not-at-equal-spend": (
        placement._gpu_switch,
        inputs(current_mode=D, traffic=HOT, placement_since=PLACED),
    ),
    "pool_gone-not-while-it-exists": (
        placement._pool_gone,
        inputs(current_mode=D, traffic=HOT, placement_since=PLACED),
    ),
}


@pytest.mark.parametrize(("rule", "given"), SILENT_RULES.values(), ids=SILENT_RULES.keys())
def test_move_rule_stays_silent(rule: _Rule, given: PlacementInputs) -> None:
    assert rule(comparison(given)) is None


def test_hold_or_move_waits_for_the_dwell_then_moves_and_clears_the_timers() -> None:
    """Placed 10 minutes ago with a 30-minute dwell: the promotion waits 20 more minutes."""
    given = inputs(traffic=HOT, placement_since=ago(10), above_since=ago(20))
    c = comparison(given)
    move = placement._promotion(c)
    assert move is not None
    waiting = placement._hold_or_move(c, move)
    assert (waiting.mode, waiting.move, waiting.reason) == (
        S,
        False,
        placement.PlacementReason.DWELL_NOT_ELAPSED,
    )
    assert "(20m left)" in waiting.message
    later = NOW + timedelta(minutes=20)
    moved = placement._hold_or_move(comparison(given, later), move)
    assert (moved.mode, moved.move, moved.reason, moved.clears_timers) == (
        D,
        True,
        placement.PlacementReason.PROMOTED,
        True,
    )


def test_fixed_mode_obeys_spec_and_floors_hybrid_at_one() -> None:
    verdict = placement._fixed_mode(inputs(requested_mode=H, min_replicas=0), None)
    assert (verdict.mode, verdict.move, verdict.floor_replicas, verdict.message) == (
        H,
        True,
        1,
        "spec.mode is hybrid",
    )
