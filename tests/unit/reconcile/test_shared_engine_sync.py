"""sync_shared_engine against fakes: the fleet appears on a wake, adapters are loaded on the
ready replicas, a refused load is that tenant's AdapterLoaded=False, and a tenant that leaves has
its adapter unloaded."""

from datetime import timedelta
from typing import Any

import pytest

from fakes import T0, FakeLora, FakeMetrics, FakeSharedCluster, steady_traffic
from tidepool.api import labels
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, LoraSpec, SharedEngine
from tidepool.policy.placement import Load, Traffic
from tidepool.policy.signals import NoData
from tidepool.reconcile.shared_engine import (
    EnginePodAddress,
    SharedEngineCache,
    SharedSyncResult,
    sync_shared_engine,
)

NS = "tidepool-system"
BASE = "meta-llama/Llama-3.1-8B-Instruct"
DEPLOYMENT = "sheng-llama-8b"
POOL = GPUPool.model_validate(
    {
        "metadata": {"name": "shared-a100"},
        "spec": {"tenancy": "shared", "gpuType": "A100", "pricePerGpuHour": 4.0},
    }
)
ENGINE = SharedEngine.model_validate(
    {
        "metadata": {"name": "llama-8b", "generation": 1, "uid": "u1"},
        "spec": {"model": {"name": BASE}, "pool": "shared-a100"},
    }
)
RANK_ERROR = "LoRA rank 64 is greater than max_lora_rank 16."
#: A tenant whose last minute keeps about 50 requests in flight on an A100 8B replica.
BUSY = steady_traffic(
    Load(requests_per_second=10.0, input_tokens_per_second=8000.0, output_tokens_per_second=0.0)
)


def _tenant(name: str, *, model: str = BASE, **meta: Any) -> InferenceDeployment:
    return InferenceDeployment.model_validate(
        {
            "metadata": {"name": name, "namespace": "team", "generation": 1, **meta},
            "spec": {
                "model": {"name": model, "adapter": {"name": name, "source": f"/adapters/{name}"}},
                "mode": "serverless",
            },
        }
    )


def _pod(name: str) -> EnginePodAddress:
    return EnginePodAddress(name=name, endpoint=f"http://{name}:8000", ready=True)


class Fleet:
    def __init__(self, tenants: list[InferenceDeployment], engine: SharedEngine = ENGINE) -> None:
        self.kube = FakeSharedCluster(pools=[POOL], tenants=tenants)
        self.lora = FakeLora(refuse={"b": RANK_ERROR})
        self.cache = SharedEngineCache()
        self.metrics = FakeMetrics()
        self.engine = engine

    def sync(self, minutes: float = 0) -> SharedSyncResult:
        return sync_shared_engine(
            self.engine,
            namespace=NS,
            kube=self.kube,
            lora=self.lora,
            metrics=self.metrics,
            cache=self.cache,
            operator_started_at=T0 - timedelta(hours=1),
            now=T0 + timedelta(minutes=minutes),
        )

    def adapter_loaded(self) -> dict[str, tuple[str, str]]:
        out = {}
        for (_, name), status in sorted(self.kube.tenant_status.items()):
            cond = next(c for c in status["conditions"] if c["type"] == "AdapterLoaded")
            out[name] = (cond["status"], cond["message"])
        return out


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(
        [
            _tenant("a"),
            _tenant("b", annotations={labels.WAKE_REQUESTED_AT: "2025-06-01T11:59:58Z"}),
            _tenant("c"),
            _tenant("other", model="other/model"),
        ]
    )


def test_a_wake_creates_the_fleet_and_names_it_on_every_tenant(fleet: Fleet) -> None:
    result = fleet.sync()

    assert fleet.kube.replicas(NS, DEPLOYMENT) == 1
    assert ("Service", NS, DEPLOYMENT) in fleet.kube.objects
    assert {k: v["engine"] for k, v in fleet.kube.tenant_status.items()} == {
        ("team", "a"): "llama-8b",
        ("team", "b"): "llama-8b",
        ("team", "c"): "llama-8b",
    }
    # The tenant's own daemon owns lastWakeHandled; the fleet keeps its own clock.
    assert all("lastWakeHandled" not in s for s in fleet.kube.tenant_status.values())
    assert result.status["tenants"] == 3
    assert fleet.lora.calls == []


def test_adapters_load_on_ready_replicas_and_a_refusal_is_one_tenants(fleet: Fleet) -> None:
    fleet.sync()
    fleet.kube.pods = [_pod("p0"), _pod("p1")]

    result = fleet.sync(minutes=1)

    assert fleet.lora.adapters == {"http://p0:8000": {"a", "c"}, "http://p1:8000": {"a", "c"}}
    assert fleet.adapter_loaded() == {
        "a": ("True", "loaded on 2 of 2 replicas"),
        "b": ("False", f"SharedEngine llama-8b: replica p0: {RANK_ERROR}"),
        "c": ("True", "loaded on 2 of 2 replicas"),
    }
    assert [(a["name"], a["loadedReplicas"]) for a in result.status["adapters"]] == [
        ("a", 2),
        ("b", 0),
        ("c", 2),
    ]
    assert result.status["ready"] == "2/1"


def test_a_second_sync_retries_only_the_refused_load(fleet: Fleet) -> None:
    fleet.sync()
    fleet.kube.pods = [_pod("p0"), _pod("p1")]
    fleet.sync(minutes=1)
    fleet.lora.calls.clear()
    fleet.lora.refuse.clear()

    fleet.sync(minutes=2)

    assert sorted(fleet.lora.calls) == [
        ("load", "http://p0:8000", "b"),
        ("load", "http://p1:8000", "b"),
    ]
    assert fleet.adapter_loaded()["b"] == ("True", "loaded on 2 of 2 replicas")


def test_a_tenant_that_leaves_has_its_adapter_unloaded(fleet: Fleet) -> None:
    fleet.sync()
    fleet.kube.pods = [_pod("p0")]
    fleet.sync(minutes=1)
    fleet.kube.tenants = [t for t in fleet.kube.tenants if t.name != "c"]
    fleet.lora.calls.clear()

    held_back = fleet.sync(minutes=2)
    # The record written a minute ago still names p0 for "c": the gateway may be routing on
    # it, so the unload waits one sync for the record just written (which no longer does).
    assert fleet.lora.adapters["http://p0:8000"] == {"a", "c"}
    assert held_back.requeue_after == timedelta(seconds=1)

    fleet.sync(minutes=2.02)

    assert ("unload", "http://p0:8000", "c") in fleet.lora.calls
    assert fleet.lora.adapters["http://p0:8000"] == {"a"}


def test_the_record_names_the_pods_each_adapter_is_loaded_on(fleet: Fleet) -> None:
    fleet.sync()
    fleet.kube.pods = [_pod("p0"), _pod("p1")]

    result = fleet.sync(minutes=1)

    assert {a["name"]: a["replicas"] for a in result.status["adapters"]} == {
        "a": ["p0", "p1"],
        "b": [],
        "c": ["p0", "p1"],
    }


WAKE = "2025-06-01T11:59:58.000Z"


def _woken(name: str, annotation: str, handled: str | None) -> InferenceDeployment:
    tenant = _tenant(name, annotations={labels.WAKE_REQUESTED_AT: annotation})
    status = tenant.status.model_copy(update={"last_wake_handled": handled})
    return tenant.model_copy(update={"status": status})


def test_a_wake_the_tenants_own_daemon_handled_first_still_wakes_the_fleet() -> None:
    """The tenant's daemon marks the wake handled (for its own replicas) before this sync."""
    fleet = Fleet([_woken("a", WAKE, WAKE)])

    fleet.sync()

    assert fleet.kube.replicas(NS, DEPLOYMENT) == 1
    assert fleet.kube.engine_status["llama-8b"]["lastActiveTime"] == "2025-06-01T12:00:00Z"


def test_a_sync_that_changes_nothing_on_a_tenant_patches_nothing() -> None:
    fleet = Fleet([_woken("a", WAKE, WAKE)])
    fleet.sync()
    written = fleet.kube.tenant_status["team", "a"]
    status = fleet.kube.tenants[0].status.model_validate(
        {**fleet.kube.tenants[0].status.model_dump(by_alias=True), **written}
    )
    fleet.kube.tenants = [fleet.kube.tenants[0].model_copy(update={"status": status})]
    fleet.kube.tenant_status.clear()

    fleet.sync(minutes=0.1)

    assert fleet.kube.tenant_status == {}


def test_a_missing_pool_writes_the_status_and_touches_nothing(fleet: Fleet) -> None:
    fleet.kube.pools = []

    result = fleet.sync()

    assert fleet.kube.applies == []
    assert fleet.lora.calls == []
    assert result.status["conditions"][0]["reason"] == "PoolNotFound"


def test_a_younger_engine_of_the_same_base_model_serves_nobody(fleet: Fleet) -> None:
    """An older SharedEngine declares the same base model: this one's fleet stays at zero, loads
    nothing, names itself on no tenant, and its Ready says which engine serves the model."""
    older = ENGINE.model_copy(
        update={"metadata": {"name": "base", "creationTimestamp": "2025-01-01T00:00:00Z"}}
    )
    younger = ENGINE.model_copy(
        update={"metadata": {**ENGINE.metadata, "creationTimestamp": "2025-06-01T00:00:00Z"}}
    )
    fleet.engine = younger
    fleet.kube.engines = [older, younger]

    result = fleet.sync()

    assert fleet.kube.replicas(NS, DEPLOYMENT) in (None, 0)
    assert fleet.lora.calls == []
    assert fleet.kube.tenant_status == {}
    ready = result.status["conditions"][0]
    assert (ready["reason"], ready["status"]) == ("BaseModelServedElsewhere", "False")
    assert "served by SharedEngine 'base'" in ready["message"]


@pytest.mark.parametrize(
    ("window", "replicas", "says"),
    [
        pytest.param(
            BUSY, 4, "3.0 adapters of 3 tenants at once", id="every-tenant-busy-needs-4-batches"
        ),
        pytest.param(
            NoData("gateway down"),
            1,
            "offered load of tenant team/a unknown: gateway down: sizing on the queue alone",
            id="counters-unread-the-queue-alone-holds-1",
        ),
    ],
)
def test_the_fleet_sizes_on_its_tenants_offered_load(
    window: Traffic | NoData, replicas: int, says: str
) -> None:
    """maxLoras 1 (maxCpuLoras 8: one replica holds every adapter) and three tenants, each with
    requests in flight all the time by the gateway's counters: each needs a batch of its own,
    ``ceil(3 / (1 x 56/64)) = 4`` replicas, though the replicas' queues read empty. The traffic
    is each tenant's own read (its placement window), as its own plan makes it."""
    engine = ENGINE.model_copy(
        update={
            "spec": ENGINE.spec.model_copy(update={"lora": LoraSpec(max_loras=1, max_cpu_loras=8)})
        }
    )
    fleet = Fleet(
        [
            _tenant("a"),
            _tenant("b", annotations={labels.WAKE_REQUESTED_AT: "2025-06-01T11:59:58Z"}),
            _tenant("c"),
        ],
        engine,
    )
    fleet.sync()
    fleet.kube.pods = [_pod("p0")]
    fleet.metrics.window = window

    result = fleet.sync(minutes=1)

    assert fleet.kube.replicas(NS, DEPLOYMENT) == replicas
    scaling = next(c for c in result.status["conditions"] if c["type"] == "Scaling")
    assert says in scaling["message"]
