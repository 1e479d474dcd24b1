"""Scale from zero on queue depth, through the real gateway, Prometheus and engine simulators."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fixtures_stack import Tidepool
from kubernetes import client
from tidepool_stack import (
    apply_infd,
    complete,
    condition,
    gateway_knows,
    get_infd,
    infd_manifest,
    wait_for,
)

import stack
from prometheus import Prometheus
from stack import replicas_of

pytestmark = pytest.mark.usefixtures("logs_on_failure")

SIM_LOAD = {"tidepool.dev/sim-load-delay": "2s"}


def _serverless(name: str, ns: str, **scaling: object) -> dict:
    body = infd_manifest(
        name,
        ns,
        mode="serverless",
        engine={"maxNumSeqs": 4},
        scaling={
            "minReplicas": 0,
            "maxReplicas": 4,
            "targetQueueDepth": 2,
            "scaleToZeroAfter": "8s",
            "scaleDownStabilization": "6s",
            **scaling,
        },
    )
    body["metadata"]["annotations"] = SIM_LOAD
    return body


def _serverless_at_zero(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, name: str
) -> None:
    """A serverless model the gateway knows, at zero replicas."""
    apply_infd(kube, _serverless(name, namespace))
    gateway_knows(tidepool.gateway_url, name)
    wait_for(
        lambda: replicas_of(kube, namespace, f"{name}-shared-a100") == 0,
        timeout=30,
        what="deployment at 0",
    )


def test_cold_request_at_zero_is_held_woken_and_answered(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    apply_infd(kube, _serverless("cold", namespace))
    gateway_knows(tidepool.gateway_url, "cold")
    dep = "cold-shared-a100"
    wait_for(lambda: replicas_of(kube, namespace, dep) == 0, timeout=30, what="deployment at 0")

    reply = complete(tidepool.gateway_url, "cold")

    assert reply.status == 200, reply.body
    assert reply.body["choices"][0]["text"]
    assert reply.body["usage"]["completion_tokens"] == 8
    assert reply.seconds >= 2.0, "the simulator's 2 s model load must have been waited for"
    assert replicas_of(kube, namespace, dep) == 1
    obj = get_infd(kube, namespace, "cold")
    assert obj["status"]["lastDecision"]["reason"] in {"ScaledFromZero", "WakeRequested"}


def test_a_cold_start_is_explained_by_phases_that_add_up_to_its_latency(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    starts = "tidepool_replica_start_seconds_count"
    starts_before = stack.metric_total(tidepool.operator, starts)
    _serverless_at_zero(kube, namespace, tidepool, "phases")

    reply = complete(tidepool.gateway_url, "phases")
    assert reply.status == 200, reply.body

    def completed() -> dict | None:
        cold = get_infd(kube, namespace, "phases").get("status", {}).get("coldStart") or {}
        return cold if cold.get("completedAt") else None

    cold = wait_for(completed, timeout=60, what="status.coldStart completed")
    phases = {p["name"]: p["seconds"] for p in cold["phases"]}
    names = list(phases)
    assert (names[0], names[-1]) == ("held", "routed"), cold
    # kwok's kubelet reports no image pull: its phase is folded into the next one, named so.
    assert "imagePulled" not in phases
    assert any("imagePulled+" in n for n in names), cold
    assert phases["ready"] >= 1.0, "the simulator's 2 s model load happens between start and Ready"
    assert sum(phases.values()) == pytest.approx(cold["totalSeconds"], abs=0.01)
    # From the held request to the first response routed is the latency the client saw.
    assert abs(cold["totalSeconds"] - reply.seconds) <= 0.1 * reply.seconds, (
        cold,
        reply.seconds,
    )
    # The replica's own start (creation to Ready) feeds the per-replica histogram too.
    wait_for(
        lambda: stack.metric_total(tidepool.operator, starts) > starts_before,
        timeout=30,
        what="the new replica's start observed in tidepool_replica_start_seconds",
    )


def test_a_burst_at_zero_is_all_answered(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    _serverless_at_zero(kube, namespace, tidepool, "burst")

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda _: complete(tidepool.gateway_url, "burst"), range(16)))

    assert [r.status for r in replies] == [200] * 16, [r.body for r in replies if r.status != 200]


def test_sustained_load_scales_out_then_back_in(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    apply_infd(kube, _serverless("load", namespace, minReplicas=1))
    dep = "load-shared-a100"
    wait_for(lambda: replicas_of(kube, namespace, dep) == 1, timeout=30, what="warm replica")
    peak = 1
    # 12 clients, long completions: queue ~12 / target 2 -> wants 6, capped at max 4.
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [
            pool.submit(complete, tidepool.gateway_url, "load", max_tokens=400) for _ in range(36)
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            peak = max(peak, replicas_of(kube, namespace, dep) or 0)
            time.sleep(0.5)
        statuses = [f.result().status for f in futures]

    assert statuses == [200] * 36
    assert peak >= 3, f"expected a scale-out under sustained load, peak was {peak}"
    # Idle now: back to the warm minimum after the 6 s stabilization window, never below it.
    wait_for(lambda: replicas_of(kube, namespace, dep) == 1, timeout=60, what="scale back in")
    time.sleep(12)  # longer than scaleToZeroAfter: minReplicas 1 holds
    assert replicas_of(kube, namespace, dep) == 1


def test_idle_serverless_goes_to_zero_after_the_window(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    apply_infd(kube, _serverless("idle", namespace))
    dep = "idle-shared-a100"
    gateway_knows(tidepool.gateway_url, "idle")
    sent = time.monotonic()
    assert complete(tidepool.gateway_url, "idle").status == 200
    assert replicas_of(kube, namespace, dep) == 1

    wait_for(lambda: replicas_of(kube, namespace, dep) == 0, timeout=60, what="scale to zero")

    # The idle window counts from the last demand, i.e. from the request itself.
    assert time.monotonic() - sent >= 8, "must not scale to zero before the idle window"
    obj = wait_for(
        lambda: (
            (o := get_infd(kube, namespace, "idle"))
            and condition(o, "Ready").get("reason") == "ScaledToZero"
            and o
        ),
        timeout=20,
        what="Ready reason ScaledToZero",
    )
    assert condition(obj, "Ready")["status"] == "True"


def test_prometheus_outage_holds_replicas_and_says_why(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, prometheus: Prometheus
) -> None:
    apply_infd(kube, _serverless("outage", namespace, scaleToZeroAfter="3s"))
    dep = "outage-shared-a100"
    gateway_knows(tidepool.gateway_url, "outage")
    assert complete(tidepool.gateway_url, "outage").status == 200
    prometheus.stop()
    try:
        obj = wait_for(
            lambda: (
                (o := get_infd(kube, namespace, "outage"))
                and condition(o, "MetricsAvailable").get("status") == "False"
                and o
            ),
            timeout=30,
            what="MetricsAvailable=False",
        )
        time.sleep(8)  # well past scaleToZeroAfter
        assert replicas_of(kube, namespace, dep) == 1, "an outage must never scale to zero"
        cond = condition(obj, "MetricsAvailable")
        assert cond["reason"] == "MetricsUnknown"
        assert "prometheus unreachable" in cond["message"]
        assert get_infd(kube, namespace, "outage")["status"].get("queueDepth") is None
    finally:
        prometheus.start()
    wait_for(
        lambda: (
            condition(get_infd(kube, namespace, "outage"), "MetricsAvailable").get("status")
            == "True"
        ),
        timeout=60,
        what="metrics available again",
    )


def test_gateway_refuses_unknown_models_with_404(tidepool: Tidepool) -> None:
    reply = complete(tidepool.gateway_url, "no-such-model")

    assert reply.status == 404
    assert reply.body["error"]["code"] == "model_not_found"
    assert "no-such-model" in reply.body["error"]["message"]


def test_gateway_answers_503_when_the_deadline_passes(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, cluster: object
) -> None:
    body = _serverless("slow", namespace)
    body["metadata"]["annotations"] = {"tidepool.dev/sim-load-delay": "30s"}
    apply_infd(kube, body)
    impatient = stack.gateway(tidepool.kubeconfig, queue_timeout="2s").start()
    try:
        wait_for(
            lambda: replicas_of(kube, namespace, "slow-shared-a100") == 0,
            timeout=30,
            what="deployment at 0",
        )
        url = impatient.health_url.rsplit("/", 1)[0] if impatient.health_url else ""
        gateway_knows(url, "slow")
        reply = complete(url, "slow")
    finally:
        impatient.stop()

    assert reply.status == 503
    assert reply.body["error"]["type"]
    assert 2.0 <= reply.seconds < 10
