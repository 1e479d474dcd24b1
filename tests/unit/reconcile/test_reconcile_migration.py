"""A change of ``spec.mode`` walks a make-before-break migration, durable across restarts."""

from typing import Any

import pytest
from reconcile_harness import DEDICATED, SHARED, Harness, dep, pool

from fakes import T0
from tidepool.api.v1alpha1 import DeploymentMode, MigrationPhase
from tidepool.policy.signals import NoData, Sample, Signal

SERVERLESS = {"mode": "serverless", "scaling": {"minReplicas": 0, "maxReplicas": 4}}
TO_DEDICATED = {"mode": "dedicated", "scaling": {"minReplicas": 1, "maxReplicas": 4}}


def _phase(h: Harness) -> MigrationPhase | None:
    return h.status.migration.phase if h.status.migration else None


def _roles(h: Harness) -> dict[str, str]:
    return {p.name: p.role for p in h.status.pools}


def _serving_warm(h: Harness) -> Harness:
    """A serverless deployment with one ready replica and some traffic."""
    h.metrics.queue = Sample(4.0, h.clock.now)
    h.sync()
    h.kube.make_ready()
    h.sync(advance=5)
    assert h.replicas() == {SHARED: 1}
    return h


def test_serverless_to_dedicated_walks_every_phase_and_survives_a_restart() -> None:
    h = _serving_warm(Harness(SERVERLESS))
    h.metrics.inflight[SHARED] = Sample(3.0, h.clock.now)
    h.change_spec(**TO_DEDICATED)

    # 1. StartingTarget: the dedicated pool gets a replica; traffic stays on shared.
    h.sync(advance=5)
    assert _phase(h) == MigrationPhase.STARTING_TARGET
    assert _roles(h) == {SHARED: "primary", DEDICATED: "target"}
    assert h.status.routable_pools == [SHARED]
    assert h.replicas()[DEDICATED] >= 1
    assert h.condition("Migrating")[:2] == ("True", "StartingTarget")
    started_at = h.status.migration.started_at if h.status.migration else None

    h.sync(advance=20)  # still loading: nothing moves
    assert _phase(h) == MigrationPhase.STARTING_TARGET
    assert h.status.routable_pools == [SHARED]

    # 2. The target is ready: traffic shifts; shared drains.
    h.kube.make_ready(dep(DEDICATED))
    h.sync(advance=5)
    assert _phase(h) == MigrationPhase.SHIFTING_TRAFFIC
    assert h.status.routable_pools == [DEDICATED]
    assert _roles(h) == {SHARED: "draining", DEDICATED: "primary"}
    assert h.replicas()[SHARED] == 1, "a draining pool keeps its replicas"

    # The operator restarts here: memo is gone; status.migration is all it has.
    h.restart()
    h.sync(advance=5)
    assert _phase(h) == MigrationPhase.DRAINING, "resumed, not restarted"
    assert h.status.migration is not None
    assert h.status.migration.started_at == started_at
    assert h.status.routable_pools == [DEDICATED]

    # 3. Draining: shared still has 3 in flight, so it stays.
    h.sync(advance=30)
    assert _phase(h) == MigrationPhase.DRAINING
    assert SHARED in h.kube.deployment_names() or dep(SHARED) in h.kube.deployment_names()

    # In-flight reaches zero: complete, and the old Deployment is deleted.
    h.metrics.inflight[SHARED] = Sample(0.0, h.clock.now)
    h.sync(advance=5)
    assert h.status.migration is None
    assert h.status.effective_mode == DeploymentMode.DEDICATED
    assert h.kube.deletes == [dep(SHARED)]
    assert h.kube.deployment_names() == [dep(DEDICATED)]
    assert h.status.routable_pools == [DEDICATED]
    assert _roles(h) == {DEDICATED: "primary"}
    assert h.condition("Migrating")[:2] == ("False", "Stable")
    assert h.status.last_migration_time == h.clock.now
    assert [e.reason for e in h.events()] == ["MigrationComplete"]

    # And it stays done.
    h.kube.clear_records()
    h.sync(advance=15)
    assert h.status.migration is None
    assert h.kube.deletes == []

    assert all(r.status.routable_pools for r in h.results), "routablePools was never empty"


def test_migration_events_name_each_phase() -> None:
    h = _serving_warm(Harness(SERVERLESS))
    h.change_spec(**TO_DEDICATED)
    h.sync(advance=5)
    first = [e.reason for e in h.events()]
    h.kube.make_ready(dep(DEDICATED))
    h.sync(advance=5)

    assert "FixedMode" in first
    assert [e.reason for e in h.events()] == ["ShiftingTraffic"]
    assert h.status.last_decision is not None
    assert h.status.last_decision.reason == "ShiftingTraffic"


def _draining_to_dedicated(shared_inflight: Signal) -> Harness:
    """Serverless -> dedicated, traffic shifted, shared draining ``shared_inflight``."""
    h = _serving_warm(Harness(SERVERLESS))
    h.metrics.inflight[SHARED] = shared_inflight
    h.change_spec(**TO_DEDICATED)
    h.sync(advance=5)
    h.kube.make_ready(dep(DEDICATED))
    h.sync(advance=5)
    h.sync(advance=5)
    assert _phase(h) == MigrationPhase.DRAINING
    return h


def test_unknown_inflight_keeps_the_old_pool_until_the_drain_timeout() -> None:
    h = _draining_to_dedicated(NoData("prometheus unreachable"))

    h.sync(advance=14 * 60)
    assert _phase(h) == MigrationPhase.DRAINING
    assert dep(SHARED) in h.kube.deployment_names()

    h.sync(advance=60)
    assert h.status.migration is None
    assert dep(SHARED) not in h.kube.deployment_names()


def test_target_that_never_starts_is_rolled_back() -> None:
    h = _serving_warm(Harness(SERVERLESS))
    h.change_spec(**TO_DEDICATED)
    h.sync(advance=5)
    assert dep(DEDICATED) in h.kube.deployment_names()

    h.sync(advance=31 * 60)

    assert h.status.migration is None
    assert h.status.effective_mode == DeploymentMode.SERVERLESS
    assert h.kube.deployment_names() == [dep(SHARED)]
    assert h.status.routable_pools == [SHARED]
    assert [(e.type, e.reason) for e in h.events("MigrationRolledBack")] == [
        ("Warning", "MigrationRolledBack")
    ]


def test_no_migration_budget_defers_the_move() -> None:
    h = _serving_warm(Harness(SERVERLESS))
    h.may_start_migration = False
    h.change_spec(**TO_DEDICATED)

    h.sync(advance=5)

    assert h.status.migration is None
    assert h.kube.deployment_names() == [dep(SHARED)]
    assert [e.reason for e in h.events("MigrationDeferred")] == ["MigrationDeferred"]


@pytest.mark.parametrize(
    ("start", "to"),
    [
        pytest.param(
            {
                "mode": "hybrid",
                "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetQueueDepth": 8},
            },
            {
                "mode": "dedicated",
                "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetQueueDepth": 8},
            },
            id="hybrid-to-dedicated",
        ),
        pytest.param(
            {
                "mode": "dedicated",
                "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetQueueDepth": 8},
            },
            {
                "mode": "serverless",
                "scaling": {"minReplicas": 0, "maxReplicas": 8, "targetQueueDepth": 8},
            },
            id="dedicated-to-serverless",
        ),
        pytest.param(
            {
                "mode": "serverless",
                "scaling": {"minReplicas": 0, "maxReplicas": 8, "targetQueueDepth": 8},
            },
            {
                "mode": "hybrid",
                "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetQueueDepth": 8},
            },
            id="serverless-to-hybrid",
        ),
    ],
)
def test_after_the_shift_the_new_primary_scales_to_the_whole_load(
    start: dict[str, Any], to: dict[str, Any]
) -> None:
    h = Harness(start)
    h.metrics.queue = Sample(32.0, h.clock.now)  # 4 replicas' worth at target 8
    h.metrics.default_inflight = Sample(5.0, h.clock.now)  # old pools keep draining throughout
    for _ in range(4):
        h.sync(advance=5)
        h.kube.make_ready()
    h.change_spec(**to)

    serving_after_shift = []
    for _ in range(8):
        h.sync(advance=5)
        h.kube.make_ready()
        assert h.status.routable_pools
        if _phase(h) in (MigrationPhase.SHIFTING_TRAFFIC, MigrationPhase.DRAINING):
            serving_after_shift.append(
                sum(p.replicas for p in h.status.pools if p.role in ("primary", "overflow"))
            )

    assert serving_after_shift, "the migration never shifted traffic"
    assert max(serving_after_shift) >= 4, (
        f"while draining, the new layout never reached the 4-replica load: {serving_after_shift}"
    )


# ------------------------------------------------------------------- a spec change mid-move

TO_HYBRID = {"mode": "hybrid", "scaling": {"minReplicas": 1, "maxReplicas": 4}}


def _sync_serving(h: Harness, advance: float, gone: list[str]) -> None:
    """One sync, checking that no pool the gateway may route to loses its Deployment: the
    pools routable before and after the sync all still have one (never a dropped request)."""
    before = set(h.status.routable_pools)
    h.sync(advance=advance)
    names = h.kube.deployment_names()
    for routed in before | set(h.status.routable_pools):
        assert dep(routed) in names, f"{routed} was routable and lost its Deployment"
    gone.extend(h.kube.deletes)
    h.kube.clear_records()


def test_a_mode_change_back_while_the_target_starts_aborts_the_move() -> None:
    h = _serving_warm(Harness(SERVERLESS))
    h.change_spec(**TO_DEDICATED)
    h.sync(advance=5)
    assert _phase(h) == MigrationPhase.STARTING_TARGET
    gone: list[str] = []

    h.change_spec(**SERVERLESS)
    _sync_serving(h, 5, gone)

    assert h.status.migration is None, "the stale move is not finished first"
    assert h.status.effective_mode == DeploymentMode.SERVERLESS
    assert gone == [dep(DEDICATED)], "the target never served: it goes at once"
    assert h.replicas() == {SHARED: 1}
    assert h.status.routable_pools == [SHARED]
    assert [e.reason for e in h.events()] == ["MigrationAborted"]
    assert h.condition("Migrating")[:2] == ("False", "Stable")


#: (the mode the spec asks for once traffic is on dedicated and shared drains, the effective
#: mode on every sync from the redirect until the move settles, the pools at the end)
REDIRECTS = [
    pytest.param(
        SERVERLESS,
        [DeploymentMode.DEDICATED, DeploymentMode.DEDICATED],
        {SHARED: "primary"},
        id="back-to-serverless-reuses-the-draining-pool",
    ),
    pytest.param(
        TO_HYBRID,
        [DeploymentMode.DEDICATED, DeploymentMode.DEDICATED],
        {DEDICATED: "primary", SHARED: "overflow"},
        id="on-to-hybrid-keeps-both-pools",
    ),
]


@pytest.mark.parametrize(("then", "modes", "pools"), REDIRECTS)
def test_a_mode_change_while_draining_redirects_from_the_serving_pools(
    then: dict[str, Any], modes: list[DeploymentMode], pools: dict[str, str]
) -> None:
    h = _draining_to_dedicated(Sample(2.0, T0))  # shared drains slowly
    assert h.status.routable_pools == [DEDICATED]
    gone: list[str] = []

    h.change_spec(**then)
    _sync_serving(h, 5, gone)
    # The draining shared pool is the new move's target, and Ready: traffic shifts at once.
    assert [e.reason for e in h.events()][:2] == ["MigrationRedirected", "ShiftingTraffic"]
    assert h.status.migration is not None
    assert h.status.migration.to_mode == then["mode"]
    assert h.status.migration.phase == MigrationPhase.SHIFTING_TRAFFIC
    assert SHARED in h.status.routable_pools
    assert gone == [], "kept, not deleted and recreated"
    seen = [h.status.effective_mode]
    h.metrics.inflight[DEDICATED] = Sample(0.0, h.clock.now)
    h.metrics.inflight[SHARED] = Sample(0.0, h.clock.now)
    while h.status.migration is not None and len(seen) < 10:
        h.kube.make_ready()
        _sync_serving(h, 5, gone)
        seen.append(h.status.effective_mode)

    assert seen == [*modes, DeploymentMode(then["mode"])]
    assert h.status.effective_mode == DeploymentMode(then["mode"])
    assert _roles(h) == pools
    assert dep(SHARED) not in gone, "shared was never deleted and recreated"
    assert gone == ([dep(DEDICATED)] if DEDICATED not in pools else [])


def test_a_later_mode_change_is_acted_on_too() -> None:
    """dedicated, then serverless again before the target was Ready, then hybrid: each change
    turns the move at once, and the last one is where the tenant ends."""
    h = _serving_warm(Harness(SERVERLESS))
    gone: list[str] = []
    h.change_spec(**TO_DEDICATED)
    _sync_serving(h, 5, gone)
    h.change_spec(**SERVERLESS)
    _sync_serving(h, 5, gone)
    assert h.status.migration is None

    h.change_spec(**TO_HYBRID)
    _sync_serving(h, 5, gone)
    assert h.status.migration is not None
    assert h.status.migration.to_mode == DeploymentMode.HYBRID
    h.change_spec(**TO_DEDICATED)  # and dedicated after all, still before the shift
    _sync_serving(h, 5, gone)
    assert h.status.migration is not None
    assert h.status.migration.to_mode == DeploymentMode.DEDICATED
    assert h.status.routable_pools == [SHARED]
    for _ in range(4):
        h.kube.make_ready()
        _sync_serving(h, 5, gone)

    assert h.status.migration is None
    assert h.status.effective_mode == DeploymentMode.DEDICATED
    assert _roles(h) == {DEDICATED: "primary"}
    assert gone == [dep(DEDICATED), dep(SHARED)], "the unready target once, the source at the end"


H100 = "dedicated-h100"
ON_H100 = {"placement": {"pools": {"dedicated": H100}}}


def _routable_ready(h: Harness) -> None:
    """Every pool the gateway may route to has a Ready replica (no request finds none)."""
    ready = {p.name: p.ready_replicas for p in h.status.pools}
    assert all(ready.get(p, 0) >= 1 for p in h.status.routable_pools), h.status.pools


@pytest.mark.parametrize(
    "draining", [pytest.param(True, id="mid-migration"), pytest.param(False, id="settled")]
)
def test_a_pool_change_moves_make_before_break(draining: bool) -> None:
    """spec.placement.pools.dedicated changes from dedicated-a100 to dedicated-h100, while
    serverless -> dedicated drains shared, or once it is done: dedicated-a100 serves until
    dedicated-h100 is Ready, and only then goes. Mid-migration, shared's requests finish
    first (h100 has no use for shared), then the pools move."""
    h = _draining_to_dedicated(Sample(2.0, T0))
    if not draining:
        h.metrics.inflight[SHARED] = Sample(0.0, h.clock.now)
        h.sync(advance=5)
        assert h.status.migration is None
    h.kube.pools.append(pool(H100, "dedicated"))
    h.kube.clear_records()
    gone: list[str] = []

    h.change_spec(**ON_H100)
    _sync_serving(h, 5, gone)
    _routable_ready(h)
    assert h.status.routable_pools == [DEDICATED], "a100 serves until h100 is Ready"
    assert h.status.migration is not None
    assert h.status.migration.to_pool == (DEDICATED if draining else H100)
    assert gone == []
    h.metrics.inflight[SHARED] = Sample(0.0, h.clock.now)
    h.metrics.inflight[DEDICATED] = Sample(0.0, h.clock.now)
    for _ in range(5):
        h.kube.make_ready()
        _sync_serving(h, 5, gone)
        _routable_ready(h)

    assert h.status.migration is None
    assert h.status.effective_mode == DeploymentMode.DEDICATED
    assert _roles(h) == {H100: "primary"}
    assert sorted(gone) == sorted([dep(DEDICATED)] + ([dep(SHARED)] if draining else []))
