"""The engine Services' EndpointSlices, read into the endpoints the gateway routes to.

:func:`discovery.engine_pods` runs here on slices shaped as kube-controller-manager's
EndpointSlice controller writes them (the Service's labels on the slice, ``targetRef`` naming
the pod, one slice per address family), and its output goes through the gateway's own reader
(:func:`tidepool.gateway.snapshot.build_snapshot`), so each case pins what the gateway would
route to, not an intermediate shape.
"""

from __future__ import annotations

from typing import Any

import pytest

from tidepool.adapters import discovery
from tidepool.api import labels, names
from tidepool.gateway import snapshot

NS = "team"
#: A ReplicaSet's pod-template-hash (the Deployment controller's alphabet has no ``-``) and
#: the 5 random characters of a generated pod name.
HASH, RANDOM = "6d4cf8b9c7", "x7k2p"


def pod_name(deployment: str, template_hash: str = HASH) -> str:
    """A pod's name as the ReplicaSet controller and apiserver make it (``generateName``)."""
    prefix = f"{deployment}-{template_hash}-"[: discovery.GENERATED_PREFIX_MAX]
    return prefix + RANDOM


LLAMA_A100 = pod_name(names.engine_deployment("llama", "a100"))
LLAMA_SPOT = pod_name(names.engine_deployment("llama", "a100-spot"))
#: A name with ``-`` makes a hashed Deployment name (support-bot-a100-<hash>).
BOT_A100 = pod_name(names.engine_deployment("support-bot", "a100"))
FLEET_POD = pod_name(names.shared_engine("llama-8b"))


def infd(name: str, *pools: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"model": {"name": f"org/{name}"}},
        "status": {"pools": [{"name": p, "tenancy": "shared", "role": "primary"} for p in pools]},
    }


DEPLOYMENTS = {
    f"{NS}/llama": infd("llama", "a100", "a100-spot"),
    f"{NS}/support-bot": infd("support-bot", "a100"),
}
ENGINES = {
    "/llama-8b": {
        "metadata": {"name": "llama-8b"},
        "spec": {"pool": "shared-a100"},
        "status": {"adapters": [{"name": "sql-bot", "replicas": [FLEET_POD]}]},
    }
}


def endpoint(
    pod: str,
    address: str = "127.0.0.9",
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    kind: str = "Pod",
) -> dict[str, Any]:
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    return {
        "addresses": [address],
        "conditions": conditions,
        "targetRef": {"kind": kind, "name": pod, "namespace": NS, "uid": f"uid-{pod}"},
    }


def endpoint_slice(
    owner: str,
    *endpoints: dict[str, Any],
    family: str = "IPv4",
    suffix: str = "abcde",
    port: int = 9000,
) -> dict[str, Any]:
    """A slice of ``owner``'s engine Service (a SharedEngine's when ``owner`` starts with
    ``sheng/``), carrying the Service's labels as the EndpointSlice controller copies them."""
    if owner.startswith("sheng/"):
        engine = owner.removeprefix("sheng/")
        service_labels = labels.shared_engine_selector_labels(names.shared_engine_label(engine))
        service = names.shared_engine(engine)
    else:
        service_labels = labels.selector_labels(owner)
        service = names.engine_service(owner)
    return {
        "metadata": {
            "name": f"{service}-{suffix}",
            "namespace": NS,
            "labels": {**service_labels, discovery.SERVICE_NAME_LABEL: service},
        },
        "addressType": family,
        "endpoints": list(endpoints),
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


Routed = tuple[str, str, int, str, str, str, frozenset[str]]
"""(pod, host, port, deployment, pool, engine, adapters) of one endpoint the gateway sees."""


def routed(slices: list[dict[str, Any]]) -> list[Routed]:
    pods = discovery.engine_pods(slices, DEPLOYMENTS, ENGINES)
    snap = snapshot.build_snapshot(pods, DEPLOYMENTS, ENGINES)
    return [
        (e.pod, e.host, e.port, e.deployment, e.pool, e.engine, e.adapters) for e in snap.endpoints
    ]


def llama(pod: str = LLAMA_A100, host: str = "127.0.0.9", pool: str = "a100") -> Routed:
    return (pod, host, 9000, "llama", pool, "", frozenset())


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        pytest.param([endpoint_slice("llama", endpoint(LLAMA_A100))], [llama()], id="ready"),
        pytest.param(
            [endpoint_slice("llama", endpoint(LLAMA_A100, ready=None))],
            [llama()],
            id="ready-absent-means-ready",
        ),
        pytest.param(
            [endpoint_slice("llama", endpoint(LLAMA_A100, ready=False, serving=False))],
            [],
            id="not-ready-still-loading",
        ),
        pytest.param(
            [
                endpoint_slice(
                    "llama", endpoint(LLAMA_A100, ready=False, serving=False, terminating=True)
                )
            ],
            [],
            id="terminating",
        ),
        pytest.param(
            [
                endpoint_slice(
                    "llama", endpoint(LLAMA_A100, ready=False, serving=True, terminating=True)
                )
            ],
            [],
            id="serving-while-terminating-is-draining",
        ),
        pytest.param(
            [
                endpoint_slice(
                    "llama", endpoint(LLAMA_A100, "fd00::9"), family="IPv6", suffix="v6"
                ),
                endpoint_slice("llama", endpoint(LLAMA_A100), suffix="v4"),
            ],
            [llama()],
            id="dual-stack-one-endpoint-ipv4-first",
        ),
        pytest.param(
            [endpoint_slice("llama", endpoint(LLAMA_A100, "fd00::9"), family="IPv6")],
            [llama(host="[fd00::9]")],
            id="ipv6-only-bracketed-for-the-url",
        ),
        pytest.param(
            [
                endpoint_slice("llama", endpoint(LLAMA_A100), suffix="one"),
                endpoint_slice("llama", endpoint(LLAMA_SPOT, "127.0.0.10"), suffix="two"),
            ],
            [llama(), llama(LLAMA_SPOT, "127.0.0.10", "a100-spot")],
            id="several-slices-per-service-and-two-pools",
        ),
        pytest.param(
            [endpoint_slice("support-bot", endpoint(BOT_A100))],
            [(BOT_A100, "127.0.0.9", 9000, "support-bot", "a100", "", frozenset())],
            id="hashed-deployment-name",
        ),
        pytest.param(
            [endpoint_slice("llama", endpoint(pod_name("llama-h100")))],
            [llama(pod_name("llama-h100"), pool="")],
            id="pool-not-in-status-has-none",
        ),
        pytest.param(
            [endpoint_slice("sheng/llama-8b", endpoint(FLEET_POD), port=8000)],
            [
                (
                    FLEET_POD,
                    "127.0.0.9",
                    8000,
                    "",
                    "shared-a100",
                    names.shared_engine_label("llama-8b"),
                    frozenset({"sql-bot"}),
                )
            ],
            id="fleet-pod-gets-its-engines-pool-and-adapters",
        ),
        pytest.param(
            [
                endpoint_slice(
                    "llama", endpoint(LLAMA_A100, kind="Node"), {"addresses": ["1.2.3.4"]}
                )
            ],
            [],
            id="no-pod-behind-it",
        ),
        pytest.param(
            [endpoint_slice("llama", endpoint(LLAMA_A100, "engine.example"), family="FQDN")],
            [],
            id="fqdn-slice",
        ),
    ],
)
def test_slices_to_routed_endpoints(slices: list[dict[str, Any]], expected: list[Routed]) -> None:
    assert routed(slices) == sorted(expected)


def test_a_deleted_slice_takes_its_endpoints_with_it() -> None:
    """The cache drops a slice on its DELETED event (:mod:`test_discovery`); what the gateway
    then sees is the other slices' endpoints alone."""
    one = endpoint_slice("llama", endpoint(LLAMA_A100), suffix="one")
    two = endpoint_slice("llama", endpoint(LLAMA_SPOT, "127.0.0.10"), suffix="two")
    assert len(routed([one, two])) == 2
    assert routed([two]) == [llama(LLAMA_SPOT, "127.0.0.10", "a100-spot")]


def test_the_pod_view_holds_only_what_the_slice_says() -> None:
    """No spec but the port, no annotations: the gateway reads no more than a slice gives."""
    pods = discovery.engine_pods([endpoint_slice("llama", endpoint(LLAMA_A100))], DEPLOYMENTS, {})
    assert pods == {
        f"{NS}/{LLAMA_A100}": {
            "metadata": {
                "name": LLAMA_A100,
                "namespace": NS,
                "labels": {labels.INFERENCE_DEPLOYMENT: "llama", labels.POOL: "a100"},
            },
            "spec": {
                "containers": [
                    {"name": "engine", "ports": [{"name": "http", "containerPort": 9000}]}
                ]
            },
            "status": {"podIP": "127.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    }


#: A Deployment name long enough that its pods' names are cut inside it (58 characters kept).
LONG = "l" * 60


@pytest.mark.parametrize(
    ("pod", "deployments", "expected"),
    [
        pytest.param("llama-a100-6d4cf8b9c7-x7k2p", {"a100": "llama-a100"}, "a100", id="plain"),
        pytest.param(
            "llama-a100-spot-6d4cf8b9c7-x7k2p",
            {"a100": "llama-a100", "a100-spot": "llama-a100-spot"},
            "a100-spot",
            id="a-pool-named-like-another-plus-a-suffix",
        ),
        pytest.param(
            "llama-a100-6d4cf8b9c7-x7k2p",
            {"a100": "llama-a100", "a100-spot": "llama-a100-spot"},
            "a100",
            id="the-shorter-of-the-two",
        ),
        pytest.param(pod_name("d" * 50), {"p": "d" * 50}, "p", id="cut-inside-the-template-hash"),
        pytest.param(pod_name("d" * 57), {"p": "d" * 57}, "p", id="cut-right-after-the-deployment"),
        pytest.param(pod_name(LONG), {"p": LONG}, "p", id="cut-inside-the-deployment-name"),
        pytest.param(
            pod_name(LONG),
            {"p": LONG, "q": LONG[:58] + "qq"},
            None,
            id="cut-and-ambiguous-gets-no-pool",
        ),
        pytest.param("other-6d4cf8b9c7-x7k2p", {"a100": "llama-a100"}, None, id="not-ours"),
        pytest.param("llama-a100-x7k2p", {"a100": "llama-a100"}, None, id="no-template-hash"),
    ],
)
def test_pool_of_pod(pod: str, deployments: dict[str, str], expected: str | None) -> None:
    assert discovery.pool_of_pod(pod, deployments) == expected
