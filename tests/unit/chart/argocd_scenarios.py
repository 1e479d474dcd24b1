"""Argo CD health testdata written by the operator's own code, not by hand.

Each InferenceDeployment scenario runs the real reconcile loop (``tidepool.reconcile.inference``
with the plan, against the fakes of tests/unit/reconcile) and records the object with the
status it wrote; pod problems come from ``adapters.kube.pod_problem`` on pods shaped as the
kubelet reports them. So the health check is tested against the reasons and messages the
operator really writes, and a change to them shows up as stale testdata.

Regenerate after such a change: ``.venv/bin/python tests/unit/chart/argocd_scenarios.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parents[1]
for extra in (TESTS, TESTS / "unit" / "reconcile"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import yaml  # noqa: E402
from kubernetes import client  # noqa: E402
from reconcile_harness import DEDICATED, SHARED, Harness, dep, pool  # noqa: E402

from tidepool.adapters.kube import pod_problem  # noqa: E402
from tidepool.api import labels  # noqa: E402

REPO = HERE.parents[2]
CUSTOMIZATIONS = (
    REPO / "charts" / "tidepool" / "argocd" / "resource_customizations" / "tidepool.dev"
)
TESTDATA = CUSTOMIZATIONS / "InferenceDeployment" / "testdata"

JSON = dict[str, Any]
SERVERLESS: JSON = {"mode": "serverless"}
DEDICATED_1: JSON = {"mode": "dedicated", "scaling": {"minReplicas": 1, "maxReplicas": 2}}


def _object(h: Harness) -> JSON:
    obj: JSON = h.infd.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def _engine_pod(
    waiting: str = "", last: str = "", exit_code: int = 1, message: str | None = None
) -> client.V1Pod:
    """A dedicated engine pod as the kubelet reports it (see tests/unit/adapters)."""
    state = client.V1ContainerState(
        waiting=client.V1ContainerStateWaiting(reason=waiting, message=message) if waiting else None
    )
    last_state = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(reason=last, exit_code=exit_code)
        if last
        else None
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"{dep(DEDICATED)}-5d8f7-kx2lp", labels={labels.POOL: DEDICATED}
        ),
        status=client.V1PodStatus(
            container_statuses=[
                client.V1ContainerStatus(
                    name="engine",
                    image="vllm/vllm-openai:v0.11.0",
                    image_id="",
                    ready=False,
                    restart_count=4,
                    state=state,
                    last_state=last_state,
                )
            ]
        ),
    )


def _unschedulable_pod() -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"{dep(DEDICATED)}-5d8f7-kx2lp", labels={labels.POOL: DEDICATED}
        ),
        status=client.V1PodStatus(
            conditions=[
                client.V1PodCondition(
                    type="PodScheduled",
                    status="False",
                    reason="Unschedulable",
                    message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                )
            ]
        ),
    )


def _failing(the_pod: client.V1Pod) -> Callable[[], JSON]:
    def scenario() -> JSON:
        h = Harness(DEDICATED_1)
        h.sync()
        problem = pod_problem(the_pod)
        assert problem is not None
        h.kube.problems = [problem]
        h.sync(advance=30)
        return _object(h)

    return scenario


def replica_failure() -> JSON:
    """The ReplicaSet cannot create pods: ``serviceAccountName`` names no ServiceAccount (the
    message is the one the Deployment controller copies from the ReplicaSet)."""
    h = Harness(DEDICATED_1)
    h.sync()
    h.kube.replica_failures[dep(DEDICATED)] = (
        f'pods "{dep(DEDICATED)}-5d8f7-" is forbidden: error looking up service account'
        ' default/engine: serviceaccount "engine" not found'
    )
    h.sync(advance=30)
    return _object(h)


def ready() -> JSON:
    h = Harness(DEDICATED_1)
    h.sync()
    h.kube.make_ready()
    h.sync(advance=30)
    return _object(h)


def scaled_to_zero() -> JSON:
    h = Harness(SERVERLESS)
    h.sync()
    return _object(h)


def waiting_for_replicas() -> JSON:
    h = Harness(DEDICATED_1)
    h.sync()
    return _object(h)


def pool_not_found() -> JSON:
    h = Harness(DEDICATED_1)
    h.kube.pools = [pool(SHARED, "shared")]
    h.sync()
    return _object(h)


def deleting() -> JSON:
    obj = ready()
    obj["metadata"]["deletionTimestamp"] = "2025-06-01T12:05:00Z"
    obj["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    return obj


#: testdata file stem -> scenario
SCENARIOS: dict[str, Callable[[], JSON]] = {
    "ready": ready,
    "scaled-to-zero": scaled_to_zero,
    "waiting-for-replicas": waiting_for_replicas,
    "pool-not-found": pool_not_found,
    "crash-loop": _failing(_engine_pod("CrashLoopBackOff", "Error", 1)),
    "image-pull-back-off": _failing(_engine_pod("ImagePullBackOff")),
    "oom-killed": _failing(_engine_pod("CrashLoopBackOff", "OOMKilled", 137)),
    "unschedulable": _failing(_unschedulable_pod()),
    "create-container-config-error": _failing(
        _engine_pod("CreateContainerConfigError", message='secret "hf-token" not found')
    ),
    "replica-failure": replica_failure,
    "deleting": deleting,
}


def render(obj: JSON) -> str:
    return (
        "# Generated by tests/unit/chart/argocd_scenarios.py from the operator's reconcile loop."
        " Do not edit.\n" + yaml.safe_dump(obj, sort_keys=False, width=100)
    )


def main() -> None:
    TESTDATA.mkdir(parents=True, exist_ok=True)
    for name, scenario in SCENARIOS.items():
        (TESTDATA / f"{name}.yaml").write_text(render(scenario()))
        print(f"wrote {TESTDATA / name}.yaml")


if __name__ == "__main__":
    main()
