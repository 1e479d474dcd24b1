"""The Helm chart against the real local control plane (kube-apiserver, etcd, kwok nodes).

What runs here and not in tests/unit/chart: the API server's own validation of every rendered
object (``kubectl apply --dry-run=server``), a real ``helm install`` / ``upgrade`` /
``uninstall`` cycle, and RBAC decisions by the authorizer (``kubectl auth can-i --as``).
kwok fakes pods, so the operator and gateway pods never really run; this file checks objects and
permissions, and a separate test runs the operator process under the chart's ServiceAccount.

Every command talks to the loopback API server only (NO_PROXY, no Helm repositories).

Shared cluster state is handled with care: GPUPools are cluster-scoped and InferenceDeployments
without a pool preference pick "the first pool of the needed tenancy, by name", so the pools
this file installs get unique names that sort after any other test's; the CRDs may already
exist (applied by the session fixture), in which case Helm adopts them and gives them back
untouched at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tidepool"
CRDS = (
    "inferencedeployments.tidepool.dev",
    "gpupools.tidepool.dev",
    "sharedengines.tidepool.dev",
)
KEEP = "helm.sh/resource-policy"
HELM_OWNERSHIP_ANNOTATIONS = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")
#: Namespaced kinds a release may create, and cluster-scoped ones, for the orphan check.
NAMESPACED_KINDS = (
    "deployments.apps",
    "services",
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "networkpolicies.networking.k8s.io",
    "poddisruptionbudgets.policy",
)
CLUSTER_KINDS = (
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "gpupools.tidepool.dev",
)


class Kube:
    """kubectl and helm from the cluster's bin dir, with an isolated Helm home."""

    def __init__(self, cluster: Any, helm_home: Path) -> None:
        self.bin_dir = Path(cluster.bin_dir)
        self.kubeconfig = str(cluster.kubeconfig)
        self.env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "NO_PROXY": "127.0.0.0/8,localhost",
            "no_proxy": "127.0.0.0/8,localhost",
            "HTTPS_PROXY": "",
            "HTTP_PROXY": "",
            "https_proxy": "",
            "http_proxy": "",
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def _run(
        self, tool: str, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", "--kubeconfig", self.kubeconfig, *args, **kw)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self._run("helm", "--kubeconfig", self.kubeconfig, *args, **kw)

    def kube_version(self) -> str:
        out = json.loads(self.kubectl("version", "-o", "json").stdout)
        return str(out["serverVersion"]["gitVersion"]).lstrip("v")

    def get_json(self, *args: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            assert "NotFound" in proc.stderr, proc.stderr
            return None
        obj = json.loads(proc.stdout)
        assert isinstance(obj, dict)
        return obj

    def can_i(self, sa: str, verb: str, resource: str, namespace: str | None) -> bool:
        """Ask the authorizer. ``resource`` may name a subresource: ``deployments.apps/scale``
        (kubectl itself would read the part after "/" as an object name)."""
        resource, _, subresource = resource.partition("/")
        args = ["auth", "can-i", verb, resource, f"--as={sa}"]
        if subresource:
            args.append(f"--subresource={subresource}")
        args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
        proc = self.kubectl(*args, check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stderr
        return answer == "yes"


@pytest.fixture
def kube_tools(cluster: Any, tmp_path: Path) -> Kube:
    return Kube(cluster, tmp_path / "helm")


@pytest.fixture
def ns(namespace: Any) -> str:
    return str(getattr(namespace, "name", namespace))


@pytest.fixture
def release() -> str:
    return f"tpit-{secrets.token_hex(3)}"


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def pools_for(release: str) -> list[dict[str, Any]]:
    """Pools with unique names that sort last, so other tests never pick them by default."""
    return [
        {
            "name": f"zz-{release}-shared",
            "tenancy": "shared",
            "gpuType": "NVIDIA-A100-SXM4-80GB",
            "gpusPerNode": 8,
            "nodeSelector": {"tidepool.dev/pool": f"zz-{release}-none"},
            "pricePerGpuHour": 1.5,
            "pricePerMillionTokens": 0.2,
        },
        {
            "name": f"zz-{release}-dedicated",
            "tenancy": "dedicated",
            "gpuType": "NVIDIA-A100-SXM4-80GB",
            "nodeSelector": {"tidepool.dev/pool": f"zz-{release}-none"},
            "tolerations": [{"key": "tidepool.dev/tenancy", "value": "dedicated"}],
            "pricePerGpuHour": 4.0,
        },
    ]


# ------------------------------------------------------------------------------ lint/template


def test_helm_lint(kube_tools: Kube) -> None:
    proc = kube_tools.helm(
        "lint", str(CHART), "--strict", "--kube-version", kube_tools.kube_version()
    )
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", ["default", "non-default"])
def test_rendered_chart_passes_server_side_validation(
    kube_tools: Kube, ns: str, release: str, tmp_path: Path, variant: str
) -> None:
    """Every rendered object is valid for the API server (schemas, CEL, admission)."""
    if variant == "default":
        values: dict[str, Any] = {}  # a dry run: the default pools are never persisted
    else:
        values = {
            "imageRegistry": "registry.example.internal",
            "operator": {
                "watchNamespaces": [ns],
                "image": {"digest": "sha256:" + "c" * 64},
                "extraArgs": ["--verbose"],
                "env": [{"name": "TIDEPOOL_LOG_FORMAT", "value": "json"}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "critical", "operator": "Exists"}],
            },
            "gateway": {
                "replicas": 3,
                "service": {"type": "LoadBalancer", "port": 443},
                "podDisruptionBudget": {"enabled": True},
            },
            "networkPolicy": {
                "enabled": True,
                "gatewayFrom": [{"namespaceSelector": {}}],
                "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
            },
            "crds": {"keep": False},
            "gpuPools": pools_for(release),
        }
    rendered = kube_tools.helm(
        "template", release, str(CHART),
        "--namespace", ns,
        "--kube-version", kube_tools.kube_version(),
        "--values", values_file(tmp_path, values),
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    if kube_tools.get_json("crd", "gpupools.tidepool.dev") is None:
        # Without the CRD the API server cannot check GPUPools in a dry run; CRDs alone first.
        docs = [d for d in docs if d["kind"] != "GPUPool"]
    proc = kube_tools.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server",
        "--field-manager", "tidepool-chart-test", "-f", "-",
        stdin=yaml.safe_dump_all(docs),
    )  # fmt: skip
    applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(docs), proc.stdout


def test_bad_values_are_refused_before_anything_is_created(
    kube_tools: Kube, ns: str, release: str, tmp_path: Path
) -> None:
    bad = {"gateway": {"port": 0}, "operator": {"replica": 2}}
    proc = kube_tools.helm(
        "install", release, str(CHART), "--namespace", ns,
        "--values", values_file(tmp_path, bad),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "schema" in proc.stderr
    assert "port" in proc.stderr
    assert "replica" in proc.stderr
    listed = json.loads(kube_tools.helm("list", "--namespace", ns, "--all", "-o", "json").stdout)
    assert listed == []
    assert kube_tools.get_json("clusterrole", f"{release}-tidepool-operator") is None


# ------------------------------------------------------------------ install/upgrade/uninstall


@pytest.fixture
def crds_handed_back(kube_tools: Kube) -> Iterator[None]:
    """Whatever happens, leave the CRDs in place and owned by no Helm release afterwards.

    The session may have applied the CRDs already; Helm then adopts them (they get Helm's
    ownership metadata first, as a user adopting existing CRDs would do). Afterwards that
    metadata is removed again, so later tests or a real install start from a clean slate.
    """
    for crd in CRDS:
        if kube_tools.get_json("crd", crd) is not None:
            kube_tools.kubectl(
                "label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite"
            )
    yield
    for crd in CRDS:
        if kube_tools.get_json("crd", crd) is not None:
            kube_tools.kubectl(
                "annotate", "crd", crd, *(f"{a}-" for a in HELM_OWNERSHIP_ANNOTATIONS), check=False
            )


def adopt_existing_crds(kube_tools: Kube, release: str, ns: str) -> bool:
    existed = False
    for crd in CRDS:
        if kube_tools.get_json("crd", crd) is not None:
            existed = True
            kube_tools.kubectl(
                "annotate", "crd", crd, "--overwrite",
                f"meta.helm.sh/release-name={release}",
                f"meta.helm.sh/release-namespace={ns}",
            )  # fmt: skip
    return existed


def leftovers(kube_tools: Kube, release: str, ns: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    found: list[str] = []
    for kind in NAMESPACED_KINDS:
        out = kube_tools.kubectl("get", kind, "-A", "-l", selector, "-o", "name").stdout.split()
        found += out
    for kind in CLUSTER_KINDS:
        found += kube_tools.kubectl("get", kind, "-l", selector, "-o", "name").stdout.split()
    return found


def sa(ns: str, name: str) -> str:
    return f"system:serviceaccount:{ns}:{name}"


@pytest.mark.usefixtures("crds_handed_back")
def test_install_upgrade_uninstall(kube_tools: Kube, ns: str, release: str, tmp_path: Path) -> None:
    other_ns = "default"
    pools = pools_for(release)
    pool_names = sorted(p["name"] for p in pools)
    operator, gateway = f"{release}-tidepool-operator", f"{release}-tidepool-gateway"
    had_crds = adopt_existing_crds(kube_tools, release, ns)

    try:
        # -- install ------------------------------------------------------------------------
        kube_tools.helm(
            "install", release, str(CHART), "--namespace", ns,
            "--values", values_file(tmp_path, {"gpuPools": pools}),
        )  # fmt: skip
        for crd in CRDS:
            live = kube_tools.get_json("crd", crd)
            assert live is not None, crd
            assert live["metadata"]["annotations"].get(KEEP) == "keep", crd
        dep = kube_tools.get_json("deployment", operator, "-n", ns)
        assert dep is not None
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        gw = kube_tools.get_json("deployment", gateway, "-n", ns)
        assert gw is not None
        assert kube_tools.get_json("service", gateway, "-n", ns) is not None
        live_pools = sorted(
            n
            for n in kube_tools.kubectl("get", "gpupools", "-o", "name").stdout.split()
            if n.split("/")[-1].startswith(f"zz-{release}")
        )
        assert [n.split("/")[-1] for n in live_pools] == pool_names

        # -- RBAC (cluster-wide mode) ----------------------------------------------------------
        op_sa, gw_sa = sa(ns, operator), sa(ns, gateway)
        for namespace in (ns, other_ns):
            assert kube_tools.can_i(op_sa, "patch", "deployments.apps", namespace)
            assert kube_tools.can_i(op_sa, "create", "deployments.apps", namespace)
            assert kube_tools.can_i(
                op_sa, "patch", "inferencedeployments.tidepool.dev/status", namespace
            )
            assert kube_tools.can_i(op_sa, "watch", "inferencedeployments.tidepool.dev", namespace)
            assert not kube_tools.can_i(
                op_sa, "delete", "inferencedeployments.tidepool.dev", namespace
            )
            assert not kube_tools.can_i(op_sa, "create", "pods", namespace)
            assert kube_tools.can_i(gw_sa, "patch", "inferencedeployments.tidepool.dev", namespace)
            assert kube_tools.can_i(gw_sa, "watch", "pods", namespace)
            assert not kube_tools.can_i(
                gw_sa, "patch", "inferencedeployments.tidepool.dev/status", namespace
            )
            assert not kube_tools.can_i(gw_sa, "patch", "deployments.apps", namespace)
            assert not kube_tools.can_i(gw_sa, "get", "secrets", namespace)
        assert not kube_tools.can_i(op_sa, "get", "secrets", other_ns)
        assert not kube_tools.can_i(op_sa, "list", "secrets", None)
        assert not kube_tools.can_i(op_sa, "delete", "nodes", None)
        assert kube_tools.can_i(op_sa, "watch", "nodes", None)
        assert kube_tools.can_i(op_sa, "patch", "gpupools.tidepool.dev/status", None)
        assert not kube_tools.can_i(op_sa, "delete", "gpupools.tidepool.dev", None)
        assert not kube_tools.can_i(
            op_sa, "delete", "customresourcedefinitions.apiextensions.k8s.io", None
        )

        # -- upgrade: namespaced mode, more gateways ---------------------------------------------
        upgraded = {
            "gpuPools": pools,
            "operator": {"watchNamespaces": [ns]},
            "gateway": {"replicas": 3},
        }
        kube_tools.helm(
            "upgrade", release, str(CHART), "--namespace", ns,
            "--values", values_file(tmp_path, upgraded, "upgrade.yaml"),
        )  # fmt: skip
        gw = kube_tools.get_json("deployment", gateway, "-n", ns)
        assert gw is not None
        assert gw["spec"]["replicas"] == 3
        dep = kube_tools.get_json("deployment", operator, "-n", ns)
        assert dep is not None
        assert f"--namespace={ns}" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert kube_tools.can_i(op_sa, "patch", "deployments.apps", ns)
        assert not kube_tools.can_i(op_sa, "patch", "deployments.apps", other_ns)
        assert not kube_tools.can_i(
            op_sa, "patch", "inferencedeployments.tidepool.dev/status", other_ns
        )
        assert kube_tools.can_i(op_sa, "watch", "gpupools.tidepool.dev", None)
        # The pools are release objects now (adopted if a post-install hook created them).
        manifest = kube_tools.helm("get", "manifest", release, "--namespace", ns).stdout
        assert sum(1 for d in yaml.safe_load_all(manifest) if d and d["kind"] == "GPUPool") == 2
    finally:
        # -- uninstall ---------------------------------------------------------------------------
        for crd in CRDS:  # never risk the session's CRDs: refuse to uninstall without "keep"
            live = kube_tools.get_json("crd", crd)
            if live is not None and (live["metadata"].get("annotations") or {}).get(KEEP) != "keep":
                pytest.fail(f"CRD {crd} lacks {KEEP}: keep; not uninstalling (would delete it)")
        kube_tools.helm("uninstall", release, "--namespace", ns, "--wait", "--timeout", "60s")

    for crd in CRDS:
        assert kube_tools.get_json("crd", crd) is not None, f"{crd} was deleted by helm uninstall"
    assert leftovers(kube_tools, release, ns) == []
    for pool in pool_names:
        assert kube_tools.get_json("gpupool", pool) is None, pool
    if not had_crds:
        # This test installed the CRDs; they stay (kept), like after a real uninstall.
        assert kube_tools.get_json("crd", CRDS[0]) is not None
