"""``make demo``: Tidepool end to end on a local control plane, in about four minutes.

It builds (or reuses) the Kubernetes binaries, starts a real control plane with fake GPU nodes,
Prometheus, the pod backer (real engine simulators behind engine pods), the gateway and the
operator, then shows:

1. scale from zero: a request to a model at zero replicas is held, the model wakes, it answers;
2. the warm minimum: a dedicated model keeps one replica with no traffic at all;
3. scale out under a burst, on queue depth;
4. a pool move: an ``auto`` tenant under load is promoted from the shared pool to dedicated GPUs
   (make-before-break), with every request answered;
5. LoRA fine-tunes sharing one engine fleet (a ``SharedEngine``): the busiest, ``auto``, is
   promoted to replicas of its own (its base model with its adapter), every request answered;
6. the idle serverless model going back to zero.

``--keep`` leaves everything running and prints how to reach it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config

import localcluster
import stack
from podbacker import PodBacker
from prometheus import Prometheus
from traffic import TrafficLoop, complete, gateway_knows
from waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
NS = "demo"
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"

#: The auto tenant's pools: laptop-scale prices, so a few clients cross the break-even.
LAPTOP_POOLS = REPO / "e2e" / "cluster" / "laptop-priced-pools.yaml"

MODELS = f"""
apiVersion: tidepool.dev/v1alpha1
kind: InferenceDeployment
metadata:
  name: chat
  namespace: {NS}
  annotations: {{tidepool.dev/sim-load-delay: 4s}}
spec:
  model: {{name: meta-llama/Llama-3.1-8B-Instruct, servedName: chat}}
  engine: {{maxNumSeqs: 4}}
  mode: serverless
  scaling: {{minReplicas: 0, maxReplicas: 4, targetQueueDepth: 2, scaleToZeroAfter: 30s,
            scaleDownStabilization: 10s}}
---
apiVersion: tidepool.dev/v1alpha1
kind: InferenceDeployment
metadata:
  name: search
  namespace: {NS}
  annotations: {{tidepool.dev/sim-load-delay: 4s}}
spec:
  model: {{name: Qwen/Qwen2.5-32B-Instruct, servedName: search}}
  engine: {{gpusPerReplica: 2}}
  mode: dedicated
  tenant: team-search
  scaling: {{minReplicas: 1, maxReplicas: 3}}
---
apiVersion: tidepool.dev/v1alpha1
kind: InferenceDeployment
metadata:
  name: support
  namespace: {NS}
  annotations: {{tidepool.dev/sim-load-delay: 4s}}
spec:
  model: {{name: meta-llama/Llama-3.1-8B-Instruct, servedName: support}}
  engine: {{maxNumSeqs: 4}}
  mode: auto
  tenant: team-support
  scaling: {{minReplicas: 1, maxReplicas: 2, targetQueueDepth: 4}}
  placement:
    window: 15s
    minDwell: 20s
    pools: {{shared: laptop-shared, dedicated: laptop-dedicated}}
"""

#: Four LoRA fine-tunes of one base model on one fleet (laptop prices, as for 'support').
FINE_TUNES = ("bot-a", "bot-b", "bot-c", "bot-busy")
LORA = """
apiVersion: tidepool.dev/v1alpha1
kind: SharedEngine
metadata: {name: llama-8b-lora}
spec:
  model: {name: meta-llama/Llama-3.1-8B-Instruct}
  pool: laptop-shared
  scaling: {minReplicas: 1, maxReplicas: 2}
  lora: {maxLoras: 4, maxLoraRank: 16}
  # What one replica of the engine simulator serves (20 ms a token), not an A100's thousands
  # of tokens/s: bot-busy then outgrows the warm replica, and the capacity it forces the
  # fleet to add costs more than a laptop-dedicated replica of its own.
  engine: {capacity: {prefillTokensPerSecond: 5000, decodeTokensPerSecond: 120}}
""" + "".join(
    f"""---
apiVersion: tidepool.dev/v1alpha1
kind: InferenceDeployment
metadata: {{name: {bot}, namespace: {NS}, annotations: {{tidepool.dev/sim-load-delay: 4s}}}}
spec:
  model:
    name: meta-llama/Llama-3.1-8B-Instruct
    servedName: {bot}
    adapter: {{name: {bot}-lora, source: /models/adapters/{bot}}}
  engine: {{maxNumSeqs: 4}}
  mode: {"auto" if bot == "bot-busy" else "serverless"}
  scaling: {{minReplicas: 0, maxReplicas: 2, targetQueueDepth: 4}}
  placement:
    window: 15s
    minDwell: 20s
    pools: {{shared: laptop-shared, dedicated: laptop-dedicated}}
"""
    for bot in FINE_TUNES
)


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def note(text: str) -> None:
    print(f"    {text}", flush=True)


def show(cluster: localcluster.Cluster, wide: bool = False) -> None:
    args = ["get", "infd", "-n", NS] + (["-o", "wide"] if wide else [])
    out = cluster.kubectl(*args).stdout
    print(DIM + "    $ kubectl " + " ".join(args) + RESET)
    for line in out.rstrip().splitlines():
        print("    " + line)


def replicas(apps: client.AppsV1Api, name: str) -> int:
    try:
        return int(apps.read_namespaced_deployment(name, NS).spec.replicas or 0)
    except client.ApiException:
        return -1


def status(api: client.CustomObjectsApi, name: str) -> dict:
    obj = api.get_namespaced_custom_object(
        "tidepool.dev", "v1alpha1", NS, "inferencedeployments", name
    )
    return dict(obj.get("status", {}))


def cold_start_line(cold: dict) -> str:
    """``status.coldStart`` in one line: each phase's seconds, then their total."""
    phases = ", ".join(f"{p['name']} {p['seconds']:.2f}s" for p in cold.get("phases", []))
    return f"{phases}; total {cold.get('totalSeconds', 0):.2f}s"


def run(keep: bool, name: str) -> int:
    started = time.monotonic()
    step("1/8 Kubernetes binaries (built once from the Go module proxy, then cached)")
    bin_dir = localcluster.ensure_binaries()
    note(f"binaries in {bin_dir}")

    step("2/8 local control plane: etcd, kube-apiserver, scheduler, controller-manager, kwok GPUs")
    localcluster.reap_stale_clusters(f"{name}-")
    cluster = localcluster.Cluster(name, bin_dir=bin_dir)
    cluster.up()
    procs: list[stack.ManagedProcess] = []
    try:
        cluster.apply_crds(localcluster.CRDS_DIR)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "examples" / "gpupools.yaml"))
        cluster.kubectl("apply", "--server-side", "-f", str(LAPTOP_POOLS))
        cluster.kubectl("create", "namespace", NS)
        note(
            cluster.kubectl(
                "get", "nodes", "-L", "tidepool.dev/pool,nvidia.com/gpu.product"
            ).stdout.replace("\n", "\n    ")
        )
        note(cluster.kubectl("get", "gpupools").stdout.replace("\n", "\n    "))

        step("3/8 Prometheus, engine simulators behind pods, gateway and operator")
        api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        apps = client.AppsV1Api(api_client)
        crs = client.CustomObjectsApi(api_client)
        with (
            PodBacker(cluster.kubeconfig, default_load_delay="4s"),
            Prometheus(cluster.kubeconfig) as prom,
        ):
            port, metrics_port = stack.free_port(), stack.free_port()
            gw = stack.gateway(
                str(cluster.kubeconfig), port=port, metrics_port=metrics_port, queue_timeout="120s"
            ).start()
            procs.append(gw)
            prom.set_targets("tidepool-gateway", [f"127.0.0.1:{metrics_port}"])
            op = stack.operator(str(cluster.kubeconfig), prom.url, tick=1.0).start()
            procs.append(op)
            url = f"http://127.0.0.1:{port}"
            note(f"gateway {url}  prometheus {prom.url}  operator log {op.log_path}")
            cluster.kubectl("apply", "-f", "-", input_text=MODELS)
            for model in ("chat", "search", "support"):
                gateway_knows(url, model)
            wait_for(
                lambda: replicas(apps, "chat-shared-a100") == 0, timeout=30, what="chat at zero"
            )
            wait_for(
                lambda: status(crs, "search").get("readyReplicas", 0) >= 1,
                timeout=60,
                what="search warm replica",
            )
            show(cluster)

            step("4/8 scale from zero: one request to 'chat', which has no replica")
            reply = complete(url, "chat", max_tokens=16)
            note(
                f"HTTP {reply.status} after {reply.seconds:.1f}s (model load 4s): "
                f"{reply.body.get('choices', [{}])[0].get('text', reply.body)!r}"
            )
            note(f"decision: {status(crs, 'chat').get('lastDecision', {}).get('message')}")
            cold = wait_for(
                lambda: (c := status(crs, "chat").get("coldStart") or {}).get("completedAt") and c,
                timeout=30,
                what="chat's cold start measured (status.coldStart)",
            )
            note(f"cold start by phase: {cold_start_line(cold)}")
            show(cluster)

            step("5/8 warm minimum and scale out: 'search' idles at 1; a burst hits 'chat'")
            with ThreadPoolExecutor(max_workers=12) as pool:
                futures = [pool.submit(complete, url, "chat", max_tokens=300) for _ in range(24)]
                peak = 0
                while not all(f.done() for f in futures):
                    peak = max(peak, replicas(apps, "chat-shared-a100"))
                    time.sleep(0.5)
                codes = [f.result().status for f in futures]
            note(
                f"24 requests, {codes.count(200)} answered 200; chat peaked at {peak} replicas;"
                f" search stayed at {replicas(apps, 'search-dedicated-a100')} (minReplicas 1)"
            )
            note(f"decision: {status(crs, 'chat').get('lastDecision', {}).get('message')}")
            show(cluster)

            step("6/8 pool move: 'support' (mode auto) under steady load, promoted to dedicated")
            with TrafficLoop(url, "support", clients=4, max_tokens=64) as load:
                wait_for(
                    lambda: status(crs, "support").get("migration"),
                    timeout=120,
                    what="a promotion to start",
                    interval=1,
                )
                note(f"started: {status(crs, 'support')['migration']['reason']}")
                show(cluster)
                wait_for(
                    lambda: not status(crs, "support").get("migration"),
                    timeout=120,
                    what="the migration to finish",
                    interval=1,
                )
                time.sleep(2)
            st = status(crs, "support")
            note(
                f"now {st.get('effectiveMode')} on {st.get('pool')}; "
                f"{load.ok} requests answered during the move, {len(load.failures)} failed"
            )
            note(f"decision: {st.get('lastDecision', {}).get('message')}")
            show(cluster, wide=True)

            step("7/8 LoRA fine-tunes share one engine; the busiest is promoted to its own")
            # 'search' and 'support' hold both dedicated nodes (one tenant per node): the
            # platform adds one, or the promotion would wait for a node and roll back.
            cluster.add_node(cluster.gpu_node("dedicated-a100", 2))
            cluster.kubectl("apply", "-f", "-", input_text=LORA)
            for bot in FINE_TUNES:
                gateway_knows(url, bot)
                wait_for(
                    lambda b=bot: status(crs, b).get("engine") == "llama-8b-lora",
                    timeout=90,
                    what=f"{bot} served by the fleet",
                    interval=1,
                )
            note("four tenants on one fleet, none with an engine of its own:")
            note(cluster.kubectl("get", "sheng").stdout.replace("\n", "\n    "))
            loops = {
                bot: TrafficLoop(url, bot, clients=1, max_tokens=8, pause=0.5)
                for bot in FINE_TUNES[:-1]
            }
            loops["bot-busy"] = TrafficLoop(url, "bot-busy", clients=4, max_tokens=64)
            with contextlib.ExitStack() as running:
                for loop in loops.values():
                    running.enter_context(loop)
                wait_for(
                    lambda: status(crs, "bot-busy").get("migration"),
                    timeout=150,
                    what="bot-busy's promotion to start",
                    interval=1,
                )
                note(f"started: {status(crs, 'bot-busy')['migration']['reason']}")
                wait_for(
                    lambda: not status(crs, "bot-busy").get("migration"),
                    timeout=120,
                    what="the promotion to finish",
                    interval=1,
                )
                time.sleep(2)
            st = status(crs, "bot-busy")
            note(f"bot-busy now {st.get('effectiveMode')} on {st.get('pool')} (own replicas)")
            for bot, loop in loops.items():
                note(f"{bot}: {loop.ok} requests answered, {len(loop.failures)} failed")
            show(cluster, wide=True)

            step("8/8 idle: 'chat' returns to zero after its 30s window; 'search' keeps 1")
            wait_for(
                lambda: replicas(apps, "chat-shared-a100") == 0,
                timeout=120,
                what="chat back to zero",
                interval=1,
            )
            note(f"decision: {status(crs, 'chat').get('lastDecision', {}).get('message')}")
            show(cluster)
            print(f"\n{BOLD}demo finished in {time.monotonic() - started:.0f}s{RESET}")
            if keep:
                print(
                    f"\nkept running: export KUBECONFIG={cluster.kubeconfig}; gateway {url}"
                    "\npress Ctrl-C to stop"
                )
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            proc.stop()
        cluster.down()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument("--name", default="tidepool-demo", help="cluster name")
    args = parser.parse_args()
    return run(args.keep, args.name)


if __name__ == "__main__":
    sys.exit(main())
