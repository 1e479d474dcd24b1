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

import contextlib
import json
import os
import secrets
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import stack
from waiting import wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tidepool"
CRDS = (
    "inferencedeployments.tidepool.dev",
    "gpupools.tidepool.dev",
    "sharedengines.tidepool.dev",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)
KEEP = "helm.sh/resource-policy"
#: The chart refuses a gateway without a key Secret unless this says so. These installs run no
#: real gateway pod (kwok), or run the gateway as a process without keys.
NO_KEYS: dict[str, Any] = {"apiKeys": {"allowNoKeys": True}}
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
        "lint", str(CHART), "--strict", "--kube-version", kube_tools.kube_version(),
        "--set", "gateway.apiKeys.existingSecret=tenant-keys",
    )  # fmt: skip
    assert "0 chart(s) failed" in proc.stdout


def component_values(component: str) -> dict[str, Any]:
    """OpenShift-style security contexts (no UID) and every extra a component takes."""
    return {
        "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": component}},
            }
        ],
        "envFrom": [{"secretRef": {"name": f"{component}-env", "optional": True}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca", "optional": True}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    }


@pytest.mark.parametrize("variant", ["default", "non-default", "openshift-with-extras"])
def test_rendered_chart_passes_server_side_validation(
    kube_tools: Kube, ns: str, release: str, tmp_path: Path, variant: str
) -> None:
    """Every rendered object is valid for the API server (schemas, CEL, admission), the
    `helm test` Pod and the aggregated roles included."""
    if variant == "default":
        # A dry run: the default pools are never persisted.
        values: dict[str, Any] = {"gateway": NO_KEYS}
    elif variant == "openshift-with-extras":
        values = {
            "global": {"imageRegistry": "ignored"},
            "operator": component_values("operator"),
            "gateway": {**component_values("gateway"), **NO_KEYS},
            "extraObjects": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "{{ .Release.Name }}-extra", "namespace": ns},
                    "data": {"release": "{{ .Release.Name }}"},
                }
            ],
            "gpuPools": pools_for(release),
        }
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
                "apiKeys": {"existingSecret": "tenant-keys"},  # mounted; need not exist here
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
            "--values", values_file(tmp_path, {"gpuPools": pools, "gateway": NO_KEYS}),
        )  # fmt: skip
        for crd in CRDS:
            live = kube_tools.get_json("crd", crd)
            assert live is not None, crd
            assert live["metadata"]["annotations"].get(KEEP) == "keep", crd
        dep = kube_tools.get_json("deployment", operator, "-n", ns)
        assert dep is not None
        assert dep["spec"]["replicas"] == 2  # one active, one standby (Kopf's peering)
        assert dep["spec"]["strategy"]["type"] == "Recreate"
        assert kube_tools.get_json("poddisruptionbudget", operator, "-n", ns) is not None
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
            assert kube_tools.can_i(
                op_sa, "update", "inferencedeployments.tidepool.dev/finalizers", namespace
            )
            assert kube_tools.can_i(op_sa, "watch", "events", namespace)
            # The internet-facing gateway reads models and EndpointSlices and creates wake
            # Events; it can read no pod (specs hold the engines' environment), change no model
            # (image, args, env) and read no Event or Secret.
            for verb in ("patch", "update", "create", "delete"):
                assert not kube_tools.can_i(
                    gw_sa, verb, "inferencedeployments.tidepool.dev", namespace
                )
            assert kube_tools.can_i(gw_sa, "watch", "inferencedeployments.tidepool.dev", namespace)
            assert kube_tools.can_i(gw_sa, "watch", "endpointslices.discovery.k8s.io", namespace)
            for verb in ("get", "list", "watch"):
                assert not kube_tools.can_i(gw_sa, verb, "pods", namespace)
            assert kube_tools.can_i(gw_sa, "create", "events", namespace)
            assert not kube_tools.can_i(gw_sa, "list", "events", namespace)
            assert not kube_tools.can_i(gw_sa, "patch", "events", namespace)
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
        assert kube_tools.can_i(op_sa, "patch", "gpupools.tidepool.dev", None)  # Kopf's finalizer
        assert not kube_tools.can_i(op_sa, "create", "gpupools.tidepool.dev", None)
        assert not kube_tools.can_i(op_sa, "delete", "gpupools.tidepool.dev", None)
        assert not kube_tools.can_i(
            op_sa, "delete", "customresourcedefinitions.apiextensions.k8s.io", None
        )
        for verb in ("watch", "patch", "create"):  # Kopf's peering, cluster-wide
            assert kube_tools.can_i(op_sa, verb, "clusterkopfpeerings.kopf.dev", None)
        assert not kube_tools.can_i(op_sa, "delete", "clusterkopfpeerings.kopf.dev", None)

        # -- upgrade: namespaced mode, more gateways ---------------------------------------------
        upgraded = {
            "gpuPools": pools,
            "operator": {"watchNamespaces": [ns]},
            "gateway": {"replicas": 3, **NO_KEYS},
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
        # Peering moves to a KopfPeering in the watched namespace.
        assert kube_tools.can_i(op_sa, "patch", "kopfpeerings.kopf.dev", ns)
        assert not kube_tools.can_i(op_sa, "patch", "kopfpeerings.kopf.dev", other_ns)
        assert not kube_tools.can_i(op_sa, "patch", "clusterkopfpeerings.kopf.dev", None)
        # Kopf posts the Events of cluster-scoped objects (GPUPools) to "default".
        assert kube_tools.can_i(op_sa, "create", "events", "default")
        assert not kube_tools.can_i(op_sa, "create", "deployments.apps", "default")
        # The gateway follows the operator's namespace: nothing outside it.
        assert kube_tools.can_i(gw_sa, "watch", "endpointslices.discovery.k8s.io", ns)
        assert kube_tools.can_i(gw_sa, "create", "events", ns)
        assert not kube_tools.can_i(gw_sa, "watch", "endpointslices.discovery.k8s.io", other_ns)
        assert not kube_tools.can_i(gw_sa, "watch", "pods", ns)
        assert not kube_tools.can_i(gw_sa, "watch", "inferencedeployments.tidepool.dev", other_ns)
        assert not kube_tools.can_i(gw_sa, "create", "events", other_ns)
        assert kube_tools.can_i(gw_sa, "watch", "sharedengines.tidepool.dev", None)
        gw_args = kube_tools.get_json("deployment", gateway, "-n", ns)
        assert gw_args is not None
        assert f"--namespace={ns}" in gw_args["spec"]["template"]["spec"]["containers"][0]["args"]
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


# --------------------------------------------------- the programs under the chart's accounts


def token_kubeconfig(kube_tools: Kube, ns: str, account: str, path: Path) -> str:
    """A kubeconfig that authenticates as ``ns/account`` with a bound token (TokenRequest),
    against the same API server as the admin kubeconfig: the authorizer then sees exactly what
    the pod would."""
    token = kube_tools.kubectl(
        "create", "token", account, "--namespace", ns, "--duration", "1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(kube_tools.kubeconfig).read_text())
    context = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {"name": account, "context": {"cluster": cluster["name"], "user": account}}
                ],
                "current-context": account,
            }
        )
    )
    return str(path)


def forbidden_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "403" in line or "orbidden" in line]


@pytest.mark.usefixtures("crds_handed_back")
def test_operator_and_gateway_under_the_charts_service_accounts(
    kube_tools: Kube, ns: str, release: str, tmp_path: Path
) -> None:
    """The operator and the gateway, run as processes with the tokens of the ServiceAccounts
    the chart creates, do their whole job with no 403: the operator peered as the chart's
    replicas are (it creates the ClusterKopfPeering and keeps its record there), fresh GPUPools
    get Kopf's finalizer and their status, an InferenceDeployment gets its engine Deployment
    and Service (owner references with blockOwnerDeletion) and status, the gateway discovers it
    and wakes it with an Event that the operator turns into the wake annotation, and deleting
    the model and the pools releases the finalizers."""
    pools = pools_for(release)
    operator, gateway = f"{release}-tidepool-operator", f"{release}-tidepool-gateway"
    adopt_existing_crds(kube_tools, release, ns)
    kube_tools.helm(
        "install", release, str(CHART), "--namespace", ns,
        "--values", values_file(tmp_path, {"gpuPools": pools, "gateway": NO_KEYS}),
    )  # fmt: skip
    op_proc = stack.operator(
        token_kubeconfig(kube_tools, ns, operator, tmp_path / "operator.kubeconfig"),
        "http://127.0.0.1:9",  # no Prometheus: the autoscaler holds; RBAC is what is tested
        peering=operator,  # the chart's default peering name: <fullname>-operator
    )
    gw_proc = stack.gateway(
        token_kubeconfig(kube_tools, ns, gateway, tmp_path / "gateway.kubeconfig"),
        queue_timeout="5s",
        replica_service=(ns, gateway),  # counted as the chart's pods count (no 403 below)
        # As the chart runs it: the chart grants EndpointSlices, not pods (the engine slices
        # stay empty here, their loopback addresses refused, but the wake needs no endpoint).
        endpoints_from="endpointslices",
    )
    model = "rbac-probe"
    try:
        op_proc.start(timeout=60)
        gw_proc.start(timeout=60)
        kube_tools.kubectl(
            "apply", "--server-side", "--field-manager", "kubectl", "-f", "-",
            stdin=yaml.safe_dump(
                {
                    "apiVersion": "tidepool.dev/v1alpha1",
                    "kind": "InferenceDeployment",
                    "metadata": {"name": model, "namespace": ns},
                    "spec": {
                        "model": {"name": f"org/{model}", "servedName": model},
                        "mode": "serverless",
                        "placement": {"pools": {"shared": pools[0]["name"]}},
                    },
                }
            ),
        )  # fmt: skip

        def reconciled() -> bool:
            obj = kube_tools.get_json("inferencedeployment", model, "-n", ns) or {}
            conds = obj.get("status", {}).get("conditions", [])
            deps = kube_tools.get_json(
                "deployments", "-n", ns, "-l", "tidepool.dev/inference-deployment"
            )
            return any(c["type"] == "Ready" for c in conds) and bool(deps and deps["items"])

        wait_for(reconciled, timeout=60, what="the model reconciled under the operator's SA")
        deps = kube_tools.get_json(
            "deployments", "-n", ns, "-l", "tidepool.dev/inference-deployment"
        )
        assert deps is not None
        owner = deps["items"][0]["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["blockOwnerDeletion"]) == ("InferenceDeployment", True)

        def pools_observed() -> bool:
            for pool in pools:
                live = kube_tools.get_json("gpupool", pool["name"]) or {}
                if not live.get("metadata", {}).get("finalizers") or "nodes" not in live.get(
                    "status", {}
                ):
                    return False
            return True

        wait_for(pools_observed, timeout=60, what="fresh pools finalized and observed")

        # The wake: a request for the sleeping model makes the gateway create an Event; the
        # operator copies it onto the model.
        wait_for(
            lambda: gateway_knows_model(gw_proc, model), timeout=30, what="gateway sees the model"
        )
        complete_in_background(gw_proc, model)

        def woken() -> bool:
            obj = kube_tools.get_json("inferencedeployment", model, "-n", ns) or {}
            return "tidepool.dev/wake-requested-at" in obj["metadata"].get("annotations", {})

        wait_for(woken, timeout=30, what="the gateway's wake Event forwarded to the model")
        events = kube_tools.get_json("events", "-n", ns, "--field-selector", "reason=WakeRequested")
        assert events is not None
        assert events["items"], "the gateway created no wake Event"

        kube_tools.kubectl("delete", "inferencedeployment", model, "-n", ns, "--timeout=60s")
    finally:
        # Pools first, while the operator and its RBAC still run: Kopf holds a finalizer on each
        # pool for its status timer, which only the operator releases (the chart README's
        # uninstall section says the same to users).
        try:
            for pool in pools:
                kube_tools.kubectl("delete", "gpupool", pool["name"], "--wait=false", check=False)
            for pool in pools:
                wait_for(
                    lambda p=pool: kube_tools.get_json("gpupool", p["name"]) is None,
                    timeout=60,
                    what=f"pool {pool['name']} deleted by the operator under its SA",
                )
        finally:
            op_proc.stop()
            gw_proc.stop()
            kube_tools.helm("uninstall", release, "--namespace", ns, "--wait", "--timeout", "60s")
            # The operator created it, so the release does not own it (the README says so).
            kube_tools.kubectl(
                "delete", "clusterkopfpeering", operator, "--ignore-not-found", check=False
            )
    op_log, gw_log = op_proc.tail(100000), gw_proc.tail(100000)
    assert forbidden_lines(op_log) == [], op_log[-4000:]
    assert forbidden_lines(gw_log) == [], gw_log[-4000:]
    assert "Handler 'observe_pool'" in op_log or "observe_pool" in op_log


def gateway_knows_model(gw: stack.ManagedProcess, model: str) -> bool:
    url = gw.health_url
    assert url is not None
    base = url.rsplit("/", 1)[0]
    return stack.http_ok(f"{base}/v1/models") and model in _get_text(f"{base}/v1/models")


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return str(resp.read().decode())


def complete_in_background(gw: stack.ManagedProcess, model: str) -> None:
    """Send one completion and do not wait for it: it is held until the gateway's timeout."""
    url = gw.health_url
    assert url is not None
    base = url.rsplit("/", 1)[0]
    body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 1}).encode()

    def send() -> None:
        req = urllib.request.Request(
            f"{base}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=10).read()

    threading.Thread(target=send, daemon=True).start()


def test_installs_from_an_umbrella_chart(kube_tools: Kube, ns: str, tmp_path: Path) -> None:
    """Tidepool as a dependency of a platform chart (Helm hands it `global`), installed for real
    and uninstalled; the CRDs are the session's (crds.install=false, as the README says for
    CRDs applied beforehand)."""
    umbrella = tmp_path / "platform"
    (umbrella / "charts").mkdir(parents=True)
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {"name": "tidepool", "version": "*", "repository": f"file://{CHART}"}
                ],
            }
        )
    )
    (umbrella / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {"imageRegistry": "mirror.example.internal"},
                "tidepool": {"crds": {"install": False}, "gpuPools": [], "gateway": NO_KEYS},
            }
        )
    )
    kube_tools.helm("dependency", "update", str(umbrella), "--skip-refresh")
    release = f"plat-{secrets.token_hex(3)}"
    kube_tools.helm("install", release, str(umbrella), "--namespace", ns)
    try:
        dep = kube_tools.get_json("deployment", f"{release}-tidepool-operator", "-n", ns)
        assert dep is not None
        assert kube_tools.can_i(
            sa(ns, f"{release}-tidepool-operator"), "patch", "gpupools.tidepool.dev", None
        )
    finally:
        kube_tools.helm("uninstall", release, "--namespace", ns, "--wait", "--timeout", "60s")
    assert leftovers(kube_tools, release, ns) == []
