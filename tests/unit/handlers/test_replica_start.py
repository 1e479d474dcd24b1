"""Every new engine replica's start is observed once, by phase, when its pod becomes Ready."""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kopf._core.intents.causes import WatchingCause

from tidepool.api import labels, names
from tidepool.handlers import replica_start
from tidepool.handlers.deps import MEMO_KEY, Deps, Telemetry

STARTED = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
TENANT_POD = labels.selector_labels("llama")
FLEET_POD = labels.shared_engine_selector_labels(names.shared_engine_label("llama-8b"))


class PulledEvents:
    """The one read the handler makes: when the kubelet reported the image pulled."""

    def __init__(self, pulled: datetime | None) -> None:
        self.pulled = pulled
        self.asked: list[tuple[str, str]] = []

    def image_pulled_at(self, namespace: str, pod: str) -> datetime | None:
        self.asked.append((namespace, pod))
        return self.pulled


def pod(
    *,
    created: str,
    scheduled: str,
    started: str,
    ready: str | None,
    pod_labels: dict[str, str] = TENANT_POD,
) -> kopf.Body:
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": ready})
    return kopf.Body(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "llama-shared-a100-7c9d-x2x4q",
                "namespace": "team-a",
                "creationTimestamp": created,
                "labels": pod_labels,
            },
            "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.11.0"}]},
            "status": {
                "conditions": conditions,
                "containerStatuses": [
                    {
                        "name": "engine",
                        "image": "vllm/vllm-openai:v0.11.0",
                        "imageID": "",
                        "ready": ready is not None,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        }
    )


def memo_with(kube: PulledEvents, executor: ThreadPoolExecutor) -> tuple[kopf.Memo, Telemetry]:
    telemetry = Telemetry()
    deps = Deps(
        kube=kube,  # type: ignore[arg-type]  # the one read the handler makes
        metrics=None,  # type: ignore[arg-type]
        started_at=STARTED,
        tick_seconds=5.0,
        max_concurrent_migrations=1,
        telemetry=telemetry,
        executor=executor,
    )
    memo = kopf.Memo()
    memo[MEMO_KEY] = deps
    return memo, telemetry


def observed(telemetry: Telemetry) -> dict[str, tuple[float, float]]:
    """phase -> (count, sum) of ``tidepool_replica_start_seconds``."""
    out: dict[str, list[float]] = {}
    for metric in telemetry.registry.collect():
        if metric.name != "tidepool_replica_start_seconds":
            continue
        for sample in metric.samples:
            phase = sample.labels["phase"]
            if sample.name.endswith("_count"):
                out.setdefault(phase, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                out.setdefault(phase, [0.0, 0.0])[1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def new_ready_pod(pod_labels: dict[str, str]) -> kopf.Body:
    return pod(
        created="2026-12-03T10:01:00Z",
        scheduled="2026-12-03T10:01:01Z",
        started="2026-12-03T10:01:32Z",
        ready="2026-12-03T10:02:02Z",
        pod_labels=pod_labels,
    )


@pytest.mark.parametrize(
    ("pod_labels", "calls"),
    [
        pytest.param(TENANT_POD, 1, id="tenant-engine"),
        pytest.param(FLEET_POD, 1, id="shared-engine-fleet"),
        pytest.param({labels.COMPONENT: labels.COMPONENT_ENGINE}, 0, id="engine-of-no-owner"),
    ],
)
def test_kopf_sends_tenant_and_fleet_engine_pods_to_the_handler_once(
    pod_labels: dict[str, str], calls: int
) -> None:
    """What Kopf's reactor does with a watch event: pick the watching handlers whose filters
    match (deduplicated, so a function registered twice runs once)."""
    body = new_ready_pod(pod_labels)
    cause = WatchingCause(
        logger=logging.getLogger(__name__),
        indices={},
        memo=kopf.Memo(),
        resource=kopf.Resource("", "v1", "pods", kind="Pod", namespaced=True),
        patch=kopf.Patch(),
        body=body,
        type="MODIFIED",
        event={"type": "MODIFIED", "object": dict(body)},
    )
    chosen = kopf.get_default_registry()._watching.get_handlers(cause=cause)
    assert [h.fn for h in chosen].count(replica_start.record_replica_start) == calls


@pytest.mark.parametrize("pod_labels", [TENANT_POD, FLEET_POD], ids=["tenant", "fleet"])
async def test_a_new_replica_is_observed_once_by_phase(pod_labels: dict[str, str]) -> None:
    body = new_ready_pod(pod_labels)
    kube = PulledEvents(datetime(2026, 12, 3, 10, 1, 31, tzinfo=UTC))
    with ThreadPoolExecutor(max_workers=1) as executor:
        memo, telemetry = memo_with(kube, executor)
        assert replica_start._ready_and_new(body=body, memo=memo)
        await replica_start.record_replica_start(body=body, memo=memo)
        assert not replica_start._ready_and_new(body=body, memo=memo)  # once per pod
    assert kube.asked == [("team-a", "llama-shared-a100-7c9d-x2x4q")]
    assert observed(telemetry) == {
        "scheduled": (1.0, 1.0),
        "imagePulled": (1.0, 30.0),
        "started": (1.0, 1.0),
        "ready": (1.0, 30.0),
        "total": (1.0, 62.0),
    }


@pytest.mark.parametrize(
    ("ready", "why"),
    [
        pytest.param("2026-12-03T09:59:00Z", "ready before this operator started", id="old-pod"),
        pytest.param(None, "not ready yet", id="not-ready"),
    ],
)
async def test_no_observation(ready: str | None, why: Any) -> None:
    body = pod(
        created="2026-12-03T09:58:00Z",
        scheduled="2026-12-03T09:58:01Z",
        started="2026-12-03T09:58:02Z",
        ready=ready,
    )
    with ThreadPoolExecutor(max_workers=1) as executor:
        memo, telemetry = memo_with(PulledEvents(None), executor)
        if replica_start._ready_and_new(body=body, memo=memo):
            await replica_start.record_replica_start(body=body, memo=memo)
    assert observed(telemetry) == {}, why
