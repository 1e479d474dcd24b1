"""What the gateway knows of the cluster at one instant: models, their pools and engine pods.

Role: the gateway's domain model (:class:`RoutingSnapshot` of :class:`ModelRoute` and
:class:`Endpoint`) and the pure reading of it from the API server's JSON
(:func:`endpoint_from_pod`, :func:`model_from_inference_deployment`, :func:`build_snapshot`):
which pod may get traffic at all, and what a model's route says. Every discovery source hands
the gateway these values: the Kubernetes watch (:class:`tidepool.adapters.discovery.KubeDiscovery`,
which the program module gives :func:`build_snapshot`), the routes file
(:mod:`tidepool.gateway.static`) and the tests' fakes.

A LoRA tenant whose ``status.engine`` names a SharedEngine is served by that fleet's pods
(label ``tidepool.dev/shared-engine``) under its adapter name: its route says so
(:attr:`ModelRoute.engine`, :attr:`ModelRoute.adapter`), and each fleet pod carries the adapters
the operator's record (``SharedEngine.status.adapters[].replicas``) says it holds
(:attr:`Endpoint.adapters`, :func:`adapter_holders`), so the picker sends a tenant's requests only
to replicas that hold its adapter, and the batch seats its SharedEngine gives each replica
(:attr:`Endpoint.seats`, :func:`engine_seats`), so it knows when a replica already running the
adapter has no seat left.

Must not: do I/O, import ``kubernetes`` (the objects arrive as the plain dicts the API server
sends), or decide between pools (which pool is routable, hybrid spill: that is
:mod:`tidepool.gateway.routing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, TypeVar

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import types
from tidepool.policy import fair_share

DEFAULT_ENGINE_PORT: Final = 8000
#: Named container port the engine serves OpenAI on (falls back to DEFAULT_ENGINE_PORT).
ENGINE_PORT_NAME: Final = "http"
#: Batch seats of a fleet replica whose SharedEngine does not say (``spec.engine.maxNumSeqs``
#: absent or unreadable): the CRD's default, which the API server would have filled in.
DEFAULT_SEATS: Final = types.EngineSpec().max_num_seqs

_E = TypeVar("_E", bound=StrEnum)


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
    seats: int | None = None
    """Batch seats of a fleet replica: its SharedEngine's ``spec.engine.maxNumSeqs`` (vLLM's
    ``--max-num-seqs``); None when no source says (the picker then assumes DEFAULT_SEATS)."""
    priority_scheduling: bool = False
    """Whether this fleet replica schedules by priority (its SharedEngine's
    ``status.schedulingPolicy``, :func:`engine_priority_scheduling`), so that the gateway may
    send each request its tenant's priority (:mod:`tidepool.policy.fair_share`)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Pool:
    """One of a model's pools as ``status.pools[]`` describes it: its tenancy and its role."""

    name: str
    tenancy: types.Tenancy
    role: types.PoolRole


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
    pools: tuple[Pool, ...] = ()
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


def _known(kind: type[_E], value: object, otherwise: _E) -> _E:
    """``value`` as a member of ``kind``, or ``otherwise`` when it is none of them.

    Why not refuse: a value this gateway does not know comes from a newer operator, and the
    routing rules treat it as they always did: a role other than overflow, target and draining
    is served like ``primary``, a tenancy other than dedicated like ``shared``.
    """
    if not isinstance(value, str):
        return otherwise
    try:
        return kind(value)
    except ValueError:
        return otherwise


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
        Pool(
            name=str(_map(p).get("name", "")),
            tenancy=_known(types.Tenancy, _map(p).get("tenancy"), types.Tenancy.SHARED),
            role=_known(types.PoolRole, _map(p).get("role"), types.PoolRole.PRIMARY),
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


def engine_seats(engine: Mapping[str, Any]) -> int | None:
    """The batch seats of each of a SharedEngine's replicas (``spec.engine.maxNumSeqs``), or
    None when the object does not say (read leniently, as the routes are: a value this gateway
    cannot read must not take the fleet off the routing table)."""
    seats = _map(_map(engine.get("spec")).get("engine")).get("maxNumSeqs")
    return seats if isinstance(seats, int) and not isinstance(seats, bool) and seats >= 1 else None


def engine_priority_scheduling(engine: Mapping[str, Any]) -> bool:
    """Whether every replica of a SharedEngine runs vLLM's priority scheduling, as its status
    says once the rollout that turned it on is complete. Anything else (no status yet, ``fcfs``,
    a value this gateway does not know) is False: vLLM under ``fcfs`` refuses a request whose
    ``priority`` is not 0, so the gateway sends none."""
    policy = _map(engine.get("status")).get("schedulingPolicy")
    return policy == fair_share.SCHEDULING_POLICY


def build_snapshot(
    pods: Mapping[str, Mapping[str, Any]],
    deployments: Mapping[str, Mapping[str, Any]],
    engines: Mapping[str, Mapping[str, Any]] | None = None,
) -> RoutingSnapshot:
    """Snapshot from the caches (keyed ``namespace/name``; SharedEngines, cluster-scoped, by
    ``/name``), sorted so equal state is equal. A fleet pod gets the adapters its SharedEngine's
    record says it holds (:func:`adapter_holders`), its batch seats (:func:`engine_seats`) and
    whether it schedules by priority (:func:`engine_priority_scheduling`)."""
    found = [e for e in (endpoint_from_pod(p) for p in pods.values()) if e is not None]
    held: dict[tuple[str, str], set[str]] = {}
    seats: dict[str, int | None] = {}
    by_priority: set[str] = set()
    for obj in (engines or {}).values():
        label = names.shared_engine_label(str(_map(obj.get("metadata")).get("name", "")))
        seats[label] = engine_seats(obj)
        if engine_priority_scheduling(obj):
            by_priority.add(label)
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
            replace(
                e,
                adapters=frozenset(held.get((e.engine, e.pod), ())),
                seats=seats.get(e.engine),
                priority_scheduling=e.engine in by_priority,
            )
            if e.engine
            else replace(e, deployment=owners.get((e.namespace, e.deployment), e.deployment))
            for e in found
        ),
        key=lambda e: e.key,
    )
    return RoutingSnapshot(models=tuple(models), endpoints=tuple(endpoints))
