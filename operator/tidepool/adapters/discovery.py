"""Where the gateway learns which engine replicas serve which model: a Kubernetes watch, in threads.

Role: keep an in-memory copy of the EndpointSlices of the engine Services (label
``tidepool.dev/component=engine``, which the EndpointSlice controller copies from each Service
onto its slices: a tenant's own Service and each SharedEngine fleet's alike), of
``InferenceDeployment`` objects and of ``SharedEngine`` objects, fed by ``watch.Watch()``
streams (list once, then watch from the list's resourceVersion; relist on 410 Gone), and after
every change hand the caller's ``build`` those caches, as the API server's JSON, and its
``on_change`` what ``build`` made. The gateway's program passes
:func:`tidepool.gateway.snapshot.build_snapshot`, so this module turns the cluster into the
gateway's own :class:`~tidepool.gateway.snapshot.RoutingSnapshot` without importing the gateway
(an adapter sits below the programs that use it).

Why EndpointSlices and not Pods: the gateway faces the internet, and list/watch on pods reads
every pod spec (environment, commands) in its namespaces; a slice holds only what a client of
the Service needs. And a slice's conditions are the Service's own verdict on an endpoint
(``ready``; ``serving`` and ``terminating`` while it drains), the same one kube-proxy acts on.
:func:`engine_pods` translates the slices into the few Pod fields the gateway's reader
(:func:`tidepool.gateway.snapshot.endpoint_from_pod`) reads, so the gateway's model of an
endpoint does not change with its source:

- the pod's name and namespace: the endpoint's ``targetRef``;
- its owner (``tidepool.dev/inference-deployment``, or ``tidepool.dev/shared-engine`` on a
  fleet): the slice's labels, which are its Service's;
- its IP: the endpoint's address (IPv4 first when a dual-stack Service lists the pod in two
  slices, one per family, so a pod is one endpoint);
- Ready: only endpoints that are ready and not terminating are passed on, so a draining pod
  (``serving`` while ``terminating``) finishes what it has and takes nothing new, as when its
  deletionTimestamp excluded it;
- its port: the slice's port named ``http`` (the Service's ``targetPort: http``).

The pod's pool (``tidepool.dev/pool``) is the one thing the gateway uses that no slice holds:
one Service spans every pool of an InferenceDeployment, and a slice carries its Service's
labels, not its pods'. Three ways to get it were weighed. Keeping a Pod watch for that label
keeps the very right this change removes (RBAC cannot grant pod metadata without pod specs).
A Service per pool (labelled with its pool) would put the pool on the slices, but it is a new
child object the operator must render, apply and prune as pools come and go. The pool is
instead read from the pod's name, which Kubernetes derives from its pool's Deployment: the
ReplicaSet is ``<deployment>-<pod-template-hash>`` (a hash without ``-``) and a pod of it is
``generateName`` of ``<replicaset>-``, that prefix cut to 58 characters and 5 random ones
appended (apiserver's ``SimpleNameGenerator``); the Deployment per pool is
:func:`tidepool.api.names.engine_deployment` of the owner and one of its ``status.pools``
(:func:`pool_of_pod`). A fleet runs on one pool, its SharedEngine's ``spec.pool``. The limit:
an owner and pool whose Deployment name is 58 characters or longer gets its name cut in the
pod's, and two such pools of one owner that share those first 57 characters are told apart by
nothing; such a pod gets no pool, and the routing treats it as a pod of a pool the status does
not name (routed only when ``routablePools`` is empty).

A cluster whose pod IPs no slice may hold keeps the Pod watch (:class:`EndpointSource`,
``--endpoints-from=pods``): the API server refuses a loopback address in an EndpointSlice
(Kubernetes' ``ValidateEndpointIP``), so the EndpointSlice controller's every write for a
Service over the local kwok cluster's pods (IPs in 127.0.0.0/8) fails, and those slices stay
empty. The local test stack runs the gateway that way; the chart runs it on slices, and grants
no pods.

The fleets run in the operator's namespace. A gateway that watches one namespace
(``--namespace``) watches the fleet Services' slices in ``fleet_namespace`` beside it, or it
would route no LoRA tenant at all; it watches nothing in any other namespace.

Beside it, :class:`GatewayReplicas` watches the EndpointSlices of the gateway's own Service
and reports how many ready replicas the Service spreads clients over, the number each replica
divides every tenant's rate limit by (:mod:`tidepool.gateway.auth` says why a split and not
a shard).

Must not: read the objects' meaning (what is routable is the gateway's), poll, or block the
gateway's event loop (the kubernetes client is synchronous, so the watches run in daemon
threads and ``on_change`` is called from those threads; the caller hops to its loop).
``kubernetes`` is imported when the watches start, so the names here that
:mod:`tidepool.adapters.wake`'s pure parts use (:data:`PLURAL`) cost nothing to import.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import types

log = logging.getLogger(__name__)

PLURAL: Final = "inferencedeployments"
SHARED_ENGINE_PLURAL: Final = "sharedengines"
#: The engine Services' slices (each carries its Service's labels, and the Service those of
#: the pods it selects).
ENGINE_SELECTOR: Final = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
#: The slices of every SharedEngine fleet's Service (the label's existence is the selector).
FLEET_SELECTOR: Final = f"{ENGINE_SELECTOR},{labels.SHARED_ENGINE}"
#: Watch requests are re-opened after this many seconds, so a silently dead TCP connection
#: cannot freeze the routing table for longer than that.
WATCH_TIMEOUT_S: Final = 240
_BACKOFF_MAX_S: Final = 30.0
#: The least time between two rebuilds of the routing snapshot. Every watch event only marks it
#: stale; one publisher thread rebuilds it, so a burst of events (at 1,000 tenants, twenty
#: status writes a second) costs one rebuild per interval, not one each. Rebuilding on every
#: event left the watch threads behind the API server there: a new model was not routable
#: within 120 s. A route change reaches the gateway at most this much later.
PUBLISH_INTERVAL_S: Final = 0.2

Objects = Mapping[str, Mapping[str, Any]]
"""One kind's cache: ``namespace/name`` (``/name`` for a cluster-scoped kind) -> its JSON."""
_Built = TypeVar("_Built")


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = _map(obj.get("metadata"))
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# --------------------------------------------------------------------------------------------
# The watch (threads)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Watch:
    """One kind to list and watch: ``fn(*args, **kwargs)`` lists it into ``cache``."""

    kind: str
    cache: dict[str, Mapping[str, Any]]
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class _Watches:
    """List-then-watch loops, one daemon thread per kind, into caches keyed by object.

    A subclass says what to watch (:meth:`_spawn`) and what a change means (:meth:`_publish`,
    called outside the lock by one publisher thread, at most every :data:`PUBLISH_INTERVAL_S`,
    after lists and events have marked the caches changed).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._synced: dict[str, bool] = {}
        """Kinds listed at least once, among those the subclass waits for."""
        self._stop = threading.Event()
        self._watches: list[Any] = []  # kubernetes.watch.Watch (untyped)
        self._threads: list[threading.Thread] = []
        self._stale = threading.Event()
        self._publisher: threading.Thread | None = None

    def _publish(self) -> None:
        raise NotImplementedError

    def _changed(self) -> None:
        """The caches changed: the publisher rebuilds from them soon (see PUBLISH_INTERVAL_S)."""
        self._stale.set()

    def _publish_while_running(self) -> None:
        while not self._stop.is_set():
            if not self._stale.wait(timeout=1.0):
                continue
            self._stale.clear()
            try:
                self._publish()
            except Exception:  # one bad rebuild must not stop every later routing update
                log.exception("discovery: rebuilding the routes failed")
            self._stop.wait(PUBLISH_INTERVAL_S)

    def _spawn(self, watch: _Watch) -> None:
        if self._publisher is None:
            self._publisher = threading.Thread(
                target=self._publish_while_running, name="tidepool-discovery-publish", daemon=True
            )
            self._publisher.start()
        thread = threading.Thread(
            target=self._run,
            args=(watch,),
            name=f"tidepool-discovery-{watch.kind}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()

    def _run(self, spec: _Watch) -> None:
        """List, then watch from that version; on any error back off and relist.

        Why relist instead of resuming: after a 410 or a broken stream we may have missed a
        DELETED event, and only a fresh list makes the cache exact again.
        """
        from kubernetes import watch as kube_watch

        watch: Any = kube_watch  # Watch is untyped

        backoff = 0.5
        while not self._stop.is_set():
            try:
                resp = spec.fn(*spec.args, _preload_content=False, **spec.kwargs)
                listing = json.loads(resp.data)
                with self._lock:
                    spec.cache.clear()
                    for item in _list(listing.get("items")):
                        spec.cache[_object_key(item)] = item
                    if spec.kind in self._synced:
                        self._synced[spec.kind] = True
                self._changed()
                version = _map(listing.get("metadata")).get("resourceVersion")
                w = watch.Watch()
                self._watches.append(w)
                try:
                    for event in w.stream(
                        spec.fn,
                        *spec.args,
                        resource_version=version,
                        timeout_seconds=WATCH_TIMEOUT_S,
                        allow_watch_bookmarks=True,
                        deserialize=False,
                        **spec.kwargs,
                    ):
                        self._apply(spec.cache, event)
                        backoff = 0.5
                        if self._stop.is_set():
                            break
                finally:
                    w.stop()
                    self._watches.remove(w)
            except Exception as exc:  # the watch must outlive any API hiccup
                if self._stop.is_set():
                    return
                log.warning(
                    "discovery: %s watch failed (%s); relisting in %.1fs", spec.kind, exc, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _apply(self, cache: dict[str, Mapping[str, Any]], event: Mapping[str, Any]) -> None:
        etype = event.get("type")
        obj = _map(event.get("object"))
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK: only moves the resourceVersion, which Watch tracks itself
        with self._lock:
            if etype == "DELETED":
                cache.pop(_object_key(obj), None)
            else:
                cache[_object_key(obj)] = obj
        self._changed()


# --------------------------------------------------------------------------------------------
# EndpointSlices, read as the discovery.k8s.io/v1 API defines them (pure)
# --------------------------------------------------------------------------------------------

#: The label the EndpointSlice controller puts on every slice of a Service.
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
#: The Service port (and container port) the engine serves OpenAI on (tidepool.render.engine).
ENGINE_PORT_NAME: Final = "http"
#: apiserver's ``SimpleNameGenerator``: a ``generateName`` prefix is cut to 63 - 5 characters,
#: then 5 random characters are appended.
GENERATED_PREFIX_MAX: Final = 58
GENERATED_SUFFIX_LEN: Final = 5


def is_ready(endpoint: Mapping[str, Any]) -> bool:
    """Whether the Service sends new connections to ``endpoint``.

    ``conditions.ready`` absent counts as ready and ``terminating`` absent as not terminating
    (the EndpointSlice API says so); a terminating endpoint is never ready, even while it is
    still ``serving`` what it has.
    """
    conditions = _map(endpoint.get("conditions"))
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def _endpoint_identity(endpoint: Mapping[str, Any]) -> str:
    """One pod's endpoint, whichever slice (address family) lists it: its ``targetRef`` uid,
    else its addresses."""
    ref = _map(endpoint.get("targetRef"))
    return str(ref.get("uid") or sorted(map(str, _list(endpoint.get("addresses")))))


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> int:
    """How many distinct ready endpoints a Service's EndpointSlices list: the replicas its
    clients' new connections are spread over. A dual-stack Service has one slice per address
    family, so an endpoint is counted once per pod.
    """
    return len(
        {
            _endpoint_identity(_map(ep))
            for item in slices
            for ep in _list(item.get("endpoints"))
            if is_ready(_map(ep))
        }
    )


def pool_of_pod(pod: str, deployments: Mapping[str, str]) -> str | None:
    """The pool (a key of ``deployments``, pool -> its Deployment's name) whose Deployment
    made the pod named ``pod``, or None when none or more than one could have.

    A pod is ``(<deployment>-<hash>-)[:58]`` and 5 random characters, the hash without ``-``
    (see the module docstring). E.g. pools ``a100`` -> ``llama-a100`` and ``a100-spot`` ->
    ``llama-a100-spot``: ``llama-a100-spot-6d4cf-x7k2p`` is ``a100-spot``'s (after
    ``llama-a100-`` comes ``spot-6d4cf-``, which holds a ``-`` no hash has).
    """
    prefix = pod[:-GENERATED_SUFFIX_LEN]
    cut = len(prefix) == GENERATED_PREFIX_MAX
    found = []
    for pool, deployment in deployments.items():
        head = f"{deployment}-"
        if prefix.startswith(head):
            rest = prefix[len(head) :]
            hashed = rest[:-1] if rest.endswith("-") else rest
            if "-" not in hashed and (rest.endswith("-") or cut):
                found.append(pool)
        elif cut and head.startswith(prefix):
            found.append(pool)
    return found[0] if len(found) == 1 else None


def _host(address: str) -> str:
    """An address as a URL's host: an IPv6 one in brackets."""
    return f"[{address}]" if ":" in address else address


def _slice_port(item: Mapping[str, Any]) -> int | None:
    ports = [_map(p) for p in _list(item.get("ports"))]
    named = [p for p in ports if p.get("name") == ENGINE_PORT_NAME] or ports
    port = named[0].get("port") if named else None
    return port if isinstance(port, int) else None


_FAMILY_ORDER: Final = {"IPv4": 0, "IPv6": 1}


def engine_pods(
    slices: Iterable[Mapping[str, Any]], deployments: Objects, engines: Objects
) -> dict[str, Mapping[str, Any]]:
    """The ready engine pods the engine Services' ``slices`` list, ``namespace/name`` -> the
    Pod fields the gateway reads (name, namespace, owner and pool labels, IP, Ready, the
    ``http`` port), as the module docstring lists them.

    ``deployments`` and ``engines`` (the other caches) give each pod its pool
    (:func:`pool_of_pod`). An endpoint that names no Pod, or has no IP address (an ``FQDN``
    slice), is left out: it cannot be attributed or reached.
    """
    owner_pools: dict[tuple[str, str], dict[str, str]] = {}
    for obj in deployments.values():
        meta = _map(obj.get("metadata"))
        name = str(meta.get("name", ""))
        pools = [str(_map(p).get("name", "")) for p in _list(_map(obj.get("status")).get("pools"))]
        owner_pools[(str(meta.get("namespace", "")), names.label_value(name))] = {
            pool: names.engine_deployment(name, pool) for pool in pools if pool
        }
    fleet_pool = {
        names.shared_engine_label(str(_map(obj.get("metadata")).get("name", ""))): str(
            _map(obj.get("spec")).get("pool") or ""
        )
        for obj in engines.values()
    }
    ordered = sorted(slices, key=lambda s: _FAMILY_ORDER.get(str(s.get("addressType")), 2))
    pods: dict[str, Mapping[str, Any]] = {}
    for item in ordered:
        if item.get("addressType") not in _FAMILY_ORDER:
            continue
        meta = _map(item.get("metadata"))
        slice_labels = _map(meta.get("labels"))
        owner = str(slice_labels.get(labels.INFERENCE_DEPLOYMENT) or "")
        engine = str(slice_labels.get(labels.SHARED_ENGINE) or "")
        port = _slice_port(item)
        for endpoint in map(_map, _list(item.get("endpoints"))):
            ref = _map(endpoint.get("targetRef"))
            addresses = _list(endpoint.get("addresses"))
            namespace = str(ref.get("namespace") or meta.get("namespace", ""))
            pod = str(ref.get("name") or "")
            key = f"{namespace}/{pod}"
            if ref.get("kind") != "Pod" or not pod or not addresses or key in pods:
                continue
            if not is_ready(endpoint):
                continue
            pod_labels = {labels.INFERENCE_DEPLOYMENT: owner} if owner else {}
            if engine:
                pod_labels[labels.SHARED_ENGINE] = engine
                pool: str | None = fleet_pool.get(engine) or None
            else:
                pool = pool_of_pod(pod, owner_pools.get((namespace, owner), {}))
            if pool:
                pod_labels[labels.POOL] = pool
            ports = [{"name": ENGINE_PORT_NAME, "containerPort": port}] if port else []
            pods[key] = {
                "metadata": {"name": pod, "namespace": namespace, "labels": pod_labels},
                "spec": {"containers": [{"name": "engine", "ports": ports}]},
                "status": {
                    "podIP": _host(str(addresses[0])),
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
    return pods


# --------------------------------------------------------------------------------------------
# The engines
# --------------------------------------------------------------------------------------------


class EndpointSource(StrEnum):
    """Where :class:`KubeDiscovery` learns the engine replicas from."""

    ENDPOINT_SLICES = "endpointslices"
    """The engine Services' EndpointSlices (the module docstring says why)."""
    PODS = "pods"
    """The engine pods themselves, for a cluster whose pod IPs no EndpointSlice may hold: the
    API server refuses loopback addresses in a slice (Kubernetes' ``ValidateEndpointIP``), and
    the local kwok cluster's pod IPs are loopback ones. Needs list/watch on pods."""


class KubeDiscovery(_Watches, Generic[_Built]):
    """Watches the engine Services' EndpointSlices (or the engine pods, see
    :class:`EndpointSource`), InferenceDeployments and SharedEngines; calls ``on_change``
    with what ``build(pods, deployments, engines)`` makes of each new state, ``pods`` being
    what :func:`engine_pods` reads from the slices (or the pods as listed).

    ``on_change`` runs on a watch thread. The first call comes only after the slices and
    InferenceDeployments have been listed, so the gateway never routes from a half-known world.
    SharedEngines do not hold that first call back: they only say which replica holds which
    adapter (a preference, not a route) and a fleet's pool, and a gateway whose RBAC predates
    SharedEngine must still route every tenant.
    """

    def __init__(
        self,
        api_client: Any,
        build: Callable[[Objects, Objects, Objects], _Built],
        namespace: str | None,
        fleet_namespace: str | None = None,
        source: EndpointSource = EndpointSource.ENDPOINT_SLICES,
    ) -> None:
        """``build``: the caller's view of the caches, pure and quick (it runs under the
        caches' lock). ``namespace`` None: every namespace. ``fleet_namespace``: where the
        operator runs the SharedEngine fleets; watched beside ``namespace`` when that is
        another one. ``source``: see :class:`EndpointSource`."""
        super().__init__()
        self._source = source
        self._api_client = api_client
        self._build = build
        self._namespace = namespace
        elsewhere = namespace and fleet_namespace and fleet_namespace != namespace
        self._fleet_namespace = fleet_namespace if elsewhere else None
        # The engine replicas' objects: EndpointSlices, or pods (``source``).
        self._replicas: dict[str, Mapping[str, Any]] = {}
        self._fleet_replicas: dict[str, Mapping[str, Any]] = {}
        self._deployments: dict[str, Mapping[str, Any]] = {}
        self._engines: dict[str, Mapping[str, Any]] = {}
        # The kinds the first snapshot waits for (see the class docstring for why not engines).
        self._synced.update({str(source): False, "deployments": False})
        if self._fleet_namespace is not None:
            self._synced[f"fleet-{source}"] = False
        self._on_change: Callable[[_Built], None] | None = None

    def start(self, on_change: Callable[[_Built], None]) -> None:
        from kubernetes import client

        self._on_change = on_change
        custom = client.CustomObjectsApi(self._api_client)
        if self._source is EndpointSource.PODS:
            core = client.CoreV1Api(self._api_client)
            in_one: Callable[..., Any] = core.list_namespaced_pod
            in_all: Callable[..., Any] = core.list_pod_for_all_namespaces
        else:
            slices_api = client.DiscoveryV1Api(self._api_client)
            in_one = slices_api.list_namespaced_endpoint_slice
            in_all = slices_api.list_endpoint_slice_for_all_namespaces
        ns = self._namespace
        group, version = types.GROUP, types.VERSION
        if ns:
            replicas_fn = in_one
            replicas_args: tuple[str, ...] = (ns,)
            infd_fn: Callable[..., Any] = custom.list_namespaced_custom_object
            infd_args: tuple[Any, ...] = (group, version, ns, PLURAL)
        else:
            replicas_fn, replicas_args = in_all, ()
            infd_fn = custom.list_cluster_custom_object
            infd_args = (group, version, PLURAL)
        engines_fn = custom.list_cluster_custom_object  # SharedEngine is cluster-scoped
        engines_args = (group, version, SHARED_ENGINE_PLURAL)
        watches = [
            _Watch(
                str(self._source),
                self._replicas,
                replicas_fn,
                replicas_args,
                {"label_selector": ENGINE_SELECTOR},
            ),
            _Watch("deployments", self._deployments, infd_fn, infd_args),
            _Watch("engines", self._engines, engines_fn, engines_args),
        ]
        if self._fleet_namespace is not None:
            watches.append(
                _Watch(
                    f"fleet-{self._source}",
                    self._fleet_replicas,
                    in_one,
                    (self._fleet_namespace,),
                    {"label_selector": FLEET_SELECTOR},
                )
            )
        for watch in watches:
            self._spawn(watch)

    def _publish(self) -> None:
        with self._lock:
            if not all(self._synced.values()):
                return
            if self._source is EndpointSource.PODS:
                pods: Objects = {**self._replicas, **self._fleet_replicas}
            else:
                slices = [*self._replicas.values(), *self._fleet_replicas.values()]
                pods = engine_pods(slices, self._deployments, self._engines)
            built = self._build(pods, self._deployments, self._engines)
        if self._on_change is not None:
            self._on_change(built)


# --------------------------------------------------------------------------------------------
# The gateway's own replicas
# --------------------------------------------------------------------------------------------


class GatewayReplicas(_Watches):
    """Watches the gateway Service's EndpointSlices and calls ``on_change`` (on its watch
    thread) with the number of ready gateway replicas whenever it changes, so each replica
    can enforce its share of every tenant's rate limit (:mod:`tidepool.gateway.auth`)."""

    def __init__(self, api_client: Any, namespace: str, service: str) -> None:
        super().__init__()
        self._api_client = api_client
        self._namespace = namespace
        self._service = service
        self._slices: dict[str, Mapping[str, Any]] = {}
        self._synced["endpointslices"] = False
        self._count: int | None = None
        self._on_change: Callable[[int], None] | None = None

    def start(self, on_change: Callable[[int], None]) -> None:
        from kubernetes import client

        self._on_change = on_change
        api = client.DiscoveryV1Api(self._api_client)
        self._spawn(
            _Watch(
                "endpointslices",
                self._slices,
                api.list_namespaced_endpoint_slice,
                (self._namespace,),
                {"label_selector": f"{SERVICE_NAME_LABEL}={self._service}"},
            )
        )

    def _publish(self) -> None:
        with self._lock:
            if not all(self._synced.values()):
                return
            count = ready_endpoints(self._slices.values())
            changed, self._count = count != self._count, count
        if changed and self._on_change is not None:
            self._on_change(count)
