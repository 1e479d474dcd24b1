"""Benchmark the control plane path on the real local cluster. Prints figures; asserts nothing.

1. apply -> pods bound: time from applying an InferenceDeployment (dedicated, 1 replica) to its
   engine pod being bound to a node; median over 10 CRs.
2. wake latency: time from the first request held at the gateway (model at zero replicas) to the
   engine Deployment's ``replicas`` being 1; median and p95 over 20 wakes. Anchors: KEDA polls
   every 30 s by default; Knative's activator pushes.
3. cold-start overhead: cold-request latency minus the simulator's configured model-load delay
   (the part Tidepool adds: wake, scheduling, readiness propagation, routing); median over the
   same 20 wakes.
4. operator memory and reconcile time: RSS idle (no CRs), then with 200 InferenceDeployments;
   time for all 200 to get a status (observedGeneration set) after a cold operator start.

Run: ``.venv/bin/python e2e/bench/bench_operator.py``. Loopback only.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from kubernetes import client, config

from tidepool.api.labels import INFERENCE_DEPLOYMENT, SIM_LOAD_DELAY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rows import pct

import localcluster
import stack
from podbacker import PodBacker
from prometheus import Prometheus
from traffic import gateway_knows, timed_wake
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
LOAD_DELAY_S = 2.0
GROUP, VERSION, PLURAL = "tidepool.dev", "v1alpha1", "inferencedeployments"


def infd(name: str, ns: str, **spec: object) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {SIM_LOAD_DELAY: f"{LOAD_DELAY_S}s"},
        },
        "spec": {"model": {"name": f"org/{name}", "servedName": f"{ns}-{name}"}, **spec},
    }


def main() -> int:
    bin_dir = localcluster.ensure_binaries()
    localcluster.reap_stale_clusters("tidepool-bench-")
    cluster = localcluster.Cluster("tidepool-bench", bin_dir=bin_dir)
    cluster.up()
    procs: list[stack.ManagedProcess] = []
    try:
        cluster.apply_crds(localcluster.CRDS_DIR)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "examples" / "gpupools.yaml"))
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core, crs = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for ns in ("bound", "wake", "scale"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        with (
            PodBacker(cluster.kubeconfig, default_load_delay=f"{LOAD_DELAY_S}s"),
            Prometheus(cluster.kubeconfig) as prom,
        ):
            port, metrics_port = stack.free_port(), stack.free_port()
            gw = stack.gateway(
                str(cluster.kubeconfig), port=port, metrics_port=metrics_port
            ).start()
            procs.append(gw)
            prom.set_targets("tidepool-gateway", [f"127.0.0.1:{metrics_port}"])
            op = stack.operator(str(cluster.kubeconfig), prom.url, tick=5.0).start()
            procs.append(op)
            url = f"http://127.0.0.1:{port}"
            time.sleep(2)
            idle_rss = stack.rss_mib(op.proc.pid)  # type: ignore[union-attr]

            # 1. apply -> bound
            bound: list[float] = []
            for i in range(10):
                name = f"b{i}"
                t0 = time.monotonic()
                crs.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    "bound",
                    PLURAL,
                    infd(name, "bound", mode="dedicated", scaling={"minReplicas": 1}),
                )
                wait_for(
                    lambda n=name: any(
                        p.spec.node_name
                        for p in core.list_namespaced_pod(
                            "bound", label_selector=f"{INFERENCE_DEPLOYMENT}={n}"
                        ).items
                    ),
                    timeout=60,
                    what=f"{name} bound",
                    interval=0.02,
                )
                bound.append(time.monotonic() - t0)
                crs.delete_namespaced_custom_object(GROUP, VERSION, "bound", PLURAL, name)

            # 2 + 3. wakes
            wakes: list[float] = []
            overhead: list[float] = []
            for i in range(20):
                name = f"w{i}"
                crs.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    "wake",
                    PLURAL,
                    infd(name, "wake", mode="serverless", scaling={"minReplicas": 0}),
                )
                gateway_knows(url, f"wake-{name}")
                dep = f"{name}-shared-a100"
                wake = timed_wake(
                    url, f"wake-{name}", lambda d=dep: stack.replicas_of(api, "wake", d)
                )
                wakes.append(wake.to_replicas)
                overhead.append(wake.whole - LOAD_DELAY_S)
                crs.delete_namespaced_custom_object(GROUP, VERSION, "wake", PLURAL, name)

            # 4. 200 CRs: RSS and time to reconcile all of them from a cold operator start
            op.stop()
            for i in range(200):
                crs.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    "scale",
                    PLURAL,
                    infd(f"s{i}", "scale", mode="serverless", scaling={"minReplicas": 0}),
                )
            t0 = time.monotonic()
            op = stack.operator(str(cluster.kubeconfig), prom.url, tick=5.0).start(timeout=60)
            procs.append(op)

            def all_reconciled() -> bool:
                items = crs.list_namespaced_custom_object(GROUP, VERSION, "scale", PLURAL)["items"]
                return len(items) == 200 and all(
                    i.get("status", {}).get("observedGeneration") == i["metadata"]["generation"]
                    for i in items
                )

            wait_for(all_reconciled, timeout=600, what="200 CRs reconciled", interval=0.5)
            reconcile_200 = time.monotonic() - t0
            time.sleep(15)  # steady state: every daemon ticking
            rss_200 = stack.rss_mib(op.proc.pid)  # type: ignore[union-attr]

        print("\n== bench_operator (real kube-apiserver, kwok nodes, loopback engines) ==")
        print(
            f"apply -> pod bound (10 CRs): median {statistics.median(bound):.3f}s, "
            f"max {max(bound):.3f}s"
        )
        print(
            f"wake latency (held request -> replicas=1, 20 wakes): median "
            f"{statistics.median(wakes):.3f}s, p95 {pct(wakes, 0.95):.3f}s "
            f"(KEDA default polling 30s)"
        )
        print(
            f"cold-start overhead (cold latency - {LOAD_DELAY_S:.0f}s load, 20 wakes): median "
            f"{statistics.median(overhead):.2f}s, p95 {pct(overhead, 0.95):.2f}s"
        )
        print(
            f"operator RSS: idle {idle_rss:.0f} MiB, with 200 InferenceDeployments "
            f"{rss_200:.0f} MiB"
        )
        print(f"reconcile 200 CRs from a cold operator start: {reconcile_200:.1f}s")
    finally:
        for proc in reversed(procs):
            proc.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
