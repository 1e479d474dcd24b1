"""The container images, built by images/build.sh with podman and run as containers.

What this proves that the unit checks of the recipe cannot: the images exist, start, serve and
stop. engine-sim and the gateway run as the non-root user with a read-only root filesystem, no
capabilities and no privilege escalation (what the chart's securityContext asks of a pod), a
chat completion goes from the gateway's image to the engine simulator's image, SIGTERM ends
each with exit code 0, and the operator image generates the same CRDs that are committed.

Containers use the host network and listen on 127.0.0.1 only. The build is cached by content
(see images/build.sh), so the session fixture costs seconds once `make images` has run.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
import stack
from podbacker import PodBacker
from tidepool.api.v1alpha1 import InferenceDeployment
from tidepool.render import engine as render_engine

pytestmark = pytest.mark.cluster  # slow and needs the Debian tools `make deps` installs

REPO = Path(__file__).resolve().parents[2]
#: Each image's size before this recipe was 534 MB; the limit keeps it from creeping back.
MAX_IMAGE_BYTES = 300 * 1000 * 1000
#: What a restricted pod gets: the chart's container securityContext, in podman's words.
RESTRICTED = [
    "--read-only",
    "--user=65532:65532",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--network=host",
]


class Podman:
    def __init__(self, conf: str) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": conf}
        self.started: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def start(self, image: str, *args: str, flags: tuple[str, ...] = ()) -> str:
        name = f"tidepool-test-{secrets.token_hex(4)}"
        self("run", "--detach", "--name", name, *RESTRICTED, *flags, image, *args)
        self.started.append(name)
        return name

    def stop(self, name: str, grace: int = 20) -> int:
        """SIGTERM (the images' STOPSIGNAL), SIGKILL after ``grace``; the exit code."""
        self("stop", "--time", str(grace), name, timeout=grace + 30)
        state = json.loads(self("inspect", name))[0]["State"]
        return int(state["ExitCode"])

    def logs(self, name: str) -> str:
        return self("logs", name, check=False)

    def remove_started(self) -> None:
        for name in self.started:
            self("rm", "--force", "--time", "0", name, check=False)


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """target -> image reference, building only what the cache lacks."""
    proc = subprocess.run(
        ["bash", str(REPO / "images" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    refs = dict(line.split("=", 1) for line in proc.stdout.split())
    assert set(refs) == {"operator", "gateway", "engine-sim"}
    return refs


@pytest.fixture
def podman() -> Iterator[Podman]:
    conf = subprocess.run(
        ["bash", str(REPO / "images" / "build.sh"), "--print-conf"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    runner = Podman(conf)
    try:
        yield runner
    finally:
        runner.remove_started()


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_ok(url: str, podman: Podman, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not 200 within {timeout}s; container log:\n{podman.logs(name)}")


def post_json(url: str, body: dict[str, Any], timeout: float = 30.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8,localhost")


@pytest.mark.parametrize("target", ["operator", "gateway", "engine-sim"])
def test_image_is_small_non_root_labelled_and_without_plotting(
    images: dict[str, str], podman: Podman, target: str
) -> None:
    info = json.loads(podman("image", "inspect", images[target]))[0]
    assert info["Size"] < MAX_IMAGE_BYTES, f"{target}: {info['Size'] / 1e6:.0f} MB"
    config = info["Config"]
    assert config["User"] == "65532:65532"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"tidepool-{target}"
    assert labels["org.opencontainers.image.version"] == images[target].split(":")[1].split("-")[0]
    assert len(labels["org.opencontainers.image.revision"]) in (40, len("unknown"))
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # The simulator's plotting stack stays out, and so does pip (nothing to install at run time).
    probe = (
        "import importlib.util as u, sys;"
        "missing = [m for m in ('matplotlib', 'numpy', 'pip') if u.find_spec(m) is None];"
        "sys.exit(0 if len(missing) == 3 else 1)"
    )
    podman("run", "--rm", *RESTRICTED, "--entrypoint", "python", images[target], "-c", probe)


def test_engine_sim_image_serves_health_and_exits_0_on_sigterm(
    images: dict[str, str], podman: Podman
) -> None:
    port = stack.free_port()
    name = podman.start(
        images["engine-sim"], "--host", "127.0.0.1", "--port", str(port), "--model", "tiny"
    )
    wait_ok(f"http://127.0.0.1:{port}/health", podman, name)
    status, body = get(f"http://127.0.0.1:{port}/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["tiny"]
    assert podman("exec", name, "id", "-u").strip() == "65532"
    assert podman.stop(name) == 0, podman.logs(name)


def test_engine_sim_image_runs_the_operators_vllm_command(
    images: dict[str, str], podman: Podman
) -> None:
    """An engine Deployment whose image is engine-sim runs `vllm serve <what the operator
    renders>`; the image's `vllm` runs the simulator under the served name and port."""
    port = stack.free_port()
    infd = InferenceDeployment.model_validate(
        {
            "metadata": {"name": "llama", "namespace": "team-a"},
            "spec": {
                "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": "llama-8b"},
                "engine": {"port": port, "maxModelLen": 8192, "prefixCaching": True},
            },
        }
    )
    container = render_engine.container(infd.spec.engine, render_engine.vllm_args(infd), [])
    assert container["command"] == ["vllm", "serve"]
    name = podman.start(
        images["engine-sim"], *container["command"][1:], *container["args"],
        flags=("--entrypoint=vllm",),
    )  # fmt: skip
    wait_ok(f"http://127.0.0.1:{port}/health", podman, name)
    status, body = get(f"http://127.0.0.1:{port}/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["llama-8b"]
    assert podman.stop(name) == 0, podman.logs(name)


def test_chat_completion_through_gateway_image_to_engine_sim_image(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    engine_port, port, metrics_port = stack.free_port(), stack.free_port(), stack.free_port()
    engine = podman.start(
        images["engine-sim"], "--host", "127.0.0.1", "--port", str(engine_port), "--model", "tiny"
    )
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "tiny",
                        "namespace": "demo",
                        "servedModel": "tiny",
                        "pools": [{"name": "shared", "tenancy": "shared", "role": "primary"}],
                        "routablePools": ["shared"],
                        "endpoints": [{"host": "127.0.0.1", "port": engine_port, "pool": "shared"}],
                    }
                ]
            }
        )
    )
    routes.chmod(0o644)
    gateway = podman.start(
        images["gateway"],
        "gateway", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), "--static-routes", "/etc/tidepool/routes.yaml",
        "--drain-timeout", "5s",
        flags=(f"--volume={routes}:/etc/tidepool/routes.yaml:ro,Z",),
    )  # fmt: skip
    wait_ok(f"http://127.0.0.1:{engine_port}/health", podman, engine)
    wait_ok(f"http://127.0.0.1:{port}/readyz", podman, gateway)
    status, reply = post_json(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
    )
    assert status == 200, f"{reply}\n{podman.logs(gateway)}"
    assert reply["model"] == "tiny"
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] >= 1
    status, metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    assert b"tidepool_gateway_" in metrics
    assert podman.stop(gateway) == 0, podman.logs(gateway)
    assert podman.stop(engine) == 0, podman.logs(engine)


def test_operator_image_generates_the_committed_crds(
    images: dict[str, str], podman: Podman, tmp_path: Path
) -> None:
    """`tidepool crd` inside the image (the installed wheel, not the sources) writes the CRDs
    and chart schema byte for byte as committed: the image carries the same API."""
    out = tmp_path / "out"
    (out / "crds").mkdir(parents=True)
    (out / "charts" / "tidepool" / "templates" / "crds").mkdir(parents=True)
    os.chmod(out, 0o777)
    for d in out.rglob("*"):
        os.chmod(d, 0o777)
    podman(
        "run", "--rm", *RESTRICTED, f"--volume={out}:/out:Z",
        images["operator"], "crd", "--root", "/out",
    )  # fmt: skip
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written, "tidepool crd wrote nothing"
    for rel in written:
        assert (out / rel).read_text() == (REPO / rel).read_text(), rel
    help_text = podman("run", "--rm", *RESTRICTED, images["operator"], "run", "--help")
    assert "--all-namespaces" in help_text


# ------------------------------------------ the operator and gateway images on a control plane


@pytest.fixture(scope="module")
def image_cluster() -> Iterator[localcluster.Cluster]:
    """A control plane of this module's own: the session's operator (a process watching every
    namespace of the session cluster) must not reconcile what the images' operator does."""
    cluster = localcluster.Cluster(
        f"tidepool-images-{os.getpid()}", bin_dir=localcluster.ensure_binaries()
    )
    try:
        cluster.up()
        cluster.apply_crds(localcluster.CRDS_DIR)
        yield cluster
    finally:
        cluster.down()


def run_tool(cluster: localcluster.Cluster, tool: str, *args: str, stdin: str = "") -> str:
    proc = subprocess.run(
        [str(Path(cluster.bin_dir) / tool), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_PROXY": "127.0.0.0/8,localhost", "HTTPS_PROXY": ""},
    )
    assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def _pods_reader(account: str, ns: str) -> list[dict[str, Any]]:
    """A ClusterRole to get, list and watch Pods, bound to ``ns``/``account``."""
    name = f"{account}-test-pods-reader"
    rbac = "rbac.authorization.k8s.io"
    read = ["get", "list", "watch"]
    return [
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": read}],
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    ]


def sa_kubeconfig(cluster: localcluster.Cluster, ns: str, account: str, path: Path) -> Path:
    """A self-contained kubeconfig (CA inlined, bound token) that a container can read."""
    token = run_tool(cluster, "kubectl", "create", "token", account, "-n", ns).strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = admin["clusters"][0]["cluster"]
    ca = (
        entry.get("certificate-authority-data")
        or base64.b64encode(Path(entry["certificate-authority"]).read_bytes()).decode()
    )
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": entry["server"], "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o644)
    return path


def test_operator_and_gateway_images_wake_a_model_from_zero(
    images: dict[str, str], podman: Podman, image_cluster: localcluster.Cluster, tmp_path: Path
) -> None:
    """The whole cold start with Tidepool's own programs running from their images (podman,
    host network, a kubeconfig mounted, the chart's ServiceAccounts and RBAC, the chart's GPU
    pools): a model at zero gets a request through the gateway container, the gateway wakes it,
    the operator container scales it up, the engine (the pod backer's simulator behind kwok's
    pod) answers. Then SIGTERM stops both containers with exit code 0, and neither logged a
    403. The operator gets --kubeconfig and no KUBECONFIG variable, so Kopf must log in with
    that file too."""
    ns, release = "tidepool-system", "tidepool"
    run_tool(image_cluster, "helm", "install", release, str(REPO / "charts" / "tidepool"),
             "--namespace", ns, "--create-namespace",
             "--set", "crds.install=false",  # the CRDs were applied first
             "--set", "gateway.apiKeys.allowNoKeys=true")  # its gateway runs keyless  # fmt: skip
    # The chart's gateway reads EndpointSlices, but the API server refuses loopback addresses in
    # them, and kwok's pod IPs here are loopback: this gateway reads Pods instead
    # (--endpoints-from pods), so the test grants that one read on top of the chart's RBAC.
    image_cluster.apply(_pods_reader(f"{release}-gateway", ns))
    op_conf = sa_kubeconfig(image_cluster, ns, f"{release}-operator", tmp_path / "op.yaml")
    gw_conf = sa_kubeconfig(image_cluster, ns, f"{release}-gateway", tmp_path / "gw.yaml")
    health, port = stack.free_port(), stack.free_port()
    operator = podman.start(
        images["operator"],
        "run", "--kubeconfig", "/etc/tidepool/kubeconfig", "--all-namespaces",
        "--prometheus-url", "http://127.0.0.1:9", "--tick", "1",
        "--health-host", "127.0.0.1", "--health-port", str(health),
        "--metrics-port", str(stack.free_port()),
        flags=(f"--volume={op_conf}:/etc/tidepool/kubeconfig:ro,Z",),
    )  # fmt: skip
    gateway = podman.start(
        images["gateway"],
        "gateway", "--kubeconfig", "/etc/tidepool/kubeconfig", "--all-namespaces",
        "--endpoints-from", "pods",  # loopback pod IPs: no EndpointSlice may hold them
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(stack.free_port()),
        "--queue-timeout", "120s", "--drain-timeout", "5s",
        flags=(f"--volume={gw_conf}:/etc/tidepool/kubeconfig:ro,Z",),
    )  # fmt: skip
    with PodBacker(image_cluster.kubeconfig, default_load_delay="2s", log_dir=tmp_path) as backer:
        wait_ok(f"http://127.0.0.1:{health}/healthz", podman, operator, timeout=90)
        wait_ok(f"http://127.0.0.1:{port}/readyz", podman, gateway, timeout=60)
        model = {
            "apiVersion": "tidepool.dev/v1alpha1",
            "kind": "InferenceDeployment",
            "metadata": {"name": "cold", "namespace": "default"},
            "spec": {
                "model": {"name": "org/cold", "servedName": "cold"},
                "mode": "serverless",
                # A port of its own: pod IPs of two local clusters may coincide.
                "engine": {"port": stack.free_port()},
                "scaling": {"scaleToZeroAfter": "10m"},
            },
        }
        run_tool(image_cluster, "kubectl", "apply", "--server-side", "-f", "-",
                 stdin=json.dumps(model))  # fmt: skip

        def at_zero() -> bool:
            obj = json.loads(
                run_tool(image_cluster, "kubectl", "get", "infd", "cold", "-o", "json")
            )
            ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            return bool(ready) and ready[0]["reason"] == "ScaledToZero"

        wait_until(at_zero, 60, "the model at zero", podman, operator)
        wait_until(
            lambda: b'"cold"' in get(f"http://127.0.0.1:{port}/v1/models")[1],
            30, "the gateway to discover the model", podman, gateway,
        )  # fmt: skip
        started = time.monotonic()
        status, reply = post_json(
            f"http://127.0.0.1:{port}/v1/completions",
            {"model": "cold", "prompt": "hello", "max_tokens": 4},
            timeout=120,
        )
        waited = time.monotonic() - started
        assert status == 200, (
            f"{reply}\n{podman.logs(gateway)[-3000:]}\n{podman.logs(operator)[-3000:]}"
        )
        assert reply["choices"][0]["text"]
        assert waited >= 2.0, "the simulator's 2 s model load must have been waited for"
        assert not backer.errors
    annotations = json.loads(
        run_tool(image_cluster, "kubectl", "get", "infd", "cold", "-o", "json")
    )["metadata"]["annotations"]
    assert "tidepool.dev/wake-requested-at" in annotations  # the wake went gateway -> operator
    assert podman.stop(gateway) == 0, podman.logs(gateway)[-3000:]
    assert podman.stop(operator) == 0, podman.logs(operator)[-3000:]
    for name in (operator, gateway):
        log = podman.logs(name)
        assert not [line for line in log.splitlines() if "403" in line or "orbidden" in line], log


def wait_until(check: Any, timeout: float, what: str, podman: Podman, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; log:\n{podman.logs(name)[-4000:]}")
