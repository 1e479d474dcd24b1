"""Which engine pods cannot serve, and why, in the kubelet's and scheduler's own words.

The pods are the client's V1Pod objects as a list call returns them, shaped like what the
kubelet reports for each failure (`kubectl get pod -o yaml` of a crash loop, an image pull
error, an OOM kill, an unschedulable pod).
"""

from typing import Any

import pytest
from kubernetes import client

from tidepool.adapters.kube import observed_deployment, pod_problem, replica_failure
from tidepool.api import labels

C = client


def pod(
    *,
    state: Any = None,
    last_state: Any = None,
    conditions: list[Any] | None = None,
    restarts: int = 0,
    init: bool = False,
) -> client.V1Pod:
    statuses = []
    if state is not None or last_state is not None:
        statuses = [
            C.V1ContainerStatus(
                name="engine",
                image="vllm/vllm-openai:v0.11.0",
                image_id="",
                ready=False,
                restart_count=restarts,
                state=state or C.V1ContainerState(),
                last_state=last_state or C.V1ContainerState(),
            )
        ]
    return C.V1Pod(
        metadata=C.V1ObjectMeta(name="llama-shared-a100-7c9d-x2x4q", labels={labels.POOL: "a100"}),
        status=C.V1PodStatus(
            conditions=conditions,
            container_statuses=None if init else statuses,
            init_container_statuses=statuses if init else None,
        ),
    )


def waiting(reason: str, message: str = "") -> Any:
    return C.V1ContainerState(
        waiting=C.V1ContainerStateWaiting(reason=reason, message=message or None)
    )


def terminated(reason: str, code: int) -> Any:
    return C.V1ContainerState(
        terminated=C.V1ContainerStateTerminated(reason=reason, exit_code=code)
    )


UNSCHEDULED = [
    C.V1PodCondition(
        type="PodScheduled",
        status="False",
        reason="Unschedulable",
        message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
    )
]

CASES = [
    pytest.param(
        pod(state=waiting("CrashLoopBackOff"), last_state=terminated("Error", 1), restarts=5),
        "CrashLoopBackOff",
        "container engine keeps crashing (exit code 1, restarted 5 times)",
        id="crash-loop",
    ),
    pytest.param(
        pod(state=waiting("CrashLoopBackOff"), last_state=terminated("OOMKilled", 137), restarts=3),
        "OOMKilled",
        "container engine was killed for running out of memory (restarted 3 times)",
        id="oom-looping-says-oom",
    ),
    pytest.param(
        pod(state=terminated("OOMKilled", 137)),
        "OOMKilled",
        "killed for running out of memory",
        id="oom-just-now",
    ),
    pytest.param(
        pod(state=waiting("ImagePullBackOff", 'Back-off pulling image "vllm/vllm-openai"')),
        "ImagePullBackOff",
        'cannot pull vllm/vllm-openai:v0.11.0: Back-off pulling image "vllm/vllm-openai"',
        id="image-pull-back-off",
    ),
    pytest.param(
        pod(state=waiting("ErrImagePull", "manifest unknown")),
        "ImagePullBackOff",
        "manifest unknown",
        id="err-image-pull",
    ),
    pytest.param(
        pod(state=waiting("InvalidImageName"), init=True),
        "ImagePullBackOff",
        "cannot pull",
        id="init-container-bad-image",
    ),
    pytest.param(
        pod(state=waiting("CreateContainerConfigError", 'secret "hf-token" not found')),
        "CreateContainerConfigError",
        'container engine cannot start: secret "hf-token" not found',
        id="missing-secret",
    ),
    pytest.param(
        pod(
            state=waiting(
                "CreateContainerConfigError", "couldn't find key token in Secret team-a/hf"
            ),
            init=True,
        ),
        "CreateContainerConfigError",
        "couldn't find key token in Secret team-a/hf",
        id="init-container-missing-secret-key",
    ),
    pytest.param(
        pod(conditions=UNSCHEDULED),
        "Unschedulable",
        "4 Insufficient nvidia.com/gpu",
        id="unschedulable",
    ),
]


@pytest.mark.parametrize(("the_pod", "reason", "message"), CASES)
def test_pod_problem(the_pod: client.V1Pod, reason: str, message: str) -> None:
    problem = pod_problem(the_pod)
    assert problem is not None
    assert (problem.pod, problem.pool, problem.reason) == (
        "llama-shared-a100-7c9d-x2x4q",
        "a100",
        reason,
    )
    assert message in problem.message


@pytest.mark.parametrize(
    "the_pod",
    [
        pytest.param(pod(state=waiting("ContainerCreating")), id="starting"),
        pytest.param(pod(state=waiting("PodInitializing")), id="initializing"),
        pytest.param(
            pod(state=C.V1ContainerState(running=C.V1ContainerStateRunning()), restarts=1),
            id="running-after-one-restart",
        ),
        pytest.param(
            pod(
                state=C.V1ContainerState(running=C.V1ContainerStateRunning()),
                last_state=terminated("Error", 1),
            ),
            id="recovered-from-an-error",
        ),
        pytest.param(
            pod(
                state=C.V1ContainerState(running=C.V1ContainerStateRunning()),
                last_state=terminated("OOMKilled", 137),
            ),
            id="running-again-after-an-oom",
        ),
        pytest.param(pod(), id="no-status-yet"),
    ],
)
def test_no_problem(the_pod: client.V1Pod) -> None:
    assert pod_problem(the_pod) is None


#: The Deployment controller's copy of a ReplicaSet's FailedCreate (`kubectl get deploy -o yaml`
#: with a serviceAccountName that names no ServiceAccount).
NO_SERVICE_ACCOUNT = (
    'pods "llama-shared-a100-7c9d-" is forbidden: error looking up service account'
    ' team-a/engine: serviceaccount "engine" not found'
)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        pytest.param(
            [
                C.V1DeploymentCondition(type="Available", status="False"),
                C.V1DeploymentCondition(
                    type="ReplicaFailure",
                    status="True",
                    reason="FailedCreate",
                    message=NO_SERVICE_ACCOUNT,
                ),
            ],
            NO_SERVICE_ACCOUNT,
            id="missing-service-account",
        ),
        pytest.param(
            [C.V1DeploymentCondition(type="ReplicaFailure", status="False", message="ok now")],
            None,
            id="recovered",
        ),
        pytest.param(
            [C.V1DeploymentCondition(type="Progressing", status="True", reason="NewRSAvailable")],
            None,
            id="progressing",
        ),
        pytest.param(None, None, id="no-conditions-yet"),
    ],
)
def test_replica_failure(conditions: list[Any] | None, expected: str | None) -> None:
    assert replica_failure(C.V1DeploymentStatus(conditions=conditions)) == expected


def _deployment(args: list[str] | None, *, replicas: int, updated: int) -> Any:
    engine = C.V1Container(name="engine", image="vllm", args=args)
    sidecar = C.V1Container(name="log-shipper", image="x", args=["--scheduling-policy", "fcfs"])
    return C.V1Deployment(
        metadata=C.V1ObjectMeta(
            name="sheng-llama", generation=3, labels={"tidepool.dev/pool": "a"}
        ),
        spec=C.V1DeploymentSpec(
            replicas=2,
            selector=C.V1LabelSelector(),
            template=C.V1PodTemplateSpec(spec=C.V1PodSpec(containers=[sidecar, engine])),
        ),
        status=C.V1DeploymentStatus(
            observed_generation=3, replicas=replicas, updated_replicas=updated, ready_replicas=2
        ),
    )


@pytest.mark.parametrize(
    ("args", "replicas", "updated", "policy", "outdated"),
    [
        pytest.param(
            ["m", "--scheduling-policy", "priority"], 2, 2, "priority", 0, id="rolled-out"
        ),
        pytest.param(["m", "--scheduling-policy", "priority"], 3, 1, "priority", 2, id="rolling"),
        pytest.param(["m"], 2, 2, "fcfs", 0, id="vllms-default"),
        pytest.param(None, 2, 2, "fcfs", 0, id="no-args"),
    ],
)
def test_observed_deployment_reads_the_engines_scheduling_policy_and_old_replicas(
    args: list[str] | None, replicas: int, updated: int, policy: str, outdated: int
) -> None:
    """The engine container's own flags (not a sidecar's), and the pods of an older template
    still up (the status's replicas beyond its updated ones)."""
    dep = observed_deployment(_deployment(args, replicas=replicas, updated=updated))
    assert (dep.scheduling_policy, dep.outdated_replicas) == (policy, outdated)
