"""Benchmark Tidepool at platform scale on the real local control plane. Prints figures; asserts
nothing.

The question: does one operator and one gateway hold up for a platform team with a thousand
fine-tuned tenants? The default run creates 1,000 InferenceDeployments on 500 kwok GPU nodes:

* a third are *active*: warm (``minReplicas: 1``; dedicated, hybrid and serverless in turn),
  each engine pod backed by a real engine-simulator process, with client traffic going to them
  through the gateway all along;
* the rest are idle at zero (serverless and auto in turn), as most tenants of a serverless
  platform are most of the time.

Figures, each the way a user would see it:

1. Prometheus query rate (the operator's ``tidepool_operator_prometheus_queries_total``) over a
   steady minute with a tenth of the tenants, then with all of them: with batched reads the
   ratio stays near 1 whatever the tenant count.
2. Operator RSS and CPU (``/proc``) over the steady minute with every tenant.
3. Spec change -> status: patch ``spec.scaling.maxReplicas`` of 100 tenants, one every 0.3 s,
   and time each until its ``status.observedGeneration`` reaches its generation (read back
   every 0.1 s); p50 and p99.
4. Wake latency under that load: 20 new serverless tenants at zero, each sent one request; the
   time from the held request to the engine Deployment at ``replicas: 1`` (median, p95), and
   the request's whole latency.
5. Gateway route-table update: time from creating an InferenceDeployment to the gateway
   listing its model under ``/v1/models``; 10 samples.

Run: ``.venv/bin/python e2e/bench/bench_scale.py [--tenants 1000] [--nodes 500]``. Loopback
only. It needs about 40 MB of memory per active tenant (one engine simulator each); on a
two-core machine the default run takes about 25 minutes and saturates both cores (the engine
simulators alone take half a core), so its latencies there are the machine's as much as
Tidepool's; ``--tenants 300`` runs in about 10. Run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rows import pct

import localcluster
import stack
from podbacker import PodBacker
from prometheus import Prometheus
from traffic import Wake, complete, gateway_knows, timed_wake
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tidepool.dev", "v1alpha1", "inferencedeployments"
LOAD_DELAY_S = 2.0
NAMESPACES = 10
#: Each node's pod CIDR, inside 127.0.0.0/8 and away from the test clusters' 127.10-127.13
#: ranges: node i gets 127.<PREFIX + i // 250>.<i % 250 + 1>.0/24.
POD_CIDR_FIRST_OCTET = 60
NODE_IP_FIRST_OCTET = 80
STEADY_SECONDS = 60.0
TICK_SECONDS = 5.0  # the operator's default --tick
#: Prometheus' scrape interval here: the tests' 2 s (1.5 s timeout) failed 78% of the gateway's
#: scrapes at 1,000 tenants (its page of 16,000 series took 1.4-2.3 s on the saturated machine),
#: and each failed scrape made every tenant's metrics unknown at once: 1,000 status writes and
#: Events in a burst. The chart scrapes every 15 s; this is the operator's tick.
SCRAPE_SECONDS = 5.0


def log(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def gpu_nodes(count: int) -> list[localcluster.GpuNode]:
    """``count`` nodes, half in the shared pool and half in the dedicated one."""
    nodes = []
    for i in range(count):
        pool, tenancy = ("shared-a100", "shared") if i % 2 == 0 else ("dedicated-a100", "dedicated")
        high, low = divmod(i, 250)
        nodes.append(
            localcluster.GpuNode(
                name=f"gpu-{pool}-{i // 2}",
                pool=pool,
                tenancy=tenancy,
                gpus=8,
                pod_cidr=f"127.{POD_CIDR_FIRST_OCTET + high}.{low + 1}.0/24",
                internal_ip=f"127.{NODE_IP_FIRST_OCTET + high}.0.{low + 1}",
            )
        )
    return nodes


def tenant(index: int, *, active_every: int) -> dict[str, Any]:
    """Tenant ``index``: active (warm, one of three modes) every ``active_every``-th, else idle."""
    ns = f"tenants-{index % NAMESPACES}"
    name = f"t{index:05d}"
    if index % active_every == 0:
        mode = ("dedicated", "hybrid", "serverless")[(index // active_every) % 3]
        scaling: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 4}
    else:
        mode = ("serverless", "auto")[index % 2]
        scaling = {"minReplicas": 0, "maxReplicas": 4}
    return infd(name, ns, mode=mode, scaling=scaling)


def infd(name: str, ns: str, **spec: object) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"tidepool.dev/sim-load-delay": f"{LOAD_DELAY_S}s"},
        },
        "spec": {"model": {"name": f"org/{name}", "servedName": f"{ns}-{name}"}, **spec},
    }


def served_name(body: dict[str, Any]) -> str:
    served: str = body["spec"]["model"]["servedName"]
    return served


class Steady:
    """The operator's query rate, CPU and RSS over one steady window."""

    def __init__(self, operator: stack.ManagedProcess, seconds: float) -> None:
        assert operator.proc is not None
        pid = operator.proc.pid
        q0, c0, t0 = stack.metric_total(operator, QUERIES), stack.cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        q1, c1, t1 = stack.metric_total(operator, QUERIES), stack.cpu_seconds(pid), time.monotonic()
        self.queries_per_second = (q1 - q0) / (t1 - t0)
        self.cpu_cores = (c1 - c0) / (t1 - t0)
        self.rss_mib = stack.rss_mib(pid)
        # Each figure as soon as it is measured: a run stopped later keeps what it had.
        log(
            f"{self.queries_per_second:.2f} Prometheus queries/s, operator "
            f"{self.cpu_cores:.2f} cores, {self.rss_mib:.0f} MiB RSS"
        )


QUERIES = "tidepool_operator_prometheus_queries_total"

#: Where the machine's CPU goes, by process: the control plane and Prometheus by executable, and
#: Tidepool's programs (``python -m tidepool <command>``) by command.
BINARIES = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "prometheus",
)  # fmt: skip
#: ``tidepool <command>`` -> its row (the operator's command is ``run``).
PROGRAMS = {"engine-sim": "engine-sim", "run": "operator", "gateway": "gateway"}
COMPONENTS = (*BINARIES, *PROGRAMS.values())


def component_of(argv: list[str]) -> str | None:
    if not argv:
        return None
    exe = Path(argv[0]).name
    if exe in BINARIES:
        return exe
    if any(Path(word).name == "tidepool" for word in argv[:3]):
        return next((PROGRAMS[word] for word in argv[1:4] if word in PROGRAMS), None)
    return None


def cpu_by_component() -> dict[str, float]:
    """CPU seconds used so far by every process of each component, and by this benchmark
    (its pod backer, probes and clients)."""
    totals = dict.fromkeys((*COMPONENTS, "bench"), 0.0)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            seconds = stack.cpu_seconds(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        name = "bench" if int(proc.name) == os.getpid() else component_of(argv)
        if name is not None:
            totals[name] += seconds
    return totals


def apiserver_requests(cluster: localcluster.Cluster) -> dict[str, float]:
    """The API server's own request counter, ``apiserver_request_total``, by verb and resource."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                key = f"{sample.labels.get('verb')} {sample.labels.get('resource')}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


class Machine:
    """What every component costs over one steady window: CPU cores by component, and the API
    server's requests per second by verb and resource. The answer to "what breaks first"."""

    def __init__(self, cluster: localcluster.Cluster, seconds: float) -> None:
        cpu0, req0, t0 = cpu_by_component(), apiserver_requests(cluster), time.monotonic()
        time.sleep(seconds)
        cpu1, req1, t1 = cpu_by_component(), apiserver_requests(cluster), time.monotonic()
        span = t1 - t0
        self.cores = {k: (cpu1[k] - cpu0.get(k, 0.0)) / span for k in cpu1}
        self.requests = {k: (v - req0.get(k, 0.0)) / span for k, v in req1.items()}
        log("CPU cores by component: " + self.cores_line())
        log("API server requests/s: " + self.requests_line())

    def cores_line(self) -> str:
        busiest = sorted(self.cores.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v:.2f}" for k, v in busiest if v >= 0.005)

    def requests_line(self, top: int = 8) -> str:
        busiest = sorted(self.requests.items(), key=lambda kv: -kv[1])[:top]
        total = sum(self.requests.values())
        return f"{total:.0f} in all; " + ", ".join(f"{k} {v:.1f}" for k, v in busiest)


def create_all(crs: client.CustomObjectsApi, bodies: list[dict[str, Any]], what: str) -> None:
    started = time.monotonic()
    for i, body in enumerate(bodies, 1):
        ns = body["metadata"]["namespace"]
        crs.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        if i % 100 == 0 or i == len(bodies):
            log(f"{what}: created {i}/{len(bodies)} ({time.monotonic() - started:.0f}s)")


def all_reconciled(crs: client.CustomObjectsApi, count: int) -> Callable[[], bool]:
    def check() -> bool:
        items = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        done = sum(
            1
            for i in items
            if i.get("status", {}).get("observedGeneration") == i["metadata"]["generation"]
        )
        return len(items) >= count and done >= count

    return check


def ready_pods(core: client.CoreV1Api) -> int:
    pods = core.list_pod_for_all_namespaces(label_selector="tidepool.dev/component=engine").items
    return sum(
        1
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    )


class Clients:
    """Continuous traffic to the active tenants, round-robin, in a few threads."""

    def __init__(self, url: str, models: list[str], threads: int = 4) -> None:
        self.url, self.models = url, models
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=150)

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            status = complete(self.url, self.models[i % len(self.models)], max_tokens=4).status
            with self._lock:
                self.sent += 1
                self.failed += status != 200
            i += len(self._threads)


def spec_change_latencies(
    crs: client.CustomObjectsApi, bodies: list[dict[str, Any]]
) -> list[float]:
    """Seconds from each spec patch until the object's ``status.observedGeneration`` reaches the
    patched generation, seen through a watch of that one object (a field selector on its name,
    from the patch's resourceVersion).

    Why one watch per object: a watch over every InferenceDeployment (this benchmark's first
    method) carried all 1,000 objects' status writes to one client thread, which fell minutes
    behind on two cores; polling each object every 0.1 s (its second) sent the API server up to
    160 GETs a second of its own, more than the operator's whole steady load.
    """

    def time_one(body: dict[str, Any]) -> float | None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        started = time.monotonic()
        stored = crs.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, {"spec": {"scaling": {"maxReplicas": 5}}}
        )
        generation = stored["metadata"]["generation"]
        if stored.get("status", {}).get("observedGeneration", 0) >= generation:
            return time.monotonic() - started
        stream = watch.Watch()
        for event in stream.stream(
            crs.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=stored["metadata"]["resourceVersion"],
            timeout_seconds=120,
        ):
            obj = event["object"]
            if obj.get("status", {}).get("observedGeneration", 0) >= generation:
                stream.stop()
                return time.monotonic() - started
        return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = []
        for body in bodies:
            futures.append(pool.submit(time_one, body))
            time.sleep(0.3)
        timed = [f.result() for f in futures]
    seen = [t for t in timed if t is not None]
    if len(seen) < len(bodies):
        log(f"only {len(seen)}/{len(bodies)} spec changes reached status within 120 s")
    return seen


#: The operator's reconcile timings by lane (``tidepool.handlers.daemon``): the wait for a
#: thread after a reconcile is due, and its run.
RECONCILE_HISTOGRAMS = (
    "tidepool_operator_reconcile_wait_seconds",
    "tidepool_operator_reconcile_duration_seconds",
)
#: (histogram, lane) -> [(bucket upper bound, cumulative count)]
Buckets = dict[tuple[str, str], list[tuple[float, float]]]


def reconcile_buckets(operator: stack.ManagedProcess) -> Buckets:
    out: Buckets = {}
    for family in text_string_to_metric_families(stack.metrics_text(operator)):
        if family.name not in RECONCILE_HISTOGRAMS:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (family.name, sample.labels["lane"])
                out.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
    return out


class ReconcileTimings:
    """What the operator's reconciles did during one phase: the difference of its histograms
    before and after, as bucket bounds (``p99 <= 0.25s``: 99% took at most 0.25 s)."""

    def __init__(self, operator: stack.ManagedProcess) -> None:
        self._operator = operator
        self._before = reconcile_buckets(operator)

    def line(self) -> str:
        after = reconcile_buckets(self._operator)
        parts = []
        for lane in ("urgent", "timed"):
            cells = []
            for name, what in zip(RECONCILE_HISTOGRAMS, ("waited", "ran"), strict=True):
                before = dict(self._before.get((name, lane), []))
                delta = [(le, n - before.get(le, 0.0)) for le, n in after.get((name, lane), [])]
                total = delta[-1][1] if delta else 0.0
                if total <= 0:
                    continue
                p50, p99 = (next(le for le, n in delta if n >= q * total) for q in (0.5, 0.99))
                cells.append(f"{what} p50 <= {p50:g}s, p99 <= {p99:g}s")
            if cells:
                count = int(delta[-1][1]) if delta else 0
                parts.append(f"{lane} lane ({count} reconciles): " + "; ".join(cells))
        return " | ".join(parts) or "no reconciles"


def wake_latencies(
    crs: client.CustomObjectsApi, api: client.ApiClient, url: str, count: int
) -> list[Wake]:
    """``count`` new serverless tenants, each woken from zero by one request."""
    wakes = []
    for i in range(count):
        body = infd(f"w{i}", "wake", mode="serverless", scaling={"minReplicas": 0})
        crs.create_namespaced_custom_object(GROUP, VERSION, "wake", PLURAL, body)
        gateway_knows(url, served_name(body), timeout=120)
        wakes.append(
            timed_wake(
                url,
                served_name(body),
                lambda d=f"w{i}-shared-a100": stack.replicas_of(api, "wake", d),
                timeout=120,
            )
        )
        crs.delete_namespaced_custom_object(GROUP, VERSION, "wake", PLURAL, f"w{i}")
    return wakes


def route_update_latencies(crs: client.CustomObjectsApi, url: str, count: int) -> list[float]:
    out = []
    for i in range(count):
        body = infd(f"r{i}", "routes", mode="serverless", scaling={"minReplicas": 0})
        t0 = time.monotonic()
        crs.create_namespaced_custom_object(GROUP, VERSION, "routes", PLURAL, body)
        gateway_knows(url, served_name(body), timeout=120)
        out.append(time.monotonic() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--active-every", type=int, default=3, help="every Nth tenant is active")
    args = parser.parse_args(argv)

    bin_dir = localcluster.ensure_binaries()
    localcluster.reap_stale_clusters("tidepool-scale")
    cluster = localcluster.Cluster("tidepool-scale", bin_dir=bin_dir)
    started = time.monotonic()
    cluster.up(nodes=gpu_nodes(args.nodes), timeout=900)
    cluster_up = time.monotonic() - started
    procs: list[stack.ManagedProcess] = []
    bodies = [tenant(i, active_every=args.active_every) for i in range(args.tenants)]
    active = [b for i, b in enumerate(bodies) if i % args.active_every == 0]
    small = bodies[: max(1, args.tenants // 10)]
    try:
        cluster.apply_crds(localcluster.CRDS_DIR)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "examples" / "gpupools.yaml"))
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core, crs = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for ns in [f"tenants-{k}" for k in range(NAMESPACES)] + ["wake", "routes"]:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        with (
            PodBacker(
                cluster.kubeconfig, default_load_delay=f"{LOAD_DELAY_S}s", probe_interval=2.0
            ),
            Prometheus(cluster.kubeconfig, scrape_interval=SCRAPE_SECONDS) as prom,
        ):
            port, metrics_port = stack.free_port(), stack.free_port()
            gw = stack.gateway(
                str(cluster.kubeconfig), port=port, metrics_port=metrics_port
            ).start()
            procs.append(gw)
            prom.set_targets("tidepool-gateway", [f"127.0.0.1:{metrics_port}"])
            op = stack.operator(str(cluster.kubeconfig), prom.url, tick=TICK_SECONDS).start()
            procs.append(op)
            url = f"http://127.0.0.1:{port}"
            assert op.proc is not None
            idle_rss = stack.rss_mib(op.proc.pid)

            # 1a. a tenth of the tenants: the query rate to compare against
            create_all(crs, small, "first tenth")
            wait_for(
                all_reconciled(crs, len(small)), timeout=900, what="tenth reconciled", interval=5
            )
            log(f"steady window with {len(small)} tenants ({STEADY_SECONDS:.0f}s)")
            few = Steady(op, STEADY_SECONDS)

            # 1b. every tenant
            t0 = time.monotonic()
            create_all(crs, bodies[len(small) :], "the rest")
            wait_for(
                all_reconciled(crs, len(bodies)), timeout=1800, what="all reconciled", interval=5
            )
            reconcile_all = time.monotonic() - t0
            log(f"all {len(bodies)} reconciled in {reconcile_all:.0f}s; waiting for engines")
            wait_for(
                lambda: ready_pods(core) >= len(active),
                timeout=1800,
                what=f"{len(active)} active engines Ready",
                interval=5,
            )
            for b in active:
                gateway_knows(url, served_name(b), timeout=300)
            with Clients(url, [served_name(b) for b in active]) as traffic:
                log(f"steady window with {len(bodies)} tenants ({STEADY_SECONDS:.0f}s)")
                many = Steady(op, STEADY_SECONDS)
                log(f"where the machine goes ({STEADY_SECONDS:.0f}s)")
                machine = Machine(cluster, STEADY_SECONDS)
                log("spec changes")
                sample = random.Random(7).sample(bodies, min(100, len(bodies)))
                during_spec = ReconcileTimings(op)
                spec = spec_change_latencies(crs, sample)
                spec_reconciles = during_spec.line()
                log(f"operator during the spec changes: {spec_reconciles}")
                log("wakes")
                during_wakes = ReconcileTimings(op)
                woken = wake_latencies(crs, api, url, 20)
                wake_reconciles = during_wakes.line()
                log(f"operator during the wakes: {wake_reconciles}")
                wakes = [w.to_replicas for w in woken]
                whole = [w.whole for w in woken]
                log("route-table updates")
                routes = route_update_latencies(crs, url, 10)
            rss_end = stack.rss_mib(op.proc.pid)

        print(
            f"\n== bench_scale: {len(bodies)} InferenceDeployments ({len(active)} active), "
            f"{args.nodes} kwok GPU nodes, operator --tick {TICK_SECONDS:.0f}s =="
        )
        print(f"cluster up with {args.nodes} nodes: {cluster_up:.0f}s")
        print(
            f"Prometheus queries/s: {few.queries_per_second:.2f} with {len(small)} tenants, "
            f"{many.queries_per_second:.2f} with {len(bodies)} "
            f"(ratio {many.queries_per_second / max(few.queries_per_second, 1e-9):.2f} "
            f"for {len(bodies) / len(small):.0f}x the tenants)"
        )
        print(
            f"operator RSS: idle {idle_rss:.0f} MiB, {len(small)} tenants {few.rss_mib:.0f} MiB, "
            f"{len(bodies)} tenants {many.rss_mib:.0f} MiB, at the end {rss_end:.0f} MiB"
        )
        print(
            f"operator CPU: {few.cpu_cores:.2f} cores with {len(small)} tenants, "
            f"{many.cpu_cores:.2f} with {len(bodies)}"
        )
        print(f"CPU cores by component (steady, all tenants): {machine.cores_line()}")
        print(f"API server requests/s (steady, all tenants): {machine.requests_line()}")
        print(f"reconcile the other {len(bodies) - len(small)} new tenants: {reconcile_all:.0f}s")
        if spec:
            print(
                f"spec change -> status ({len(spec)}/{len(sample)} seen): "
                f"p50 {pct(spec, 0.5):.2f}s, p99 {pct(spec, 0.99):.2f}s, max {max(spec):.2f}s"
            )
        print(f"operator reconciles during the spec changes: {spec_reconciles}")
        print(
            f"wake latency (held request -> replicas=1, {len(wakes)} wakes under load): median "
            f"{statistics.median(wakes):.3f}s, p95 {pct(wakes, 0.95):.3f}s; whole cold request "
            f"median {statistics.median(whole):.2f}s ({LOAD_DELAY_S:.0f}s of it model load)"
        )
        print(f"operator reconciles during the wakes: {wake_reconciles}")
        print(
            f"gateway route-table update (create -> listed, {len(routes)}): median "
            f"{statistics.median(routes):.2f}s, max {max(routes):.2f}s"
        )
        print(f"client traffic meanwhile: {traffic.sent} requests, {traffic.failed} not 200")
    finally:
        for proc in reversed(procs):
            proc.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
