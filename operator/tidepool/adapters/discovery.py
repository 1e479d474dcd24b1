"""Where the gateway learns which engine pods serve which model: a Kubernetes watch, in threads.

Role: keep an in-memory copy of engine pods (label ``tidepool.dev/component=engine``: a
tenant's own replicas and SharedEngine fleets alike), of ``InferenceDeployment`` objects and of
``SharedEngine`` objects, fed by ``watch.Watch()`` streams (list once, then watch from the
list's resourceVersion; relist on 410 Gone), and after every change hand the caller's
``build`` those caches, as the API server's JSON, and its ``on_change`` what ``build`` made.
The gateway's program passes :func:`tidepool.gateway.snapshot.build_snapshot`, so this module
turns the cluster into the gateway's own :class:`~tidepool.gateway.snapshot.RoutingSnapshot`
without importing the gateway (an adapter sits below the programs that use it).

Beside it, :class:`GatewayReplicas` watches the EndpointSlices of the gateway's own Service
and reports how many ready replicas the Service spreads clients over, the number each replica
divides every tenant's rate limit by (:mod:`tidepool.gateway.auth` says why a split and not
a shard). That count is the Service's own fact, read as the EndpointSlice API defines it.

The fleets run in the operator's namespace. A gateway that watches one namespace
(``--namespace``) watches the fleet pods of ``fleet_namespace`` beside it, or it would route no
LoRA tenant at all.

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
from typing import Any, Final, Generic, TypeVar

from tidepool.api import labels
from tidepool.api.v1alpha1 import types

log = logging.getLogger(__name__)

PLURAL: Final = "inferencedeployments"
SHARED_ENGINE_PLURAL: Final = "sharedengines"
ENGINE_SELECTOR: Final = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
#: The engine pods of every SharedEngine fleet (the label's existence is the selector).
FLEET_SELECTOR: Final = f"{ENGINE_SELECTOR},{labels.SHARED_ENGINE}"
#: Watch requests are re-opened after this many seconds, so a silently dead TCP connection
#: cannot freeze the routing table for longer than that.
WATCH_TIMEOUT_S: Final = 240
_BACKOFF_MAX_S: Final = 30.0

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
    called after every list and every event, outside the lock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._synced: dict[str, bool] = {}
        """Kinds listed at least once, among those the subclass waits for."""
        self._stop = threading.Event()
        self._watches: list[Any] = []  # kubernetes.watch.Watch (untyped)
        self._threads: list[threading.Thread] = []

    def _publish(self) -> None:
        raise NotImplementedError

    def _spawn(self, watch: _Watch) -> None:
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
                self._publish()
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
        self._publish()


class KubeDiscovery(_Watches, Generic[_Built]):
    """Watches engine pods, InferenceDeployments and SharedEngines; calls ``on_change`` with
    what ``build(pods, deployments, engines)`` makes of each new state.

    ``on_change`` runs on a watch thread. The first call comes only after the pods and
    InferenceDeployments have been listed, so the gateway never routes from a half-known world.
    SharedEngines do not hold that first call back: they only say which replica holds which
    adapter (a preference, not a route), and a gateway whose RBAC predates SharedEngine must
    still route every tenant.
    """

    def __init__(
        self,
        api_client: Any,
        build: Callable[[Objects, Objects, Objects], _Built],
        namespace: str | None,
        fleet_namespace: str | None = None,
    ) -> None:
        """``build``: the caller's view of the caches, pure and quick (it runs under the
        caches' lock). ``namespace`` None: every namespace. ``fleet_namespace``: where the
        operator runs the SharedEngine fleets; watched beside ``namespace`` when that is
        another one."""
        super().__init__()
        self._api_client = api_client
        self._build = build
        self._namespace = namespace
        elsewhere = namespace and fleet_namespace and fleet_namespace != namespace
        self._fleet_namespace = fleet_namespace if elsewhere else None
        self._pods: dict[str, Mapping[str, Any]] = {}
        self._fleet_pods: dict[str, Mapping[str, Any]] = {}
        self._deployments: dict[str, Mapping[str, Any]] = {}
        self._engines: dict[str, Mapping[str, Any]] = {}
        # The kinds the first snapshot waits for (see the class docstring for why not engines).
        self._synced.update({"pods": False, "deployments": False})
        if self._fleet_namespace is not None:
            self._synced["fleet-pods"] = False
        self._on_change: Callable[[_Built], None] | None = None

    def start(self, on_change: Callable[[_Built], None]) -> None:
        from kubernetes import client

        self._on_change = on_change
        core = client.CoreV1Api(self._api_client)
        custom = client.CustomObjectsApi(self._api_client)
        ns = self._namespace
        group, version = types.GROUP, types.VERSION
        if ns:
            pods_fn: Callable[..., Any] = core.list_namespaced_pod
            pods_args: tuple[Any, ...] = (ns,)
            infd_fn: Callable[..., Any] = custom.list_namespaced_custom_object
            infd_args: tuple[Any, ...] = (group, version, ns, PLURAL)
        else:
            pods_fn, pods_args = core.list_pod_for_all_namespaces, ()
            infd_fn = custom.list_cluster_custom_object
            infd_args = (group, version, PLURAL)
        engines_fn = custom.list_cluster_custom_object  # SharedEngine is cluster-scoped
        engines_args = (group, version, SHARED_ENGINE_PLURAL)
        watches = [
            _Watch("pods", self._pods, pods_fn, pods_args, {"label_selector": ENGINE_SELECTOR}),
            _Watch("deployments", self._deployments, infd_fn, infd_args),
            _Watch("engines", self._engines, engines_fn, engines_args),
        ]
        if self._fleet_namespace is not None:
            watches.append(
                _Watch(
                    "fleet-pods",
                    self._fleet_pods,
                    core.list_namespaced_pod,
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
            pods = {**self._pods, **self._fleet_pods}
            built = self._build(pods, self._deployments, self._engines)
        if self._on_change is not None:
            self._on_change(built)


# --------------------------------------------------------------------------------------------
# The gateway's own replicas
# --------------------------------------------------------------------------------------------

#: The label the EndpointSlice controller puts on every slice of a Service.
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> int:
    """How many distinct ready endpoints a Service's EndpointSlices list: the replicas its
    clients' new connections are spread over.

    ``conditions.ready`` absent counts as ready (the EndpointSlice API says so). A dual-stack
    Service has one slice per address family, so an endpoint is counted once per pod
    (``targetRef.uid``, else its addresses).
    """
    seen: set[str] = set()
    for item in slices:
        for endpoint in _list(item.get("endpoints")):
            ep = _map(endpoint)
            if _map(ep.get("conditions")).get("ready") is False:
                continue
            ref = _map(ep.get("targetRef"))
            seen.add(str(ref.get("uid") or sorted(map(str, _list(ep.get("addresses"))))))
    return len(seen)


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
