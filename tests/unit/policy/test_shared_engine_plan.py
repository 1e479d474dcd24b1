"""The SharedEngine plan: who is a tenant, fleet size on the aggregate queue, adapter placement and
the AdapterLoaded condition each tenant gets."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api import conditions, labels
from tidepool.api.conditions import ConditionType
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, SharedEngine
from tidepool.policy import shared_engine as se
from tidepool.policy.children import ObservedDeployment
from tidepool.policy.plan import History
from tidepool.policy.signals import NoData, Sample, Signal

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BASE = "meta-llama/Llama-3.1-8B-Instruct"
POOL = GPUPool.model_validate(
    {
        "metadata": {"name": "shared-a100"},
        "spec": {"tenancy": "shared", "gpuType": "A100", "pricePerGpuHour": 4.0},
    }
)


def _engine(**spec: Any) -> SharedEngine:
    return SharedEngine.model_validate(
        {
            "metadata": {"name": "llama-8b", "generation": 1},
            "spec": {"model": {"name": BASE}, "pool": "shared-a100", **spec},
        }
    )


def _tenant(
    name: str,
    *,
    model: str = BASE,
    adapter: bool = True,
    mode: str = "serverless",
    effective: str | None = None,
    wake: str | None = None,
    handled: str | None = None,
) -> InferenceDeployment:
    model_spec: dict[str, Any] = {"name": model}
    if adapter:
        model_spec["adapter"] = {"name": name, "source": f"/models/adapters/{name}"}
    meta: dict[str, Any] = {"name": name, "namespace": "team", "generation": 1}
    if wake:
        meta["annotations"] = {labels.WAKE_REQUESTED_AT: wake}
    status: dict[str, Any] = {"effectiveMode": effective} if effective else {}
    if handled:
        status["lastWakeHandled"] = handled
    spec: dict[str, Any] = {"model": model_spec, "mode": mode}
    if mode == "dedicated":
        spec["scaling"] = {"minReplicas": 1}
    return InferenceDeployment.model_validate({"metadata": meta, "spec": spec, "status": status})


def _pod(name: str, loaded: set[str] | None, queue: float = 0.0) -> se.EnginePod:
    return se.EnginePod(
        name=name,
        endpoint=f"http://{name}:8000",
        ready=True,
        loaded=frozenset(loaded) if loaded is not None else None,
        queue=Sample(queue, NOW),
    )


@dataclass
class Case:
    tenants: list[InferenceDeployment]
    pods: list[se.EnginePod] = field(default_factory=list)
    replicas: int = 0
    held: Mapping[str, Signal] | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    last_active: datetime | None = None
    engine: SharedEngine = field(default_factory=_engine)


def _plan(case: Case) -> se.SharedEnginePlan:
    engine = case.engine
    if case.last_active is not None:
        engine = engine.model_copy(
            update={
                "status": engine.status.model_copy(update={"last_active_time": case.last_active})
            }
        )
    held = case.held
    if held is None:
        held = {se.tenant_key(t): Sample(0.0, NOW) for t in case.tenants}
    dep = None
    if case.replicas or case.pods:
        dep = ObservedDeployment(
            name="sheng-llama-8b",
            pool="shared-a100",
            replicas=case.replicas,
            ready_replicas=len(case.pods),
            updated_replicas=case.replicas,
            generation_observed=True,
        )
    observed = se.SharedObserved(
        pool=POOL,
        deployment=dep,
        pods=tuple(case.pods),
        held=held,
        load_errors=case.errors,
        operator_started_at=NOW - timedelta(hours=1),
    )
    return se.plan_shared_engine(engine, case.tenants, observed, History(), NOW)


@pytest.mark.parametrize(
    ("infd", "expected"),
    [
        pytest.param(_tenant("a"), True, id="serverless-adapter-of-the-base-model"),
        pytest.param(_tenant("a", adapter=False), False, id="no-adapter"),
        pytest.param(_tenant("a", model="other/model"), False, id="another-base-model"),
        pytest.param(_tenant("a", mode="auto"), True, id="auto-not-yet-decided"),
        pytest.param(
            _tenant("a", mode="auto", effective="serverless"), True, id="auto-running-serverless"
        ),
        pytest.param(
            _tenant("a", mode="auto", effective="dedicated"), False, id="auto-promoted-dedicated"
        ),
        pytest.param(_tenant("a", mode="dedicated"), False, id="dedicated"),
    ],
)
def test_serves(infd: InferenceDeployment, expected: bool) -> None:
    assert se.serves(_engine(), infd) is expected


A, B, C = _tenant("a"), _tenant("b"), _tenant("c")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param(
            Case([A, _tenant("b", wake="2025-06-01T11:59:59Z"), C]),
            1,
            id="one-tenants-wake-scales-0-to-1",
        ),
        pytest.param(Case([A, B, C]), 0, id="no-wake-no-demand-stays-at-zero"),
        pytest.param(
            Case(
                [A, B, C],
                pods=[_pod("p0", set(), 30), _pod("p1", set(), 30)],
                replicas=2,
                held={
                    "team/a": Sample(20, NOW),
                    "team/b": Sample(20, NOW),
                    "team/c": Sample(20, NOW),
                },
            ),
            3,
            id="aggregate-queue-120-over-target-56-gives-3",
        ),
        pytest.param(
            Case(
                [A, B, C],
                pods=[_pod("p0", set())],
                replicas=1,
                last_active=NOW - timedelta(minutes=6),
            ),
            0,
            id="every-tenant-idle-past-the-window-scales-to-zero",
        ),
        pytest.param(
            Case(
                [A, B, C],
                pods=[_pod("p0", set())],
                replicas=1,
                held={"team/a": Sample(0, NOW), "team/b": Sample(1, NOW), "team/c": Sample(0, NOW)},
                last_active=NOW - timedelta(minutes=6),
            ),
            1,
            id="one-tenant-with-demand-keeps-the-fleet",
        ),
        pytest.param(
            Case(
                [A, B],
                pods=[_pod("p0", set())],
                replicas=1,
                held={"team/a": Sample(0, NOW), "team/b": NoData("gateway down")},
                last_active=NOW - timedelta(minutes=6),
            ),
            1,
            id="one-tenant-unknown-holds",
        ),
        pytest.param(
            Case(
                [_tenant("a", wake="2025-06-01T11:59:59Z"), *(_tenant(n) for n in "bcde")],
                engine=_engine(lora={"maxLoras": 2}),
            ),
            3,
            id="a-wake-brings-room-for-every-adapter-5-tenants-at-2-slots-gives-3",
        ),
        pytest.param(
            Case(
                [_tenant(n) for n in "abcde"],
                pods=[_pod("p0", set())],
                replicas=1,
                engine=_engine(lora={"maxLoras": 1}, scaling={"maxReplicas": 4}),
            ),
            4,
            id="the-adapter-floor-stops-at-max-replicas",
        ),
        pytest.param(
            Case(
                [_tenant("a", wake="2025-06-01T11:59:59Z"), *(_tenant(n) for n in "bcde")],
                engine=_engine(lora={"maxLoras": 2}, replicas=1),
            ),
            1,
            id="a-pin-wins-over-the-adapter-floor",
        ),
        pytest.param(
            Case(
                [
                    A,
                    _tenant(
                        "b", wake="2025-06-01T11:59:59.000Z", handled="2025-06-01T11:59:59.000Z"
                    ),
                ]
            ),
            1,
            id="a-wake-the-tenants-own-daemon-marked-handled-still-wakes-the-fleet",
        ),
        pytest.param(
            Case(
                [A, _tenant("b", wake="2025-06-01T11:50:00.000Z")],
                last_active=NOW - timedelta(minutes=6),
            ),
            0,
            id="a-wake-older-than-the-fleets-last-activity-was-acted-on-already",
        ),
        pytest.param(
            Case([A, _tenant("b", wake="soon")]), 0, id="a-wake-that-is-no-time-asks-for-nothing"
        ),
    ],
)
def test_fleet_replicas(case: Case, expected: int) -> None:
    assert _plan(case).replicas == expected


def test_a_wake_is_acknowledged_on_the_tenant_that_sent_it() -> None:
    result = _plan(Case([A, _tenant("b", wake="2025-06-01T11:59:59Z")]))

    assert {u.key: u.last_wake_handled for u in result.tenants} == {
        "team/a": None,
        "team/b": "2025-06-01T11:59:59Z",
    }
    assert all(u.engine == "llama-8b" for u in result.tenants)


@pytest.mark.parametrize(
    ("tenants", "replicas", "slots", "held", "expected"),
    [
        pytest.param(
            ["a", "b"],
            ["p0", "p1"],
            4,
            {},
            {"a": ["p0", "p1"], "b": ["p0", "p1"]},
            id="fits-everywhere",
        ),
        pytest.param(
            ["a", "b", "c", "d"],
            ["p0", "p1"],
            2,
            {},
            {"a": ["p0"], "b": ["p1"], "c": ["p0"], "d": ["p1"]},
            id="spread-one-copy-each",
        ),
        pytest.param(
            ["a", "b", "c"],
            ["p0", "p1", "p2"],
            2,
            {},
            {"a": ["p0", "p1"], "b": ["p0", "p2"], "c": ["p1", "p2"]},
            id="spread-two-copies-each",
        ),
        pytest.param(
            ["a", "b", "c"], ["p0"], 2, {}, {"a": ["p0"], "b": ["p0"], "c": []}, id="no-room-for-c"
        ),
        pytest.param(["a"], [], 4, {}, {"a": []}, id="no-ready-replica"),
        pytest.param(
            ["a", "b", "c", "d"],
            ["p0", "p1"],
            2,
            {"a": ["p0"], "c": ["p1"], "d": ["p1"]},
            {"a": ["p0"], "b": ["p0"], "c": ["p1"], "d": ["p1"]},
            id="a-new-tenant-that-sorts-early-takes-the-free-slot-and-moves-nobody",
        ),
        pytest.param(
            ["a", "b", "c"],
            ["p0", "p1"],
            2,
            {"a": ["p1"], "b": ["p1"], "c": ["p1"]},
            {"a": ["p1"], "b": ["p1"], "c": ["p0"]},
            id="a-record-beyond-the-slots-keeps-the-first-and-moves-the-rest",
        ),
        pytest.param(
            ["a", "b"],
            ["p0", "p2"],
            1,
            {"a": ["p1"], "b": ["p2"]},
            {"a": ["p0"], "b": ["p2"]},
            id="a-replica-gone-its-adapter-goes-to-the-free-one",
        ),
        pytest.param(
            ["a", "b", "c"],
            ["p0", "p1", "p2"],
            2,
            {"a": ["p0"], "b": ["p1"], "c": ["p2"]},
            {"a": ["p0", "p1"], "b": ["p1", "p2"], "c": ["p0", "p2"]},
            id="more-replicas-add-copies-beside-the-held-ones",
        ),
        pytest.param(
            ["a", "b", "c"],
            ["p0"],
            2,
            {"b": ["p0"], "c": ["p0"]},
            {"a": [], "b": ["p0"], "c": ["p0"]},
            id="no-room-a-newcomer-evicts-nobody",
        ),
        pytest.param(
            ["a", "b", "c", "d", "e"],
            ["p0", "p1"],
            4,
            {t: ["p0", "p1"] for t in "abcd"},
            {"a": ["p0"], "b": ["p0"], "c": ["p0"], "d": ["p0"], "e": ["p1"]},
            id="a-fifth-tenant-at-4-slots-drops-second-copies-keeping-the-first",
        ),
    ],
)
def test_place_adapters(
    tenants: list[str],
    replicas: list[str],
    slots: int,
    held: dict[str, list[str]],
    expected: dict[str, list[str]],
) -> None:
    placed = se.place_adapters(tenants, replicas, slots, held)

    assert placed == expected
    per_replica = [sum(r in rs for rs in placed.values()) for r in replicas]
    assert all(n <= slots for n in per_replica)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[str], list[str], int, dict[str, list[str]], str]:
    """Tenants, ready replicas, slots per replica, a placement the fleet reached over a history
    of joins (each placed on the record the one before left), and a newcomer's name."""
    replicas = [f"p{i}" for i in range(draw(st.integers(1, 5)))]
    slots = draw(st.integers(1, 4))
    names = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), unique=True, max_size=14))
    newcomer = draw(st.text("abcdefgh", min_size=1, max_size=3).filter(lambda n: n not in names))
    placed: dict[str, list[str]] = {}
    for i in range(1, len(names) + 1):
        placed = se.place_adapters(sorted(names[:i]), replicas, slots, placed)
    return sorted(names), replicas, slots, placed, newcomer


@given(fleets())
def test_a_newcomer_moves_no_adapter_while_there_is_room(
    fleet: tuple[list[str], list[str], int, dict[str, list[str]], str],
) -> None:
    tenants, replicas, slots, placed, newcomer = fleet
    after = se.place_adapters(sorted([*tenants, newcomer]), replicas, slots, placed)

    copies_now = max((len(v) for v in placed.values()), default=0)
    copies_then = max((len(v) for v in after.values()), default=0)
    load = sum(len(v) for v in placed.values())
    for tenant in tenants:
        if copies_then >= copies_now:  # as many copies as before: no adapter leaves a replica
            assert set(placed[tenant]) <= set(after[tenant]), tenant
        assert after[tenant] or not placed[tenant], f"{tenant} lost its only slot"
    if load < len(replicas) * slots and copies_then >= copies_now:
        assert after[newcomer], "a free slot goes to the newcomer"
    for replica in replicas:
        assert sum(replica in v for v in after.values()) <= slots, replica
    for rs in after.values():
        assert len(set(rs)) == len(rs)
        assert set(rs) <= set(replicas)


@given(fleets())
def test_placed_from_nothing_the_adapters_spread_evenly(
    fleet: tuple[list[str], list[str], int, dict[str, list[str]], str],
) -> None:
    tenants, replicas, slots, _, _ = fleet
    placed = se.place_adapters(tenants, replicas, slots)

    per_replica = [sum(r in rs for rs in placed.values()) for r in replicas]
    assert max(per_replica) - min(per_replica) <= 1
    assert max(per_replica) <= slots
    if len(tenants) <= len(replicas) * slots:
        assert all(placed[t] for t in tenants), "every tenant has a slot"


def test_loads_what_is_missing_and_unloads_what_no_tenant_wants() -> None:
    result = _plan(Case([A, B], pods=[_pod("p0", {"a", "gone"}), _pod("p1", None)], replicas=2))

    assert [(o.pod, o.adapter, o.path) for o in result.loads] == [("p0", "b", "/models/adapters/b")]
    assert [(o.pod, o.adapter) for o in result.unloads] == [("p0", "gone")]
    assert {a.name: (a.loaded_replicas, a.replicas) for a in result.status.adapters} == {
        "a": (1, ["p0"]),
        "b": (0, []),
    }


def _adapter_condition(update: se.TenantUpdate) -> tuple[str, str, str]:
    cond = conditions.find(list(update.conditions), ConditionType.ADAPTER_LOADED)
    assert cond is not None
    return cond.status, cond.reason, cond.message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param(
            Case(
                [A, B, C],
                pods=[_pod("p0", {"a", "c"}), _pod("p1", {"a", "c"})],
                replicas=2,
                errors={"team/b": "LoRA rank 64 is greater than max_lora_rank 16."},
            ),
            {
                "team/a": ("True", "AdapterLoaded", "loaded on 2 of 2 replicas"),
                "team/b": (
                    "False",
                    "AdapterLoadFailed",
                    "SharedEngine llama-8b: LoRA rank 64 is greater than max_lora_rank 16.",
                ),
                "team/c": ("True", "AdapterLoaded", "loaded on 2 of 2 replicas"),
            },
            id="a-load-failure-is-that-tenants-only",
        ),
        pytest.param(
            Case([A]),
            {
                "team/a": (
                    "Unknown",
                    "EngineScaledToZero",
                    "SharedEngine llama-8b is scaled to zero; the adapter loads when it wakes",
                )
            },
            id="scaled-to-zero",
        ),
        pytest.param(
            Case(
                [A, B, C],
                pods=[_pod("p0", {"a"})],
                replicas=1,
                engine=_engine(lora={"maxLoras": 2}),
            ),
            {
                "team/a": ("True", "AdapterLoaded", "loaded on 1 of 1 replicas"),
                "team/b": ("Unknown", "Loading", "loading on 1 replica(s)"),
                "team/c": (
                    "False",
                    "NoAdapterSlot",
                    "SharedEngine llama-8b holds 1 x 2 adapters and serves 3 tenants: raise"
                    " lora.maxCpuLoras or scaling.maxReplicas",
                ),
            },
            id="more-tenants-than-slots",
        ),
    ],
)
def test_adapter_loaded_condition(case: Case, expected: dict[str, tuple[str, str, str]]) -> None:
    result = _plan(case)

    assert {u.key: _adapter_condition(u) for u in result.tenants} == expected


def test_engine_status_summarizes_the_fleet() -> None:
    result = _plan(
        Case([A, B, _tenant("x", model="other/model")], pods=[_pod("p0", {"a"})], replicas=1)
    )

    status = result.status
    assert (status.replicas, status.ready_replicas, status.ready, status.tenants) == (
        1,
        1,
        "1/1",
        2,
    )
    assert [(a.name, a.tenant, a.loaded_replicas) for a in status.adapters] == [
        ("a", "team/a", 1),
        ("b", "team/b", 0),
    ]
    ready = conditions.find(status.conditions, conditions.ConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("True", "ReplicasReady")


def test_a_missing_pool_touches_nothing() -> None:
    observed = se.SharedObserved(
        pool=None,
        deployment=None,
        pods=(),
        held={},
        load_errors={},
        operator_started_at=NOW,
    )
    result = se.plan_shared_engine(_engine(), [A], observed, History(), NOW)

    assert (result.pool, result.loads, result.tenants) == (None, (), ())
    ready = conditions.find(result.status.conditions, conditions.ConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "PoolNotFound")


def test_a_tenant_served_no_more_is_released() -> None:
    served = _plan(Case([A, B], pods=[_pod("p0", {"a", "b"})], replicas=1))
    b_status = {
        "engine": "llama-8b",
        "conditions": [
            c.model_dump(mode="json", by_alias=True)
            for u in served.tenants
            if u.key == "team/b"
            for c in u.conditions
        ],
    }
    promoted = InferenceDeployment.model_validate(
        {
            **_tenant("b").model_dump(mode="json", by_alias=True),
            "spec": {
                **_tenant("b").model_dump(mode="json", by_alias=True)["spec"],
                "mode": "auto",
            },
            "status": {**b_status, "effectiveMode": "dedicated"},
        }
    )

    result = _plan(Case([A, promoted], pods=[_pod("p0", {"a", "b"})], replicas=1))

    released = next(u for u in result.tenants if u.key == "team/b")
    assert (released.engine, [c.type for c in released.conditions]) == ("", [])
    assert [(o.pod, o.adapter) for o in result.unloads] == [("p0", "b")]
    assert result.status.tenants == 1


def _declared(name: str, created: str | None, model: str = BASE) -> SharedEngine:
    meta: dict[str, Any] = {"name": name}
    if created is not None:
        meta["creationTimestamp"] = created
    return SharedEngine.model_validate(
        {"metadata": meta, "spec": {"model": {"name": model}, "pool": "shared-a100"}}
    )


@pytest.mark.parametrize(
    ("engines", "expected"),
    [
        pytest.param(
            [("a-base", "2025-06-01T10:00:00Z"), ("base", "2025-06-01T09:00:00Z")],
            "base",
            id="the-oldest-not-the-first-by-name",
        ),
        pytest.param(
            [("b", "2025-06-01T09:00:00Z"), ("a", "2025-06-01T09:00:00Z")],
            "a",
            id="same-second-by-name",
        ),
        pytest.param([("only", None)], "only", id="one-engine"),
        pytest.param([], None, id="none"),
    ],
)
def test_engine_of_a_base_model(
    engines: list[tuple[str, str | None]], expected: str | None
) -> None:
    declared = [_declared(n, t) for n, t in engines] + [_declared("x", None, model="other/m")]
    got = se.engine_of(BASE, declared)
    assert (got.name if got is not None else None) == expected


def test_a_second_engine_of_one_base_model_serves_nobody_and_says_why() -> None:
    """``llama-8b`` is the younger of two SharedEngines of one base model: it loads no adapter,
    keeps no replica, releases the tenant whose status names it (written before the older one
    existed, say), and says which engine serves the model, with a warning the first time."""
    b_named = _tenant("b").model_copy(
        update={"status": _tenant("b").status.model_copy(update={"engine": "llama-8b"})}
    )
    observed = se.SharedObserved(
        pool=POOL,
        deployment=None,
        pods=(_pod("p0", {"a"}),),
        held={},
        load_errors={},
        operator_started_at=NOW,
        base_model_served_by="base",
    )

    result = se.plan_shared_engine(_engine(), [A, b_named], observed, History(), NOW)

    assert (result.replicas, result.loads, result.unloads) == (0, (), ())
    assert [(u.key, u.engine) for u in result.tenants] == [("team/b", "")]
    ready = conditions.find(result.status.conditions, conditions.ConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "BaseModelServedElsewhere")
    assert ready.message.startswith(
        f"spec.model.name: base model {BASE!r} is served by SharedEngine 'base', created first"
    )
    assert [e.reason for e in result.events] == ["BaseModelServedElsewhere"]
    again = se.plan_shared_engine(
        _engine().model_copy(update={"status": result.status}), [A], observed, History(), NOW
    )
    assert again.events == ()
