"""Two operator replicas through Kopf's peering: one active, one standby; SIGKILL the active one.

Each round starts a fresh standby beside the active replica, checks that the standby has not
reconciled anything, SIGKILLs the active one while a tenant serves traffic through the gateway
and another is asked to wake from zero, and measures the failover: from the kill to the
standby's first reconcile (its own /metrics) and to its first status write (a watch on the
InferenceDeployments: the API server's ``managedFields`` name the replica that wrote, as each
replica's User-Agent carries its identity).

No double writes: every status write by a replica falls between its takeover and its death,
and no two replicas' write windows overlap. No failed request: every request of the traffic
loop and every cold request held across the failover is answered 200.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import pytest
from fixtures_stack import Tidepool
from kubernetes import client, watch
from tidepool_stack import (
    GROUP,
    PLURAL,
    VERSION,
    Reply,
    TrafficLoop,
    apply_infd,
    complete,
    condition,
    gateway_knows,
    get_infd,
    infd_manifest,
    reconciles,
    wait_for,
    wait_for_reconciles,
)
from urllib3.exceptions import ProtocolError

import stack

pytestmark = pytest.mark.usefixtures("logs_on_failure")

PEERING = "tidepool-failover-test"
LIFETIME = 10  # the operator's default --peering-lifetime
#: A crashed replica's record lives ``LIFETIME`` after its last keep-alive; then Kopf's watch
#: event, the re-list and the first reconcile.
FAILOVER_BOUND = LIFETIME + 5.0
ROUNDS = 3
MANAGER = re.compile(r"^tidepool-operator@(?P<identity>.+)$")
SIM_LOAD = {"tidepool.dev/sim-load-delay": "1s"}


def _serverless(name: str, ns: str, **scaling: object) -> dict:
    body = infd_manifest(
        name,
        ns,
        mode="serverless",
        engine={"maxNumSeqs": 4},
        scaling={
            "minReplicas": 0,
            "maxReplicas": 3,
            "targetQueueDepth": 2,
            "scaleToZeroAfter": "600s",
            "scaleDownStabilization": "6s",
            **scaling,
        },
    )
    body["metadata"]["annotations"] = SIM_LOAD
    return body


class StatusWriters:
    """Every status write by an operator replica, from a watch on the InferenceDeployments.

    A write moves its manager's ``managedFields`` entry for the status subresource (its
    ``time``, at one-second resolution); the watch notes the replica, that time and when the
    event arrived here.
    """

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.writes: list[tuple[str, datetime, float]] = []
        self._last: dict[tuple[str, str], str] = {}
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        api = client.CustomObjectsApi(self.kube)
        while not self._stopped.is_set():
            try:
                for event in self._watch.stream(
                    api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    timeout_seconds=30,
                ):
                    self._note(event["object"])
            except ProtocolError:
                if not self._stopped.is_set():
                    raise

    def _note(self, obj: dict) -> None:
        arrived = time.monotonic()
        for entry in obj["metadata"].get("managedFields") or []:
            found = MANAGER.match(entry.get("manager", ""))
            if not found or entry.get("subresource") != "status":
                continue
            key = (obj["metadata"]["name"], found["identity"])
            if self._last.get(key) != entry["time"]:
                self._last[key] = entry["time"]
                at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
                self.writes.append((found["identity"], at, arrived))

    def __enter__(self) -> StatusWriters:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._watch.stop()

    def by(self, identity: str) -> list[tuple[datetime, float]]:
        return [(at, arrived) for who, at, arrived in self.writes if who == identity]


@pytest.fixture
def no_standalone_operator(tidepool: Tidepool) -> Iterator[None]:
    """The session's standalone operator would reconcile beside the replicas: stop it."""
    tidepool.operator.stop()
    try:
        yield
    finally:
        tidepool.restart_operator()


def _replica(tidepool: Tidepool, identity: str) -> stack.ManagedProcess:
    return stack.operator(
        tidepool.kubeconfig,
        tidepool.prometheus_url,
        tick=1.0,
        peering=PEERING,
        peering_lifetime=LIFETIME,
        identity=identity,
    )


def _ready(kube: client.ApiClient, ns: str, name: str) -> bool:
    return condition(get_infd(kube, ns, name), "Ready").get("status") == "True"


@pytest.mark.usefixtures("no_standalone_operator")
def test_the_standby_takes_over_from_a_killed_active_replica_without_a_failed_request(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool
) -> None:
    replicas: list[stack.ManagedProcess] = []
    failovers: list[tuple[float, float]] = []  # (to first reconcile, to first status write)
    windows: list[tuple[str, float, float]] = []  # (identity, became active, killed) wall times
    cold: list[Future[Reply]] = []
    try:
        active = _replica(tidepool, "op-0").start()
        replicas.append(active)
        became_active = time.time()
        apply_infd(kube, _serverless("steady", namespace, minReplicas=1))
        for i in range(ROUNDS):
            apply_infd(kube, _serverless(f"sleeper-{i}", namespace))
        gateway_knows(tidepool.gateway_url, "steady")
        wait_for(lambda: _ready(kube, namespace, "steady"), timeout=60, what="steady Ready")

        with (
            StatusWriters(kube, namespace) as writers,
            TrafficLoop(tidepool.gateway_url, "steady", clients=3, max_tokens=64) as traffic,
            ThreadPoolExecutor(max_workers=ROUNDS) as pool,
        ):
            for i in range(ROUNDS):
                standby = _replica(tidepool, f"op-{i + 1}").start()
                replicas.append(standby)
                gateway_knows(tidepool.gateway_url, f"sleeper-{i}")
                # Every tenant synced twice by the active replica with the standby up: time in
                # which a standby that was not paused would have reconciled too.
                wait_for_reconciles(
                    active, 2 * (1 + ROUNDS), what="the active replica's syncs beside the standby"
                )
                assert reconciles(standby) == 0, f"standby reconciled:\n{standby.tail()}"
                assert reconciles(active) > 0

                active.kill()
                killed_wall, killed = time.time(), time.monotonic()
                windows.append((_identity(active), became_active, killed_wall))
                # A tenant at zero is asked for while no replica is active: the gateway holds
                # the request, and the standby must wake it.
                cold.append(pool.submit(complete, tidepool.gateway_url, f"sleeper-{i}"))
                wait_for(
                    lambda s=standby: reconciles(s) > 0,  # type: ignore[misc]
                    timeout=FAILOVER_BOUND + 10,
                    what=f"{_identity(standby)} to reconcile",
                    interval=0.05,
                )
                first_reconcile = time.monotonic() - killed
                became_active = time.time()
                wait_for(
                    lambda s=standby, k=killed: any(  # type: ignore[misc]
                        arrived > k for _, arrived in writers.by(_identity(s))
                    ),
                    timeout=30,
                    what=f"a status write by {_identity(standby)}",
                )
                first_write = min(
                    arrived for _, arrived in writers.by(_identity(standby)) if arrived > killed
                )
                failovers.append((first_reconcile, first_write - killed))
                print(
                    f"round {i}: killed {_identity(active)}; {_identity(standby)} reconciled"
                    f" after {first_reconcile:.2f} s, wrote status after"
                    f" {first_write - killed:.2f} s"
                )
                active = standby
            replies = [f.result(timeout=120) for f in cold]
        windows.append((_identity(active), became_active, time.time()))

        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.ok > 0
        assert [r.status for r in replies] == [200] * ROUNDS, [r.body for r in replies]
        for i in range(ROUNDS):
            assert _ready(kube, namespace, f"sleeper-{i}")
        for first_reconcile, _ in failovers:
            assert first_reconcile <= FAILOVER_BOUND, failovers
        # No double writes: each replica wrote status only inside its own active window
        # (managedFields time has one-second resolution, hence the rounding).
        for identity, start, end in windows:
            for at, _ in writers.by(identity):
                stamp = at.timestamp()
                assert math.floor(start) - 1 <= stamp <= math.ceil(end), (
                    f"{identity} wrote status at {at.isoformat()}, outside its active window"
                    f" {start:.1f}..{end:.1f}"
                )
        to_reconcile = [f for f, _ in failovers]
        to_write = [w for _, w in failovers]
        print(
            f"failover over {ROUNDS} kills: to first reconcile median"
            f" {statistics.median(to_reconcile):.2f} s (max {max(to_reconcile):.2f} s); to first"
            f" status write median {statistics.median(to_write):.2f} s (max {max(to_write):.2f} s);"
            f" {traffic.ok} requests through the failovers, 0 failed"
        )
    finally:
        for proc in replicas:
            if proc.proc is not None and proc.proc.poll() is None:
                print(f"---- {proc.name} log ----\n{proc.tail(30)}")
            proc.stop()


def _identity(proc: stack.ManagedProcess) -> str:
    return proc.env["POD_ID"]
