"""Twenty LoRA tenants on one SharedEngine (``maxLoras: 4``), through a gateway with per-tenant
keys that watches only the tenants' namespace, on the real control plane.

In order, on one fleet (the tests of this module share it and run in file order):

1. the fleet is at zero; one tenant's request is held, wakes it, and is answered;
2. 500+ requests from concurrent clients over all twenty tenants: every one answered, and at
   least 90% of them find their adapter already in a GPU slot of the replica they land on (the
   engine simulators' own ``enginesim_lora_admissions_total``);
3. a tenant's key asking for another tenant's served name, or its adapter's name, gets the 404
   of a model that does not exist, byte for byte but for the name;
4. the operator is killed and a new one started under load: no request fails, and every
   adapter is loaded where the engine's record and each tenant's AdapterLoaded say it is.

The gateway here runs with ``--namespace`` while the fleet runs in the operator's namespace:
it routes the tenants only if it watches the fleet's pods there too.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures_stack import Tidepool
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from tidepool_stack import (
    GROUP,
    VERSION,
    apply_infd,
    condition,
    get_infd,
    wait_for,
)

import localcluster
import stack
from podbacker import PodBacker
from stack import replicas_of
from tidepool.api import labels

pytestmark = pytest.mark.usefixtures("logs_on_failure")

BASE = "org/base-lora-20"
FLEET_NAMESPACE = "default"
"""Where the operator runs shared fleets (POD_NAMESPACE is unset in the tests)."""
TENANTS = 20
MAX_LORAS = 4
REPLICAS = TENANTS // MAX_LORAS
"""Replicas that give every adapter a slot (maxCpuLoras unset: vLLM keeps maxLoras)."""
REQUESTS = 520
CLIENTS = 10


def _served(i: int) -> str:
    return f"chat-{i:02d}"


def _adapter(i: int) -> str:
    return f"lora-{i:02d}"


def _key(i: int) -> str:
    return f"sk-tenant-{i:02d}"


@dataclass
class Fleet:
    namespace: str
    engine: str
    gateway_url: str
    gateway: stack.ManagedProcess
    wake_seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{labels.SHARED_ENGINE}={self.engine},{labels.COMPONENT}={labels.COMPONENT_ENGINE}"

    @property
    def deployment(self) -> str:
        return f"sheng-{self.engine}"


def _tenant(i: int, namespace: str) -> dict[str, Any]:
    return stack.lora_tenant_manifest(
        f"t{i:02d}", namespace, BASE, served=_served(i), adapter=_adapter(i), tenant=f"t{i:02d}"
    )


def _delete_quietly(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def fleet(
    kube: client.ApiClient,
    tidepool: Tidepool,
    podbacker: PodBacker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    namespace = f"t-lora-scale-{uuid.uuid4().hex[:5]}"
    engine = f"base20-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    keys = tmp_path_factory.mktemp("keys") / "api-keys.yaml"
    keys.write_text(
        yaml.safe_dump({"keys": {_key(i): {"tenant": f"t{i:02d}"} for i in range(TENANTS)}})
    )
    gateway = _start_gateway(tidepool, keys, namespace)
    try:
        manifest = stack.shared_engine_manifest(
            engine, BASE, max_replicas=REPLICAS, max_loras=MAX_LORAS, scale_to_zero_after="10m"
        )
        custom.create_cluster_custom_object(GROUP, VERSION, "sharedengines", manifest)
        for i in range(TENANTS):
            apply_infd(kube, _tenant(i, namespace))
        yield Fleet(
            namespace=namespace,
            engine=engine,
            gateway_url=f"http://127.0.0.1:{gateway.args[gateway.args.index('--port') + 1]}",
            gateway=gateway,
        )
    finally:
        gateway.stop()
        with contextlib.suppress(ApiException):
            custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferencedeployments"
            )
        _delete_quietly(
            custom.delete_cluster_custom_object, GROUP, VERSION, "sharedengines", engine
        )
        _delete_quietly(apps.delete_namespaced_deployment, f"sheng-{engine}", FLEET_NAMESPACE)
        _delete_quietly(core.delete_namespaced_service, f"sheng-{engine}", FLEET_NAMESPACE)
        with contextlib.suppress(ApiException):
            apps.delete_collection_namespaced_deployment(namespace)
        _delete_quietly(core.delete_namespace, namespace)
        # The fleet's pods hold GPUs: the next test must find the pool free again.
        localcluster.wait_for(
            lambda: (
                not core.list_namespaced_pod(
                    FLEET_NAMESPACE, label_selector=f"tidepool.dev/shared-engine={engine}"
                ).items
                and not core.list_namespaced_pod(namespace).items
            ),
            timeout=60,
            what="the fleet's and the tenants' pods to be gone",
            interval=0.5,
        )


def _start_gateway(tidepool: Tidepool, keys: Path, namespace: str) -> stack.ManagedProcess:
    """A second gateway: per-tenant keys, and only the tenants' namespace watched."""
    return stack.gateway(
        tidepool.kubeconfig,
        queue_timeout="90s",
        api_keys=keys,
        namespace=namespace,
        shared_engine_namespace=FLEET_NAMESPACE,
    ).start()


def _post(url: str, model: str, key: str, *, max_tokens: int = 4) -> tuple[int, bytes, str]:
    """(status, raw body, backend pod) of one completion through the gateway."""
    req = urllib.request.Request(
        f"{url}/v1/completions",
        data=json.dumps({"model": model, "prompt": "hello", "max_tokens": max_tokens}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read(), resp.headers.get("X-Tidepool-Backend", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), ""


def _listed(url: str, key: str, model: str) -> bool:
    req = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return model in {m["id"] for m in json.loads(resp.read())["data"]}
    except OSError:
        return False


def _fleet_pods(kube: client.ApiClient, fleet: Fleet) -> dict[str, str]:
    """Ready fleet pod name -> its engine's URL."""
    pods = client.CoreV1Api(kube).list_namespaced_pod(FLEET_NAMESPACE, label_selector=fleet.label)
    return {
        p.metadata.name: f"http://{p.status.pod_ip}:8000"
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _admissions(pods: dict[str, str]) -> Counter[str]:
    """Requests admitted with their adapter in a GPU slot / CPU memory / on disk, all replicas."""
    total: Counter[str] = Counter()
    for url in pods.values():
        for family in text_string_to_metric_families(_get(f"{url}/metrics")):
            if family.name == "enginesim_lora_admissions":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        total[sample.labels["resident"]] += int(sample.value)
    return total


def _engine_adapters(pods: dict[str, str]) -> dict[str, set[str]]:
    """Pod -> the adapters its engine lists in /v1/models (vLLM's own word)."""
    return {
        pod: {m["id"] for m in json.loads(_get(f"{url}/v1/models"))["data"] if m.get("parent")}
        for pod, url in pods.items()
    }


def _engine_status(kube: client.ApiClient, fleet: Fleet) -> dict[str, Any]:
    obj = client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, "sharedengines", fleet.engine
    )
    return dict(obj.get("status", {}))


def _recorded(status: dict[str, Any]) -> dict[str, set[str]]:
    """Pod -> the adapters the engine's record says it holds."""
    held: dict[str, set[str]] = {}
    for a in status.get("adapters", []):
        for pod in a.get("replicas", []):
            held.setdefault(pod, set()).add(a["name"])
    return held


class Clients:
    """``clients`` threads sending completions round-robin over every tenant, each with its
    own key, until stopped or until ``limit`` requests were sent; every non-200 is a failure."""

    def __init__(self, url: str, *, clients: int, limit: int | None = None) -> None:
        self.url, self.clients, self.limit = url, clients, limit
        self.ok: Counter[int] = Counter()
        self.backends: dict[int, set[str]] = {}
        self.failures: list[str] = []
        self._sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or (self.limit is not None and self._sent >= self.limit):
                return None
            self._sent += 1
            return self._sent % TENANTS

    def answered(self) -> int:
        with self._lock:
            return sum(self.ok.values())

    def wait_answered(self, more: int, *, what: str) -> None:
        """Wait until ``more`` further requests were answered: traffic really went on."""
        start = self.answered()
        wait_for(lambda: self.answered() >= start + more, timeout=60, what=what)

    def _run(self) -> None:
        while (i := self._next()) is not None:
            status, body, backend = _post(self.url, _served(i), _key(i))
            with self._lock:
                if status == 200:
                    self.ok[i] += 1
                    self.backends.setdefault(i, set()).add(backend)
                else:
                    self.failures.append(f"{_served(i)}: {status} {body[:300]!r}")

    def __enter__(self) -> Clients:
        for n in range(self.clients):
            t = threading.Thread(target=self._run, name=f"lora-client-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self) -> None:
        for t in self._threads:
            t.join(timeout=300)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.wait()


# ------------------------------------------------------------------------------------ tests


def test_the_fleet_scales_from_zero_on_one_tenants_request(
    kube: client.ApiClient, fleet: Fleet
) -> None:
    wait_for(
        lambda: all(
            get_infd(kube, fleet.namespace, f"t{i:02d}").get("status", {}).get("engine")
            == fleet.engine
            for i in range(TENANTS)
        ),
        timeout=60,
        what="every tenant's status.engine to name the SharedEngine",
    )
    assert replicas_of(kube, FLEET_NAMESPACE, fleet.deployment) == 0
    asker = 13
    wait_for(
        lambda: _listed(fleet.gateway_url, _key(asker), _served(asker)),
        timeout=30,
        what="the gateway to know the tenant",
    )

    started = time.monotonic()
    status, body, backend = _post(fleet.gateway_url, _served(asker), _key(asker))
    fleet.wake_seconds = time.monotonic() - started

    assert status == 200, body
    assert json.loads(body)["model"] == _served(asker)
    assert backend.startswith(f"{FLEET_NAMESPACE}/{fleet.deployment}-")
    assert replicas_of(kube, FLEET_NAMESPACE, fleet.deployment) == REPLICAS
    print(f"wake: held request answered after {fleet.wake_seconds:.2f}s")


def test_twenty_tenants_share_the_fleet_every_request_answered_on_a_warm_adapter(
    kube: client.ApiClient, fleet: Fleet
) -> None:
    wait_for(
        lambda: (
            len(_fleet_pods(kube, fleet)) == REPLICAS
            and sum(len(v) for v in _recorded(_engine_status(kube, fleet)).values()) == TENANTS
        ),
        timeout=60,
        what=f"{REPLICAS} ready replicas holding the {TENANTS} adapters between them",
    )
    # Every replica runs the rendered --scheduling-policy priority, so the gateway sends each
    # request its tenant's priority (policy.fair_share), and the engines take it.
    assert _engine_status(kube, fleet).get("schedulingPolicy") == "priority"
    pods = _fleet_pods(kube, fleet)
    before = _admissions(pods)

    started = time.monotonic()
    with Clients(fleet.gateway_url, clients=CLIENTS, limit=REQUESTS) as clients:
        clients.wait()
    took = time.monotonic() - started

    assert clients.failures == []
    assert sum(clients.ok.values()) == REQUESTS
    assert sorted(clients.ok) == list(range(TENANTS)), "every tenant answered"
    after = _admissions(pods)
    landed = {k: after[k] - before[k] for k in ("gpu", "cpu", "disk")}
    warm = landed["gpu"] / sum(landed.values())
    print(f"{REQUESTS} requests in {took:.1f}s; adapter where the request landed: {landed}")
    assert sum(landed.values()) == REQUESTS
    assert warm >= 0.9, landed
    # Each tenant's requests went only where the record puts its adapter.
    record = _recorded(_engine_status(kube, fleet))
    for i, backends in clients.backends.items():
        holders = {
            f"{FLEET_NAMESPACE}/{pod}" for pod, held in record.items() if _adapter(i) in held
        }
        assert backends <= holders, (i, backends, holders)


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param(_served(1), id="another-tenants-served-name"),
        pytest.param(_adapter(1), id="another-tenants-adapter-name"),
        pytest.param(_adapter(0), id="own-adapter-name"),
        pytest.param(BASE, id="the-fleets-base-model"),
    ],
)
def test_a_tenants_key_gets_the_unknown_models_404_for_another_tenant(
    fleet: Fleet, asked: str
) -> None:
    own = _post(fleet.gateway_url, _served(0), _key(0))
    status, body, _ = _post(fleet.gateway_url, asked, _key(0))
    unknown_status, unknown, _ = _post(fleet.gateway_url, "no-such-model", _key(0))

    assert own[0] == 200
    assert (status, unknown_status) == (404, 404)
    assert body == unknown.replace(b"no-such-model", asked.encode())


def test_an_operator_restart_under_load_leaves_every_adapter_loaded_and_recorded(
    kube: client.ApiClient, fleet: Fleet, tidepool: Tidepool
) -> None:
    with Clients(fleet.gateway_url, clients=6) as clients:
        clients.wait_answered(2 * TENANTS, what="traffic to be flowing before the kill")
        tidepool.operator.kill()
        clients.wait_answered(2 * TENANTS, what="traffic answered with no operator at all")
        tidepool.restart_operator()
        # A spec edit only a running operator acknowledges (status.observedGeneration).
        custom = client.CustomObjectsApi(kube)
        edited = custom.patch_cluster_custom_object(
            GROUP, VERSION, "sharedengines", fleet.engine,
            {"spec": {"scaling": {"scaleToZeroAfter": "11m"}}},
        )  # fmt: skip
        wait_for(
            lambda: (
                _engine_status(kube, fleet).get("observedGeneration")
                == edited["metadata"]["generation"]
            ),
            timeout=30,
            what="the new operator to reconcile the SharedEngine",
        )
        clients.wait_answered(2 * TENANTS, what="traffic answered under the new operator")
    assert clients.failures == []
    assert sum(clients.ok.values()) > 0

    def consistent() -> bool:
        status = _engine_status(kube, fleet)
        engines = _engine_adapters(_fleet_pods(kube, fleet))
        recorded = _recorded(status)
        return bool(
            len(engines) == REPLICAS
            and {p: a for p, a in engines.items() if a} == recorded
            and sum(len(a) for a in engines.values()) == TENANTS
        )

    wait_for(consistent, timeout=30, what="the record to match what every engine serves")
    status = _engine_status(kube, fleet)
    engines = _engine_adapters(_fleet_pods(kube, fleet))
    for a in status["adapters"]:
        holders = sorted(p for p, held in engines.items() if a["name"] in held)
        assert (a["loadedReplicas"], sorted(a["replicas"])) == (len(holders), holders)
    for i in range(TENANTS):
        cond = condition(get_infd(kube, fleet.namespace, f"t{i:02d}"), "AdapterLoaded")
        assert (cond["status"], cond["message"]) == ("True", "loaded on 1 of 1 replicas"), i
