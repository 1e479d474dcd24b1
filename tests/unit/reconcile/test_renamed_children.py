"""Children named by an older operator's naming rule are handed over make-before-break.

The naming rule of :mod:`tidepool.api.names` changed: ``support-bot`` on ``dedicated-a100`` ran
Deployment ``support-bot-dedicated-a100`` and now gets ``support-bot-dedicated-a100-<hash>``. After
an upgrade the operator must run the new one beside the old one and delete the old one only once
the new one serves what the pool should (or the pool is scaled to zero): never an orphan with
its GPUs, never a request without a replica.

First the pure rule (:func:`tidepool.policy.children.retired` and its helpers), as tables and a
property; then ``reconcile.inference.sync`` and ``sync_shared_engine`` against the fakes, with
the children renamed as an older operator named them.
"""

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reconcile_harness import DEDICATED, SHARED, Harness
from test_shared_engine_sync import POOL

from fakes import T0, FakeKube, FakeLora, FakeMetrics, FakeSharedCluster
from tidepool.api import names
from tidepool.api.v1alpha1 import SharedEngine
from tidepool.policy.children import (
    ObservedDeployment,
    may_retire,
    retired,
    serving_view,
    split_renamed,
    stale_services,
)
from tidepool.policy.signals import Sample
from tidepool.reconcile.shared_engine import SharedEngineCache, sync_shared_engine

JSON = dict[str, Any]


def dep(name: str, pool: str = "a", *, replicas: int = 2, ready: int = 0) -> ObservedDeployment:
    return ObservedDeployment(
        name=name,
        pool=pool,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=ready,
        generation_observed=True,
    )


def old_rule(readable: str) -> str:
    """A name as the operator before the naming change rendered it: as it is up to 63
    characters, else cut to 54 and suffixed with 8 hex digits of the SHA-256 of all of it."""
    if len(readable) <= names.MAX_NAME:
        return readable
    return f"{readable[:54].rstrip('-.')}-{hashlib.sha256(readable.encode()).hexdigest()[:8]}"


# -------------------------------------------------------------------------------- pure rule


@pytest.mark.parametrize(
    ("current", "stale", "wanted", "expected"),
    [
        pytest.param(
            {"a": dep("new-a", ready=2)},
            [dep("old-a", ready=2)],
            {"a": 2},
            ("old-a",),
            id="new-one-ready-old-one-goes",
        ),
        pytest.param(
            {"a": dep("new-a", ready=1)},
            [dep("old-a", ready=2)],
            {"a": 2},
            (),
            id="new-one-starting-old-one-stays",
        ),
        pytest.param({}, [dep("old-a", ready=2)], {"a": 2}, (), id="new-one-not-there-yet"),
        pytest.param(
            {}, [dep("old-a", replicas=0)], {"a": 0}, ("old-a",), id="pool-scaled-to-zero"
        ),
        pytest.param(
            {"a": dep("new-a", replicas=3, ready=2)},
            [dep("old-a", ready=2)],
            {"a": 3},
            (),
            id="scaled-up-waits-for-all-it-should-serve",
        ),
        pytest.param(
            {"a": dep("new-a", replicas=1, ready=1)},
            [dep("old-a", replicas=3, ready=3)],
            {"a": 1},
            ("old-a",),
            id="scaled-down-goes-once-the-smaller-count-is-ready",
        ),
        pytest.param(
            {"a": dep("new-a", ready=2)},
            [dep("old-a", ready=2)],
            {"b": 1},
            ("new-a", "old-a"),
            id="pool-no-longer-used-both-names-go",
        ),
        pytest.param(
            {"a": dep("new-a", ready=2), "b": dep("new-b", ready=0)},
            [dep("old-a", ready=2), dep("old-b", "b", ready=2)],
            {"a": 2, "b": 2},
            ("old-a",),
            id="each-pool-on-its-own",
        ),
        pytest.param(
            {"a": dep("new-a", ready=2)},
            [dep("older-a", ready=1), dep("old-a", ready=2)],
            {"a": 2},
            ("old-a", "older-a"),
            id="every-older-name-goes",
        ),
        pytest.param(
            {"b": dep("new-b", ready=2)},
            [dep("old-a", ready=2)],
            {"a": 2, "b": 2},
            (),
            id="another-pool-ready-does-not-count",
        ),
    ],
)
def test_retired(
    current: dict[str, ObservedDeployment],
    stale: list[ObservedDeployment],
    wanted: dict[str, int],
    expected: tuple[str, ...],
) -> None:
    assert retired(current, stale, wanted) == expected


@pytest.mark.parametrize(
    ("current", "stale", "expected"),
    [
        pytest.param(None, [], None, id="nothing"),
        pytest.param(dep("new", ready=1), [], dep("new", ready=1), id="no-older-name"),
        pytest.param(
            None,
            [dep("old-1", replicas=3, ready=1), dep("old-2", ready=2)],
            dep("old-2", ready=2),
            id="before-the-new-one-the-older-one-serving-most",
        ),
        pytest.param(
            dep("new", replicas=3, ready=0),
            [dep("old", ready=2)],
            dep("new", replicas=3, ready=2),
            id="the-new-ones-replicas-the-most-ready",
        ),
        pytest.param(
            dep("new", ready=2),
            [dep("old", ready=1)],
            dep("new", ready=2),
            id="never-the-sum",
        ),
    ],
)
def test_serving_view(
    current: ObservedDeployment | None,
    stale: list[ObservedDeployment],
    expected: ObservedDeployment | None,
) -> None:
    view = serving_view(current, stale)
    shown = (view.name, view.replicas, view.ready_replicas) if view else None
    assert shown == (
        (expected.name, expected.replicas, expected.ready_replicas) if expected else None
    )


def test_the_older_names_replicas_count_as_outdated() -> None:
    """Pods of an older name run an older operator's template: until they go, the fleet cannot
    count on what the current template says (policy.shared_engine.fleet_scheduling_policy)."""
    view = serving_view(dep("new", ready=2), [dep("old", replicas=3, ready=1)])
    assert view is not None
    assert view.outdated_replicas == 3
    assert serving_view(dep("new", ready=2), []) == dep("new", ready=2)


def test_split_renamed_keys_the_current_name_by_pool_and_keeps_the_rest() -> None:
    listed = [dep("x-a-1234abcd"), dep("x-a"), dep("x-b-5678abcd", "b")]

    current, stale = split_renamed(listed, lambda pool: {"a": "x-a-1234abcd"}.get(pool, ""))

    assert current == {"a": dep("x-a-1234abcd")}
    assert stale == (dep("x-a"), dep("x-b-5678abcd", "b"))


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        pytest.param(None, (), id="not-looked-at"),
        pytest.param(("old",), (), id="current-not-there-yet"),
        pytest.param(("cur", "old"), ("old",), id="current-there-older-goes"),
        pytest.param(("cur",), (), id="nothing-older"),
    ],
)
def test_stale_services(listed: tuple[str, ...] | None, expected: tuple[str, ...]) -> None:
    assert stale_services(listed, "cur") == expected


_counts = st.integers(min_value=0, max_value=6)


@given(
    current=st.none() | st.tuples(_counts, _counts),
    older=st.lists(st.tuples(_counts, _counts), max_size=3),
    wanted=_counts,
)
def test_a_pool_never_loses_ready_replicas_it_should_serve(
    current: tuple[int, int] | None, older: list[tuple[int, int]], wanted: int
) -> None:
    """Whatever the counts: what is left ready in the pool after the deletions is at least
    what it should serve (or all it had); an older Deployment stays only while the current one
    lacks ready replicas; the view never reports more ready than one Deployment has."""
    cur = dep("new", replicas=current[0], ready=current[1]) if current else None
    stale = [dep(f"old-{i}", replicas=r, ready=k) for i, (r, k) in enumerate(older)]
    before = (cur.ready_replicas if cur else 0) + sum(d.ready_replicas for d in stale)

    gone = retired({"a": cur} if cur else {}, stale, {"a": wanted})

    left = (cur.ready_replicas if cur else 0) + sum(
        d.ready_replicas for d in stale if d.name not in gone
    )
    assert left >= min(wanted, before)
    assert (set(gone) == {d.name for d in stale}) == (not stale or may_retire(cur, wanted))
    view = serving_view(cur, stale)
    if view is not None:
        assert view.ready_replicas == max(
            d.ready_replicas for d in [*stale, *([cur] if cur else [])]
        )
        assert view.replicas == (cur.replicas if cur else view.replicas)


# ---------------------------------------------------------------- tenant reconcile, fakes

TENANT = "support-bot"


def _upgraded(spec: JSON, pool: str, *, ready: bool = True) -> tuple[Harness, str, str]:
    """A tenant as an older operator left it: its engine Deployment under the old name (Ready
    when ``ready``), then the operator restarted with the new naming rule. Returns the harness,
    the old name and the new one."""
    h = Harness(spec, name=TENANT)
    h.sync()
    new = names.engine_deployment(TENANT, pool)
    old = f"{TENANT}-{pool}"
    assert new != old
    assert new.startswith(old)
    h.kube.rename("Deployment", new, old)
    if ready:
        h.kube.make_ready(old)
    h.restart()
    h.kube.clear_records()
    return h, old, new


def test_the_old_named_deployment_goes_only_once_the_new_one_is_ready() -> None:
    h, old, new = _upgraded(
        {"mode": "dedicated", "scaling": {"minReplicas": 2, "maxReplicas": 2}}, DEDICATED
    )

    h.sync()  # the upgraded operator's first look

    assert h.kube.deployment_names() == sorted([old, new])
    assert h.kube.deployment(new)["spec"]["replicas"] == 2
    assert h.kube.deletes == []
    assert h.condition("Ready")[0] == "True", "the old replicas serve: no outage to report"
    assert h.status.ready == "2/2"
    assert h.status.pools[0].deployment == new

    h.kube.make_ready(new, count=1)
    h.sync(advance=5)

    assert h.kube.deletes == [], "one ready replica of two: the old one still serves"

    h.kube.make_ready(new)
    h.sync(advance=5)

    assert h.kube.deployment_names() == [new]
    assert h.kube.deletes == [old]
    assert [e.message for e in h.events("Renamed")] == [
        f"{new} serves pool {DEDICATED}: removing {old}"
    ]
    h.sync(advance=5)
    assert h.kube.deletes == [old], "deleted once"


def test_the_first_plan_after_the_upgrade_starts_from_the_replicas_that_serve() -> None:
    """A quiet minute at the upgrade: had the plan not seen the old Deployment, it would count
    zero replicas, render the new one with none and delete the old one as scaled to zero."""
    h, old, new = _upgraded(
        {"mode": "serverless", "scaling": {"minReplicas": 0, "maxReplicas": 4}}, SHARED
    )
    h.kube.deployment(old)["spec"]["replicas"] = 3  # the older operator's last scale
    h.kube.make_ready(old)
    h.metrics.queue = Sample(0.0, h.clock.now)

    h.sync()

    assert h.replicas() == {SHARED: 3}
    assert h.kube.deployment(new)["spec"]["replicas"] == 3
    assert old in h.kube.deployment_names()
    assert h.kube.deletes == []


def test_an_old_named_deployment_scaled_to_zero_goes_at_once() -> None:
    h, old, new = _upgraded(
        {"mode": "serverless", "scaling": {"minReplicas": 0, "maxReplicas": 2}},
        SHARED,
        ready=False,
    )

    h.sync()

    assert h.kube.deployment(new)["spec"]["replicas"] == 0
    assert h.kube.deletes == [old]


def test_a_deployment_the_tenant_does_not_control_is_left_alone() -> None:
    h, old, _ = _upgraded(
        {"mode": "serverless", "scaling": {"minReplicas": 0, "maxReplicas": 2}},
        SHARED,
        ready=False,
    )
    h.kube.deployment(old)["metadata"]["ownerReferences"] = []

    h.sync()

    assert h.kube.deletes == []
    assert old in h.kube.deployment_names()


class CountingKube(FakeKube):
    """Counts the Service listings, to show the sweep is once per process."""

    service_lists: int = 0

    def engine_services(self, namespace: str, infd_name: str) -> list[str]:
        self.service_lists += 1
        return super().engine_services(namespace, infd_name)


def test_an_old_named_service_goes_once_the_current_one_exists_and_is_looked_for_once() -> None:
    """A 60-character name: before the naming change, its Service's name was cut and hashed
    over ``<name>-engine``; now the hash is of the name alone."""
    long_name = "customer-support-assistant-for-the-european-retail-division1"
    assert len(long_name) == 60
    old_service = old_rule(f"{long_name}-engine")
    new_service = names.engine_service(long_name)
    assert old_service != new_service
    h = Harness(
        {"mode": "serverless", "scaling": {"minReplicas": 0}},
        name=long_name,
        kube=CountingKube(pools=Harness({}).kube.pools),
    )
    h.sync()
    h.kube.rename("Service", new_service, old_service)
    h.restart()

    h.sync()  # sees only the old one, applies the current one

    assert h.kube.service_deletes == []
    assert h.kube.services() == sorted([old_service, new_service])

    h.sync(advance=5)  # sees both: the old one goes

    assert h.kube.service_deletes == [old_service]
    assert h.kube.services() == [new_service]
    assert isinstance(h.kube, CountingKube)
    looked = h.kube.service_lists
    h.sync(advance=5)
    assert h.kube.service_lists == looked, "swept: not listed again by this process"


# ------------------------------------------------------------ SharedEngine reconcile, fakes

FLEET_NS = "tidepool-system"
#: Long enough that the fleet's readable name (``sheng-`` and 60 characters) is cut and hashed:
#: before the naming change the hash was of ``sheng-<name>``, now it is of the name alone.
FLEET = "llama-3-1-8b-instruct-shared-by-the-european-retail-division"
ENGINE = SharedEngine.model_validate(
    {
        "metadata": {"name": FLEET, "generation": 1, "uid": "u1"},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "pool": "shared-a100",
            "scaling": {"minReplicas": 0, "maxReplicas": 4},
            "replicas": 2,
        },
    }
)


def _fleet_sync(kube: FakeSharedCluster, cache: SharedEngineCache, minutes: float) -> None:
    sync_shared_engine(
        ENGINE,
        namespace=FLEET_NS,
        kube=kube,
        lora=FakeLora(),
        metrics=FakeMetrics(),
        cache=cache,
        operator_started_at=T0 - timedelta(hours=1),
        now=T0 + timedelta(minutes=minutes),
    )


def test_a_fleet_deployment_and_service_of_an_older_name_are_handed_over() -> None:
    old = old_rule(f"sheng-{FLEET}")
    new = names.shared_engine(FLEET)
    assert old != new
    kube = FakeSharedCluster(pools=[POOL])
    _fleet_sync(kube, SharedEngineCache(), 0)
    # As the operator before the naming change left the fleet: both children by the old name.
    for kind in ("Deployment", "Service"):
        obj = kube.objects.pop((kind, FLEET_NS, new))
        obj["metadata"]["name"] = old
        kube.objects[(kind, FLEET_NS, old)] = obj
    kube.ready = {old: 2, new: 0}
    cache = SharedEngineCache()  # the upgraded operator's process

    _fleet_sync(kube, cache, 1)

    assert kube.replicas(FLEET_NS, new) == 2
    assert kube.deletes == [("Service", old)], "the Service goes once the current one exists"
    assert ("Deployment", FLEET_NS, old) in kube.objects

    kube.ready[new] = 1
    _fleet_sync(kube, cache, 2)

    assert kube.deletes == [("Service", old)], "one ready replica of two: the old one serves"

    kube.ready[new] = 2
    _fleet_sync(kube, cache, 3)

    assert kube.deletes == [("Service", old), ("Deployment", old)]
    assert sorted(n for (k, _, n) in kube.objects if k in ("Deployment", "Service")) == [new, new]
