"""``KubeDiscovery``: lists, then watches, and hands the caller's ``build`` the caches (the
engine pods as the engine Services' EndpointSlices list them, InferenceDeployments,
SharedEngines).

The kubernetes client runs for real here, against a loopback HTTP server that answers the
lists and streams the watch events as kube-apiserver does (one JSON event per line, each in an
HTTP/1.1 chunk of its own, the response held open). ``build`` is a plain function of the
three caches: the adapter knows nothing of the gateway's snapshot types (tests/unit/gateway
reads those; the integration suite runs the whole gateway against a real API server).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from json_http import send_json
from kubernetes import client

from tidepool.adapters import discovery

PODS = "/api/v1/namespaces/team/pods"
FLEET_PODS = "/api/v1/namespaces/tidepool-system/pods"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices"
FLEET_SLICES = "/apis/discovery.k8s.io/v1/namespaces/tidepool-system/endpointslices"
INFDS = "/apis/tidepool.dev/v1alpha1/namespaces/team/inferencedeployments"
ENGINES = "/apis/tidepool.dev/v1alpha1/sharedengines"

Seen = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def _obj(name: str, namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, "resourceVersion": "7"} | ({"namespace": namespace} if namespace else {})
    return {"metadata": meta}


def _slice(name: str, namespace: str, *pods: str) -> dict[str, Any]:
    """An EndpointSlice listing ``pods`` as ready endpoints."""
    endpoints = [
        {
            "addresses": [f"127.0.0.{i + 1}"],
            "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
        }
        for i, pod in enumerate(pods)
    ]
    return {**_obj(name, namespace), "addressType": "IPv4", "endpoints": endpoints}


def _keys(
    pods: discovery.Objects, deployments: discovery.Objects, engines: discovery.Objects
) -> Seen:
    """The build under test: what each cache holds, by key."""
    return (tuple(sorted(pods)), tuple(sorted(deployments)), tuple(sorted(engines)))


@dataclass
class Cluster:
    """What the loopback API server answers: a list per path, then that path's watch events."""

    lists: dict[str, list[dict[str, Any]]]
    refused: set[str] = field(default_factory=set)
    """Paths answered 403, as for a gateway whose RBAC predates SharedEngine."""
    events: dict[str, queue.Queue[dict[str, Any]]] = field(default_factory=dict)
    selectors: dict[str, set[str]] = field(default_factory=dict)
    closing: threading.Event = field(default_factory=threading.Event)

    def push(self, path: str, etype: str, obj: dict[str, Any]) -> None:
        self.events.setdefault(path, queue.Queue()).put({"type": etype, "object": obj})


def _handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class ApiServer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            cluster.selectors.setdefault(url.path, set()).update(query.get("labelSelector", []))
            if url.path in cluster.refused:
                send_json(self, 403, {"kind": "Status", "code": 403, "reason": "Forbidden"})
            elif url.path not in cluster.lists:
                send_json(self, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            elif query.get("watch") in (["true"], ["True"]):
                self._watch(cluster.events.setdefault(url.path, queue.Queue()))
            else:
                items = cluster.lists[url.path]
                send_json(self, 200, {"metadata": {"resourceVersion": "7"}, "items": items})

        def _watch(self, events: queue.Queue[dict[str, Any]]) -> None:
            """One event per line and chunk until the test ends. A client reads a chunk as soon
            as it has come, where a body without chunks it would read in 64 KiB blocks."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while not cluster.closing.is_set():
                try:
                    event = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    return ApiServer


@dataclass
class Running:
    cluster: Cluster
    published: queue.Queue[Seen]

    def next(self) -> Seen:
        return self.published.get(timeout=10)

    def until(self, wanted: Seen) -> Seen:
        """The publishes up to the one that equals ``wanted`` (the watch threads' order of
        lists is theirs; what the test pins is what comes, not when each kind's list lands)."""
        while (seen := self.next()) != wanted:
            pass
        return seen


def _run(
    cluster: Cluster,
    fleet_namespace: str | None,
    source: discovery.EndpointSource = discovery.EndpointSource.ENDPOINT_SLICES,
) -> Iterator[Running]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = client.ApiClient(cfg)
    published: queue.Queue[Seen] = queue.Queue()
    watcher = discovery.KubeDiscovery(api, _keys, "team", fleet_namespace, source)
    watcher.start(published.put)
    try:
        yield Running(cluster, published)
    finally:
        watcher.stop()
        cluster.closing.set()
        server.shutdown()
        server.server_close()
        api.close()


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    yield from _run(*request.param)


def _cluster(refused: frozenset[str] = frozenset()) -> Cluster:
    return Cluster(
        lists={
            SLICES: [_slice("llama-engine-a", "team", "p1")],
            FLEET_SLICES: [_slice("sheng-base-a", "tidepool-system", "f1")],
            INFDS: [_obj("llama", "team")],
            ENGINES: [_obj("fleet-a")],
        },
        refused=set(refused),
    )


LISTED: Seen = (("team/p1", "tidepool-system/f1"), ("team/llama",), ("/fleet-a",))


@pytest.mark.parametrize("running", [(_cluster(), "tidepool-system")], indirect=True)
def test_first_publish_has_every_kind_listed_and_the_fleet_pods_beside_the_namespace(
    running: Running,
) -> None:
    # Slices, fleet slices and InferenceDeployments hold the first publish back; SharedEngines
    # do not, so their list lands in the first publish or in a later one.
    while (seen := running.next()) != LISTED:
        assert seen == (*LISTED[:2], ())
    assert running.cluster.selectors[SLICES] == {discovery.ENGINE_SELECTOR}
    assert running.cluster.selectors[FLEET_SLICES] == {discovery.FLEET_SELECTOR}
    # Only the watched namespace and the fleets': no pods, nothing cluster-wide.
    assert set(running.cluster.selectors) == {SLICES, FLEET_SLICES, INFDS, ENGINES}


@pytest.mark.parametrize("running", [(_cluster(), "tidepool-system")], indirect=True)
def test_watch_events_change_the_caches_and_publish(running: Running) -> None:
    running.until(LISTED)
    running.cluster.push(SLICES, "ADDED", _slice("llama-engine-b", "team", "p2"))
    running.until((("team/p1", "team/p2", "tidepool-system/f1"), *LISTED[1:]))
    running.cluster.push(SLICES, "MODIFIED", _slice("llama-engine-b", "team", "p2", "p3"))
    running.until((("team/p1", "team/p2", "team/p3", "tidepool-system/f1"), *LISTED[1:]))
    running.cluster.push(SLICES, "DELETED", _slice("llama-engine-a", "team"))
    running.cluster.push(ENGINES, "MODIFIED", _obj("fleet-a"))
    running.cluster.push(INFDS, "DELETED", _obj("llama", "team"))
    running.until((("team/p2", "team/p3", "tidepool-system/f1"), (), ("/fleet-a",)))


@pytest.mark.parametrize(
    "running", [(_cluster(refused=frozenset({ENGINES})), "team")], indirect=True
)
def test_sharedengines_refused_still_routes_and_one_namespace_watches_no_fleet_pods(
    running: Running,
) -> None:
    """A gateway whose RBAC predates SharedEngine still publishes; with the fleets in its own
    namespace there is no second slices watch."""
    assert running.next() == (("team/p1",), ("team/llama",), ())
    assert FLEET_SLICES not in running.cluster.selectors


def _pods_cluster() -> Cluster:
    return Cluster(
        lists={
            PODS: [_obj("p1", "team")],
            FLEET_PODS: [_obj("f1", "tidepool-system")],
            INFDS: [_obj("llama", "team")],
            ENGINES: [_obj("fleet-a")],
        }
    )


@pytest.mark.parametrize(
    "running",
    [(_pods_cluster(), "tidepool-system", discovery.EndpointSource.PODS)],
    indirect=True,
)
def test_the_pods_source_hands_the_pods_as_listed(running: Running) -> None:
    """``--endpoints-from=pods`` (pod IPs no slice may hold): the pods themselves, the same
    selectors, and no EndpointSlice read."""
    running.until(LISTED)
    running.cluster.push(PODS, "DELETED", _obj("p1", "team"))
    running.until((("tidepool-system/f1",), *LISTED[1:]))
    assert running.cluster.selectors[PODS] == {discovery.ENGINE_SELECTOR}
    assert running.cluster.selectors[FLEET_PODS] == {discovery.FLEET_SELECTOR}
    assert set(running.cluster.selectors) == {PODS, FLEET_PODS, INFDS, ENGINES}


@pytest.mark.parametrize("running", [(_cluster(), "tidepool-system")], indirect=True)
def test_a_burst_of_events_is_one_rebuild_not_one_each(running: Running) -> None:
    """At 1,000 tenants the InferenceDeployments' status writes come twenty a second; rebuilding
    the routes for each left the watch behind the API server. A burst of 200 events arrives
    within a few publish intervals, so it must cost a handful of rebuilds, ending in its state."""
    running.until(LISTED)
    for i in range(200):
        running.cluster.push(INFDS, "ADDED", _obj(f"model-{i:03d}", "team"))
    final = ("team/llama", *(f"team/model-{i:03d}" for i in range(200)))
    publishes = 0
    while (seen := running.next())[1] != final:
        publishes += 1
    assert seen == (LISTED[0], final, LISTED[2])
    assert publishes < 20, f"{publishes} rebuilds for one burst of 200 events"
