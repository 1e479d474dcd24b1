"""The cold-start marks the operator reads: pod conditions and container start times, the
kubelet's Pulled Events, and the gateway's FirstResponseRouted Events.

``pod_timeline`` gets the client's V1Pod objects shaped like a kubelet's and like kwok's (no
image pull); the reads run the kubernetes client for real against a loopback HTTP server that
answers the pod and Event lists as the API server does, so the field selectors and the
client's (de)serialisation of Event times are what production uses.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from json_http import kube_api, send_json
from kubernetes import client

from tidepool.adapters import kube, wake
from tidepool.policy.cold_start import PodTimeline

C = client
T0 = datetime(2026, 9, 2, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _pod(conditions: dict[str, tuple[str, float]], started: list[float | None]) -> client.V1Pod:
    return C.V1Pod(
        metadata=C.V1ObjectMeta(name="llama-x2", creation_timestamp=at(0)),
        status=C.V1PodStatus(
            conditions=[
                C.V1PodCondition(type=t, status=s, last_transition_time=at(when))
                for t, (s, when) in conditions.items()
            ],
            container_statuses=[
                C.V1ContainerStatus(
                    name=f"c{i}",
                    image="vllm/vllm-openai:v0.11.0",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=C.V1ContainerState(
                        running=C.V1ContainerStateRunning(started_at=at(s))
                        if s is not None
                        else None,
                        waiting=C.V1ContainerStateWaiting(reason="ContainerCreating")
                        if s is None
                        else None,
                    ),
                )
                for i, s in enumerate(started)
            ],
        ),
    )


@pytest.mark.parametrize(
    ("pod", "pulled", "expected"),
    [
        pytest.param(
            _pod({"PodScheduled": ("True", 1), "Ready": ("True", 40)}, [31, 32]),
            at(30),
            PodTimeline("llama-x2", at(0), at(1), at(30), at(32), at(40)),
            id="kubelet-two-containers-started-when-both-run",
        ),
        pytest.param(
            _pod({"PodScheduled": ("True", 1), "Ready": ("False", 1)}, [2, None]),
            None,
            PodTimeline("llama-x2", at(0), at(1), None, None, None),
            id="one-container-still-creating",
        ),
        pytest.param(
            _pod({"PodScheduled": ("False", 1)}, []),
            None,
            PodTimeline("llama-x2", at(0)),
            id="unschedulable",
        ),
    ],
)
def test_pod_timeline(pod: client.V1Pod, pulled: datetime | None, expected: PodTimeline) -> None:
    assert kube.pod_timeline(pod, at(0), pulled) == expected


def _meta(name: str, created: datetime, **more: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "team", "creationTimestamp": _z(created), **more}


def _z(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


PODS = [
    {  # from before the cold start: not read
        "metadata": _meta("llama-old", at(-600), labels={}),
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    },
    {
        "metadata": _meta("llama-new", at(1)),
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _z(at(2))},
                {"type": "Ready", "status": "True", "lastTransitionTime": _z(at(9))},
            ],
            "containerStatuses": [
                {
                    "name": "engine",
                    "image": "vllm/vllm-openai:v0.11.0",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": _z(at(6))}},
                }
            ],
        },
    },
]
PULLED = {  # as the kubelet writes it (core/v1, no eventTime)
    "metadata": _meta("llama-new.1", at(5)),
    "involvedObject": {"kind": "Pod", "name": "llama-new", "namespace": "team"},
    "reason": "Pulled",
    "firstTimestamp": _z(at(5)),
    "lastTimestamp": _z(at(5)),
}


class ApiServer(BaseHTTPRequestHandler):
    selectors: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/version":
            send_json(self, 200, {"major": "1", "minor": "36", "gitVersion": "v1.36.3"})
        elif url.path == "/apis":
            send_json(self, 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif url.path == "/api/v1/namespaces/team/pods":
            send_json(self, 200, {"kind": "PodList", "apiVersion": "v1", "items": PODS})
        elif url.path == "/api/v1/namespaces/team/events":
            selector = query["fieldSelector"][0]
            self.selectors.append(selector)
            items = []
            if "reason=Pulled" in selector and "involvedObject.name=llama-new" in selector:
                items = [PULLED]
            elif f"reason={wake.FIRST_RESPONSE_REASON}" in selector:
                items = [
                    wake.first_response_event("team", "llama", at(-100), at(-99)),
                    wake.first_response_event("team", "llama", at(0), at(9.3)),
                    {**PULLED, "metadata": _meta("foreign", at(3))},  # no annotation: skipped
                ]
                for n, item in enumerate(items):
                    item["metadata"] |= {"name": f"e{n}", "creationTimestamp": _z(at(n))}
            send_json(self, 200, {"kind": "EventList", "apiVersion": "v1", "items": items})
        else:
            send_json(self, 404, {"kind": "Status", "apiVersion": "v1", "code": 404})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[kube.Kube]:
    ApiServer.selectors = []
    with kube_api(ApiServer, tmp_path) as api:
        yield kube.Kube(api)


def test_only_pods_created_since_the_wake_are_read_with_their_pulled_events(
    ops: kube.Kube,
) -> None:
    timelines = ops.pod_timelines("team", "llama", at(0.7))

    assert timelines == [PodTimeline("llama-new", at(1), at(2), at(5), at(6), at(9))]
    assert ApiServer.selectors == [
        "involvedObject.kind=Pod,involvedObject.name=llama-new,reason=Pulled"
    ]


def test_the_gateways_first_response_reports_are_read_by_their_annotation(
    ops: kube.Kube,
) -> None:
    assert ops.first_responses("team", "llama") == [at(-99), at(9.3)]
    assert ApiServer.selectors == [f"involvedObject.name=llama,reason={wake.FIRST_RESPONSE_REASON}"]
