"""A real Prometheus (Debian's /usr/bin/prometheus) for tests and the demo.

Why real: Tidepool's autoscaler reads vLLM metrics and the gateway's queue from Prometheus, and
"missing or stale metrics are unknown, never zero" can only be tested against the real thing,
including stopping it (``stop()``/``start()`` keep the port and the TSDB, so a restart resumes
with its history, as a real outage would).

It listens on 127.0.0.1:<free port> and scrapes every 2s (``scrape_interval``):

* engine pods, on their pod IPs (loopback addresses backed by ``podbacker``). Debian's build has
  no ``kubernetes_sd_configs``, so a discovery thread here lists engine pods through the API
  every second and writes them to a file_sd file (what kubernetes_sd with role ``pod`` and the
  usual relabelling would give: namespace, pod, node, pool, inference_deployment, served_model,
  tenant). Discovery keeps running while Prometheus is stopped, as the API would.
* the gateway/operator at addresses the fixtures set with ``set_targets`` (no restart needed).

See ``e2e/cluster/prometheus.yml.tmpl``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from string import Template
from typing import Any

from kubernetes import client, config

from podbacker import (
    ENGINE_SELECTOR,
    die_with_parent,
    http_port,
)
from tidepool.api.labels import (
    COMPONENT,
    COMPONENT_ENGINE,
    INFERENCE_DEPLOYMENT,
    POOL,
    SERVED_MODEL,
    TENANT,
)
from waiting import wait_for

TEMPLATE = Path(__file__).resolve().parent / "cluster" / "prometheus.yml.tmpl"
#: Jobs whose targets come from file_sd files written by ``set_targets``.
FILE_SD_JOBS = ("tidepool-gateway", "tidepool-operator")
ENGINES_JOB = "tidepool-engines"

# Never let an environment proxy intercept loopback requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _log(message: str) -> None:
    print(f"[prometheus] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_loopback(address: str) -> None:
    host = address.rsplit(":", 1)[0]
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{address}: only loopback targets are allowed (the network rule)")


def engine_targets(pods: Iterable[client.V1Pod]) -> list[dict[str, Any]]:
    """file_sd groups for engine pods: Running, with a loopback pod IP, one target per pod."""
    groups = []
    for pod in pods:
        meta, status = pod.metadata, pod.status
        labels = meta.labels or {}
        if labels.get(COMPONENT) != COMPONENT_ENGINE or not status or status.phase != "Running":
            continue
        if not status.pod_ip or not ipaddress.ip_address(status.pod_ip).is_loopback:
            continue
        target_labels = {
            "namespace": meta.namespace,
            "pod": meta.name,
            "node": pod.spec.node_name or "",
            "pool": labels.get(POOL, ""),
            "inference_deployment": labels.get(INFERENCE_DEPLOYMENT, ""),
            "served_model": labels.get(SERVED_MODEL, ""),
            "tenant": labels.get(TENANT, ""),
        }
        groups.append(
            {
                "targets": [f"{status.pod_ip}:{http_port(pod)}"],
                "labels": {k: v for k, v in target_labels.items() if v},
            }
        )
    groups.sort(key=lambda g: g["targets"][0])
    return groups


class _EngineDiscovery:
    """Polls engine pods (1s) and rewrites the engines file_sd file when the set changes."""

    def __init__(self, kubeconfig: Path, path: Path, interval: float = 1.0) -> None:
        self._api = config.new_client_from_config(config_file=str(kubeconfig))
        self._core = client.CoreV1Api(self._api)
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._last: str | None = None
        self._thread = threading.Thread(target=self._loop, name="prometheus-sd", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._api.close()

    def refresh(self) -> None:
        pods = self._core.list_pod_for_all_namespaces(
            label_selector=ENGINE_SELECTOR, timeout_seconds=5
        )
        text = json.dumps(engine_targets(pods.items), indent=1)
        if text != self._last:
            _atomic_write(self._path, text)
            self._last = text

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception as exc:  # the API may be briefly away; keep the last good file
                _log(f"engine discovery failed: {exc!r}")


def _atomic_write(path: Path, text: str) -> None:
    """Write via rename, so Prometheus never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Prometheus:
    """One Prometheus process with a generated config and a temp data dir.

    ``url`` is ``http://127.0.0.1:<port>``; give it to the operator as its Prometheus URL.
    """

    def __init__(
        self,
        kubeconfig: Path | str,
        *,
        binary: str | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        scrape_interval: float = 2.0,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.scrape_interval = scrape_interval
        found = binary or shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(found).exists():
            raise FileNotFoundError("prometheus not installed (apt-get install -y prometheus)")
        self.binary = found
        self.port = port or free_port()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="tidepool-prometheus-"))
        self.data_dir = self.workdir / "data"
        self.targets_dir = self.workdir / "targets"
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._discovery: _EngineDiscovery | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render_config(self) -> str:
        """The config for this instance. A scrape may take three quarters of the interval (the
        default 2 s gives 1.5 s), leaving Prometheus a margin before the next one starts."""
        return Template(TEMPLATE.read_text()).substitute(
            targets_dir=str(self.targets_dir),
            scrape_interval_ms=round(self.scrape_interval * 1000),
            scrape_timeout_ms=round(self.scrape_interval * 750),
        )

    def set_targets(
        self, job: str, addresses: Iterable[str], labels: dict[str, str] | None = None
    ) -> None:
        """Point a file_sd job (``tidepool-gateway`` or ``tidepool-operator``) at loopback
        ``host:port`` addresses. Prometheus picks the change up within ~2s, running or not."""
        if job not in FILE_SD_JOBS:
            raise ValueError(f"unknown job {job!r}; file_sd jobs are {FILE_SD_JOBS}")
        targets = list(addresses)
        for address in targets:
            _check_loopback(address)
        groups = [{"targets": targets, "labels": labels or {}}] if targets else []
        _atomic_write(self.targets_dir / f"{job}.json", json.dumps(groups))

    def start(self, *, timeout: float = 30.0) -> Prometheus:
        """Start (or restart after ``stop()``) and wait until ``/-/ready``."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for job in FILE_SD_JOBS:
            if not (self.targets_dir / f"{job}.json").exists():
                self.set_targets(job, [])
        if self._discovery is None:
            self._discovery = _EngineDiscovery(
                self.kubeconfig, self.targets_dir / f"{ENGINES_JOB}.json"
            )
            self._discovery.start()
        self.config_path.write_text(self.render_config())
        argv = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                die_with_parent(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited ({self._process.returncode}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)
        _log(f"ready at {self.url} (config {self.config_path})")
        return self

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the process (the data dir stays, so ``start()`` resumes with history)."""
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        _log("stopped")

    def close(self) -> None:
        """Stop Prometheus and discovery; delete the temp dir (if this object created it)."""
        self.stop()
        if self._discovery is not None:
            self._discovery.stop()
            self._discovery = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _ready(self) -> bool:
        try:
            with _OPENER.open(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    # ---- queries for tests

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return ``data`` (raises on an error status)."""
        query = urllib.parse.urlencode(params)
        with _OPENER.open(f"{self.url}/api/v1/{path}?{query}", timeout=5) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` vector."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def active_targets(self, job: str | None = None) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return [t for t in targets if job is None or t["labels"].get("job") == job]

    def wait_for_query(self, expr: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns a non-empty vector (scrapes are every 2s)."""
        return wait_for(
            lambda: self.query(expr), timeout=timeout, what=f"a result for {expr!r}", interval=0.5
        )


if __name__ == "__main__":
    # Demo helper: python e2e/prometheus.py KUBECONFIG [GATEWAY_METRICS_ADDR] -- runs until
    # Ctrl-C. The gateway serves /metrics on its --metrics-port, not on its API port.
    prom = Prometheus(
        sys.argv[1], port=int(os.environ.get("TIDEPOOL_PROMETHEUS_PORT", "0")) or None
    )
    if len(sys.argv) > 2:
        prom.set_targets("tidepool-gateway", [sys.argv[2]])
    with prom:
        print(prom.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
