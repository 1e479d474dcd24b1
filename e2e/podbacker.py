"""The pod backer: real engine-simulator processes behind kwok's fake engine pods.

Why: kwok fakes kubelets, so a pod is only an API object. Tidepool's gateway, Prometheus and the
operator's make-before-break migration need pods that really answer HTTP, become Ready only when
the model has loaded, and drain in-flight requests when deleted. kwok gives engine pods
(label ``tidepool.dev/component=engine``) a loopback pod IP from their node's 127.x podCIDR and
phase Running but not Ready (``e2e/cluster/stages.yaml``). This harness plays the rest of the
kubelet for them:

* start ``python -m tidepool engine-sim --host <podIP> --port <port> --model <model>
  --load-delay <delay>`` for each such pod (port: the container port named ``http``, else 8000;
  model: label ``tidepool.dev/served-model``; delay: annotation ``tidepool.dev/sim-load-delay``);
* readiness follows the simulator's own ``/health`` (Ready and ContainersReady conditions and
  ``containerStatuses[].ready`` are patched both ways, like a readiness probe);
* a simulator that dies while its pod lives is restarted with back-off (``restartCount``);
* a pod with a deletionTimestamp, or gone, gets SIGTERM sent to its simulator (it drains and
  exits), SIGKILL at the grace-period deadline, and then the pod is force-deleted so it does not
  wait for kwok's deadline stage.

Everything is loopback: the simulators bind 127.x pod IPs, the probes go there, the API server is
on 127.0.0.1. Threads, not asyncio, so it runs beside any test's event loop.

Command line, for the demo: ``python e2e/podbacker.py --kubeconfig PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

# The keys the operator renders, from the one place that defines them, so the harness cannot
# drift from what it looks for.
from tidepool.api.labels import (
    COMPONENT,
    COMPONENT_ENGINE,
    INFERENCE_DEPLOYMENT,
    SERVED_MODEL,
    SIM_LOAD_DELAY,
)

ENGINE_SELECTOR = f"{COMPONENT}={COMPONENT_ENGINE}"
DEFAULT_PORT = 8000
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


def _log(message: str) -> None:
    print(f"[podbacker] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EngineSpec:
    """What the backer needs to know to run one pod's simulator."""

    namespace: str
    name: str
    uid: str
    host: str
    port: int
    model: str
    load_delay: str
    containers: tuple[str, ...]
    grace_seconds: int
    #: The engine container's vLLM flags of :data:`SIM_FLAGS` (LoRA's, the scheduling policy),
    #: passed on as they are (the simulator takes the same ones), and its environment the
    #: simulator reads (runtime adapter updating).
    sim_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


#: Builds the simulator's argv from a spec. The default runs the real engine simulator; tests of
#: the backer itself may pass a stand-in.
CommandFactory = Callable[[EngineSpec], list[str]]


def engine_sim_command(spec: EngineSpec) -> list[str]:
    """``python -m tidepool engine-sim …`` with the interpreter running the tests."""
    return [
        sys.executable, "-m", "tidepool", "engine-sim",
        "--host", spec.host, "--port", str(spec.port),
        "--model", spec.model, "--load-delay", spec.load_delay,
        *spec.sim_args,
    ]  # fmt: skip


#: vLLM's flags the simulator also takes (LoRA's and the scheduling policy), and whether each is
#: followed by a value.
SIM_FLAGS = {
    "--enable-lora": False,
    "--max-loras": True,
    "--max-cpu-loras": True,
    "--max-lora-rank": True,
    "--lora-modules": True,
    "--scheduling-policy": True,
}
#: Engine environment the simulator reads, as vLLM does.
SIM_ENV = ("VLLM_ALLOW_RUNTIME_LORA_UPDATING",)


def sim_args(args: Sequence[str]) -> tuple[str, ...]:
    """The flags of :data:`SIM_FLAGS` (with their values) out of a vLLM command line, in order:
    the LoRA flags and ``--scheduling-policy``, so the simulator schedules as the pod's engine.

    E.g. ``["serve", "m", "--max-num-seqs", "64", "--enable-lora", "--max-loras", "4",
    "--scheduling-policy", "priority"]`` gives ``("--enable-lora", "--max-loras", "4",
    "--scheduling-policy", "priority")``.
    """
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg in SIM_FLAGS:
            out.append(arg)
            if SIM_FLAGS[arg]:
                out.append(next(rest, ""))
    return tuple(out)


def http_port(pod: client.V1Pod) -> int:
    """The container port named ``http``; 8000 (vLLM's default) when none is named so."""
    for container in pod.spec.containers or []:
        for port in container.ports or []:
            if port.name == "http":
                return int(port.container_port)
    return DEFAULT_PORT


def spec_from_pod(pod: client.V1Pod, default_load_delay: str) -> EngineSpec | None:
    """The simulator spec for a pod kwok has started (bound, Running, with a pod IP), else None."""
    meta, status = pod.metadata, pod.status
    if not pod.spec.node_name or not status or not status.pod_ip or status.phase != "Running":
        return None
    labels = meta.labels or {}
    annotations = meta.annotations or {}
    model = (
        annotations.get(SERVED_MODEL)
        or labels.get(SERVED_MODEL)
        or labels.get(INFERENCE_DEPLOYMENT)
        or meta.name
    )
    grace = pod.spec.termination_grace_period_seconds
    engine = next(iter(pod.spec.containers or []), None)
    return EngineSpec(
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        host=status.pod_ip,
        port=http_port(pod),
        model=model,
        load_delay=annotations.get(SIM_LOAD_DELAY, default_load_delay),
        containers=tuple(c.name for c in pod.spec.containers or []),
        grace_seconds=30 if grace is None else int(grace),
        sim_args=sim_args(engine.args or []) if engine else (),
        env=tuple((e.name, e.value or "") for e in (engine.env or []) if e.name in SIM_ENV)
        if engine
        else (),
    )


def probe_health(host: str, port: int, path: str = "/health", timeout: float = 1.0) -> bool:
    """One readiness probe: HTTP 200 from the simulator's own health endpoint."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Backed:
    """Mutable state of one backed pod (owned by its worker thread)."""

    spec: EngineSpec
    stop: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # monotonic SIGKILL deadline once termination starts
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    thread: threading.Thread | None = None
    log_path: Path | None = None


class PodBacker:
    """Watches engine pods and runs one simulator process per started pod.

    Use as a context manager, or ``start()`` / ``stop()``. ``stop()`` terminates every simulator
    (SIGTERM, then SIGKILL after ``stop_grace`` seconds) so no process outlives a test session.
    """

    def __init__(
        self,
        kubeconfig: Path | str,
        *,
        namespace: str | None = None,
        default_load_delay: str = "1s",
        command: CommandFactory = engine_sim_command,
        log_dir: Path | None = None,
        probe_interval: float = 0.25,
        failure_threshold: int = 3,
        stop_grace: float = 10.0,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.namespace = namespace
        self.default_load_delay = default_load_delay
        self.command = command
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tidepool-podbacker-"))
        self.probe_interval = probe_interval
        self.failure_threshold = failure_threshold
        self.stop_grace = stop_grace
        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._core = client.CoreV1Api(self._api)
        self._lock = threading.Lock()
        self._backed: dict[str, _Backed] = {}  # by pod UID
        self._by_address: dict[tuple[str, int], _Backed] = {}
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._watch: watch.Watch | None = None
        self.errors: list[str] = []
        self._lock_file: IO[str] | None = None

    # ---- public API

    def start(self) -> PodBacker:
        self._take_lock()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._watcher = threading.Thread(
            target=self._watch_loop, name="podbacker-watch", daemon=True
        )
        self._watcher.start()
        _log(f"watching {ENGINE_SELECTOR} pods; simulator logs in {self.log_dir}")
        return self

    def stop(self) -> None:
        """Stop watching and terminate every simulator (drain first, SIGKILL if it lingers)."""
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()
        with self._lock:
            backed = list(self._backed.values())
        deadline = time.monotonic() + self.stop_grace
        for b in backed:
            b.deadline = deadline
            b.stop.set()
        for b in backed:
            if b.thread is not None:
                b.thread.join(timeout=self.stop_grace + 5)
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        self._api.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def _take_lock(self) -> None:
        """One backer per cluster: two would both start a simulator on each pod IP and fight
        over the port and the Ready condition. The lock lives beside the kubeconfig."""
        path = self.kubeconfig.with_name(self.kubeconfig.name + ".podbacker.lock")
        handle = path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RuntimeError(f"another pod backer already serves this cluster ({path})") from None
        self._lock_file = handle

    def __enter__(self) -> PodBacker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def backed_pods(self) -> dict[str, EngineSpec]:
        """``namespace/name`` -> spec of every pod that currently has a simulator."""
        with self._lock:
            return {b.spec.key: b.spec for b in self._backed.values()}

    def process_of(self, namespace: str, name: str) -> subprocess.Popen[bytes] | None:
        """The simulator process of a pod (tests use it to inject a crash)."""
        with self._lock:
            for b in self._backed.values():
                if b.spec.namespace == namespace and b.spec.name == name:
                    return b.process
        return None

    def log_of(self, namespace: str, name: str) -> str:
        """The simulator's combined stdout/stderr so far (for failure messages)."""
        path = self.log_dir / f"{namespace}_{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- watch

    def _watch_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self._list_and_watch()
            except Exception as exc:
                if self._stopped.is_set():
                    return
                _log(f"watch failed, relisting in 1s: {exc!r}")
                time.sleep(1)

    def _list(self, **kwargs: Any) -> Any:
        if self.namespace:
            return self._core.list_namespaced_pod(self.namespace, **kwargs)
        return self._core.list_pod_for_all_namespaces(**kwargs)

    def _list_and_watch(self) -> None:
        pods = self._list(label_selector=ENGINE_SELECTOR)
        alive = set()
        for pod in pods.items:
            alive.add(pod.metadata.uid)
            self._on_pod(pod)
        with self._lock:
            gone = [b for uid, b in self._backed.items() if uid not in alive]
        for b in gone:
            self._terminate(b, deadline_from_pod=None)
        self._watch = watch.Watch()
        func = (
            self._core.list_namespaced_pod
            if self.namespace
            else self._core.list_pod_for_all_namespaces
        )
        args = (self.namespace,) if self.namespace else ()
        for event in self._watch.stream(
            func,
            *args,
            label_selector=ENGINE_SELECTOR,
            resource_version=pods.metadata.resource_version,
            timeout_seconds=10,
        ):
            if self._stopped.is_set():
                return
            kind, pod = event["type"], event["object"]
            if kind == "ERROR" or not isinstance(pod, client.V1Pod):
                return  # e.g. 410 Gone: relist
            if kind == "DELETED":
                with self._lock:
                    b = self._backed.get(pod.metadata.uid)
                if b is not None:
                    self._terminate(b, deadline_from_pod=pod)
            else:
                self._on_pod(pod)

    def _on_pod(self, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        with self._lock:
            b = self._backed.get(uid)
        if pod.metadata.deletion_timestamp is not None:
            if b is not None:
                self._terminate(b, deadline_from_pod=pod)
            else:
                # No simulator (never started, or the backer restarted): nothing to drain, so
                # finish the delete now, as a kubelet does for a pod whose containers never ran.
                # Waiting for kwok would take the whole grace period (600 s for an engine).
                self._force_delete_unbacked(pod)
            return
        if b is not None or self._stopped.is_set():
            return
        spec = spec_from_pod(pod, self.default_load_delay)
        if spec is None:
            return
        # A pod already Ready (e.g. a backer restarted) is probed like any other; the first
        # failed probes flip it to not Ready while its new simulator loads.
        b = _Backed(
            spec=spec,
            log_path=self.log_dir / f"{spec.namespace}_{spec.name}.log",
            ready=_is_ready(pod),
        )
        b.thread = threading.Thread(
            target=self._run, args=(b,), name=f"podbacker-{spec.key}", daemon=True
        )
        with self._lock:
            self._backed[uid] = b
        b.thread.start()

    def _terminate(self, b: _Backed, *, deadline_from_pod: client.V1Pod | None) -> None:
        """Begin termination once: the SIGKILL deadline is the pod's deletionTimestamp (what the
        API server computed from the grace period) or, if unknown, now + the pod's grace."""
        if b.stop.is_set():
            return
        deadline = time.monotonic() + b.spec.grace_seconds
        ts = deadline_from_pod.metadata.deletion_timestamp if deadline_from_pod else None
        if ts is not None:
            deadline = time.monotonic() + max(0.0, (ts - datetime.now(UTC)).total_seconds())
        b.deadline = deadline
        b.stop.set()

    # ---- per-pod worker

    def _run(self, b: _Backed) -> None:
        spec = b.spec
        try:
            if not self._claim_address(b):
                return
            backoff = 0.5
            while not b.stop.is_set():
                self._spawn(b)
                exit_code = self._supervise(b)
                if b.stop.is_set():
                    break
                # Crashed while the pod lives: a kubelet restarts the container with back-off.
                b.restarts += 1
                _log(f"{spec.key}: simulator exited with {exit_code}; restart in {backoff}s")
                self._set_ready(b, False, exit_code=exit_code)
                if b.stop.wait(backoff):
                    break
                backoff = min(backoff * 2, 10.0)
            self._stop_process(b)
            self._force_delete(spec)
        except Exception as exc:
            self.errors.append(f"{spec.key}: {exc!r}")
            _log(f"{spec.key}: backer error {exc!r}")
            self._stop_process(b)
        finally:
            with self._lock:
                self._backed.pop(spec.uid, None)
                if self._by_address.get((spec.host, spec.port)) is b:
                    del self._by_address[(spec.host, spec.port)]

    def _claim_address(self, b: _Backed) -> bool:
        """kwok reuses a deleted pod's IP at once; wait until that pod's simulator has exited."""
        addr = (b.spec.host, b.spec.port)
        while not b.stop.is_set():
            with self._lock:
                owner = self._by_address.get(addr)
                if owner is None or owner is b:
                    self._by_address[addr] = b
                    return True
            if owner.thread is not None:
                owner.thread.join(timeout=0.2)
        return False

    def _spawn(self, b: _Backed) -> None:
        argv = self.command(b.spec)
        assert b.log_path is not None
        with b.log_path.open("ab") as out:
            out.write(f"\n--- {_now()} {' '.join(argv)}\n".encode())
            out.flush()
            b.process = subprocess.Popen(
                die_with_parent(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**_sim_env(), **dict(b.spec.env)},
                start_new_session=True,  # Ctrl-C on pytest must not kill sims before they drain
            )
        _log(f"{b.spec.key}: started simulator pid {b.process.pid} on {b.spec.host}:{b.spec.port}")

    def _supervise(self, b: _Backed) -> int | None:
        """Probe /health until the process exits or termination starts; return the exit code."""
        failures = 0
        assert b.process is not None
        while not b.stop.is_set():
            code = b.process.poll()
            if code is not None:
                return code
            healthy = probe_health(b.spec.host, b.spec.port)
            if healthy:
                failures = 0
                if not b.ready:
                    self._set_ready(b, True)
            else:
                failures += 1
                if b.ready and failures >= self.failure_threshold:
                    self._set_ready(b, False)
            b.stop.wait(self.probe_interval if not b.ready else max(self.probe_interval, 1.0))
        return None

    def _stop_process(self, b: _Backed) -> None:
        """SIGTERM (the simulator drains in-flight requests), SIGKILL at the deadline."""
        proc = b.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        deadline = b.deadline if b.deadline is not None else time.monotonic() + b.spec.grace_seconds
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log(f"{b.spec.key}: simulator still running at the grace deadline; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        _log(f"{b.spec.key}: simulator exited with {proc.returncode}")

    # ---- API writes

    def _set_ready(self, b: _Backed, ready: bool, *, exit_code: int | None = None) -> None:
        """Patch Ready/ContainersReady and containerStatuses like a kubelet's readiness probe."""
        now = _now()
        value = "True" if ready else "False"
        reason = (
            None
            if ready
            else ("ContainerExited" if exit_code is not None else "ReadinessProbeFailed")
        )
        conditions = [
            {
                "type": t,
                "status": value,
                "lastTransitionTime": now,
                "reason": reason,
                "message": None,
            }
            for t in ("Ready", "ContainersReady")
        ]
        statuses = []
        for name in b.spec.containers:
            status: dict[str, Any] = {"name": name, "ready": ready, "restartCount": b.restarts}
            if exit_code is not None:
                status["lastState"] = {
                    "terminated": {"exitCode": exit_code, "finishedAt": now, "reason": "Error"}
                }
            statuses.append(status)
        try:
            # containerStatuses is an atomic list (no merge key): send it whole, built on what
            # kwok wrote (image, state, started) so nothing else is lost.
            pod = self._core.read_namespaced_pod_status(b.spec.name, b.spec.namespace)
            if pod.metadata.uid != b.spec.uid:
                return
            current = {
                s["name"]: s
                for s in self._api.sanitize_for_serialization(pod.status.container_statuses or [])
            }
            statuses = [{**current.get(s["name"], {}), **s} for s in statuses]
            body = {"status": {"conditions": conditions, "containerStatuses": statuses}}
            self._core.patch_namespaced_pod_status(
                b.spec.name, b.spec.namespace, body, _content_type=STRATEGIC_MERGE
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        b.ready = ready
        _log(f"{b.spec.key}: Ready={value}")

    def _force_delete(self, spec: EngineSpec) -> None:
        """Finish a graceful delete (grace 0), only for this UID; a no-op if already gone."""
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=spec.uid)
        )
        try:
            pod = self._core.read_namespaced_pod(spec.name, spec.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if pod.metadata.uid != spec.uid or pod.metadata.deletion_timestamp is None:
            return  # replaced, or the backer is merely shutting down: leave the pod alone
        with contextlib.suppress(ApiException):
            self._core.delete_namespaced_pod(spec.name, spec.namespace, body=options)

    def _force_delete_unbacked(self, pod: client.V1Pod) -> None:
        """Finish the graceful delete of a bound pod with no simulator behind it.

        A pod deleted after it was bound but before kwok started it (a CR deleted right after
        its engine was created) has no pod IP yet, and kwok will never start it now.
        """
        if self._stopped.is_set() or not pod.spec.node_name:
            return  # unbound pods are removed by the API server itself
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.metadata.uid)
        )
        with contextlib.suppress(ApiException):  # already gone, or replaced under this name
            self._core.delete_namespaced_pod(
                pod.metadata.name, pod.metadata.namespace, body=options
            )


def die_with_parent(argv: list[str]) -> list[str]:
    """Prefix ``argv`` so the child gets SIGKILL if the thread that started it dies.

    Why: children run in their own session (so a Ctrl-C reaches them only through an orderly
    stop), which also means a SIGKILLed pytest would leave them running, holding their loopback
    addresses for the next session. PR_SET_PDEATHSIG (via util-linux ``setpriv``) closes that.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def _is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _sim_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.0/8,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--namespace", help="only this namespace (default: all)")
    parser.add_argument("--default-load-delay", default="5s", help="when a pod has no annotation")
    parser.add_argument("--log-dir", type=Path, help="simulator logs (default: a temp dir)")
    args = parser.parse_args(argv)
    backer = PodBacker(
        args.kubeconfig,
        namespace=args.namespace,
        default_load_delay=args.default_load_delay,
        log_dir=args.log_dir,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with backer:
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
