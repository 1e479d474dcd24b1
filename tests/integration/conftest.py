"""Fixtures for tests against the real local control plane (kwok binary runtime).

Why session-scoped: the cluster starts in ~5 s but the binaries may need a one-time ~8 min
build, and Prometheus/the pod backer are shared infrastructure; per-test isolation comes from
the ``namespace`` fixture instead.

Fixtures (all tests in this directory are marked ``cluster`` automatically):

* ``cluster`` -> ``localcluster.Cluster`` (session): control plane up, fake GPU nodes Ready,
  ``crds/*.yaml`` applied and Established. Has ``.kubeconfig``, ``.kubectl()``, ``.apply()``,
  ``.add_node()``, ``.gpu_node()``, ``.remove_node()``, ``.slot``, ``.timings``. Named
  ``tidepool-test``; if another live session owns that name, ``tidepool-test-<pid>`` on its own
  loopback slot (disjoint pod IPs), and leftovers of dead sessions are deleted first.
* ``kubeconfig`` -> ``pathlib.Path`` (session).
* ``kube`` -> ``kubernetes.client.ApiClient`` (session), e.g. ``CoreV1Api(kube)``.
* ``namespace`` -> ``str`` (function): a fresh namespace; on teardown it is deleted and the
  test waits until its pods are gone, so the next test finds the GPUs free.
* ``podbacker`` -> ``podbacker.PodBacker`` (session): real ``tidepool engine-sim`` processes
  behind engine pods; Ready follows their /health.
* ``prometheus`` -> ``prometheus.Prometheus`` (session): Debian's prometheus scraping engine pods
  (and, once ``prometheus.set_targets("tidepool-gateway", [addr])`` is called, the gateway);
  ``prometheus.url`` for the operator; ``stop()``/``start()`` for outage tests.

``TIDEPOOL_CRDS_DIR`` overrides where the CRDs come from (default ``crds/``).
Set ``TIDEPOOL_KEEP_CLUSTER=1`` to leave the cluster running after the session (debugging);
``e2e/cluster/down.sh tidepool-test`` removes it later.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixtures that run Tidepool itself (operator, gateway, GPUPools).
from fixtures_stack import (  # noqa: F401 - re-exported for pytest
    gpupools,
    logs_on_failure,
    pytest_runtest_makereport,
    tidepool,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

import localcluster
from podbacker import PodBacker
from prometheus import Prometheus

CLUSTER_NAME = "tidepool-test"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the cluster: mark it, so ``-m 'not cluster'``
    runs the fast suite alone."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.Cluster]:
    bin_dir = localcluster.ensure_binaries()
    localcluster.reap_stale_clusters(f"{CLUSTER_NAME}-")
    c = localcluster.Cluster(CLUSTER_NAME, bin_dir=bin_dir)
    try:
        try:
            c.up()
        except localcluster.ClusterBusyError:
            # Another session (a colleague's run) owns tidepool-test: run beside it.
            c = localcluster.Cluster(f"{CLUSTER_NAME}-{os.getpid()}", bin_dir=bin_dir)
            c.up()
        crds = c.apply_crds(Path(os.environ.get("TIDEPOOL_CRDS_DIR", localcluster.CRDS_DIR)))
        localcluster.log(f"CRDs: {', '.join(crds) or 'none yet'}")
        yield c
    finally:
        if os.environ.get("TIDEPOOL_KEEP_CLUSTER") == "1":
            localcluster.log(f"keeping cluster; KUBECONFIG={c.kubeconfig}")
        else:
            c.down()


@pytest.fixture(scope="session")
def kubeconfig(cluster: localcluster.Cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kube(cluster: localcluster.Cluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube)
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        _delete_workloads(kube, name)
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        # Pods hold GPUs; the next test must find the pool empty again.
        localcluster.wait_for(
            lambda: not core.list_namespaced_pod(name).items,
            timeout=60,
            what=f"pods of namespace {name} to be gone",
            interval=0.5,
        )


def _delete_workloads(kube: client.ApiClient, namespace: str) -> None:
    """Delete owners first, then pods (gracefully: engine pods drain through the backer).

    Why not just delete the namespace: the namespace controller takes ~5 s to get to the pods;
    explicit deletes take ~0.1 s. InferenceDeployments go first so nothing recreates children.
    """
    apps = client.AppsV1Api(kube)
    calls = [
        lambda: client.CustomObjectsApi(kube).delete_collection_namespaced_custom_object(
            "tidepool.dev", "v1alpha1", namespace, "inferencedeployments"
        ),
        lambda: apps.delete_collection_namespaced_deployment(namespace),
        lambda: apps.delete_collection_namespaced_replica_set(namespace),
        lambda: client.CoreV1Api(kube).delete_collection_namespaced_pod(namespace),
    ]
    for call in calls:
        with contextlib.suppress(ApiException):  # e.g. 404 while the CRD is not installed
            call()


@pytest.fixture(scope="session")
def podbacker(
    cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodBacker]:
    backer = PodBacker(
        cluster.kubeconfig,
        default_load_delay="1s",
        log_dir=tmp_path_factory.mktemp("engine-sim-logs"),
    )
    with backer:
        yield backer
    assert not backer.errors, f"pod backer errors: {backer.errors}"


@pytest.fixture(scope="session")
def prometheus(cluster: localcluster.Cluster) -> Iterator[Prometheus]:
    if not shutil.which("prometheus") and not Path("/usr/bin/prometheus").exists():
        pytest.fail("prometheus is not installed: apt-get install -y prometheus")
    prom = Prometheus(cluster.kubeconfig)
    with prom:
        yield prom
