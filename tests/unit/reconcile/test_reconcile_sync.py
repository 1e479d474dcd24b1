"""``reconcile.inference.sync`` against FakeKube and FakeMetrics, with a manual clock."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from reconcile_harness import (
    DEDICATED,
    MODEL,
    NAME,
    NS,
    SHARED,
    Harness,
    dep,
    pool,
)

from fakes import FakeKube
from tidepool.api import labels
from tidepool.api.v1alpha1 import Condition, DeploymentMode, LoadedAdapter, SharedEngine
from tidepool.policy.children import PodProblem
from tidepool.policy.signals import NoData, Sample

JSON = dict[str, Any]
QUEUE_0 = Sample(0.0, at=Harness({}).clock.now)
UNREACHABLE = NoData("prometheus unreachable: ConnectionError")

SERVERLESS: JSON = {"mode": "serverless"}
DEDICATED_2: JSON = {"mode": "dedicated", "scaling": {"minReplicas": 2, "maxReplicas": 4}}
HYBRID_2: JSON = {
    "mode": "hybrid",
    # An explicit latency-first target (the default is 56): the queue numbers below are
    # in units of 8.
    "scaling": {"minReplicas": 2, "maxReplicas": 8, "targetQueueDepth": 8},
    "hybrid": {"maxOverflowReplicas": 4},
}
MODES = [
    pytest.param(SERVERLESS, id="serverless"),
    pytest.param(DEDICATED_2, id="dedicated"),
    pytest.param(HYBRID_2, id="hybrid"),
]


def _queue(h: Harness, value: float) -> None:
    h.metrics.queue = Sample(value, h.clock.now)


# --------------------------------------------------------------------------------- first sync


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(SERVERLESS, {SHARED: 0}, id="serverless-starts-at-zero"),
        pytest.param(DEDICATED_2, {DEDICATED: 2}, id="dedicated-starts-at-warm-minimum"),
        pytest.param(HYBRID_2, {DEDICATED: 2, SHARED: 0}, id="hybrid-floor-and-empty-overflow"),
        pytest.param(
            {"mode": "serverless", "scaling": {"minReplicas": 0, "initialReplicas": 1}},
            {SHARED: 1},
            id="initial-replicas-overrides-minimum",
        ),
    ],
)
def test_first_sync_creates_one_deployment_per_pool_and_a_service(
    spec: JSON, expected: dict[str, int]
) -> None:
    h = Harness(spec)

    h.sync()

    assert h.replicas() == expected
    assert h.kube.services() == [f"{NAME}-engine"]
    assert len(h.kube.applies) == len(expected) + 1
    assert h.status.desired_replicas == sum(expected.values())
    assert h.status.observed_generation == 1
    assert sorted(h.status.routable_pools) == sorted(expected)
    assert {p.name for p in h.status.pools} == set(expected)


@pytest.mark.parametrize("spec", MODES)
def test_second_sync_with_nothing_changed_applies_nothing(spec: JSON) -> None:
    h = Harness(spec)
    h.sync()
    h.kube.clear_records()

    h.sync(advance=15)
    second_applies = list(h.kube.applies)
    h.sync(advance=15)

    assert second_applies == []
    assert h.kube.applies == []
    assert h.kube.deletes == []
    # The first status saw the cluster before its own applies (status.replicas lags one sync);
    # from the second on, nothing changes.
    assert h.results[-1].status == h.results[-2].status
    assert h.results[-1].events == h.results[-2].events == ()


@pytest.mark.parametrize("spec", MODES)
def test_steady_state_after_ready_applies_nothing(spec: JSON) -> None:
    h = Harness(spec)
    h.sync()
    h.kube.make_ready()
    h.sync(advance=15)
    h.kube.clear_records()

    h.sync(advance=15)

    assert h.kube.applies == []
    assert h.results[-1].status == h.results[-2].status


@pytest.mark.parametrize("spec", MODES)
def test_restart_reapplies_identical_objects_only(spec: JSON) -> None:
    h = Harness(spec)
    h.sync()
    before = {json.dumps(o, sort_keys=True) for o in h.kube.applies}
    h.kube.clear_records()
    h.restart()

    h.sync(advance=15)

    after = {json.dumps(o, sort_keys=True) for o in h.kube.applies}
    assert after <= before, "a restart may re-apply, but only byte-identical objects"
    assert h.kube.deletes == []


# --------------------------------------------------------------------------------------- wake


def test_wake_at_zero_scales_to_one_even_without_metrics() -> None:
    h = Harness(SERVERLESS)
    h.sync()
    assert h.replicas() == {SHARED: 0}
    h.metrics.queue = UNREACHABLE
    h.annotations[labels.WAKE_REQUESTED_AT] = "2025-06-01T12:00:05Z"

    h.sync(advance=5)

    assert h.replicas() == {SHARED: 1}
    assert h.status.last_wake_handled == "2025-06-01T12:00:05Z"
    assert [e.reason for e in h.events("WakeRequested")] == ["WakeRequested"]
    assert h.condition("Ready")[:2] == ("False", "WaitingForReplicas")


def test_a_handled_wake_is_not_acted_on_again() -> None:
    h = Harness(SERVERLESS)
    h.sync()
    h.annotations[labels.WAKE_REQUESTED_AT] = "t1"
    h.sync(advance=5)
    h.kube.clear_records()

    h.sync(advance=5)

    assert h.status.last_wake_handled == "t1"
    assert h.events("WakeRequested") == []


def test_a_new_wake_value_is_acted_on() -> None:
    h = Harness(SERVERLESS)
    h.annotations[labels.WAKE_REQUESTED_AT] = "t1"
    h.status = h.status.model_copy(update={"last_wake_handled": "t1"})
    h.sync()
    assert h.replicas() == {SHARED: 0}, "an already handled wake does nothing"
    h.metrics.queue = UNREACHABLE

    h.annotations[labels.WAKE_REQUESTED_AT] = "t2"
    h.sync(advance=5)

    assert h.replicas() == {SHARED: 1}
    assert h.status.last_wake_handled == "t2"


# ----------------------------------------------------------------------------- missing metrics


def test_no_data_never_scales_down_and_says_why() -> None:
    h = Harness({"mode": "serverless", "scaling": {"maxReplicas": 4, "targetQueueDepth": 8}})
    _queue(h, 16)
    h.sync()
    h.kube.make_ready()
    h.sync(advance=15)
    assert h.replicas() == {SHARED: 2}
    h.metrics.queue = UNREACHABLE

    for _ in range(3):
        h.sync(advance=600)  # well past scaleToZeroAfter and scaleDownStabilization

        assert h.replicas() == {SHARED: 2}
        status, reason, message = h.condition("MetricsAvailable")
        assert (status, reason) == ("False", "MetricsUnknown")
        assert "prometheus unreachable" in message
        assert h.status.queue_depth is None


def test_metrics_unknown_warns_once() -> None:
    h = Harness(SERVERLESS)
    h.metrics.queue = UNREACHABLE

    h.sync()
    first = h.events("MetricsUnknown")
    h.sync(advance=15)
    second = h.events("MetricsUnknown")

    assert [e.type for e in first] == ["Warning"]
    assert second == []


def test_metrics_back_sets_metrics_available_true() -> None:
    h = Harness(SERVERLESS)
    h.metrics.queue = UNREACHABLE
    h.sync()
    _queue(h, 0)

    h.sync(advance=15)

    assert h.condition("MetricsAvailable")[:2] == ("True", "MetricsFresh")
    assert h.status.queue_depth == 0


#: One tenant's minutes around a Prometheus outage, one sync per row: (seconds since the
#: previous sync, the queue Prometheus answers: a number or None for unreachable, the replicas
#: expected after the sync). scaleToZeroAfter 60s; demand last seen at 0 s; Prometheus down
#: from 20 s to 140 s. Counting the outage as idle would scale to zero at 140 s, the first read
#: after it; the idle window counts from 140 s instead, so zero comes at 200 s and not before.
OUTAGE_TIMELINE = [
    (0, 4, 1),  # 0 s: demand, one replica
    (10, 0, 1),  # 10 s: idle 10 s of 60
    (10, None, 1),  # 20 s: Prometheus down
    (60, None, 1),  # 80 s: still down: held, never zero
    (60, 0, 1),  # 140 s: back, queue empty: the idle clock starts here, not at 0 s
    (30, 0, 1),  # 170 s: idle 30 s of 60 since metrics returned
    (25, 0, 1),  # 195 s: idle 55 s
    (5, 0, 0),  # 200 s: 60 s of observed idleness: zero
]


def test_an_outage_is_not_idle_time() -> None:
    h = Harness(
        {
            "mode": "serverless",
            "scaling": {"scaleToZeroAfter": "60s", "scaleDownStabilization": "0s"},
        }
    )
    got = []
    for advance, queue, _ in OUTAGE_TIMELINE:
        h.clock.advance(advance)
        h.metrics.queue = UNREACHABLE if queue is None else Sample(queue, h.clock.now)
        h.sync()
        h.kube.make_ready()
        got.append(h.replicas()[SHARED])

    assert got == [replicas for _, _, replicas in OUTAGE_TIMELINE]
    assert h.condition("Scaling")[1] == "ScaledToZeroAfterIdle"
    assert "no demand for 1m since metrics returned" in h.condition("Scaling")[2]
    assert h.status.last_active_time == h.clock.now - timedelta(seconds=200), (
        "lastActiveTime stays the last demand seen"
    )


# ------------------------------------------------------------------------------------ Ready


def test_ready_condition_follows_the_replicas() -> None:
    h = Harness(SERVERLESS)
    h.sync()
    assert h.condition("Ready")[:2] == ("True", "ScaledToZero")

    _queue(h, 4)
    h.sync(advance=5)
    assert h.replicas() == {SHARED: 1}
    assert h.condition("Ready")[:2] == ("False", "WaitingForReplicas")
    assert h.status.ready == "0/1"

    h.kube.make_ready()
    h.sync(advance=5)
    status, reason, message = h.condition("Ready")
    assert (status, reason) == ("True", "ReplicasReady")
    assert SHARED in message
    assert h.status.ready == "1/1"
    assert h.status.ready_replicas == 1


def test_ready_transition_time_moves_only_on_status_change() -> None:
    h = Harness(SERVERLESS)
    _queue(h, 4)
    h.sync()
    waiting_since = next(c for c in h.status.conditions if c.type == "Ready").last_transition_time

    h.sync(advance=30)
    still = next(c for c in h.status.conditions if c.type == "Ready").last_transition_time
    h.kube.make_ready()
    h.sync(advance=30)
    ready = next(c for c in h.status.conditions if c.type == "Ready").last_transition_time

    assert still == waiting_since
    assert ready == h.clock.now


# ------------------------------------------------------------------- what the schema cannot see


@pytest.mark.parametrize(
    ("spec", "pools", "reason", "mentions"),
    [
        pytest.param(
            {"mode": "serverless", "placement": {"pools": {"shared": "no-such-pool"}}},
            None,
            "PoolNotFound",
            ["no-such-pool", "placement.pools.shared"],
            id="unknown-preferred-pool",
        ),
        pytest.param(
            {"mode": "serverless", "placement": {"pools": {"shared": DEDICATED}}},
            None,
            "PoolNotFound",
            [DEDICATED, "tenancy dedicated"],
            id="preferred-pool-of-wrong-tenancy",
        ),
        pytest.param(
            {"mode": "dedicated", "scaling": {"minReplicas": 1}},
            [pool(SHARED, "shared")],
            "PoolNotFound",
            ["tenancy dedicated"],
            id="no-dedicated-pool-at-all",
        ),
        pytest.param(
            {"mode": "serverless", "engine": {"gpusPerReplica": 8}},
            [pool(SHARED, "shared", gpus_per_node=4), pool(DEDICATED, "dedicated")],
            "InvalidSpec",
            ["engine.gpusPerReplica", "8", "4"],
            id="more-gpus-per-replica-than-per-node",
        ),
    ],
)
def test_unplaceable_spec_is_ready_false_and_applies_nothing(
    spec: JSON, pools: Any, reason: str, mentions: list[str]
) -> None:
    h = Harness(spec)
    if pools is not None:
        h.kube.pools = pools

    h.sync()
    h.sync(advance=30)

    status, got_reason, message = h.condition("Ready")
    assert (status, got_reason) == ("False", reason)
    assert all(m in message for m in mentions), message
    assert h.kube.applies == []
    assert [e.type for e in h.results[0].events] == ["Warning"]
    assert h.results[1].events == (), "the warning is not repeated on every sync"
    assert h.results[0].requeue_after.total_seconds() > 0


def test_a_small_unused_pool_does_not_block_a_mode_that_never_uses_it() -> None:
    h = Harness({"mode": "serverless", "engine": {"gpusPerReplica": 8}})
    h.kube.pools = [pool(SHARED, "shared", gpus_per_node=8), pool(DEDICATED, "dedicated", 4)]

    h.sync()

    assert h.condition("Ready")[1] != "InvalidSpec"
    assert h.replicas() == {SHARED: 0}


def test_switching_to_a_mode_without_a_pool_is_ready_false_not_a_crash() -> None:
    h = Harness(SERVERLESS)
    h.kube.pools = [pool(SHARED, "shared")]
    h.sync()
    h.kube.clear_records()
    h.change_spec(mode="dedicated", scaling={"minReplicas": 1})

    h.sync(advance=5)

    assert h.condition("Ready")[:2] == ("False", "PoolNotFound")
    assert h.kube.applies == []
    assert h.kube.deletes == []


# -------------------------------------------------------------------------------- scheduling


def test_unschedulable_pod_sets_scheduled_false_and_warns_once() -> None:
    h = Harness(DEDICATED_2)
    h.sync()
    h.kube.problems = [
        PodProblem(
            pod=f"{dep(DEDICATED)}-abc",
            pool=DEDICATED,
            reason="Unschedulable",
            message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
        )
    ]

    h.sync(advance=5)
    first = h.events("Unschedulable")
    h.sync(advance=5)
    second = h.events("Unschedulable")

    status, reason, message = h.condition("Scheduled")
    assert (status, reason) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in message
    assert DEDICATED in message
    assert [e.type for e in first] == ["Warning"]
    assert second == []

    h.kube.problems = []
    h.sync(advance=5)
    assert h.condition("Scheduled")[:2] == ("True", "AllPodsScheduled")


@pytest.mark.parametrize(
    ("problem", "replica_failure", "reason", "says"),
    [
        pytest.param(
            PodProblem(
                pod=f"{dep(DEDICATED)}-abc",
                pool=DEDICATED,
                reason="CreateContainerConfigError",
                message='container engine cannot start: secret "hf-token" not found',
            ),
            None,
            "CreateContainerConfigError",
            f'pod {dep(DEDICATED)}-abc: container engine cannot start: secret "hf-token" not found',
            id="missing-secret",
        ),
        pytest.param(
            None,
            'pods "x-" is forbidden: serviceaccount "engine" not found',
            "ReplicaFailure",
            f'Deployment {dep(DEDICATED)}: pods "x-" is forbidden: serviceaccount "engine" not'
            " found",
            id="missing-service-account",
        ),
    ],
)
def test_engine_pods_that_cannot_start_get_their_own_ready_reason(
    problem: PodProblem | None, replica_failure: str | None, reason: str, says: str
) -> None:
    """Not WaitingForReplicas: patience will not create a Secret or a ServiceAccount."""
    h = Harness(DEDICATED_2)
    h.sync()
    assert h.condition("Ready")[:2] == ("False", "WaitingForReplicas")
    h.kube.problems = [problem] if problem else []
    if replica_failure:
        h.kube.replica_failures[dep(DEDICATED)] = replica_failure

    h.sync(advance=5)

    status, got, message = h.condition("Ready")
    assert (status, got) == ("False", reason)
    assert message == f"0/2 replicas ready on {DEDICATED}: {says}"
    assert h.condition("Scheduled")[:2] == ("True", "AllPodsScheduled")

    h.kube.problems, h.kube.replica_failures = [], {}
    h.sync(advance=5)
    assert h.condition("Ready")[:2] == ("False", "WaitingForReplicas")


# ------------------------------------------------------------------------------------- hybrid


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        pytest.param(0, {DEDICATED: 2, SHARED: 0}, id="idle-keeps-floor-only"),
        pytest.param(24, {DEDICATED: 2, SHARED: 1}, id="queue-24-one-overflow"),
        pytest.param(40, {DEDICATED: 2, SHARED: 3}, id="queue-40-three-overflow"),
    ],
)
def test_hybrid_floor_on_dedicated_overflow_on_shared(
    queue: float, expected: dict[str, int]
) -> None:
    h = Harness(HYBRID_2)
    h.sync()
    _queue(h, queue)

    for _ in range(4):  # a few rounds: each scale-up is limited by ready replicas
        h.kube.make_ready()
        h.sync(advance=15)

    assert h.replicas() == expected
    roles = {p.name: p.role for p in h.status.pools}
    assert roles == {DEDICATED: "primary", SHARED: "overflow"}
    assert h.status.desired_replicas == sum(expected.values())


def test_hybrid_overflow_is_capped_and_settles() -> None:
    h = Harness(HYBRID_2)  # maxReplicas 8, floor 2, maxOverflowReplicas 4
    h.sync()
    _queue(h, 400)
    for _ in range(5):
        h.kube.make_ready()
        h.sync(advance=15)
    h.kube.make_ready()
    h.kube.clear_records()

    h.sync(advance=15)

    assert h.replicas() == {DEDICATED: 2, SHARED: 4}
    assert h.kube.applies == [], "a capped overflow must not re-apply on every sync"
    assert h.events() == [], "nor announce a scale it cannot make"


# ---------------------------------------------------------------------------- pinned replicas


def test_scale_subresource_pin_is_held() -> None:
    h = Harness({"mode": "serverless", "replicas": 3})

    h.sync()
    h.kube.make_ready()
    h.sync(advance=600)

    assert h.replicas() == {SHARED: 3}
    assert h.condition("Scaling")[1] == "PinnedByScaleSubresource"


def test_fake_kube_only_reports_its_own_deployments() -> None:
    kube = FakeKube()
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "other", "namespace": "default", "labels": {}},
            "spec": {"replicas": 1},
        }
    )

    assert kube.engine_deployments("default", NAME) == []


def test_status_reports_mode_selector_and_endpoint() -> None:
    h = Harness(SERVERLESS)

    h.sync()

    assert h.status.effective_mode == DeploymentMode.SERVERLESS
    assert h.status.selector == (f"{labels.COMPONENT}=engine,{labels.INFERENCE_DEPLOYMENT}={NAME}")
    assert h.status.endpoint == f"http://{NAME}-engine.default.svc:8000/v1"
    assert h.status.served_model == NAME
    assert h.status.pool == SHARED
    assert h.condition("Migrating")[:2] == ("False", "Stable")


def _fleet(name: str = "llama-8b", holding: int = 0) -> SharedEngine:
    """A SharedEngine of the harness's base model on the shared pool, its record holding the
    tenant's adapter on ``holding`` replicas."""
    adapters = [LoadedAdapter(name="support-bot", tenant=f"{NS}/{NAME}", loaded_replicas=holding)]
    return SharedEngine.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"model": MODEL, "pool": SHARED},
            "status": {"adapters": [a.model_dump(mode="json", by_alias=True) for a in adapters]},
        }
    )


@pytest.mark.parametrize(
    ("engines", "model", "kept"),
    [
        pytest.param(["llama-8b"], "lora", "llama-8b", id="its-engine-exists"),
        pytest.param([], "lora", "", id="its-engine-was-deleted"),
        pytest.param(["other"], "lora", "other", id="another-engine-of-its-base-model-takes-it"),
        pytest.param(["llama-8b"], "plain", "", id="its-adapter-was-removed"),
    ],
)
def test_status_engine_survives_a_sync_only_while_that_engine_serves_the_tenant(
    engines: list[str], model: str, kept: str
) -> None:
    """The SharedEngine's plan owns ``status.engine``; the tenant's own sync carries it over
    while that engine is the one for its base model. When it is gone, the sync releases the
    tenant as the engine's plan would have (``engine`` cleared, ``AdapterLoaded`` dropped), so
    the gateway stops routing to a fleet that no longer exists. ``mode: auto``, so the other
    engine does not take it as a fixed member in the same sync."""
    h = Harness({"mode": "auto", "model": LORA_MODEL if model == "lora" else MODEL})
    h.kube.engines = [_fleet(name) for name in engines]
    loaded = _adapter_condition("True")
    h.status = h.status.model_copy(update={"engine": "llama-8b", "conditions": [loaded]})
    h.sync()
    assert h.status.engine == kept
    assert any(c.type == "AdapterLoaded" for c in h.status.conditions) == (kept == "llama-8b")


def _adapter_condition(status: str) -> Condition:
    return Condition(
        type="AdapterLoaded",
        status=status,
        reason="AdapterLoaded" if status == "True" else "Loading",
        last_transition_time=datetime(2025, 1, 1, tzinfo=UTC),
    )


LORA_MODEL = {**MODEL, "adapter": {"name": "support-bot", "source": "/adapters/support-bot"}}


@pytest.mark.parametrize(
    ("engine", "adapter_loaded", "own_deployments"),
    [
        pytest.param("llama-8b", "True", 0, id="served-by-its-shared-engine-runs-none-of-its-own"),
        pytest.param("llama-8b", "Unknown", 1, id="adapter-still-loading-keeps-its-own"),
        pytest.param("", None, 1, id="no-shared-engine-runs-its-own"),
    ],
)
def test_lora_tenant_runs_its_own_engine_only_until_a_shared_engine_holds_its_adapter(
    engine: str, adapter_loaded: str | None, own_deployments: int
) -> None:
    h = Harness({"mode": "serverless", "model": LORA_MODEL})
    h.sync()  # before the SharedEngine takes it: replicas of its own on the shared pool
    assert len(h.kube.deployment_names(NS)) == 1
    h.kube.engines = [_fleet(engine, holding=adapter_loaded == "True")] if engine else []
    conds = [_adapter_condition(adapter_loaded)] if adapter_loaded else []
    h.status = h.status.model_copy(update={"engine": engine, "conditions": conds})

    h.sync(advance=15)

    assert len(h.kube.deployment_names(NS)) == own_deployments
    ready = next(c for c in h.status.conditions if c.type == "Ready")
    assert (ready.status == "True" and ready.reason == "AdapterLoaded") == (own_deployments == 0)
    assert h.status.engine == engine


def test_a_tenant_goes_to_the_oldest_engine_of_its_base_model() -> None:
    """Two SharedEngines of one base model: the tenant is served by the older one, whatever the
    names (the younger one serves nobody, policy.shared_engine.engine_of)."""
    h = Harness({"mode": "serverless", "model": LORA_MODEL})
    older, younger = _fleet("zz-base"), _fleet("a-base")
    older.metadata["creationTimestamp"] = "2025-01-01T09:00:00Z"
    younger.metadata["creationTimestamp"] = "2025-01-01T10:00:00Z"
    h.kube.engines = [younger, older]
    h.sync()
    assert h.status.engine == "zz-base"
