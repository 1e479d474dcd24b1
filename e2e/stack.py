"""Run Tidepool's own programs (operator, gateway) as real local processes for tests and the demo.

They run as processes on loopback rather than as pods: kwok's pods are fake, and only
127.0.0.0/8 may be contacted here. Each process gets its own log file, so a failing test can
print the operator's log instead of a bare assertion.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(200 <= resp.status < 300)
    except OSError:
        return False


def _new_log_file() -> Path:
    fd, path = tempfile.mkstemp(prefix="tidepool-", suffix=".log")
    os.close(fd)
    return Path(path)


@dataclass
class ManagedProcess:
    """A ``tidepool`` sub-command running in the background, with its log kept."""

    name: str
    args: list[str]
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=_new_log_file)

    def start(self, timeout: float = 30.0) -> ManagedProcess:
        env = {**os.environ, "NO_PROXY": "127.0.0.0/8,localhost", **self.env}
        env.pop("HTTP_PROXY", None)
        env.pop("HTTPS_PROXY", None)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidepool", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        if self.health_url:
            deadline = time.monotonic() + timeout
            while not http_ok(self.health_url):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not healthy in {timeout}s:\n{self.tail()}")
                time.sleep(0.1)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``VmRSS`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replicas_of(kube: client.ApiClient, namespace: str, name: str) -> int | None:
    """A Deployment's ``spec.replicas``; None while it does not exist."""
    try:
        dep = client.AppsV1Api(kube).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return int(dep.spec.replicas or 0)


def metrics_text(process: ManagedProcess) -> str:
    """The ``/metrics`` page of ``process`` (started with ``--metrics-port``)."""
    port = int(process.args[process.args.index("--metrics-port") + 1])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric_total(process: ManagedProcess, metric: str) -> float:
    """A counter of ``process`` summed over its label sets, read from its own ``/metrics``."""
    text = metrics_text(process)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((metric + "{", metric + " "))
    )


def operator(
    kubeconfig: str,
    prometheus_url: str,
    *,
    tick: float = 1.0,
    peering: str | None = None,
    peering_lifetime: int | None = None,
    identity: str | None = None,
) -> ManagedProcess:
    """The operator; standalone unless ``peering`` names a Kopf peering object, to run as one of
    several replicas (``identity``: its ``POD_ID``, its key in that object)."""
    health = free_port()
    ha = ["--peering", peering] if peering else []
    if peering_lifetime is not None:
        ha += ["--peering-lifetime", str(peering_lifetime)]
    env = {"KUBECONFIG": kubeconfig}
    if identity:
        env["POD_ID"] = identity
    return ManagedProcess(
        name=f"operator {identity}" if identity else "operator",
        args=[
            "run",
            "--kubeconfig",
            kubeconfig,
            "--prometheus-url",
            prometheus_url,
            "--tick",
            str(tick),
            "--health-host",
            "127.0.0.1",
            "--health-port",
            str(health),
            "--metrics-port",
            str(free_port()),
            *ha,
        ],
        health_url=f"http://127.0.0.1:{health}/healthz",
        env=env,
    )


def gateway(
    kubeconfig: str,
    *,
    port: int | None = None,
    metrics_port: int | None = None,
    queue_timeout: str = "60s",
    api_keys: Path | None = None,
    namespace: str | None = None,
    shared_engine_namespace: str | None = None,
    replica_service: tuple[str, str] | None = None,
    endpoints_from: str = "pods",
) -> ManagedProcess:
    """The gateway on ``port`` (the API) and ``metrics_port`` (/metrics, what Prometheus
    scrapes); a free port for either one not given. ``api_keys``: its ``--api-keys`` file;
    ``namespace``: watch only that one (else every namespace), with the SharedEngine fleets in
    ``shared_engine_namespace``. ``replica_service``: (namespace, name) of the Service whose
    ready endpoints it counts as its replicas (``--replica-service``, in ``POD_NAMESPACE`` as
    the chart sets it). ``endpoints_from``: its ``--endpoints-from``; pods by default, since
    the local cluster's pod IPs are loopback addresses, which the API server refuses in an
    EndpointSlice (Kubernetes' ValidateEndpointIP), so the engine Services' slices stay empty
    there."""
    port = port or free_port()
    metrics_port = metrics_port or free_port()
    scope = ["--namespace", namespace] if namespace else []
    if shared_engine_namespace:
        scope += ["--shared-engine-namespace", shared_engine_namespace]
    keys = ["--api-keys", str(api_keys)] if api_keys else []
    scope += ["--endpoints-from", endpoints_from]
    env = {"KUBECONFIG": kubeconfig}
    if replica_service is not None:
        env["POD_NAMESPACE"], service = replica_service
        scope += ["--replica-service", service]
    return ManagedProcess(
        name="gateway",
        args=[
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--kubeconfig",
            kubeconfig,
            "--queue-timeout",
            queue_timeout,
            *scope,
            *keys,
        ],
        health_url=f"http://127.0.0.1:{port}/readyz",
        env=env,
    )


def shared_engine_manifest(
    name: str,
    base: str,
    *,
    max_replicas: int,
    max_loras: int,
    scale_to_zero_after: str | None = None,
    min_replicas: int = 0,
    pool: str = "shared-a100",
) -> dict[str, Any]:
    """A SharedEngine of ``base`` on ``pool``, scaling ``min_replicas..max_replicas``,
    ``max_loras`` adapters per batch (``maxCpuLoras`` unset: vLLM keeps as many in CPU memory);
    ``scale_to_zero_after`` unset: the CRD's default."""
    scaling: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if scale_to_zero_after is not None:
        scaling["scaleToZeroAfter"] = scale_to_zero_after
    return {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SharedEngine",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": base},
            "pool": pool,
            "scaling": scaling,
            "lora": {"maxLoras": max_loras, "maxLoraRank": 16},
        },
    }


def lora_tenant_manifest(
    name: str, namespace: str, base: str, *, served: str, adapter: str, tenant: str | None = None
) -> dict[str, Any]:
    """A serverless LoRA tenant of ``base``: clients ask for ``served``, the engine serves
    ``adapter`` (from ``/models/adapters/<adapter>``); ``tenant``: its API-key tenant."""
    spec: dict[str, Any] = {
        "mode": "serverless",
        "model": {
            "name": base,
            "servedName": served,
            "adapter": {"name": adapter, "source": f"/models/adapters/{adapter}"},
        },
    }
    if tenant:
        spec["tenant"] = tenant
    return {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
