"""Session fixtures that run Tidepool itself: GPUPools, the operator and the gateway.

Imported by ``conftest.py``. The operator and gateway run as real processes on loopback (kwok's
pods are fake); Prometheus scrapes the gateway through ``prometheus.set_targets``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import localcluster
import stack
from podbacker import PodBacker
from prometheus import Prometheus

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Tidepool:
    operator: stack.ManagedProcess
    gateway: stack.ManagedProcess
    gateway_url: str
    kubeconfig: str
    prometheus_url: str

    def restart_operator(self, *, crash: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when ``crash``) and start a fresh operator process."""
        if crash:
            self.operator.kill()
        else:
            self.operator.stop()
        self.operator = stack.operator(self.kubeconfig, self.prometheus_url, tick=1.0).start()


@pytest.fixture(scope="session")
def gpupools(cluster: localcluster.Cluster) -> list[str]:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "examples" / "gpupools.yaml"))
    return ["shared-a100", "dedicated-a100"]


@pytest.fixture(scope="session")
def tidepool(
    cluster: localcluster.Cluster,
    gpupools: list[str],
    podbacker: PodBacker,
    prometheus: Prometheus,
) -> Iterator[Tidepool]:
    kubeconfig = str(cluster.kubeconfig)
    port, metrics_port = stack.free_port(), stack.free_port()
    gateway = stack.gateway(
        kubeconfig, port=port, metrics_port=metrics_port, queue_timeout="90s"
    ).start()
    prometheus.set_targets("tidepool-gateway", [f"127.0.0.1:{metrics_port}"])
    operator = stack.operator(kubeconfig, prometheus.url, tick=1.0).start()
    tp = Tidepool(
        operator=operator,
        gateway=gateway,
        gateway_url=f"http://127.0.0.1:{port}",
        kubeconfig=kubeconfig,
        prometheus_url=prometheus.url,
    )
    try:
        yield tp
    finally:
        tp.operator.stop()
        tp.gateway.stop()


@pytest.fixture
def logs_on_failure(request: pytest.FixtureRequest, tidepool: Tidepool) -> Iterator[None]:
    """Print the operator's and gateway's last log lines when a test fails."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("---- operator log ----\n" + tidepool.operator.tail(80))
        print("---- gateway log ----\n" + tidepool.gateway.tail(40))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
