"""The pod backer plays the kubelet's part in deletion: a pod with nothing to drain goes at once.

CI once spent a whole minute waiting for an engine pod whose InferenceDeployment was deleted right
after the pod was bound: kwok had not started it yet, so no simulator backed it, and kwok then
waits out the grace period (600 s for an engine) before it deletes the pod.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from podbacker import PodBacker

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


class RecordingCore:
    """Stands in for CoreV1Api: records deletes (no server is reachable in a unit test)."""

    def __init__(self) -> None:
        self.deletes: list[tuple[str, str, client.V1DeleteOptions]] = []

    def delete_namespaced_pod(self, name: str, namespace: str, body: Any) -> None:
        self.deletes.append((namespace, name, body))


def deleted_pod(*, node: str | None, pod_ip: str | None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="engine-0",
            namespace="ns",
            uid="uid-1",
            labels={"tidepool.dev/component": "engine"},
            deletion_timestamp=datetime.now(UTC),
        ),
        spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name="engine")]),
        status=client.V1PodStatus(phase="Pending", pod_ip=pod_ip),
    )


@pytest.fixture
def backer(tmp_path: Path) -> tuple[PodBacker, RecordingCore]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    pb = PodBacker(kubeconfig, log_dir=tmp_path / "logs")
    core = RecordingCore()
    pb._core = core  # type: ignore[assignment]
    return pb, core


@pytest.mark.parametrize(
    ("node", "pod_ip", "force_deleted"),
    [
        ("gpu-0", None, True),  # bound, never started: nothing to drain
        ("gpu-0", "10.0.0.5", True),  # started, but this backer never ran it (restarted)
        (None, None, False),  # unbound: the API server removes it without a grace period
    ],
)
def test_a_deleted_pod_without_a_simulator_is_force_deleted_if_bound(
    backer: tuple[PodBacker, RecordingCore],
    node: str | None,
    pod_ip: str | None,
    force_deleted: bool,
) -> None:
    pb, core = backer
    pb._on_pod(deleted_pod(node=node, pod_ip=pod_ip))
    if not force_deleted:
        assert core.deletes == []
        return
    [(namespace, name, options)] = core.deletes
    assert (namespace, name) == ("ns", "engine-0")
    assert options.grace_period_seconds == 0
    assert options.preconditions.uid == "uid-1", "only this pod, never a successor of that name"


def test_a_stopped_backer_leaves_pods_alone(backer: tuple[PodBacker, RecordingCore]) -> None:
    pb, core = backer
    pb._stopped.set()
    pb._on_pod(deleted_pod(node="gpu-0", pod_ip=None))
    assert core.deletes == []
