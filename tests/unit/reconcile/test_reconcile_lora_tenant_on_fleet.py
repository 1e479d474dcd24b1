"""A LoRA tenant that a SharedEngine serves runs no engine of its own, loaded or not: its scale
from zero is an adapter load on the fleet, never a GPU replica of its own on the shared pool.

Before, a ``mode: serverless`` tenant was planned as an ordinary serverless tenant until the
fleet reported ``AdapterLoaded=True``: from creation it applied a 0-replica Deployment of its
own, and once the fleet had scaled to zero (``AdapterLoaded`` Unknown, ``EngineScaledToZero``)
the gateway's wake scaled that Deployment 0 -> 1, taking a GPU of the pool the fleet wakes on.

The test plays the SharedEngine's side by hand (:func:`fleet_records`), as its plan writes it.
"""

from datetime import timedelta
from typing import Any

import pytest
from reconcile_harness import DEDICATED, MODEL, NAME, NS, SHARED, Harness

from tidepool.api import conditions, labels, names
from tidepool.api.conditions import ConditionType, Reason
from tidepool.api.v1alpha1 import LoadedAdapter, SharedEngine
from tidepool.policy.signals import Sample

ENGINE = "base"
ADAPTER = {"name": "support-bot", "source": "/models/adapters/support-bot", "rank": 16}
ENGINE_SPEC = {"metadata": {"name": ENGINE}, "spec": {"model": MODEL, "pool": SHARED}}


def spec(mode: str) -> dict[str, Any]:
    return {"model": {**MODEL, "adapter": ADAPTER}, "mode": mode, "scaling": {"minReplicas": 0}}


def fleet_records(h: Harness, *, replicas: int, reason: Reason) -> None:
    """What the SharedEngine's plan writes: the adapter on ``replicas`` fleet replicas in its
    record, and ``AdapterLoaded`` (True with ``AdapterLoaded``, else Unknown with ``reason``)
    and ``status.engine`` on the tenant."""
    key = f"{NS}/{NAME}"
    fleet = SharedEngine.model_validate(
        {
            "metadata": {"name": ENGINE, "uid": "uid-e"},
            "spec": {"model": MODEL, "pool": SHARED},
            "status": {
                "adapters": [
                    LoadedAdapter(
                        name=ADAPTER["name"],
                        tenant=key,
                        loaded_replicas=replicas,
                        replicas=[f"sheng-{ENGINE}-{i}" for i in range(replicas)],
                    ).model_dump(mode="json", by_alias=True)
                ]
            },
        }
    )
    h.kube.engines = [fleet]
    conds, _ = conditions.set_condition(
        list(h.status.conditions),
        type_=ConditionType.ADAPTER_LOADED,
        status=True if replicas else None,
        reason=reason,
        message=(
            f"loaded on {replicas} of {replicas} replicas"
            if replicas
            else f"SharedEngine {ENGINE} is scaled to zero; the adapter loads when it wakes"
        ),
        generation=1,
        now=h.clock.now,
    )
    h.status = h.status.model_copy(update={"conditions": conds, "engine": ENGINE})


def tenant(mode: str) -> Harness:
    h = Harness(spec(mode))
    h.metrics.queue = Sample(0.0, h.clock.now)
    h.kube.engines = [SharedEngine.model_validate(ENGINE_SPEC)]
    h.kube.tenants = [h.infd]
    return h


MODES = [pytest.param("serverless", id="serverless"), pytest.param("auto", id="auto")]


@pytest.mark.parametrize("mode", MODES)
def test_a_new_tenant_creates_no_deployment_of_its_own(mode: str) -> None:
    h = tenant(mode)

    h.sync()
    h.sync(advance=5)

    assert h.kube.deployment_names() == []
    assert h.status.engine == ENGINE
    assert h.status.desired_replicas == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fleet", "ready"),
    [
        pytest.param(Reason.ENGINE_SCALED_TO_ZERO, ("True", Reason.SCALED_TO_ZERO), id="at-zero"),
        pytest.param(
            Reason.ADAPTER_LOADING, ("False", Reason.WAITING_FOR_REPLICAS), id="adapter-loading"
        ),
    ],
)
def test_a_wake_is_left_to_the_fleet(mode: str, fleet: Reason, ready: tuple[str, str]) -> None:
    h = tenant(mode)
    h.sync()
    fleet_records(h, replicas=0, reason=fleet)
    h.annotations[labels.WAKE_REQUESTED_AT] = h.clock.now.isoformat()
    h.metrics.queue = Sample(1.0, h.clock.now)  # the request the gateway holds

    for _ in range(3):
        h.sync(advance=1)

    assert h.kube.deployment_names() == []
    assert h.status.last_wake_handled is None, "the SharedEngine acts on the wake"
    assert h.condition("Ready")[:2] == ready
    decision = h.status.last_decision
    assert decision is None or "0->1" not in decision.action


def ran_its_own_replica() -> Harness:
    """A serverless LoRA tenant woken onto a replica of its own before the platform created its
    base model's SharedEngine (its Last Decision then read "woken by the gateway ... 0 -> 1")."""
    h = Harness(spec("serverless"))
    h.annotations[labels.WAKE_REQUESTED_AT] = h.clock.now.isoformat()
    h.metrics.queue = Sample(1.0, h.clock.now)
    h.sync()
    assert h.replicas() == {SHARED: 1}
    assert h.status.last_decision is not None
    assert h.status.last_decision.action == "scale 0->1"
    h.kube.make_ready(names.engine_deployment(NAME, SHARED))
    return h


@pytest.mark.parametrize(
    ("fleet", "loaded", "kept"),
    [
        pytest.param(None, 0, True, id="engine-not-looked-yet"),
        pytest.param(Reason.ADAPTER_LOADING, 0, True, id="adapter-loading"),
        pytest.param(Reason.WAITING_FOR_REPLICAS, 0, True, id="fleet-replica-starting"),
        pytest.param(Reason.ADAPTER_LOADED, 1, False, id="loaded"),
        pytest.param(Reason.ENGINE_SCALED_TO_ZERO, 0, False, id="fleet-asleep"),
        pytest.param(Reason.NO_ADAPTER_SLOT, 0, False, id="no-slot"),
        pytest.param(Reason.ADAPTER_LOAD_FAILED, 0, False, id="load-failed"),
    ],
)
def test_replicas_from_before_the_engine_stay_while_the_fleet_makes_the_target(
    fleet: Reason | None, loaded: int, kept: bool
) -> None:
    """Make-before-break onto the fleet, but never a GPU held for nothing: once the fleet is not
    making the tenant's target (asleep, no slot, a failed load) the gateway sends the tenant to
    the fleet all the same, and a replica of its own would serve nobody."""
    h = ran_its_own_replica()
    if fleet is None:
        h.kube.engines = [SharedEngine.model_validate(ENGINE_SPEC)]
    else:
        fleet_records(h, replicas=loaded, reason=fleet)

    h.sync(advance=1)

    assert h.replicas() == ({SHARED: 1} if kept else {})
    assert h.status.desired_replicas == 0
    assert h.status.last_decision is not None
    assert h.status.last_decision.action == f"served by SharedEngine {ENGINE}"
    assert h.status.last_decision.time == h.clock.now
    # kubectl get's MODEL, POOL and ENGINE columns: its served name, the fleet's pool, the fleet.
    assert (h.status.served_model, h.status.pool, h.status.engine) == (
        h.infd.served_model,
        SHARED,
        ENGINE,
    )
    h.sync(advance=1)
    assert h.status.last_decision.time == h.clock.now - timedelta(seconds=1), "said once"


def test_a_tenant_moves_onto_the_fleet_make_before_break() -> None:
    h = ran_its_own_replica()
    fleet_records(h, replicas=0, reason=Reason.ADAPTER_LOADING)
    h.sync(advance=1)
    assert h.replicas() == {SHARED: 1}, "kept while the fleet loads the adapter"
    assert h.kube.deletes == []

    fleet_records(h, replicas=1, reason=Reason.ADAPTER_LOADED)
    h.sync(advance=1)
    assert h.kube.deployment_names() == []
    assert h.condition("Ready")[:2] == ("True", Reason.ADAPTER_LOADED)
    assert [e.reason for e in h.events()] == [Reason.ADAPTER_LOADED]


def test_a_serverless_tenant_switched_to_dedicated_goes_straight_to_its_own_replica() -> None:
    """``spec.mode`` serverless -> dedicated on a fleet tenant: once the fleet has let it go
    (``status.engine`` cleared), its plan runs dedicated at once. Its status never said it ran
    serverless replicas of its own, so there is no move from the shared pool: a move would start
    a replica there and route to it while the dedicated one loads, a GPU for nothing."""
    h = tenant("serverless")
    h.sync()
    fleet_records(h, replicas=1, reason=Reason.ADAPTER_LOADED)
    h.sync(advance=1)
    assert h.status.effective_mode is None
    h.change_spec(mode="dedicated", scaling={"minReplicas": 1})
    loaded = [c for c in h.status.conditions if c.type != ConditionType.ADAPTER_LOADED]
    h.status = h.status.model_copy(update={"engine": "", "conditions": loaded})

    for _ in range(3):
        h.sync(advance=5)
        assert h.status.migration is None
        assert h.replicas() == {DEDICATED: 1}
        assert h.status.routable_pools == [DEDICATED]


@pytest.mark.parametrize("mode", MODES)
def test_a_tenant_whose_shared_engine_is_deleted_runs_replicas_of_its_own(mode: str) -> None:
    """The SharedEngine is deleted while it serves the tenant (its fleet goes with it, so there is
    nothing to make before breaking): the tenant's next sync releases it from the gone engine
    and runs it as a serverless tenant with no fleet, on replicas of its own on the shared pool,
    where the gateway now routes it. Before, it kept reporting Ready "served by SharedEngine
    base" with no replica anywhere, and its waiting requests never woke anything."""
    h = tenant(mode)
    h.sync()
    fleet_records(h, replicas=1, reason=Reason.ADAPTER_LOADED)
    h.sync(advance=1)
    h.kube.engines = []
    h.metrics.queue = Sample(3.0, h.clock.now)

    h.sync(advance=5)

    assert h.status.engine == ""
    assert conditions.find(list(h.status.conditions), ConditionType.ADAPTER_LOADED) is None
    assert h.replicas() == {SHARED: 1}
    assert h.status.routable_pools == [SHARED]
