"""Make-before-break migrations: every phase transition, timeouts, and what is routable when."""

from datetime import UTC, datetime, timedelta

import pytest

from tidepool.api.v1alpha1 import DeploymentMode, MigrationPhase, MigrationStatus, PoolRole
from tidepool.policy import migration
from tidepool.policy.migration import Layout, PoolObservation
from tidepool.policy.signals import NoData, Sample, Signal

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SHARED, DED = "shared-a100", "dedicated-a100"
MODES = {
    "serverless": DeploymentMode.SERVERLESS,
    "dedicated": DeploymentMode.DEDICATED,
    "hybrid": DeploymentMode.HYBRID,
}


def _layout(mode: str) -> Layout:
    return migration.layout_for(MODES[mode], shared=SHARED, dedicated=DED)


def _obs(ready: int = 0, inflight: Signal | float = 0.0) -> PoolObservation:
    signal = Sample(float(inflight), T0) if isinstance(inflight, (int, float)) else inflight
    return PoolObservation(ready_replicas=ready, inflight=signal)


def _status(
    src: str, dst: str, phase: MigrationPhase, *, started: datetime = T0, since: datetime = T0
) -> MigrationStatus:
    status = migration.start(
        from_mode=MODES[src],
        to_mode=MODES[dst],
        source=_layout(src),
        target=_layout(dst),
        reason="test",
        now=started,
    )
    return status.model_copy(update={"phase": phase, "phase_since": since})


def _step(
    src: str,
    dst: str,
    phase: MigrationPhase,
    observed: dict[str, PoolObservation],
    *,
    after: timedelta = timedelta(0),
    started: datetime = T0,
) -> migration.MigrationStep:
    return migration.step(
        _status(src, dst, phase, started=started),
        source=_layout(src),
        target=_layout(dst),
        observed=observed,
        now=T0 + after,
    )


# ----------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    ("mode", "roles"),
    [
        pytest.param("serverless", ((SHARED, "primary"),), id="serverless-on-shared"),
        pytest.param("dedicated", ((DED, "primary"),), id="dedicated-on-dedicated"),
        pytest.param(
            "hybrid", ((DED, "primary"), (SHARED, "overflow")), id="hybrid-floor-plus-overflow"
        ),
    ],
)
def test_layout_for(mode: str, roles: tuple[tuple[str, str], ...]) -> None:
    assert _layout(mode).roles == roles


@pytest.mark.parametrize(
    ("mode", "shared", "dedicated", "mentions"),
    [
        pytest.param(
            DeploymentMode.SERVERLESS, None, DED, "tenancy shared", id="serverless-without-shared"
        ),
        pytest.param(
            DeploymentMode.DEDICATED,
            SHARED,
            None,
            "tenancy dedicated",
            id="dedicated-without-dedicated",
        ),
        pytest.param(
            DeploymentMode.HYBRID,
            SHARED,
            None,
            "one shared and one dedicated",
            id="hybrid-without-dedicated",
        ),
        pytest.param(DeploymentMode.AUTO, SHARED, DED, "resolve auto", id="auto-has-no-layout"),
    ],
)
def test_layout_for_refuses_with_a_reason(
    mode: DeploymentMode, shared: str | None, dedicated: str | None, mentions: str
) -> None:
    with pytest.raises(ValueError, match=mentions):
        migration.layout_for(mode, shared=shared, dedicated=dedicated)


def test_start_records_both_layouts_and_the_reason() -> None:
    status = _status("serverless", "hybrid", MigrationPhase.STARTING_TARGET)

    assert status.phase == MigrationPhase.STARTING_TARGET
    assert (status.from_pool, status.to_pool) == (SHARED, f"{DED},{SHARED}")
    assert status.to_mode == DeploymentMode.HYBRID
    assert status.started_at == status.phase_since == T0
    assert status.reason == "serverless -> hybrid: test"


# ---------------------------------------------------------------------- phase transitions

S, SH, D = MigrationPhase.STARTING_TARGET, MigrationPhase.SHIFTING_TRAFFIC, MigrationPhase.DRAINING
SEC = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("src", "dst", "phase", "observed", "after", "next_phase", "roles", "routable"),
    [
        # serverless -> dedicated
        pytest.param(
            "serverless",
            "dedicated",
            S,
            {SHARED: _obs(1), DED: _obs(0)},
            SEC,
            S,
            {SHARED: "primary", DED: "target"},
            (SHARED,),
            id="s2d-waits-for-target",
        ),
        pytest.param(
            "serverless",
            "dedicated",
            S,
            {SHARED: _obs(1)},
            SEC,
            S,
            {SHARED: "primary", DED: "target"},
            (SHARED,),
            id="s2d-unobserved-target-waits",
        ),
        pytest.param(
            "serverless",
            "dedicated",
            S,
            {SHARED: _obs(1), DED: _obs(1)},
            SEC,
            SH,
            {SHARED: "draining", DED: "primary"},
            (DED,),
            id="s2d-target-ready-shifts",
        ),
        pytest.param(
            "serverless",
            "dedicated",
            SH,
            {SHARED: _obs(1, 3), DED: _obs(1)},
            SEC,
            D,
            {SHARED: "draining", DED: "primary"},
            (DED,),
            id="s2d-shift-then-drain",
        ),
        pytest.param(
            "serverless",
            "dedicated",
            D,
            {SHARED: _obs(1, 3), DED: _obs(1)},
            60 * SEC,
            D,
            {SHARED: "draining", DED: "primary"},
            (DED,),
            id="s2d-busy-keeps-draining",
        ),
        pytest.param(
            "serverless",
            "dedicated",
            D,
            {SHARED: _obs(1, 0), DED: _obs(1)},
            5 * SEC,
            None,
            {DED: "primary"},
            (DED,),
            id="s2d-drained-completes",
        ),
        # dedicated -> serverless
        pytest.param(
            "dedicated",
            "serverless",
            S,
            {DED: _obs(2), SHARED: _obs(0)},
            SEC,
            S,
            {DED: "primary", SHARED: "target"},
            (DED,),
            id="d2s-waits-for-target",
        ),
        pytest.param(
            "dedicated",
            "serverless",
            S,
            {DED: _obs(2), SHARED: _obs(1)},
            SEC,
            SH,
            {DED: "draining", SHARED: "primary"},
            (SHARED,),
            id="d2s-target-ready-shifts",
        ),
        pytest.param(
            "dedicated",
            "serverless",
            SH,
            {DED: _obs(2), SHARED: _obs(1)},
            SEC,
            D,
            {DED: "draining", SHARED: "primary"},
            (SHARED,),
            id="d2s-shift-then-drain",
        ),
        pytest.param(
            "dedicated",
            "serverless",
            D,
            {DED: _obs(2, 0), SHARED: _obs(1)},
            10 * SEC,
            None,
            {SHARED: "primary"},
            (SHARED,),
            id="d2s-drained-completes",
        ),
        # serverless -> hybrid: the shared pool stays, becoming overflow; nothing drains
        pytest.param(
            "serverless",
            "hybrid",
            S,
            {SHARED: _obs(1), DED: _obs(0)},
            SEC,
            S,
            {SHARED: "primary", DED: "target"},
            (SHARED,),
            id="s2h-waits-for-floor",
        ),
        pytest.param(
            "serverless",
            "hybrid",
            S,
            {SHARED: _obs(1), DED: _obs(1)},
            SEC,
            SH,
            {SHARED: "overflow", DED: "primary"},
            (DED, SHARED),
            id="s2h-floor-ready-shifts",
        ),
        pytest.param(
            "serverless",
            "hybrid",
            SH,
            {SHARED: _obs(1), DED: _obs(1)},
            SEC,
            D,
            {SHARED: "overflow", DED: "primary"},
            (DED, SHARED),
            id="s2h-shift-then-drain",
        ),
        pytest.param(
            "serverless",
            "hybrid",
            D,
            {SHARED: _obs(1, 9), DED: _obs(1)},
            0 * SEC,
            None,
            {DED: "primary", SHARED: "overflow"},
            (DED, SHARED),
            id="s2h-nothing-to-drain-completes-at-once",
        ),
        # hybrid -> dedicated: no new pool, so nothing to start; the overflow pool drains
        pytest.param(
            "hybrid",
            "dedicated",
            S,
            {DED: _obs(2), SHARED: _obs(0)},
            0 * SEC,
            SH,
            {DED: "primary", SHARED: "draining"},
            (DED,),
            id="h2d-no-new-pool-shifts-at-once",
        ),
        pytest.param(
            "hybrid",
            "dedicated",
            SH,
            {DED: _obs(2), SHARED: _obs(1, 4)},
            SEC,
            D,
            {DED: "primary", SHARED: "draining"},
            (DED,),
            id="h2d-shift-then-drain",
        ),
        pytest.param(
            "hybrid",
            "dedicated",
            D,
            {DED: _obs(2), SHARED: _obs(1, 4)},
            60 * SEC,
            D,
            {DED: "primary", SHARED: "draining"},
            (DED,),
            id="h2d-busy-overflow-keeps-draining",
        ),
        pytest.param(
            "hybrid",
            "dedicated",
            D,
            {DED: _obs(2), SHARED: _obs(1, 0)},
            5 * SEC,
            None,
            {DED: "primary"},
            (DED,),
            id="h2d-drained-completes",
        ),
    ],
)
def test_phase_transitions(
    *,
    src: str,
    dst: str,
    phase: MigrationPhase,
    observed: dict[str, PoolObservation],
    after: timedelta,
    next_phase: MigrationPhase | None,
    roles: dict[str, str],
    routable: tuple[str, ...],
) -> None:
    result = _step(src, dst, phase, observed, after=after)

    assert (result.status.phase if result.status else None) == next_phase, result.message
    assert result.completed is (next_phase is None)
    assert not result.rolled_back
    assert dict(result.roles) == roles
    assert result.routable == routable
    if result.status is not None and next_phase != phase:
        assert result.status.phase_since == T0 + after, "a new phase restarts its clock"
    if result.status is not None and next_phase == phase:
        assert result.status.phase_since == T0, "staying keeps the phase clock"


@pytest.mark.parametrize(
    ("after", "completed"),
    [
        pytest.param(timedelta(0), False, id="at-once-still-settling"),
        pytest.param(timedelta(seconds=4), False, id="4s-still-settling"),
        pytest.param(migration.MIN_DRAIN, True, id="min-drain-reached"),
    ],
)
def test_idle_pool_still_waits_min_drain(after: timedelta, completed: bool) -> None:
    result = _step("serverless", "dedicated", D, {SHARED: _obs(1, 0), DED: _obs(1)}, after=after)

    assert result.completed is completed
    if not completed:
        assert "settling" in result.message


@pytest.mark.parametrize(
    ("after", "completed"),
    [
        pytest.param(timedelta(minutes=1), False, id="1m-keeps-draining"),
        pytest.param(
            migration.DRAIN_TIMEOUT - timedelta(seconds=1), False, id="just-before-timeout"
        ),
        pytest.param(migration.DRAIN_TIMEOUT, True, id="timeout-completes"),
    ],
)
def test_unknown_inflight_keeps_draining_until_timeout(after: timedelta, completed: bool) -> None:
    observed = {SHARED: _obs(1, NoData("prometheus unreachable")), DED: _obs(1)}

    result = _step("serverless", "dedicated", D, observed, after=after)

    assert result.completed is completed
    if completed:
        assert "drain timeout reached" in result.message
        assert dict(result.roles) == {DED: "primary"}
    else:
        assert "in-flight unknown" in result.message
        assert dict(result.roles)[SHARED] == "draining"


def test_busy_pool_also_completes_at_drain_timeout() -> None:
    result = _step(
        "serverless",
        "dedicated",
        D,
        {SHARED: _obs(1, 2), DED: _obs(1)},
        after=migration.DRAIN_TIMEOUT,
    )

    assert result.completed
    assert "drain timeout reached" in result.message


@pytest.mark.parametrize(
    ("since_start", "rolled_back"),
    [
        pytest.param(timedelta(minutes=29), False, id="29m-keeps-waiting"),
        pytest.param(migration.START_TIMEOUT, False, id="exactly-30m-keeps-waiting"),
        pytest.param(
            migration.START_TIMEOUT + timedelta(seconds=1), True, id="past-30m-rolls-back"
        ),
    ],
)
def test_start_timeout_rolls_back(since_start: timedelta, rolled_back: bool) -> None:
    result = _step("serverless", "dedicated", S, {SHARED: _obs(1), DED: _obs(0)}, after=since_start)

    assert result.rolled_back is rolled_back
    assert not result.completed
    assert result.routable == (SHARED,)
    if rolled_back:
        assert result.status is None
        assert dict(result.roles) == {SHARED: "primary"}, "the target pool is removed"
        assert DED in result.message
    else:
        assert result.status is not None
        assert result.status.phase == S


def test_target_becoming_ready_at_the_deadline_still_shifts() -> None:
    result = _step(
        "serverless",
        "dedicated",
        S,
        {SHARED: _obs(1), DED: _obs(1)},
        after=migration.START_TIMEOUT + timedelta(minutes=5),
    )

    assert not result.rolled_back
    assert result.status is not None
    assert result.status.phase == SH


# -------------------------------------------------------------------- whole walks, invariants

TRANSITIONS = [
    pytest.param("serverless", "dedicated", id="serverless-to-dedicated"),
    pytest.param("dedicated", "serverless", id="dedicated-to-serverless"),
    pytest.param("serverless", "hybrid", id="serverless-to-hybrid"),
    pytest.param("hybrid", "dedicated", id="hybrid-to-dedicated"),
    pytest.param("dedicated", "hybrid", id="dedicated-to-hybrid"),
    pytest.param("hybrid", "serverless", id="hybrid-to-serverless"),
]


@pytest.mark.parametrize(("src", "dst"), TRANSITIONS)
def test_walk_routes_only_to_started_pools_and_never_to_nothing(src: str, dst: str) -> None:
    source, target = _layout(src), _layout(dst)
    ready: dict[str, int] = dict.fromkeys(source.pools, 1)
    status: MigrationStatus | None = migration.start(
        from_mode=MODES[src],
        to_mode=MODES[dst],
        source=source,
        target=target,
        reason="walk",
        now=T0,
    )
    now = T0
    seen_phases = []
    for tick in range(40):
        assert status is not None
        seen_phases.append(status.phase)
        observed = {p: _obs(ready.get(p, 0), 0.0) for p in {*source.pools, *target.pools}}
        result = migration.step(status, source=source, target=target, observed=observed, now=now)
        assert result.routable, f"tick {tick}: nothing routable"
        not_ready = [p for p in result.routable if ready.get(p, 0) < 1]
        assert not not_ready, f"tick {tick}: routes to {not_ready}, which has no ready replica"
        assert set(result.routable) <= {p for p, _ in result.roles}
        if result.completed:
            assert result.roles == target.roles
            assert result.routable == target.pools
            break
        status = result.status
        if tick == 2:  # the target pools' first replicas become ready a few ticks in
            ready.update(dict.fromkeys(target.pools, 1))
        now += timedelta(seconds=2)
    else:
        pytest.fail("migration never completed")
    assert seen_phases[0] == S
    assert seen_phases[-1] == D


@pytest.mark.parametrize(
    ("src", "dst"),
    # Only moves that start a new pool can time out while starting it.
    [
        p
        for p in TRANSITIONS
        if set(_layout(str(p.values[1])).pools) - set(_layout(str(p.values[0])).pools)
    ],
)
def test_rollback_routes_to_the_source(src: str, dst: str) -> None:
    source = _layout(src)
    result = _step(
        src,
        dst,
        S,
        {p: _obs(1) for p in source.pools},
        after=migration.START_TIMEOUT + timedelta(seconds=1),
    )

    assert result.rolled_back
    assert result.roles == source.roles
    assert result.routable == source.pools


# ------------------------------------------------------------------------------- redirect

PHASES = list(MigrationPhase)


def _redirect(src: str, dst: str, phase: MigrationPhase, wanted: str) -> migration.Redirect | None:
    return migration.redirect(
        _status(src, dst, phase),
        current_mode=MODES[src],
        source=_layout(src),
        target=_layout(dst),
        wanted_mode=MODES[wanted],
        wanted=_layout(wanted),
        now=T0 + timedelta(minutes=1),
    )


#: (move, phase, the mode the spec asks for now) -> (the mode that serves from here on, where
#: the new move goes or None for aborted)
REDIRECTS = [
    pytest.param(
        "serverless", "dedicated", MigrationPhase.STARTING_TARGET, "serverless",
        ("serverless", None), id="back-before-the-shift-aborts",
    ),
    pytest.param(
        "serverless", "dedicated", MigrationPhase.STARTING_TARGET, "hybrid",
        ("serverless", "hybrid"), id="elsewhere-before-the-shift-restarts-from-the-source",
    ),
    pytest.param(
        "serverless", "dedicated", MigrationPhase.SHIFTING_TRAFFIC, "serverless",
        ("dedicated", "serverless"), id="back-after-the-shift-moves-back-from-the-target",
    ),
    pytest.param(
        "serverless", "dedicated", MigrationPhase.DRAINING, "hybrid",
        ("dedicated", "hybrid"), id="elsewhere-after-the-shift-moves-on-from-the-target",
    ),
    pytest.param(
        "hybrid", "serverless", MigrationPhase.DRAINING, "dedicated",
        ("serverless", "dedicated"), id="hybrid-draining-dedicated-which-it-wants-again",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("src", "dst", "phase", "wanted", "expected"), REDIRECTS)
def test_redirect(
    src: str, dst: str, phase: MigrationPhase, wanted: str, expected: tuple[str, str | None]
) -> None:
    turned = _redirect(src, dst, phase, wanted)
    assert turned is not None
    serving, to = expected
    assert turned.serving_mode == MODES[serving]
    if to is None:
        assert turned.status is None
        assert "aborted" in turned.message
    else:
        assert turned.status is not None
        assert turned.status.to_mode == MODES[to]
        assert turned.status.phase == MigrationPhase.STARTING_TARGET
        assert turned.status.from_pool == ",".join(_layout(serving).pools)
        assert turned.status.to_pool == ",".join(_layout(to).pools)
        assert turned.status.started_at == T0 + timedelta(minutes=1)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
def test_a_redirect_to_where_the_move_goes_changes_nothing(
    src: str, dst: str, phase: MigrationPhase
) -> None:
    assert _redirect(src, dst, phase, dst) is None


@pytest.mark.parametrize("wanted", MODES)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
def test_a_redirect_never_drops_a_pool_that_serves_or_drains(
    src: str, dst: str, phase: MigrationPhase, wanted: str
) -> None:
    """Every fixed-mode move, phase and wish: the pools taking traffic now, and those still
    draining, are all in what the redirect renders (the serving layout and its new target)."""
    if src == dst:
        return
    turned = _redirect(src, dst, phase, wanted)
    if turned is None:
        assert wanted == dst
        return
    before_shift = phase == MigrationPhase.STARTING_TARGET
    routed = _layout(src if before_shift else dst).pools
    draining = () if before_shift else tuple(p for p in _layout(src).pools if p not in routed)
    rendered = set(_layout(str(turned.serving_mode)).pools)
    if turned.status is not None:
        rendered |= set(_layout(str(turned.status.to_mode)).pools)
    assert set(routed) | set(draining) <= rendered


H100 = "dedicated-h100"


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        pytest.param(MigrationPhase.STARTING_TARGET, H100, id="before-the-shift-restarts"),
        # shared still drains, and dedicated on h100 has no use for it: the move finishes.
        pytest.param(MigrationPhase.DRAINING, None, id="while-a-pool-it-drops-drains-waits"),
    ],
)
def test_a_pool_change_turns_a_move_as_a_mode_change_does(
    phase: MigrationPhase, expected: str | None
) -> None:
    on_h100 = migration.layout_for(DeploymentMode.DEDICATED, shared=SHARED, dedicated=H100)
    turned = migration.redirect(
        _status("serverless", "dedicated", phase),
        current_mode=DeploymentMode.SERVERLESS,
        source=_layout("serverless"),
        target=_layout("dedicated"),
        wanted_mode=DeploymentMode.DEDICATED,
        wanted=on_h100,
        now=T0,
    )
    if expected is None:
        assert turned is None
        return
    assert turned is not None
    assert turned.status is not None
    assert (turned.serving, turned.status.to_pool) == (_layout("serverless"), expected)
    assert "spec pools changed to dedicated-h100" in turned.message


@pytest.mark.parametrize(
    ("pools", "mode", "expected"),
    [
        pytest.param("dedicated-h100", "dedicated", ((H100, PoolRole.PRIMARY),), id="one-pool"),
        pytest.param(
            f"{DED},{SHARED}",
            "hybrid",
            ((DED, PoolRole.PRIMARY), (SHARED, PoolRole.OVERFLOW)),
            id="hybrid",
        ),
        pytest.param(SHARED, "hybrid", None, id="too-few-pools-for-the-mode-falls-back"),
        pytest.param("", "serverless", None, id="nothing-recorded-falls-back"),
    ],
)
def test_recorded(pools: str, mode: str, expected: tuple[tuple[str, PoolRole], ...] | None) -> None:
    fallback = _layout("serverless")
    got = migration.recorded(MODES[mode], pools, fallback)
    assert got == (fallback if expected is None else Layout(expected))
