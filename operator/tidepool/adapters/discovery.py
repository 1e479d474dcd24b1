"""Where the gateway learns which engine pods serve which model: a Kubernetes watch, in threads.

Role: keep an in-memory copy of engine pods (label ``tidepool.dev/component=engine``: a
tenant's own replicas and SharedEngine fleets alike), of ``InferenceDeployment`` objects and of
``SharedEngine`` objects, fed by ``watch.Watch()`` streams (list once, then watch from the
list's resourceVersion; relist on 410 Gone), and hand the gateway a fresh, immutable
:class:`RoutingSnapshot` after every change. The translation from API JSON to snapshot values
(:func:`endpoint_from_pod`, :func:`model_from_inference_deployment`, :func:`build_snapshot`) is
pure and tested without a cluster.

A LoRA tenant whose ``status.engine`` names a SharedEngine is served by that fleet's pods
(label ``tidepool.dev/shared-engine``) under its adapter name: its route says so
(:attr:`ModelRoute.engine`, :attr:`ModelRoute.adapter`), and each fleet pod carries the adapters
the operator's record (``SharedEngine.status.adapters[].replicas``) says it holds
(:attr:`Endpoint.adapters`, :func:`adapter_holders`), so the picker sends a tenant's requests only
to replicas that hold its adapter.

The fleets run in the operator's namespace. A gateway that watches one namespace
(``--namespace``) watches the fleet pods of ``fleet_namespace`` beside it, or it would route no
LoRA tenant at all.

Must not: decide routing (which pool is routable, hybrid spill: that is ``tidepool.gateway``),
poll, or block the gateway's event loop (the kubernetes client is synchronous, so the watches
run in daemon threads and ``on_change`` is called from those threads; the caller hops to its
loop). ``kubernetes`` is imported lazily inside :class:`KubeDiscovery`, so importing the
snapshot types costs nothing and the gateway's pure core stays free of the client.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import types

log = logging.getLogger(__name__)

PLURAL: Final = "inferencedeployments"
SHARED_ENGINE_PLURAL: Final = "sharedengines"
ENGINE_SELECTOR: Final = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
#: The engine pods of every SharedEngine fleet (the label's existence is the selector).
FLEET_SELECTOR: Final = f"{ENGINE_SELECTOR},{labels.SHARED_ENGINE}"
DEFAULT_ENGINE_PORT: Final = 8000
#: Named container port the engine serves OpenAI on (falls back to DEFAULT_ENGINE_PORT).
ENGINE_PORT_NAME: Final = "http"
#: Watch requests are re-opened after this many seconds, so a silently dead TCP connection
#: cannot freeze the routing table for longer than that.
WATCH_TIMEOUT_S: Final = 240
_BACKOFF_MAX_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready, non-terminating engine pod that could take a request."""

    namespace: str
    pod: str
    deployment: str
    """Name of the owning InferenceDeployment ("" on a SharedEngine's pod, which has none)."""
    pool: str
    host: str
    port: int
    engine: str = ""
    """The SharedEngine's label value (``tidepool.dev/shared-engine``) on a fleet pod, else ""."""
    adapters: frozenset[str] = frozenset()
    """LoRA adapters this replica holds, as far as the snapshot's sources know."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PoolRole:
    """A pool as ``status.pools[]`` describes it: what tenancy it has, what role it plays."""

    name: str
    tenancy: str
    role: str


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """What the gateway needs from one InferenceDeployment."""

    namespace: str
    name: str
    served_model: str
    tenant: str
    hybrid: bool
    overflow_concurrency_per_replica: int
    routable_pools: tuple[str, ...] = ()
    """Empty means every pool is routable."""
    pools: tuple[PoolRole, ...] = ()
    upstream_model: str | None = None
    """The ``model`` the engine serves this tenant under (its LoRA adapter's name), when that is
    not ``served_model``: the gateway rewrites requests to it and responses back from it."""
    engine: str | None = None
    """The SharedEngine whose fleet serves this tenant (``status.engine``); None: its own pods."""
    adapter: str | None = None
    """The tenant's LoRA adapter (``spec.model.adapter.name``), whether or not it is also the
    served name: what a fleet replica must hold to serve the tenant."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def engine_label(self) -> str | None:
        """The fleet pods' ``tidepool.dev/shared-engine`` value, or None for a tenant's own pods."""
        return None if self.engine is None else names.shared_engine_label(self.engine)


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """Everything discovery knows at one instant. Immutable; the gateway swaps it in whole."""

    models: tuple[ModelRoute, ...] = ()
    endpoints: tuple[Endpoint, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# Pure translation from API JSON (camelCase dicts, as the API server sends them)
# --------------------------------------------------------------------------------------------


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def endpoint_from_pod(pod: Mapping[str, Any]) -> Endpoint | None:
    """The pod as an endpoint, or None when it must not get traffic.

    Why each check: a pod that is not Ready is still loading the model; one with a
    deletionTimestamp is draining (it finishes in-flight requests but takes no new ones); one
    without an IP or an owner label (its InferenceDeployment, or the SharedEngine whose fleet it
    is part of) cannot be addressed or attributed.
    """
    meta = _map(pod.get("metadata"))
    status = _map(pod.get("status"))
    pod_labels = _map(meta.get("labels"))
    if meta.get("deletionTimestamp"):
        return None
    ready = any(
        _map(c).get("type") == "Ready" and _map(c).get("status") == "True"
        for c in _list(status.get("conditions"))
    )
    host = status.get("podIP")
    owner = pod_labels.get(labels.INFERENCE_DEPLOYMENT) or ""
    engine = pod_labels.get(labels.SHARED_ENGINE) or ""
    if not ready or not host or not (owner or engine):
        return None
    return Endpoint(
        namespace=str(meta.get("namespace", "default")),
        pod=str(meta.get("name", "")),
        deployment=str(owner),
        pool=str(pod_labels.get(labels.POOL, "")),
        host=str(host),
        port=_engine_port(pod),
        engine=str(engine),
    )


def _engine_port(pod: Mapping[str, Any]) -> int:
    for container in _list(_map(pod.get("spec")).get("containers")):
        for port in _list(_map(container).get("ports")):
            if _map(port).get("name") == ENGINE_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return DEFAULT_ENGINE_PORT


def model_from_inference_deployment(obj: Mapping[str, Any]) -> ModelRoute:
    """The routing view of an InferenceDeployment.

    Read leniently on purpose: the API server has already validated the spec, and a field this
    gateway does not know (a newer operator) must not take a model off the routing table.
    """
    meta = _map(obj.get("metadata"))
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    name = str(meta.get("name", ""))
    namespace = str(meta.get("namespace", "default"))
    served = status.get("servedModel") or _map(spec.get("model")).get("servedName") or name
    hybrid_mode = types.DeploymentMode.HYBRID.value
    hybrid = spec.get("mode") == hybrid_mode or status.get("effectiveMode") == hybrid_mode
    overflow = _map(spec.get("hybrid")).get("overflowConcurrencyPerReplica")
    if not isinstance(overflow, int) or overflow < 1:
        overflow = types.HybridSpec().overflow_concurrency_per_replica
    pools = tuple(
        PoolRole(
            name=str(_map(p).get("name", "")),
            tenancy=str(_map(p).get("tenancy", "")),
            role=str(_map(p).get("role", "primary")),
        )
        for p in _list(status.get("pools"))
    )
    # vLLM serves a LoRA adapter under its --lora-modules / load_lora_adapter name, on the
    # tenant's own replicas (beside the base model under --served-model-name) as on a
    # SharedEngine fleet, so a request reaches the adapter only under that name.
    adapter = _map(_map(spec.get("model")).get("adapter")).get("name")
    upstream = str(adapter) if adapter and str(adapter) != str(served) else None
    engine = status.get("engine")
    return ModelRoute(
        namespace=namespace,
        name=name,
        served_model=str(served),
        tenant=str(spec.get("tenant") or namespace),
        hybrid=hybrid,
        overflow_concurrency_per_replica=overflow,
        routable_pools=tuple(str(p) for p in _list(status.get("routablePools"))),
        pools=pools,
        upstream_model=upstream,
        engine=str(engine) if engine else None,
        adapter=str(adapter) if adapter else None,
    )


def adapter_holders(engine: Mapping[str, Any]) -> dict[str, set[str]]:
    """Pod name -> the adapters the operator's record says that fleet replica holds.

    ``status.adapters[].replicas`` names the pods on which the operator loaded each adapter
    (vLLM said so in ``/v1/models``); a pod it does not name has not got the adapter, or is
    about to lose it. E.g. ``support-bot`` on ``[p0, p1]`` and ``sql-bot`` on ``[p1]``:
    ``{p0: {support-bot}, p1: {support-bot, sql-bot}}``.
    """
    held: dict[str, set[str]] = {}
    for a in _list(_map(engine.get("status")).get("adapters")):
        name = _map(a).get("name")
        if not name:
            continue
        for pod in _list(_map(a).get("replicas")):
            held.setdefault(str(pod), set()).add(str(name))
    return held


def build_snapshot(
    pods: Mapping[str, Mapping[str, Any]],
    deployments: Mapping[str, Mapping[str, Any]],
    engines: Mapping[str, Mapping[str, Any]] | None = None,
) -> RoutingSnapshot:
    """Snapshot from the caches (keyed ``namespace/name``; SharedEngines, cluster-scoped, by
    ``/name``), sorted so equal state is equal. A fleet pod gets the adapters its SharedEngine's
    record says it holds (:func:`adapter_holders`)."""
    found = [e for e in (endpoint_from_pod(p) for p in pods.values()) if e is not None]
    held: dict[tuple[str, str], set[str]] = {}
    for obj in (engines or {}).values():
        label = names.shared_engine_label(str(_map(obj.get("metadata")).get("name", "")))
        for pod, adapters in adapter_holders(obj).items():
            held[(label, pod)] = adapters
    models = sorted(
        (model_from_inference_deployment(d) for d in deployments.values()), key=lambda m: m.key
    )
    # A pod's inference-deployment label is its owner's name, cut and hashed when the name is
    # over 63 characters (names.label_value): an Endpoint names the owner by its name.
    owners = {(m.namespace, names.label_value(m.name)): m.name for m in models}
    endpoints = sorted(
        (
            replace(e, adapters=frozenset(held.get((e.engine, e.pod), ())))
            if e.engine
            else replace(e, deployment=owners.get((e.namespace, e.deployment), e.deployment))
            for e in found
        ),
        key=lambda e: e.key,
    )
    return RoutingSnapshot(models=tuple(models), endpoints=tuple(endpoints))


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = _map(obj.get("metadata"))
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# --------------------------------------------------------------------------------------------
# The watch (threads)
# --------------------------------------------------------------------------------------------


def make_api_client(kubeconfig: str | None) -> Any:
    """The gateway's client: :func:`tidepool.adapters.kube.load_client`, imported only when
    called so that importing the snapshot types stays free of ``kubernetes``."""
    from tidepool.adapters.kube import load_client

    return load_client(kubeconfig)


class KubeDiscovery:
    """Watches engine pods, InferenceDeployments and SharedEngines; calls ``on_change`` with
    each new snapshot.

    ``on_change`` runs on a watch thread. The first call comes only after the pods and
    InferenceDeployments have been listed, so the gateway never routes from a half-known world.
    SharedEngines do not hold that first call back: they only say which replica holds which
    adapter (a preference, not a route), and a gateway whose RBAC predates SharedEngine must
    still route every tenant.
    """

    def __init__(
        self, api_client: Any, namespace: str | None, fleet_namespace: str | None = None
    ) -> None:
        """``namespace`` None: every namespace. ``fleet_namespace``: where the operator runs the
        SharedEngine fleets; watched beside ``namespace`` when that is another one."""
        self._api_client = api_client
        self._namespace = namespace
        elsewhere = namespace and fleet_namespace and fleet_namespace != namespace
        self._fleet_namespace = fleet_namespace if elsewhere else None
        self._lock = threading.Lock()
        self._pods: dict[str, Mapping[str, Any]] = {}
        self._fleet_pods: dict[str, Mapping[str, Any]] = {}
        self._deployments: dict[str, Mapping[str, Any]] = {}
        self._engines: dict[str, Mapping[str, Any]] = {}
        self._synced = {"pods": False, "deployments": False}
        """Kinds the first snapshot waits for (see the class docstring for why not engines)."""
        if self._fleet_namespace is not None:
            self._synced["fleet-pods"] = False
        self._stop = threading.Event()
        self._watches: list[Any] = []  # kubernetes.watch.Watch (untyped)
        self._threads: list[threading.Thread] = []
        self._on_change: Callable[[RoutingSnapshot], None] | None = None

    def start(self, on_change: Callable[[RoutingSnapshot], None]) -> None:
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
        specs: list[
            tuple[str, dict[str, Mapping[str, Any]], Callable[..., Any], tuple[Any, ...], Any]
        ] = [
            ("pods", self._pods, pods_fn, pods_args, {"label_selector": ENGINE_SELECTOR}),
            ("deployments", self._deployments, infd_fn, infd_args, {}),
            ("engines", self._engines, engines_fn, engines_args, {}),
        ]
        if self._fleet_namespace is not None:
            specs.append(
                (
                    "fleet-pods",
                    self._fleet_pods,
                    core.list_namespaced_pod,
                    (self._fleet_namespace,),
                    {"label_selector": FLEET_SELECTOR},
                )
            )
        for kind, cache, fn, args, kwargs in specs:
            thread = threading.Thread(
                target=self._run,
                args=(kind, cache, fn, args, kwargs),
                name=f"tidepool-discovery-{kind}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()

    def _run(
        self,
        kind: str,
        cache: dict[str, Mapping[str, Any]],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """List, then watch from that version; on any error back off and relist.

        Why relist instead of resuming: after a 410 or a broken stream we may have missed a
        DELETED event, and only a fresh list makes the cache exact again.
        """
        from kubernetes import watch as kube_watch

        watch: Any = kube_watch  # Watch is untyped

        backoff = 0.5
        while not self._stop.is_set():
            try:
                resp = fn(*args, _preload_content=False, **kwargs)
                listing = json.loads(resp.data)
                with self._lock:
                    cache.clear()
                    for item in _list(listing.get("items")):
                        cache[_object_key(item)] = item
                    if kind in self._synced:
                        self._synced[kind] = True
                self._publish()
                version = _map(listing.get("metadata")).get("resourceVersion")
                w = watch.Watch()
                self._watches.append(w)
                try:
                    for event in w.stream(
                        fn,
                        *args,
                        resource_version=version,
                        timeout_seconds=WATCH_TIMEOUT_S,
                        allow_watch_bookmarks=True,
                        deserialize=False,
                        **kwargs,
                    ):
                        self._apply(cache, event)
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
                    "discovery: %s watch failed (%s); relisting in %.1fs", kind, exc, backoff
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

    def _publish(self) -> None:
        with self._lock:
            if not all(self._synced.values()):
                return
            pods = {**self._pods, **self._fleet_pods}
            snapshot = build_snapshot(pods, self._deployments, self._engines)
        if self._on_change is not None:
            self._on_change(snapshot)
