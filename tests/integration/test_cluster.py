"""The local control plane behaves like the GPU cluster Tidepool will meet.

Why these tests: every other integration test builds on these properties (real scheduling of
``nvidia.com/gpu``, pool taints, loopback pod IPs, readiness that follows a real process), so a
regression here must fail loudly and first, not as a confusing operator-test timeout.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import threading
import time
import urllib.error
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import localcluster
from podbacker import PodBacker, probe_health, sim_args
from prometheus import Prometheus
from tidepool.api import labels

pytestmark = pytest.mark.cluster

GPU = "nvidia.com/gpu"
GPU_TOLERATION = client.V1Toleration(key=GPU, operator="Exists", effect="NoSchedule")
DEDICATED_TOLERATION = client.V1Toleration(
    key="tidepool.dev/tenancy", operator="Equal", value="dedicated", effect="NoSchedule"
)


def gpu_container(name: str = "engine", gpus: int = 1) -> client.V1Container:
    return client.V1Container(
        name=name,
        image="tidepool/engine-sim:test",
        ports=[client.V1ContainerPort(name="http", container_port=8000)],
        resources=client.V1ResourceRequirements(limits={GPU: str(gpus)}),
    )


def engine_pod(
    name: str, *, model: str = "test-model", load_delay: str = "2s", grace: int = 30
) -> client.V1Pod:
    """An engine pod as the operator renders one: labels the backer and Prometheus key on."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={
                labels.COMPONENT: labels.COMPONENT_ENGINE,
                labels.SERVED_MODEL: model,
                labels.POOL: "shared-a100",
                labels.INFERENCE_DEPLOYMENT: "it-test",
            },
            annotations={labels.SIM_LOAD_DELAY: load_delay},
        ),
        spec=client.V1PodSpec(
            node_selector={"tidepool.dev/pool": "shared-a100"},
            tolerations=[GPU_TOLERATION],
            termination_grace_period_seconds=grace,
            containers=[gpu_container()],
        ),
    )


def condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    return next((c for c in (pod.status.conditions or []) if c.type == kind), None)


def is_ready(pod: client.V1Pod) -> bool:
    c = condition(pod, "Ready")
    return c is not None and c.status == "True"


def test_control_plane_answers(cluster: localcluster.Cluster, kube: client.ApiClient) -> None:
    version = client.VersionApi(kube).get_code()
    assert version.git_version == "v1.36.3"
    assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
    # Every component listens on loopback only, and kwokctl would download nothing.
    assert "127.0.0.1" in cluster.kubeconfig.read_text()
    cluster.check_offline()


def test_fake_gpu_nodes_match_the_pool_table(
    cluster: localcluster.Cluster, kube: client.ApiClient
) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube).list_node().items}
    expected = localcluster.default_nodes(slot=cluster.slot)
    assert {n.name for n in expected} <= set(nodes)
    for want in expected:
        node = nodes[want.name]
        node_labels = node.metadata.labels
        assert node.status.capacity[GPU] == "8"
        assert node.status.allocatable[GPU] == "8"
        assert node_labels["tidepool.dev/pool"] == want.pool
        assert node_labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
        assert node_labels["nvidia.com/gpu.count"] == "8"
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints}
        assert (GPU, "present", "NoSchedule") in taints
        dedicated = ("tidepool.dev/tenancy", "dedicated", "NoSchedule") in taints
        assert dedicated == (want.pool == "dedicated-a100")
        cidr = ipaddress.ip_network(node.spec.pod_cidr)
        assert cidr.subnet_of(ipaddress.ip_network("127.0.0.0/8"))
        assert not cidr.overlaps(ipaddress.ip_network("127.0.0.0/16"))
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    pools = {n.pool for n in expected}
    assert pools == {"shared-a100", "dedicated-a100"}
    assert sum(1 for n in expected if n.pool == "dedicated-a100") == 2


def test_deployment_lands_on_its_pools_node(kube: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    probe_labels = {"app": "dedicated-probe"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="dedicated-probe"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=probe_labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=probe_labels),
                spec=client.V1PodSpec(
                    node_selector={"tidepool.dev/pool": "dedicated-a100"},
                    tolerations=[GPU_TOLERATION, DEDICATED_TOLERATION],
                    containers=[gpu_container("main")],
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)

    def ready_pods() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=dedicated-probe").items
        return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

    pods = localcluster.wait_for(ready_pods, timeout=30, what="2 Ready pods")
    for pod in pods:
        assert pod.spec.node_name.startswith("gpu-dedicated-a100-")
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network("127.20.0.0/16")
    localcluster.wait_for(
        lambda: (
            apps.read_namespaced_deployment("dedicated-probe", namespace).status.available_replicas
            == 2
        ),
        timeout=30,
        what="Deployment available",
    )


def test_pod_without_the_dedicated_toleration_stays_off_dedicated_nodes(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="intruder"),
        spec=client.V1PodSpec(
            node_selector={"tidepool.dev/pool": "dedicated-a100"},
            tolerations=[GPU_TOLERATION],
            containers=[gpu_container("main")],
        ),
    )
    core.create_namespaced_pod(namespace, pod)
    scheduled = localcluster.wait_for(
        lambda: condition(core.read_namespaced_pod("intruder", namespace), "PodScheduled"),
        timeout=30,
        what="a scheduling decision",
    )
    assert scheduled.status == "False"
    assert "untolerated taint" in scheduled.message


def test_ninth_single_gpu_pod_on_a_full_node_stays_pending(
    cluster: localcluster.Cluster, kube: client.ApiClient, namespace: str
) -> None:
    # A node of our own (the table is data; tests may add nodes), so no other test's pods
    # share its 8 GPUs.
    node = dataclasses.replace(cluster.gpu_node("shared-a100", 9), extra_labels={"test": namespace})
    cluster.add_node(node)
    core = client.CoreV1Api(kube)
    try:
        for i in range(9):
            pod = client.V1Pod(
                metadata=client.V1ObjectMeta(name=f"gpu-{i}", labels={"app": "fill"}),
                spec=client.V1PodSpec(
                    node_selector={"test": namespace},
                    tolerations=[GPU_TOLERATION],
                    containers=[gpu_container("main")],
                ),
            )
            core.create_namespaced_pod(namespace, pod)

        def settled() -> list[client.V1Pod] | None:
            pods = core.list_namespaced_pod(namespace, label_selector="app=fill").items
            running = [p for p in pods if p.status.phase == "Running"]
            refused = [
                p
                for p in pods
                if (c := condition(p, "PodScheduled")) is not None and c.status == "False"
            ]
            return pods if len(running) == 8 and len(refused) == 1 else None

        pods = localcluster.wait_for(settled, timeout=30, what="8 Running + 1 unschedulable")
        pending = next(p for p in pods if p.status.phase == "Pending")
        message = condition(pending, "PodScheduled").message
        assert f"Insufficient {GPU}" in message
        assert all(p.spec.node_name == node.name for p in pods if p.status.phase == "Running")
        # Still Pending a little later: capacity, not a slow scheduler.
        time.sleep(1)
        assert core.read_namespaced_pod(pending.metadata.name, namespace).status.phase == "Pending"
    finally:
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        cluster.remove_node(node.name)


def test_engine_pod_gets_a_loopback_ip_and_is_ready_only_when_the_simulator_is_healthy(
    kube: client.ApiClient, namespace: str, podbacker: PodBacker
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, engine_pod("engine-0", load_delay="4s"))

    def started() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("engine-0", namespace)
        return pod if pod.status.pod_ip else None

    pod = started_pod = localcluster.wait_for(started, timeout=30, what="a pod IP")
    ip = ipaddress.ip_address(pod.status.pod_ip)
    node = core.read_node(pod.spec.node_name)
    assert ip.is_loopback
    assert ip in ipaddress.ip_network(node.spec.pod_cidr)
    assert pod.status.phase == "Running"
    assert not is_ready(started_pod)

    # While the model "loads", the simulator answers /health with 503 and the pod is not Ready.
    localcluster.wait_for(
        lambda: podbacker.process_of(namespace, "engine-0"), timeout=10, what="simulator"
    )
    saw_unready_while_loading = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        healthy = probe_health(str(ip), 8000)
        pod = core.read_namespaced_pod("engine-0", namespace)
        if is_ready(pod):
            break
        if not healthy:
            saw_unready_while_loading = True
        time.sleep(0.2)
    assert is_ready(pod), podbacker.log_of(namespace, "engine-0")
    assert saw_unready_while_loading
    assert probe_health(str(ip), 8000)
    assert all(s.ready for s in pod.status.container_statuses)
    ready_at = condition(pod, "Ready").last_transition_time
    loaded_after = (ready_at - pod.status.start_time).total_seconds()
    assert loaded_after >= 3, f"Ready {loaded_after}s after start; load delay is 4s"

    # Deleting the pod stops the simulator (SIGTERM) and the pod goes away long before its
    # 30s grace period: the backer finishes the delete once the simulator has exited.
    t0 = time.monotonic()
    core.delete_namespaced_pod("engine-0", namespace)
    localcluster.wait_for(
        lambda: _gone(core, namespace, "engine-0"), timeout=15, what="pod deletion"
    )
    assert time.monotonic() - t0 < 15
    assert not probe_health(str(ip), 8000)


def _gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        return exc.status == 404
    return False


def _stream_completion(host: str, model: str, result: dict[str, Any]) -> None:
    """One streaming request (~2s of tokens); records whether the stream ended properly."""
    conn = http.client.HTTPConnection(host, 8000, timeout=30)
    try:
        body = {"model": model, "prompt": "hello", "max_tokens": 100, "stream": True}
        conn.request(
            "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        result["status"] = resp.status
        result["body"] = resp.read().decode()
        result["done_at"] = time.monotonic()
    except (OSError, http.client.HTTPException) as exc:
        result["error"] = repr(exc)
    finally:
        conn.close()


def test_deleting_an_engine_pod_drains_in_flight_requests(
    kube: client.ApiClient, namespace: str, podbacker: PodBacker
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, engine_pod("engine-drain", load_delay="1s"))
    pod = localcluster.wait_for(
        lambda: (p := core.read_namespaced_pod("engine-drain", namespace)) and is_ready(p) and p,
        timeout=30,
        what="engine pod Ready",
    )
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=_stream_completion, args=(pod.status.pod_ip, "test-model", result)
    )
    worker.start()
    time.sleep(0.5)  # the request is in flight
    core.delete_namespaced_pod("engine-drain", namespace)
    localcluster.wait_for(
        lambda: _gone(core, namespace, "engine-drain"), timeout=30, what="pod deletion"
    )
    gone_at = time.monotonic()
    worker.join(timeout=30)
    assert "error" not in result, result
    assert result["status"] == 200
    assert "[DONE]" in result["body"], result["body"][-300:]
    assert result["done_at"] <= gone_at, "the pod vanished before its last request finished"


def test_a_crashed_simulator_is_restarted_and_readiness_follows(
    kube: client.ApiClient, namespace: str, podbacker: PodBacker
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, engine_pod("engine-crash", load_delay="2s"))
    localcluster.wait_for(
        lambda: is_ready(core.read_namespaced_pod("engine-crash", namespace)),
        timeout=30,
        what="engine pod Ready",
    )
    process = podbacker.process_of(namespace, "engine-crash")
    assert process is not None
    process.kill()
    pod = localcluster.wait_for(
        lambda: (
            (p := core.read_namespaced_pod("engine-crash", namespace)) and not is_ready(p) and p
        ),
        timeout=10,
        what="Ready=False after the crash",
    )
    assert pod.status.container_statuses[0].restart_count == 1
    localcluster.wait_for(
        lambda: is_ready(core.read_namespaced_pod("engine-crash", namespace)),
        timeout=30,
        what="Ready again after the restart",
    )


def test_prometheus_scrapes_engine_pods_and_can_be_stopped(
    kube: client.ApiClient, namespace: str, podbacker: PodBacker, prometheus: Prometheus
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, engine_pod("engine-metrics", load_delay="1s"))
    series = prometheus.wait_for_query(
        f'vllm:num_requests_running{{namespace="{namespace}"}}', timeout=30
    )
    metric = series[0]["metric"]
    assert metric["pod"] == "engine-metrics"
    assert metric["pool"] == "shared-a100"
    assert metric["inference_deployment"] == "it-test"
    assert metric["served_model"] == "test-model"
    assert ipaddress.ip_address(metric["instance"].rsplit(":", 1)[0]).is_loopback

    prometheus.stop()
    with pytest.raises(urllib.error.URLError):
        prometheus.query("up")
    prometheus.start()
    assert prometheus.wait_for_query(f'up{{namespace="{namespace}"}} == 1', timeout=20)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--model", "m", "--enable-lora", "--max-loras", "4", "--max-num-seqs", "64"],
            ("--enable-lora", "--max-loras", "4"),
            id="shared-engine-flags-only",
        ),
        pytest.param(
            ["--enable-lora", "--lora-modules", "bot=/a/bot", "--max-lora-rank", "16"],
            ("--enable-lora", "--lora-modules", "bot=/a/bot", "--max-lora-rank", "16"),
            id="promoted-tenant-adapter",
        ),
        pytest.param(["--model", "m", "--max-num-seqs", "64"], (), id="no-lora"),
        pytest.param(
            ["--model", "m", "--scheduling-policy", "priority", "--max-num-seqs", "64"],
            ("--scheduling-policy", "priority"),
            id="vllm-scheduling-policy",
        ),
        pytest.param(
            ["--enable-lora", "--scheduling-policy", "fcfs", "--max-loras", "2"],
            ("--enable-lora", "--scheduling-policy", "fcfs", "--max-loras", "2"),
            id="policy-among-lora-flags-in-order",
        ),
    ],
)
def test_the_backer_passes_a_pods_sim_flags_to_its_simulator(
    args: list[str], expected: tuple[str, ...]
) -> None:
    assert sim_args(args) == expected
