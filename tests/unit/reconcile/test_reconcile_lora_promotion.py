"""An ``auto`` LoRA tenant of a SharedEngine is promoted to replicas of its own and demoted back,
make-before-break both ways, through ``sync`` against fakes.

The test plays the SharedEngine's side by hand (:func:`fleet_holds`): what its plan records, the
adapter on ``n`` replicas in ``status.adapters`` and ``AdapterLoaded`` on the tenant. Loads are in
*replicas of work* of the calibrated A100 8B engine (:func:`load`), so the numbers in the asserts
are the policy's own.
"""

from datetime import timedelta
from typing import Any

from reconcile_harness import DEDICATED, MODEL, NAME, NS, SHARED, Harness, dep, pool

from tidepool.api import conditions, labels
from tidepool.api.conditions import ConditionType, Reason
from tidepool.api.v1alpha1 import (
    DeploymentMode,
    InferenceDeployment,
    LoadedAdapter,
    MigrationPhase,
    SharedEngine,
)
from tidepool.policy import capacity, migration, shared_engine
from tidepool.policy.placement import Load, Traffic
from tidepool.policy.signals import Sample

ENGINE = "base"
FLEET = migration.engine_pool(ENGINE)
ADAPTER = {"name": "support-bot", "source": "/models/adapters/support-bot", "rank": 16}
SPEC: dict[str, Any] = {
    "model": {**MODEL, "adapter": ADAPTER},
    "mode": "auto",
    "scaling": {"minReplicas": 0, "maxReplicas": 4},
    # A 1-minute window and a 2-minute dwell: the evidence must hold 1 more minute.
    "placement": {"window": "1m", "minDwell": "2m"},
}
CAP = capacity.for_spec(
    SharedEngine.model_validate(
        {"metadata": {"name": ENGINE}, "spec": {"model": MODEL, "pool": SHARED}}
    ).spec.engine,
    MODEL["name"],
    "NVIDIA-A100-SXM4-80GB",
)


def load(work: float) -> Load:
    """``work`` replicas of work on the fleet's engine: half prefill, half decode."""
    return Load(
        requests_per_second=work,
        input_tokens_per_second=work * CAP.prefill_tokens_per_s / 2,
        output_tokens_per_second=work * CAP.decode_tokens_per_s / 2,
    )


def traffic(work: float) -> Traffic:
    return Traffic(
        mean=load(work),
        peak=load(work),
        span=timedelta(minutes=1),
        active_fraction=1.0,
        wakes=0.0,
        recent=load(work),
    )


def engine() -> SharedEngine:
    return SharedEngine.model_validate(
        {
            "metadata": {"name": ENGINE, "uid": "uid-e"},
            "spec": {"model": MODEL, "pool": SHARED, "scaling": {"maxReplicas": 4}},
        }
    )


def neighbour(work: float) -> InferenceDeployment:
    """Another tenant of the fleet, whose status records ``work`` replicas of offered load."""
    offered = load(work)
    return InferenceDeployment.model_validate(
        {
            "metadata": {"name": "other", "namespace": NS},
            "spec": {
                "mode": "serverless",
                "model": {**MODEL, "adapter": {**ADAPTER, "name": "other"}},
            },
            "status": {
                "offeredInputTokensPerSecond": offered.input_tokens_per_second,
                "offeredOutputTokensPerSecond": offered.output_tokens_per_second,
            },
        }
    )


def fleet_holds(h: Harness, replicas: int) -> None:
    """What the SharedEngine's plan records once it holds (or not) the tenant's adapter."""
    fleet = engine()
    key = f"{NS}/{NAME}"
    adapters = [LoadedAdapter(name=ADAPTER["name"], tenant=key, loaded_replicas=replicas)]
    fleet = fleet.model_copy(
        update={"status": fleet.status.model_copy(update={"adapters": adapters})}
    )
    h.kube.engines = [fleet]
    conds, _ = conditions.set_condition(
        list(h.status.conditions),
        type_=ConditionType.ADAPTER_LOADED,
        status=True if replicas else None,
        reason=Reason.ADAPTER_LOADED if replicas else Reason.ADAPTER_LOADING,
        message=f"loaded on {replicas} of 1 replicas",
        generation=1,
        now=h.clock.now,
    )
    engine_name = ENGINE if shared_engine.routes(fleet, h.infd) else ""
    h.status = h.status.model_copy(update={"conditions": conds, "engine": engine_name})


def fleet_releases(h: Harness) -> None:
    """What the SharedEngine's plan does once the tenant is no longer its member: the adapter
    unloaded, gone from its record, and AdapterLoaded dropped from the tenant."""
    h.kube.engines = [engine()]
    h.status = h.status.model_copy(
        update={
            "conditions": [
                c for c in h.status.conditions if c.type != ConditionType.ADAPTER_LOADED
            ],
            "engine": "",
        }
    )


def on_the_fleet(work: float) -> Harness:
    """A tenant the fleet has served for an hour, beside a neighbour of 0.5 replicas of work.

    Its dedicated pool is priced 60% below the fleet's $4/GPU-hour (GPUs committed for a term): at
    equal prices replicas of its own never cost less than the capacity the fleet would shed
    (:mod:`tidepool.policy.lora_promotion`), so only a cheaper pool promotes it on spend."""
    h = Harness(SPEC)
    dedicated = pool(DEDICATED, "dedicated", gpus_per_node=1)
    reserved = dedicated.spec.model_copy(update={"price_per_gpu_hour": 1.6})
    h.kube.pools = [pool(SHARED, "shared"), dedicated.model_copy(update={"spec": reserved})]
    h.kube.tenants = [neighbour(0.5)]
    h.metrics.window = traffic(work)
    h.metrics.queue = Sample(0.0, h.clock.now)
    h.status = h.status.model_copy(
        update={
            "effective_mode": DeploymentMode.SERVERLESS,
            "placement_since": h.clock.now - timedelta(hours=1),
        }
    )
    fleet_holds(h, 1)
    return h


def phase(h: Harness) -> MigrationPhase | None:
    return h.status.migration.phase if h.status.migration else None


def test_busy_tenant_promoted_and_quiet_tenant_demoted_make_before_break() -> None:
    # 0.875 replicas of work beside the neighbour's 0.5: the fleet needs 1.375 / 0.875 = 1.57
    # replicas of capacity instead of 1, so without the tenant it would shed 0.57 of a replica,
    # $1,669/month at $4/GPU-hour; one dedicated A100 of its own at $1.6 is $1,168: 30% less,
    # past the 15% margin.
    h = on_the_fleet(0.875)
    h.sync()
    assert h.status.engine == ENGINE
    assert h.kube.deployment_names() == []
    assert h.condition("Ready")[:2] == ("True", Reason.ADAPTER_LOADED)
    assert h.status.utilization_above_since == h.clock.now
    assert h.status.spend_per_month is not None
    assert round(h.status.spend_per_month) == round(2 * 4.0 * 730 * 0.875 / 1.375)
    assert h.status.chargeback_per_month is not None
    assert "SharedEngine base" in (h.status.spend or "")

    # The evidence holds for the 1-minute hold: promoted. Its own replica starts, with its
    # adapter; the fleet still serves it.
    h.sync(advance=61)
    assert phase(h) == MigrationPhase.STARTING_TARGET
    assert h.status.migration is not None
    assert h.status.migration.to_mode == DeploymentMode.DEDICATED
    assert h.events()[0].reason == "Promoted"
    assert h.kube.deployment_names() == [dep(DEDICATED)]
    args = h.kube.deployment(dep(DEDICATED))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lora-modules" in args
    assert h.status.engine == ENGINE, "routed to the fleet until its own replica is Ready"
    assert h.condition("Ready")[0] == "True"
    fleet_holds(h, 1)

    # Ready: traffic shifts to its own replica; the fleet keeps the adapter while it drains.
    h.kube.make_ready(dep(DEDICATED))
    h.sync(advance=5)
    assert phase(h) == MigrationPhase.SHIFTING_TRAFFIC
    assert h.status.engine == ""
    assert h.status.routable_pools == [DEDICATED]
    assert shared_engine.serves(engine(), h.infd), "the fleet keeps the adapter while draining"
    assert not shared_engine.routes(engine(), h.infd)

    h.metrics.inflight[f"gateway/{SHARED}"] = Sample(2.0, h.clock.now)
    h.sync(advance=5)
    assert phase(h) == MigrationPhase.DRAINING
    h.sync(advance=10)
    assert phase(h) == MigrationPhase.DRAINING, "two requests still run on the fleet"
    h.metrics.inflight[f"gateway/{SHARED}"] = Sample(0.0, h.clock.now)
    h.sync(advance=5)
    assert phase(h) is None
    assert h.status.effective_mode == DeploymentMode.DEDICATED
    assert not shared_engine.serves(engine(), h.infd), "now the fleet unloads the adapter"
    assert h.replicas() == {DEDICATED: 1}
    fleet_releases(h)

    # Quiet now: 0.05 replicas of work would cost the fleet nothing more (1 replica either
    # way), against $1,168 on its own: demote, after the dwell.
    h.metrics.window = traffic(0.05)
    h.sync(advance=30)
    assert h.status.utilization_below_since is not None
    h.sync(advance=61)
    assert phase(h) is None, "the 2-minute dwell since the promotion has not elapsed"
    assert h.status.last_decision is not None
    h.sync(advance=40)
    assert phase(h) == MigrationPhase.STARTING_TARGET
    assert h.status.migration is not None
    assert h.status.migration.to_mode == DeploymentMode.SERVERLESS
    assert h.status.engine == ""
    assert shared_engine.serves(engine(), h.infd), "the fleet loads the adapter: the target"
    assert shared_engine.joining(h.infd), "and wakes for it"

    h.sync(advance=5)
    assert phase(h) == MigrationPhase.STARTING_TARGET, "not before the adapter is loaded"
    fleet_holds(h, 1)
    h.sync(advance=5)
    assert phase(h) == MigrationPhase.SHIFTING_TRAFFIC
    assert h.status.engine == ENGINE
    assert h.replicas() == {DEDICATED: 1}, "its own replica drains"
    h.metrics.inflight[DEDICATED] = Sample(0.0, h.clock.now)
    h.sync(advance=5)
    h.sync(advance=6)
    assert phase(h) is None
    assert h.status.effective_mode == DeploymentMode.SERVERLESS
    assert h.kube.deployment_names() == []
    assert h.status.engine == ENGINE
    assert h.condition("Ready")[:2] == ("True", Reason.ADAPTER_LOADED)


def test_fixed_serverless_lora_tenant_shows_its_share_and_is_never_promoted() -> None:
    h = on_the_fleet(0.875)
    h.change_spec(mode="serverless")
    h.sync()
    h.sync(advance=600)
    assert h.status.migration is None
    assert h.kube.deployment_names() == []
    assert h.status.spend_per_month is not None
    assert round(h.status.spend_per_month) == round(2 * 4.0 * 730 * 0.875 / 1.375)


def test_a_restart_mid_promotion_resumes_from_status() -> None:
    h = on_the_fleet(0.875)
    h.sync()
    h.sync(advance=61)
    h.kube.make_ready(dep(DEDICATED))
    h.restart()
    h.sync(advance=5)
    assert phase(h) == MigrationPhase.SHIFTING_TRAFFIC
    assert h.status.engine == ""


def test_a_wake_of_a_tenant_on_the_fleet_is_left_to_the_shared_engine() -> None:
    """The gateway's wake of a tenant only the fleet serves is the SharedEngine's to handle: were
    the tenant's plan to mark it handled first, a fleet at zero would never hear of it."""
    h = on_the_fleet(0.1)
    h.annotations[labels.WAKE_REQUESTED_AT] = h.clock.now.isoformat()
    h.sync()
    assert h.status.last_wake_handled is None
    assert h.kube.deployment_names() == []


def test_a_tenant_kept_waiting_past_its_slo_is_promoted_then_judged_on_spend() -> None:
    """0.1 replicas of work beside the neighbour's 0.5: the fleet sheds only 0.11 of a replica
    without it ($333/month at $4/GPU-hour) against $1,168 for a replica of its own, and its busiest
    minute fits maxReplicas 4. The gateway shows its p99 time to first byte on the fleet at
    14.2 s over the window, above the 10 s SLO: that alone promotes it after the hold. On its own
    replica the gateway still reports 14.2 s (now that replica's), which says nothing about the
    fleet: quiet, it is demoted after the dwell as any other tenant."""
    h = on_the_fleet(0.1)
    h.metrics.p99_time_to_first_byte_s = 14.2
    h.sync()
    assert h.status.utilization_above_since == h.clock.now
    assert "time to first byte on SharedEngine base was 14.2 s" in (h.status.spend or "")
    h.sync(advance=61)
    assert phase(h) == MigrationPhase.STARTING_TARGET
    assert h.status.migration is not None
    assert h.status.migration.to_mode == DeploymentMode.DEDICATED
    promoted = h.events()[0]
    assert promoted.reason == "Promoted"
    assert "above its 10 s SLO" in promoted.message

    h.kube.make_ready(dep(DEDICATED))
    h.sync(advance=5)
    h.metrics.inflight[f"gateway/{SHARED}"] = Sample(0.0, h.clock.now)
    h.sync(advance=5)
    h.sync(advance=5)
    assert phase(h) is None
    assert h.status.effective_mode == DeploymentMode.DEDICATED
    fleet_releases(h)

    h.metrics.window = traffic(0.05)
    h.sync(advance=30)
    assert h.status.utilization_below_since is not None, (
        "its own replica's latency is not the fleet's"
    )
    h.sync(advance=110)
    assert h.status.migration is not None
    assert h.status.migration.to_mode == DeploymentMode.SERVERLESS


def test_a_tenant_the_fleet_serves_within_its_slo_stays() -> None:
    h = on_the_fleet(0.1)
    h.metrics.p99_time_to_first_byte_s = 3.0
    h.sync()
    h.sync(advance=61)
    h.sync(advance=600)
    assert h.status.migration is None
    assert h.status.utilization_above_since is None
    assert h.kube.deployment_names() == []
