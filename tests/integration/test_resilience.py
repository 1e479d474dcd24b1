"""Operator resilience on the real control plane: API server restarts, least-privilege identity."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures_stack import Tidepool
from kubernetes import client
from tidepool_stack import (
    apply_infd,
    condition,
    deployments,
    engine_pods,
    get_infd,
    infd_manifest,
    wait_for,
)

import localcluster
import stack

pytestmark = pytest.mark.usefixtures("logs_on_failure")
REPO = Path(__file__).resolve().parents[2]
RELEASE, RELEASE_NS = "tp", "tidepool-system"


def _ready(kube: client.ApiClient, ns: str, name: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (
            (o := get_infd(kube, ns, name))
            and condition(o, "Ready").get("status") == "True"
            and o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            and o
        ),
        timeout=timeout,
        what=f"{ns}/{name} Ready=True at the current generation",
    )


def test_operator_keeps_reconciling_after_an_apiserver_restart(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, cluster: localcluster.Cluster
) -> None:
    body = infd_manifest("survivor", namespace, mode="dedicated", scaling={"minReplicas": 1})
    apply_infd(kube, body)
    _ready(kube, namespace, "survivor")

    cluster.restart_apiserver(down_for=3.0)

    # A spec change after the restart is seen (the watch reconnected) and rolled out...
    body["spec"]["engine"] = {"maxModelLen": 2048}
    apply_infd(kube, body)
    wait_for(
        lambda: any(
            "--max-model-len" in p.spec.containers[0].args for p in engine_pods(kube, namespace)
        ),
        timeout=90,
        what="the engine rolled after the API server restart",
    )
    # ...and a brand-new object is reconciled too.
    apply_infd(
        kube, infd_manifest("newcomer", namespace, mode="dedicated", scaling={"minReplicas": 1})
    )
    _ready(kube, namespace, "newcomer", timeout=90)
    assert tidepool.operator.proc is not None
    assert tidepool.operator.proc.poll() is None, "the operator must not exit on a lost API"


def _render_identity(cluster: localcluster.Cluster) -> str:
    helm = cluster.bin_dir / "helm"
    return subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(REPO / "charts" / "tidepool"),
            "--namespace",
            RELEASE_NS,
            "--kube-version",
            "1.36.3",
            "--set",
            "crds.install=false",
            "--set",
            "gateway.apiKeys.allowNoKeys=true",  # only the operator's identity is shown
            "--show-only",
            "templates/serviceaccounts.yaml",
            "--show-only",
            "templates/operator-rbac.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def chart_identity_kubeconfig(cluster: localcluster.Cluster, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig that authenticates as the chart's operator ServiceAccount."""
    cluster.kubectl("create", "namespace", RELEASE_NS, check=False)
    rendered = _render_identity(cluster)
    cluster.kubectl("apply", "-f", "-", input_text=rendered)
    sa = next(
        d["metadata"]["name"]
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("operator")
    )
    token = cluster.kubectl("create", "token", sa, "-n", RELEASE_NS, "--duration", "1h").stdout
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    admin["users"] = [{"name": "chart-operator", "user": {"token": token.strip()}}]
    for ctx in admin["contexts"]:
        ctx["context"]["user"] = "chart-operator"
    path = tmp_path / "operator-sa.kubeconfig"
    path.write_text(yaml.safe_dump(admin))
    try:
        yield path
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input_text=rendered, check=False)


def test_example_goes_ready_with_the_operator_under_the_charts_service_account(
    kube: client.ApiClient,
    namespace: str,
    tidepool: Tidepool,
    chart_identity_kubeconfig: Path,
) -> None:
    tidepool.operator.stop()  # one active operator at a time
    least_privileged = stack.operator(
        str(chart_identity_kubeconfig), tidepool.prometheus_url, tick=1.0
    ).start(timeout=60)
    try:
        example = yaml.safe_load((REPO / "examples" / "dedicated.yaml").read_text())
        example["metadata"]["namespace"] = namespace
        apply_infd(kube, example)
        obj = _ready(kube, namespace, example["metadata"]["name"], timeout=90)
        assert deployments(kube, namespace)
        assert obj["status"]["pool"] == "dedicated-a100"
        assert "Forbidden" not in least_privileged.tail(200), least_privileged.tail(40)
    finally:
        least_privileged.stop()
        tidepool.operator = stack.operator(
            tidepool.kubeconfig, tidepool.prometheus_url, tick=1.0
        ).start()
