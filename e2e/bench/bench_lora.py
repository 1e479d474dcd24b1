"""Benchmark LoRA tenants on a SharedEngine, on the real local cluster. Prints figures; asserts
nothing about time (machines differ).

The stack is the one the integration tests run: kube-apiserver with kwok GPU nodes, the pod
backer (one engine simulator per fleet pod, model-load delay ``LOAD_DELAY_S``), Prometheus, the
gateway and the operator as local processes. One SharedEngine (``maxLoras`` 4, up to 5 replicas)
serves 20 LoRA tenants.

1. **wake latency**: the fleet at zero, one tenant's request held at the gateway until the
   adapter serves it; median and p95 over ``--wakes`` wakes, split into phases seen from the
   API (polled every 20 ms): the wake annotation written, the fleet Deployment scaled, the first
   fleet pod bound to a node, the first pod Ready (the engine's model loaded), the tenant's
   adapter recorded as loaded on a Ready pod, and the first byte at the client. The engine's
   model-load delay is a configured value (printed): subtract it for what Tidepool adds.
2. **adapter load, at the engine** (a simulator of its own, the fleet's flags): ``POST
   /v1/load_lora_adapter`` to its 200, and then to the first token of a streamed request for
   that adapter, beside the first token of an adapter already on the GPU (the difference is
   what the adapter costs its first request). The simulator's load time is configured
   (``--lora-load-seconds-per-rank`` times the rank, plus a swap-in): printed beside it.
3. **adapter load, through the operator**: a tenant created on the awake fleet, to
   ``AdapterLoaded=True`` and to its first token through the gateway.
4. **gateway added latency with adapter routing**: sequential requests, alternating direct to
   the fleet pod (the adapter's name) and through the gateway (the tenant's served name).

Run: ``.venv/bin/python e2e/bench/bench_lora.py [--wakes 10] [--loads 20]``. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

from tidepool.api.labels import SHARED_ENGINE, WAKE_REQUESTED_AT
from tidepool.policy import lora_timing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rows import pct

import localcluster
import stack
from podbacker import PodBacker
from prometheus import Prometheus
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "tidepool.dev", "v1alpha1"
LOAD_DELAY_S = 2.0
BASE = "org/base-bench"
ENGINE = "bench-base"
DEPLOYMENT = f"sheng-{ENGINE}"
FLEET_NS, TENANT_NS = "default", "lora-bench"
TENANTS, MAX_LORAS, MAX_REPLICAS = 20, 4, 5
#: The simulator's defaults: load from disk per rank, copy into a GPU slot, and the rank of an
#: adapter without adapter_config.json.
SIM_LOAD_PER_RANK_S = lora_timing.LOAD_SECONDS_PER_RANK
SIM_SWAP_IN_S, SIM_DEFAULT_RANK = lora_timing.SWAP_IN_SECONDS, 8
POLL_S = 0.02


def summary(values: list[float], unit: float = 1.0, fmt: str = "{:.3f}") -> str:
    if not values:
        return "n/a"
    med, p95 = statistics.median(values) * unit, pct(values, 0.95) * unit
    return f"median {fmt.format(med)}, p95 {fmt.format(p95)}"


def post(url: str, body: dict[str, Any], timeout: float = 120.0) -> tuple[int, float, float]:
    """(status, seconds to the first body byte, seconds to the end) of one POST."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read(1)
        first = time.perf_counter() - t0
        resp.read()
        return resp.status, first, time.perf_counter() - t0


def completion(model: str, *, stream: bool = True) -> dict[str, Any]:
    return {"model": model, "prompt": "hello", "max_tokens": 4, "stream": stream}


def load_at_engine(n: int) -> tuple[list[float], list[float], list[float]]:
    """(load to 200, first token of the new adapter, first token of an adapter on the GPU),
    against an engine simulator of its own with the fleet's LoRA flags: on a fleet pod, the
    operator would unload an adapter no tenant asked for while it is being measured."""
    port = stack.free_port()
    url = f"http://127.0.0.1:{port}"
    sim = stack.ManagedProcess(
        name="engine-sim",
        args=[
            "engine-sim", "--host", "127.0.0.1", "--port", str(port), "--model", BASE,
            "--load-delay", "0s", "--enable-lora", "--max-loras", str(MAX_LORAS),
            "--max-lora-rank", "16", "--lora-modules", "warm=/models/adapters/warm",
        ],
        health_url=f"{url}/health",
        env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    ).start()  # fmt: skip
    loads, firsts, warms = [], [], []
    try:
        post(f"{url}/v1/completions", completion("warm"))  # into a GPU slot
        for k in range(n):
            name = f"bench-adapter-{k}"
            t0 = time.perf_counter()
            post(
                f"{url}/v1/load_lora_adapter",
                {"lora_name": name, "lora_path": f"/models/adapters/{name}"},
            )
            loads.append(time.perf_counter() - t0)
            firsts.append(post(f"{url}/v1/completions", completion(name))[1])
            warms.append(post(f"{url}/v1/completions", completion("warm"))[1])
            post(f"{url}/v1/unload_lora_adapter", {"lora_name": name})
    finally:
        sim.stop()
    return loads, firsts, warms


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


class Bench:
    def __init__(self, kubeconfig: Path, gateway_url: str) -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.crs = client.CustomObjectsApi(api)
        self.gateway_url = gateway_url

    # ---- reads -------------------------------------------------------------------------
    def replicas(self) -> int:
        try:
            return int(self.apps.read_namespaced_deployment(DEPLOYMENT, FLEET_NS).spec.replicas)
        except client.ApiException:
            return -1

    def pods(self) -> list[client.V1Pod]:
        return [
            p
            for p in self.core.list_namespaced_pod(
                FLEET_NS, label_selector=f"{SHARED_ENGINE}={ENGINE}"
            ).items
            if p.metadata.deletion_timestamp is None
        ]

    def ready_pods(self) -> dict[str, str]:
        return {p.metadata.name: f"http://{p.status.pod_ip}:8000" for p in self.pods() if _ready(p)}

    def engine_status(self) -> dict[str, Any]:
        obj = self.crs.get_cluster_custom_object(GROUP, VERSION, "sharedengines", ENGINE)
        return dict(obj.get("status", {}))

    def holders(self, adapter: str) -> list[str]:
        for a in self.engine_status().get("adapters", []):
            if a["name"] == adapter:
                return list(a.get("replicas", []))
        return []

    def tenant(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.crs.get_namespaced_custom_object(
            GROUP, VERSION, TENANT_NS, "inferencedeployments", name
        )
        return obj

    def adapter_loaded(self, name: str) -> bool:
        conds = self.tenant(name).get("status", {}).get("conditions", [])
        return any(c["type"] == "AdapterLoaded" and c["status"] == "True" for c in conds)

    # ---- writes ------------------------------------------------------------------------
    def pin(self, replicas: int | None) -> None:
        self.crs.patch_cluster_custom_object(
            GROUP, VERSION, "sharedengines", ENGINE, {"spec": {"replicas": replicas}}
        )

    def create_tenant(self, name: str, adapter: str) -> None:
        self.crs.create_namespaced_custom_object(
            GROUP,
            VERSION,
            TENANT_NS,
            "inferencedeployments",
            stack.lora_tenant_manifest(
                name, TENANT_NS, BASE, served=f"chat-{name}", adapter=adapter
            ),
        )

    def delete_tenant(self, name: str) -> None:
        self.crs.delete_namespaced_custom_object(
            GROUP, VERSION, TENANT_NS, "inferencedeployments", name
        )

    # ---- 1. wake -----------------------------------------------------------------------
    def to_zero(self) -> None:
        """Pin the fleet to 0, wait until its pods are gone, unpin: at zero with no demand."""
        self.pin(0)
        wait_for(lambda: self.replicas() == 0 and not self.pods(), timeout=90, what="zero")
        self.pin(None)
        time.sleep(1.0)  # the unpinned engine reconciled: still zero, nothing asked for

    def wake_once(self, i: int) -> dict[str, float]:
        name, adapter = f"t{i:02d}", f"lora-{i:02d}"
        phases: dict[str, float] = {}
        stop = threading.Event()
        sent_wall = datetime.now().astimezone()
        t0 = time.monotonic()

        def mark(phase: str, reached: bool) -> None:
            if phase not in phases and reached:
                phases[phase] = time.monotonic() - t0

        def watch() -> None:
            while not stop.is_set():
                pods = self.pods()
                bound = any(p.spec.node_name for p in pods)
                ready = any(_ready(p) for p in pods)
                mark("fleet scaled", self.replicas() > 0)
                mark("pod bound", bound)
                mark("engine ready", ready)
                ready_names = {p.metadata.name for p in pods if _ready(p)}
                mark("adapter loaded", bool(ready_names & set(self.holders(adapter))))
                time.sleep(POLL_S)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        status, first, total = post(
            f"{self.gateway_url}/v1/completions", completion(f"chat-{name}")
        )
        stop.set()
        watcher.join(timeout=5)
        if status != 200:
            raise RuntimeError(f"wake of {name}: HTTP {status}")
        phases["first byte"] = first
        phases["complete"] = total
        stamp = self.tenant(name)["metadata"].get("annotations", {})
        woke = stamp.get(WAKE_REQUESTED_AT)
        if woke:
            at = datetime.fromisoformat(woke)
            phases["wake patch"] = max(0.0, (at - sent_wall).total_seconds())
        return phases

    # ---- 3. adapter load through the operator ---------------------------------------------
    def join_once(self, k: int) -> tuple[float, float]:
        """A new tenant in t19's slot: (create to AdapterLoaded, create to first token).

        Named to sort last: the operator places adapters by tenant order, so a name sorting
        first would move every other tenant's adapter too.
        """
        name, adapter = f"z{k:02d}", f"joiner-{k:02d}"
        t0 = time.monotonic()
        self.create_tenant(name, adapter)
        wait_for(lambda: self.adapter_loaded(name), timeout=60, what=f"{name} AdapterLoaded",
                 interval=POLL_S)  # fmt: skip
        loaded = time.monotonic() - t0

        def answered() -> bool:
            try:
                return (
                    post(f"{self.gateway_url}/v1/completions", completion(f"chat-{name}"))[0] == 200
                )
            except urllib.error.HTTPError:
                return False

        wait_for(answered, timeout=60, what=f"{name} answered", interval=POLL_S)
        first = time.monotonic() - t0
        self.delete_tenant(name)
        wait_for(lambda: not self.holders(adapter), timeout=60, what=f"{adapter} gone")
        return loaded, first

    # ---- 4. gateway added latency -------------------------------------------------------
    def paired(self, n: int) -> tuple[list[float], list[float]]:
        name, adapter = "t00", "lora-00"
        pod = self.holders(adapter)[0]
        pod_url = self.ready_pods()[pod]
        direct, via = [], []
        for _ in range(n):
            direct.append(post(f"{pod_url}/v1/completions", completion(adapter, stream=False))[2])
            via.append(
                post(
                    f"{self.gateway_url}/v1/completions", completion(f"chat-{name}", stream=False)
                )[2]
            )
        return direct, via


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=10)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args(argv)

    loads, firsts, warms = load_at_engine(args.loads)
    bin_dir = localcluster.ensure_binaries()
    localcluster.reap_stale_clusters("tidepool-bench-lora-")
    cluster = localcluster.Cluster("tidepool-bench-lora", bin_dir=bin_dir)
    cluster.up()
    procs: list[stack.ManagedProcess] = []
    try:
        cluster.apply_crds(localcluster.CRDS_DIR)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "examples" / "gpupools.yaml"))
        with (
            PodBacker(cluster.kubeconfig, default_load_delay=f"{LOAD_DELAY_S}s"),
            Prometheus(cluster.kubeconfig) as prom,
        ):
            port, metrics_port = stack.free_port(), stack.free_port()
            gw = stack.gateway(
                str(cluster.kubeconfig), port=port, metrics_port=metrics_port, queue_timeout="120s"
            ).start()
            procs.append(gw)
            prom.set_targets("tidepool-gateway", [f"127.0.0.1:{metrics_port}"])
            op = stack.operator(str(cluster.kubeconfig), prom.url, tick=5.0).start()
            procs.append(op)
            bench = Bench(cluster.kubeconfig, f"http://127.0.0.1:{port}")
            bench.core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=TENANT_NS))
            )
            engine = stack.shared_engine_manifest(
                ENGINE,
                BASE,
                max_replicas=MAX_REPLICAS,
                max_loras=MAX_LORAS,
                scale_to_zero_after="30m",
            )
            bench.crs.create_cluster_custom_object(GROUP, VERSION, "sharedengines", engine)
            for i in range(TENANTS):
                bench.create_tenant(f"t{i:02d}", f"lora-{i:02d}")
            wait_for(
                lambda: bench.engine_status().get("tenants") == TENANTS,
                timeout=60,
                what="the engine to count its tenants",
            )

            wakes: list[dict[str, float]] = []
            for w in range(args.wakes):
                bench.to_zero()
                wakes.append(bench.wake_once((w * 7) % TENANTS))
                print(f"wake {w}: " + ", ".join(f"{k} {v:.2f}s" for k, v in wakes[-1].items()))
            wait_for(
                lambda: (
                    len(bench.ready_pods()) == MAX_REPLICAS
                    and all(bench.holders(f"lora-{i:02d}") for i in range(TENANTS))
                ),
                timeout=60,
                what="the whole fleet up with every adapter",
            )
            bench.delete_tenant("t19")  # a slot for the joiners
            wait_for(lambda: not bench.holders("lora-19"), timeout=60, what="t19 unloaded")
            joins = [bench.join_once(k) for k in range(args.joins)]
            direct, via = bench.paired(args.pairs)

        ms = 1000.0
        print("\n== bench_lora (real kube-apiserver, kwok nodes, loopback engine simulators) ==")
        print(
            f"fleet: {TENANTS} LoRA tenants, maxLoras {MAX_LORAS}, {MAX_REPLICAS} replicas awake;"
            f" configured engine model-load delay {LOAD_DELAY_S:.1f}s; simulated adapter load"
            f" {SIM_LOAD_PER_RANK_S * SIM_DEFAULT_RANK * ms:.0f} ms (rank {SIM_DEFAULT_RANK})"
            f" + swap-in {SIM_SWAP_IN_S * ms:.0f} ms"
        )
        print(f"wake latency, held request -> adapter served ({len(wakes)} wakes, seconds since "
              "the request was sent):")  # fmt: skip
        for phase in ("wake patch", "fleet scaled", "pod bound", "engine ready",
                      "adapter loaded", "first byte", "complete"):  # fmt: skip
            values = [w[phase] for w in wakes if phase in w]
            print(f"  {phase:15s} {summary(values)}")
        first_bytes = [w["first byte"] for w in wakes]
        print(
            f"  first byte minus the {LOAD_DELAY_S:.0f}s model-load delay: "
            f"{summary([f - LOAD_DELAY_S for f in first_bytes])}"
        )
        print(f"adapter load at the engine ({len(loads)} loads):")
        print(f"  POST /v1/load_lora_adapter -> 200: {summary(loads, ms, '{:.1f} ms')}")
        print(f"  first token of the new adapter: {summary(firsts, ms, '{:.1f} ms')}")
        print(f"  first token of an adapter on the GPU: {summary(warms, ms, '{:.1f} ms')}")
        print(f"adapter load through the operator ({len(joins)} tenants joining the awake fleet):")
        print(f"  create -> AdapterLoaded=True: {summary([j[0] for j in joins])}")
        print(f"  create -> first token via the gateway: {summary([j[1] for j in joins])}")
        added = [v - d for v, d in zip(via, direct, strict=True)]
        print(f"gateway with adapter routing, {len(direct)} paired sequential requests:")
        print(f"  direct (adapter name): {summary(direct, ms, '{:.2f} ms')}")
        print(f"  via gateway (served name, rewritten): {summary(via, ms, '{:.2f} ms')}")
        print(f"  added per request: {summary(added, ms, '{:.2f} ms')}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
