"""A real local Kubernetes control plane with fake GPU nodes, for tests and the demo.

Why this exists: the development and CI machines have no Docker engine and no release
downloads, yet Tidepool must be tested against a real kube-apiserver (CRD validation, CEL,
server-side apply, watches), a real controller-manager (Deployments -> ReplicaSets -> Pods,
garbage collection, EndpointSlices) and a real scheduler (GPU capacity, taints). So:

* ``ensure_binaries()`` builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
  kubectl, kwok, kwokctl and helm from the Go module proxy once per pinned version
  (``e2e/cluster/build-binaries.sh``) and caches them outside the repo.
* ``Cluster`` runs them with ``kwokctl --runtime=binary``: every binary a local path, so kwokctl
  never downloads (``check_offline`` proves it with ``--dry-run``), everything bound to 127.0.0.1.
* kwok fakes the kubelets. GPU nodes come from the table in ``e2e/cluster/gpu-nodes.yaml``; their
  podCIDRs are inside 127.0.0.0/8, so pod IPs are loopback addresses where ``podbacker`` can run
  real engine-simulator processes (the network rule: only 127.0.0.0/8 is ever contacted).

Command line (used by ``e2e/cluster/up.sh`` / ``down.sh``)::

    python e2e/localcluster.py up [NAME]     # prints the kubeconfig path on stdout
    python e2e/localcluster.py down [NAME]
    python e2e/localcluster.py kubeconfig [NAME]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from waiting import WaitAbortedError, wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLUSTER_DIR = HERE / "cluster"
BUILD_SCRIPT = CLUSTER_DIR / "build-binaries.sh"
STAGES_FILE = CLUSTER_DIR / "stages.yaml"
#: The engine Services' ClusterIP range: room for 65,000 tenants (see ``config_text``).
SERVICE_CIDR = "10.0.0.0/16"
GPU_NODES_FILE = CLUSTER_DIR / "gpu-nodes.yaml"
CRDS_DIR = REPO / "crds"

#: Same cache root as build-binaries.sh: outside the repo, shared by every checkout.
CACHE_ROOT = Path(
    os.environ.get("TIDEPOOL_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidepool"
)
#: kwokctl's workdir (its clusters/<name>/ holds pids, logs, PKI and the kubeconfig). Kept apart
#: from ~/.kwok so a developer's own kwok clusters are never touched.
KWOK_WORKDIR = CACHE_ROOT / "kwok"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kwokctl",
    "helm",
)
#: Loopback only, whatever proxy the environment might configure.
NO_PROXY = "127.0.0.0/8,localhost"
GPU_RESOURCE = "nvidia.com/gpu"
#: Loopback "slots": clusters running at the same time get disjoint pod CIDRs (see for_pool).
SLOTS = 8
NODES_PER_SLOT = 32


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays machine-readable (the kubeconfig path)."""
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def loopback_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: no proxy may intercept loopback traffic."""
    env = dict(os.environ)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    if extra:
        env.update(extra)
    return env


class ClusterBusyError(RuntimeError):
    """Another live process owns a cluster of this name (its ``<name>.lock`` is held)."""


class ComponentDiedError(WaitAbortedError):
    """A control-plane process exited: waiting longer cannot help, so waits stop at once."""


# --------------------------------------------------------------------------- binaries


def bin_dir_if_built() -> Path | None:
    """The cached bin dir if every binary is already there (no build script run at all)."""
    for candidate in sorted(CACHE_ROOT.glob("k8s-*/bin")):
        if all(os.access(candidate / b, os.X_OK) for b in BINARIES):
            return candidate
    return None


def ensure_binaries(*, quiet: bool = False) -> Path:
    """Build (or find) the pinned control-plane binaries and return their directory.

    The build script is idempotent and prints the bin dir as its last stdout line; its progress
    (stderr) is passed through so a cold build (~10 minutes) is visibly alive.
    """
    env = loopback_env()
    stderr = subprocess.DEVNULL if quiet else None
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{BUILD_SCRIPT} printed no bin dir")
    bin_dir = Path(lines[-1].strip())
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise RuntimeError(f"{bin_dir} lacks {', '.join(missing)}")
    return bin_dir


# --------------------------------------------------------------------------- GPU nodes


@dataclass(frozen=True)
class Taint:
    """A node taint (key=value:effect)."""

    key: str
    value: str
    effect: str = "NoSchedule"

    def manifest(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


@dataclass(frozen=True)
class GpuNode:
    """One fake GPU node: what a GPU-feature-discovery-labelled node of a pool looks like.

    Labels use NVIDIA GFD names (``nvidia.com/gpu.product`` …) plus ``tidepool.dev/pool`` and
    ``tidepool.dev/tenancy``, so a GPUPool's nodeSelector can use either.
    """

    name: str
    pool: str
    tenancy: str
    gpus: int
    pod_cidr: str
    internal_ip: str
    product: str = "NVIDIA-A100-SXM4-80GB"
    gpu_memory_mib: int = 81920
    family: str = "ampere"
    taints: tuple[Taint, ...] = (Taint(GPU_RESOURCE, "present"),)
    cpu: str = "96"
    memory: str = "1152Gi"
    max_pods: int = 110
    extra_labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_pool(
        cls, pool: str, index: int, *, slot: int = 0, table: Path = GPU_NODES_FILE
    ) -> GpuNode:
        """Node number ``index`` (0-based) of ``pool`` as the table describes it.

        Indexes past the table's ``nodes`` count are allowed: that is how a test adds a node.
        ``slot`` keeps concurrently running clusters (a test session, the demo, a colleague's
        run) on disjoint loopback ranges: node i of slot s gets third octet ``s*32 + i + 1``.
        Prefer ``Cluster.gpu_node()``, which passes the cluster's own slot.
        """
        rows = {row["name"]: row for row in load_pool_table(table)}
        if pool not in rows:
            raise KeyError(f"no pool {pool!r} in {table}; known: {sorted(rows)}")
        row = rows[pool]
        if not 0 <= index < NODES_PER_SLOT - 1:
            raise ValueError(f"node index {index} must be in 0..{NODES_PER_SLOT - 2}")
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot {slot} must be in 0..{SLOTS - 1}")
        octet = slot * NODES_PER_SLOT + index + 1
        return cls(
            name=f"gpu-{pool}-{index}",
            pool=pool,
            tenancy=row["tenancy"],
            gpus=int(row["gpusPerNode"]),
            product=row["product"],
            gpu_memory_mib=int(row["gpuMemoryMiB"]),
            family=row["family"],
            pod_cidr=f"{row['podCIDRPrefix']}.{octet}.0/24",
            internal_ip=f"{row['nodeIPPrefix']}.{octet}",
            taints=tuple(
                Taint(t["key"], t["value"], t.get("effect", "NoSchedule")) for t in row["taints"]
            ),
        )

    def manifest(self) -> dict[str, Any]:
        """The Node object; status is set at create time and kwok's node-initialize keeps it."""
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.max_pods),
            "ephemeral-storage": "2Ti",
            GPU_RESOURCE: str(self.gpus),
        }
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.product,
            "nvidia.com/gpu.count": str(self.gpus),
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
            "nvidia.com/gpu.family": self.family,
            "tidepool.dev/pool": self.pool,
            "tidepool.dev/tenancy": self.tenancy,
            **self.extra_labels,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                # kwokctl's kwok controller only manages nodes carrying this annotation.
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": labels,
            },
            "spec": {
                "podCIDR": self.pod_cidr,
                "podCIDRs": [self.pod_cidr],
                "taints": [t.manifest() for t in self.taints],
            },
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": self.internal_ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "capacity": resources,
                "allocatable": resources,
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "fake",
                    "kubeProxyVersion": "fake",
                },
            },
        }


def load_pool_table(path: Path = GPU_NODES_FILE) -> list[dict[str, Any]]:
    """The pool rows of ``gpu-nodes.yaml``."""
    data = yaml.safe_load(path.read_text())
    pools: list[dict[str, Any]] = data["pools"]
    return pools


def default_nodes(path: Path = GPU_NODES_FILE, *, slot: int = 0) -> list[GpuNode]:
    """Every node the table declares, pool by pool."""
    return [
        GpuNode.for_pool(row["name"], i, slot=slot, table=path)
        for row in load_pool_table(path)
        for i in range(int(row["nodes"]))
    ]


# --------------------------------------------------------------------------- cluster


@dataclass
class Timings:
    """What bringing the cluster up cost, in seconds (printed by up.sh and the fixtures)."""

    kwokctl_create: float = 0.0
    api_ready: float = 0.0
    nodes_ready: float = 0.0

    def summary(self) -> str:
        return (
            f"kwokctl create {self.kwokctl_create:.1f}s, API ready at {self.api_ready:.1f}s, "
            f"GPU nodes Ready at {self.nodes_ready:.1f}s"
        )


class Cluster:
    """One named kwokctl cluster (binary runtime) on 127.0.0.1.

    ``up()`` is safe to call when a stale cluster of the same name survived a crashed run (it is
    deleted first). ``down()`` is idempotent, runs at interpreter exit if the caller forgot, and
    kills any process whose pid file kwokctl left behind.
    """

    def __init__(self, name: str = "tidepool-test", *, bin_dir: Path | None = None) -> None:
        self.name = name
        self._bin_dir = bin_dir
        self.timings = Timings()
        self._atexit_registered = False
        self._owner_lock: IO[str] | None = None
        #: Components this object re-started itself (``restart_apiserver``), reaped in ``down``.
        self._restarted: list[subprocess.Popen[bytes]] = []
        self.slot: int = self._recorded_slot() if self._slot_file.exists() else -1

    # ---- paths

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = bin_dir_if_built() or ensure_binaries()
        return self._bin_dir

    @property
    def workdir(self) -> Path:
        """kwokctl's per-cluster directory (pids/, logs/, pki/, kubeconfig.yaml)."""
        return KWOK_WORKDIR / "clusters" / self.name

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig kwokctl writes; points at https://127.0.0.1:<port>."""
        return self.workdir / "kubeconfig.yaml"

    @property
    def config_path(self) -> Path:
        return KWOK_WORKDIR / f"{self.name}.kwokctl.yaml"

    def env(self) -> dict[str, str]:
        """Environment for kwokctl/kubectl: our bin dir first (kwokctl runs the first kubectl on
        PATH), our workdir, our kubeconfig, and no proxies."""
        return loopback_env(
            {
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "KWOK_WORKDIR": str(KWOK_WORKDIR),
                "KUBECONFIG": str(self.kubeconfig),
            }
        )

    # ---- config

    def config_text(self) -> str:
        """kwokctl config: local binaries only, 127.0.0.1 only, our stages."""
        b = self.bin_dir
        kwokctl_conf = {
            "kind": "KwokctlConfiguration",
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeApiserverBinary": str(b / "kube-apiserver"),
                "kubeControllerManagerBinary": str(b / "kube-controller-manager"),
                "kubeSchedulerBinary": str(b / "kube-scheduler"),
                "kubectlBinary": str(b / "kubectl"),
                "kwokControllerBinary": str(b / "kwok"),
                "etcdBinary": str(b / "etcd"),
                "quietPull": True,
            },
            # One controller-manager and one scheduler, nothing to elect. With leader election
            # on (their default), an API server down longer than the lease's renew deadline
            # (10 s) makes both exit with "leaderelection lost", and kwokctl's binary runtime
            # does not restart them: every Deployment after that gets no pods.
            "componentsPatches": [
                *(
                    {"name": component, "extraArgs": [{"key": "leader-elect", "value": "false"}]}
                    for component in ("kube-controller-manager", "kube-scheduler")
                ),
                # The API server's default Service range is 10.0.0.0/24: 253 ClusterIPs after
                # the `kubernetes` Service, and every InferenceDeployment has an engine Service,
                # so the 254th tenant's Service create fails with 500 (range full). A real
                # cluster's range is far larger (kubeadm: a /12).
                {
                    "name": "kube-apiserver",
                    "extraArgs": [{"key": "service-cluster-ip-range", "value": SERVICE_CIDR}],
                },
            ],
        }
        # No KwokConfiguration document: kwokctl passes a partial one through without kwok's
        # defaults (kwok v0.8.0 then dies with "node leases parallelism must be greater than
        # 0"). Not needed anyway: every node carries its own loopback podCIDR.
        docs = [yaml.safe_dump(kwokctl_conf), STAGES_FILE.read_text()]
        return "---\n".join(docs)

    def _write_config(self) -> None:
        KWOK_WORKDIR.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())

    def _kwokctl(self, *args: str, capture: bool = False, check: bool = True) -> str:
        # -v=WARN: our own log lines show progress; kwokctl's INFO JSON is noise on a terminal.
        cmd = [str(self.bin_dir / "kwokctl"), "-v=WARN", "--name", self.name, *args]
        proc = subprocess.run(
            cmd,
            env=self.env(),
            stdout=subprocess.PIPE if capture else sys.stderr,
            stderr=subprocess.STDOUT if capture else sys.stderr,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            out = f":\n{proc.stdout}" if capture and proc.stdout else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}){out}")
        return proc.stdout if capture else ""

    def _create_args(self) -> list[str]:
        return [
            "-c",
            str(self.config_path),
            "create",
            "cluster",
            "--runtime=binary",
            "--kubeconfig=",  # never touch ~/.kube/config; use self.kubeconfig
            "--wait=120s",
        ]

    def check_offline(self) -> str:
        """Prove kwokctl would download nothing.

        Its --dry-run prints ``# Download <source> to <bin>`` for every binary; a local source is
        only symlinked, a URL source would be fetched. So any "Download" line whose source has a
        scheme (``https://…``) fails. Returns the dry-run script.
        """
        self._write_config()
        script = self._kwokctl(*self._create_args(), "--dry-run", capture=True)
        downloads = [
            line
            for line in script.splitlines()
            if "Download" in line and "://" in line.split("Download", 1)[1].split(" to ", 1)[0]
        ]
        if downloads:
            raise RuntimeError("kwokctl would download:\n" + "\n".join(downloads))
        return script

    # ---- ownership and loopback slot

    @property
    def _slot_file(self) -> Path:
        return KWOK_WORKDIR / "slots" / self.name

    def _recorded_slot(self) -> int:
        try:
            return int(self._slot_file.read_text().strip())
        except (OSError, ValueError):
            return -1

    def _take_ownership(self) -> None:
        """Hold ``<name>.lock`` while this process runs the cluster.

        Why: ``up()`` deletes a same-named leftover from a crashed run; the lock tells a
        leftover (lock free) from a cluster another live session is using (lock held).
        Python opens files close-on-exec, so kwokctl's children never inherit the lock.
        """
        KWOK_WORKDIR.mkdir(parents=True, exist_ok=True)
        handle = (KWOK_WORKDIR / f"{self.name}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ClusterBusyError(f"cluster {self.name!r} is in use by another process") from None
        self._owner_lock = handle

    def _release_ownership(self) -> None:
        if self._owner_lock is not None:
            self._owner_lock.close()
            self._owner_lock = None

    def _allocate_slot(self) -> int:
        """Smallest loopback slot no other existing cluster records (under a global lock)."""
        slots_dir = KWOK_WORKDIR / "slots"
        slots_dir.mkdir(parents=True, exist_ok=True)
        with (slots_dir / ".lock").open("w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            used = set()
            for entry in slots_dir.iterdir():
                if entry.name.startswith(".") or entry.name == self.name:
                    continue
                if not (KWOK_WORKDIR / "clusters" / entry.name).exists():
                    entry.unlink(missing_ok=True)  # its cluster is gone: a stale record
                    continue
                with contextlib.suppress(OSError, ValueError):
                    used.add(int(entry.read_text().strip()))
            free = [n for n in range(SLOTS) if n not in used]
            if not free:
                raise RuntimeError(f"all {SLOTS} loopback slots are taken by running clusters")
            self._slot_file.write_text(str(free[0]))
            return free[0]

    def gpu_node(self, pool: str, index: int) -> GpuNode:
        """Node ``index`` of ``pool`` in this cluster's loopback slot (for ``add_node``)."""
        return GpuNode.for_pool(pool, index, slot=self.slot)

    # ---- lifecycle

    def exists(self) -> bool:
        return self.workdir.exists()

    def up(self, *, nodes: Iterable[GpuNode] | None = None, timeout: float = 180.0) -> Cluster:
        """Create the cluster, wait for the API, add the GPU nodes and wait until they are Ready.

        Raises ClusterBusyError if another live process owns a cluster of this name.
        """
        self.check_offline()
        self._take_ownership()
        if self.exists():
            log(f"cluster {self.name!r} left over from an earlier run; deleting it first")
            self.down(release=False)
        self.slot = self._allocate_slot()
        self._write_config()
        if not self._atexit_registered:
            atexit.register(self.down)
            self._atexit_registered = True
        start = time.monotonic()
        log(
            f"creating cluster {self.name!r} (kwokctl --runtime=binary, binaries in {self.bin_dir})"
        )
        try:
            # kwokctl picks "unused" ports by probing and by reading other clusters' saved
            # configs; two creates at once pick the same ports and break each other. So creates
            # are serialized across processes (each takes ~4 s).
            with (KWOK_WORKDIR / ".create.lock").open("w") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                self._kwokctl(*self._create_args())
            self.timings.kwokctl_create = time.monotonic() - start
            self.wait_api_ready(timeout=timeout)
            self.timings.api_ready = time.monotonic() - start
            node_list = list(default_nodes(slot=self.slot) if nodes is None else nodes)
            self.apply_nodes(node_list)
            self.wait_nodes_ready([n.name for n in node_list], timeout=timeout)
            self.timings.nodes_ready = time.monotonic() - start
        except BaseException:
            log("cluster start failed; tearing down")
            self.dump_logs()
            self.down()
            raise
        log(
            f"cluster {self.name!r} up (loopback slot {self.slot}): {self.timings.summary()}; "
            f"kubeconfig {self.kubeconfig}"
        )
        return self

    def down(self, *, release: bool = True) -> None:
        """Delete the cluster and make sure none of its processes survive."""
        try:
            self._down()
        finally:
            for proc in self._restarted:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            self._restarted.clear()
            if release:
                self._release_ownership()

    def _down(self) -> None:
        if not self.exists():
            self._slot_file.unlink(missing_ok=True)
            self.config_path.unlink(missing_ok=True)
            return
        pids = self._component_pids()
        if (self.bin_dir / "kwokctl").exists():
            try:
                self._kwokctl("delete", "cluster", check=False)
            except OSError as exc:
                log(f"kwokctl delete cluster failed: {exc}")
        for pid in pids:
            _kill_if_alive(pid)
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.config_path.unlink(missing_ok=True)
        self._slot_file.unlink(missing_ok=True)
        log(f"cluster {self.name!r} deleted")

    def assert_components_alive(self) -> None:
        """Raise ComponentDiedError (with the log tail) if a kwokctl-started process is gone."""
        for pid_file in sorted((self.workdir / "pids").glob("*.pid")):
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, 0)
            except (ValueError, OSError):
                component = pid_file.stem
                log_file = self.workdir / "logs" / f"{component}.log"
                tail = ""
                with contextlib.suppress(OSError):
                    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-5:])
                raise ComponentDiedError(
                    f"{component} is not running; {log_file}:\n{tail}"
                ) from None

    def restart_apiserver(self, *, down_for: float = 3.0, timeout: float = 60.0) -> None:
        """Stop kube-apiserver, keep it down ``down_for`` seconds, start it again as it was.

        For resilience tests: clients must reconnect their watches on their own. The process
        is re-executed with its own command line and environment, and its pid file updated, so
        ``down()`` still finds it.
        """
        pid_file = self.workdir / "pids" / "kube-apiserver.pid"
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        cwd = os.readlink(f"/proc/{pid}/cwd")
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not _alive(pid), timeout=5, what="apiserver graceful exit")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)  # its graceful shutdown can take minutes; crash it
            wait_for(lambda: not _alive(pid), timeout=30, what="apiserver exit")
        time.sleep(down_for)
        log_path = self.workdir / "logs" / "kube-apiserver.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(  # the same binary and flags kwokctl used
                [a.decode() for a in argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={k.decode(): v.decode() for k, v in environ.items()},
                cwd=cwd,
                start_new_session=True,
            )
        self._restarted.append(proc)
        pid_file.write_text(str(proc.pid))
        self.wait_api_ready(timeout=timeout)
        # The rest of the control plane must have ridden out the outage; a component that
        # exited would fail every later test with symptoms far from the cause.
        self.assert_components_alive()

    def _component_pids(self) -> list[int]:
        pids = []
        for pid_file in (self.workdir / "pids").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pids.append(int(pid_file.read_text().strip()))
        return pids

    def dump_logs(self, lines: int = 30) -> None:
        """Print the tail of every component log (why did start-up fail?)."""
        for log_file in sorted((self.workdir / "logs").glob("*.log")):
            with contextlib.suppress(OSError):
                tail = log_file.read_text(errors="replace").splitlines()[-lines:]
                log(f"--- {log_file.name} (last {len(tail)} lines)")
                for line in tail:
                    print(f"    {line}", file=sys.stderr)

    # ---- kubectl and waits

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input_text,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(self, manifests: Sequence[dict[str, Any]] | str, *, server_side: bool = True) -> None:
        """kubectl apply (server-side by default) of objects or of a YAML text."""
        text = manifests if isinstance(manifests, str) else yaml.safe_dump_all(manifests)
        args = ["apply", "-f", "-"]
        if server_side:
            args += ["--server-side", "--field-manager=tidepool-e2e", "--force-conflicts"]
        self.kubectl(*args, input_text=text)

    def wait_api_ready(self, *, timeout: float = 120.0) -> None:
        def ready() -> bool:
            self.assert_components_alive()
            return self.kubectl("get", "--raw", "/readyz", check=False, timeout=10).stdout == "ok"

        wait_for(ready, timeout=timeout, what="kube-apiserver /readyz")
        # The default ServiceAccount/namespaces come from controllers; wait for "default" SA so
        # pods can be created in new namespaces without admission errors right after start.
        wait_for(
            lambda: (
                self.kubectl("get", "sa", "default", "-n", "default", check=False).returncode == 0
            ),
            timeout=timeout,
            what="the default ServiceAccount",
        )

    def apply_nodes(self, nodes: Sequence[GpuNode]) -> None:
        """Create the nodes with their status (a node's status is not set by apply, so patch it)."""
        if not nodes:
            return
        self.apply([n.manifest() for n in nodes])
        for node in nodes:
            status = {"status": node.manifest()["status"]}
            self.kubectl(
                "patch", "node", node.name, "--subresource=status", "--type=merge",
                "-p", json.dumps(status),
            )  # fmt: skip

    def add_node(self, node: GpuNode, *, timeout: float = 60.0) -> None:
        """Add one more GPU node (e.g. to test scale-out into a pool) and wait until it is Ready."""
        self.apply_nodes([node])
        self.wait_nodes_ready([node.name], timeout=timeout)

    def remove_node(self, name: str) -> None:
        self.kubectl("delete", "node", name, "--wait=false")

    def wait_nodes_ready(self, names: Sequence[str], *, timeout: float = 120.0) -> None:
        def all_ready() -> bool:
            self.assert_components_alive()
            out = self.kubectl("get", "nodes", "-o", "json", check=False).stdout
            if not out:
                return False
            ready = {
                item["metadata"]["name"]
                for item in json.loads(out)["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in item.get("status", {}).get("conditions", [])
                )
                and item.get("status", {}).get("allocatable", {}).get(GPU_RESOURCE)
            }
            return set(names) <= ready

        wait_for(all_ready, timeout=timeout, what=f"nodes {', '.join(names)} Ready", interval=0.3)

    def apply_crds(self, crds_dir: Path = CRDS_DIR, *, timeout: float = 60.0) -> list[str]:
        """Apply every CRD in ``crds_dir`` (server-side) and wait until each is Established.

        Returns the CRD names (empty when the directory does not exist yet).
        """
        files = (
            sorted([*crds_dir.glob("*.yaml"), *crds_dir.glob("*.yml")]) if crds_dir.is_dir() else []
        )
        names: list[str] = []
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    names.append(doc["metadata"]["name"])
            self.kubectl("apply", "--server-side", "--field-manager=tidepool-e2e",
                         "--force-conflicts", "-f", str(path))  # fmt: skip
        if names:
            self.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                         *[f"crd/{n}" for n in names], timeout=timeout + 10)  # fmt: skip
        return names


def _alive(pid: int) -> bool:
    """Running, i.e. present and not a zombie (PID 1 here may never reap kwokctl's children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def reap_stale_clusters(prefix: str) -> list[str]:
    """Delete clusters named ``prefix*`` whose owner died (their ``<name>.lock`` is free).

    Why: a SIGKILLed test session cannot run its teardown, and kwokctl's processes outlive it
    by design. The next session calls this, so at most one session's leftovers ever exist.
    """
    reaped = []
    clusters_dir = KWOK_WORKDIR / "clusters"
    if not clusters_dir.is_dir():
        return reaped
    for workdir in sorted(clusters_dir.iterdir()):
        if not workdir.name.startswith(prefix):
            continue
        cluster = Cluster(workdir.name)
        try:
            cluster._take_ownership()
        except ClusterBusyError:
            continue  # a live session uses it
        log(f"deleting cluster {workdir.name!r} left behind by a dead session")
        cluster.down()
        reaped.append(workdir.name)
    # Lock files of pid-suffixed sessions that are gone (unique names: no unlink race).
    for lock_path in KWOK_WORKDIR.glob(f"{prefix}*.lock"):
        if (clusters_dir / lock_path.stem).exists():
            continue
        with lock_path.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            lock_path.unlink(missing_ok=True)
    return reaped


def _kill_if_alive(pid: int) -> None:
    """SIGTERM, then SIGKILL after 5s, a pid kwokctl recorded (only if it still runs)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        log(f"killed stray process {pid}")


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tidepool's local kwok cluster")
    parser.add_argument("action", choices=["up", "down", "kubeconfig", "check-offline"])
    parser.add_argument("name", nargs="?", default="tidepool-demo")
    parser.add_argument("--no-crds", action="store_true", help="do not apply crds/*.yaml")
    args = parser.parse_args(argv)
    if args.action == "down":
        bin_dir = bin_dir_if_built()
        cluster = Cluster(args.name, bin_dir=bin_dir)
        if bin_dir is None:
            log("no binaries built; nothing can be running")
            return 0
        cluster.down()
        return 0
    if args.action == "kubeconfig":
        print(Cluster(args.name, bin_dir=Path("/nonexistent")).kubeconfig)
        return 0
    t0 = time.monotonic()
    bin_dir = ensure_binaries()
    log(f"binaries ready in {time.monotonic() - t0:.1f}s: {bin_dir}")
    cluster = Cluster(args.name, bin_dir=bin_dir)
    if args.action == "check-offline":
        cluster.check_offline()
        log("kwokctl --dry-run downloads nothing")
        return 0
    cluster.up()
    if not args.no_crds:
        crds = cluster.apply_crds()
        log(f"applied CRDs: {', '.join(crds) or 'none (crds/ is empty or missing)'}")
    # Leave it running for the caller: the atexit teardown is for tests, not for `up`.
    atexit.unregister(cluster.down)
    print(cluster.kubeconfig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
