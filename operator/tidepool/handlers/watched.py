"""The reads every reconcile makes, served from Kopf's in-memory indices of watched objects.

Why: each InferenceDeployment's daemon used to LIST its GPUPools, engine Deployments and engine
pods at every tick. At 300 tenants on a two-core control plane that was 145 LISTs a second, and
the API server spent more CPU answering them than on anything else; at 1,000 tenants it would be
about 500. Kopf's indices (``@kopf.index``) keep each kind current from one watch stream, the
way controller-runtime's cache does for Go operators, so a tick reads memory and the API server
sees one watch per kind whatever the tenant count. Kopf starts no other handler until every
index is populated, so a daemon never reads a half-filled index.

The engine Deployments and pods are watched with a server-side label selector (Kopf's
``settings.watching.label_selectors``, set in :func:`narrow_watches`), so the operator
receives the events of engine objects only, not of every pod in the cluster.

Writes, and the reads only a cold start or the first reconcile after a restart needs, still go to
the API server through :class:`~tidepool.adapters.kube.Kube`.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, TypeVar

import kopf

from tidepool.adapters import kube as kube_adapter
from tidepool.adapters import wake
from tidepool.adapters.kube import Kube
from tidepool.api import labels, names
from tidepool.api.v1alpha1 import GROUP, VERSION, GPUPool, InferenceDeployment, SharedEngine
from tidepool.policy.children import ObservedDeployment, PodProblem
from tidepool.policy.cold_start import PodTimeline
from tidepool.policy.shared_engine import EnginePodAddress

JSON = dict[str, Any]
_Model = TypeVar("_Model", GPUPool, InferenceDeployment, SharedEngine)
#: The label every engine pod carries, a tenant's or a SharedEngine fleet's.
ENGINE_PODS_SELECTOR: Final = f"{labels.COMPONENT}={labels.COMPONENT_ENGINE}"
#: The labels every engine Deployment and pod of an InferenceDeployment carries.
ENGINE_SELECTOR: Final = f"{ENGINE_PODS_SELECTOR},{labels.INFERENCE_DEPLOYMENT}"
#: A tenant's engine objects as a Kopf handler filter (the server-side selector already narrows
#: the stream to engine objects).
TENANT_ENGINES: Final = {labels.INFERENCE_DEPLOYMENT: kopf.PRESENT}
#: A SharedEngine fleet's engine pods as a Kopf handler filter.
FLEET_ENGINES: Final = {labels.SHARED_ENGINE: kopf.PRESENT}


def narrow_watches(settings: kopf.OperatorSettings) -> None:
    """Ask the API server only for what the handlers use: tenants' engine Deployments, engine
    pods (see the module; a fleet's too, whose starts ``handlers.replica_start`` observes), and
    of the cluster's Events only the gateway's wakes (``handlers.wake``), instead of every Event
    every controller posts."""
    settings.watching.label_selectors["apps", "deployments"] = ENGINE_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = ENGINE_PODS_SELECTOR
    settings.watching.field_selectors["v1", "events"] = f"reason={wake.WAKE_REASON}"


def _validated(model: type[_Model], body: kopf.Body) -> dict[None, _Model]:
    """The object under the one key ``None``; one that does not validate is left out (its own
    daemon reports it as InvalidSpec), never a reason to fail every tenant's reconcile."""
    try:
        return {None: model.model_validate(dict(body))}
    except ValueError:
        return {}


@kopf.index(GROUP, VERSION, "gpupools")
def gpupool_index(body: kopf.Body, **_: Any) -> dict[None, GPUPool]:
    return _validated(GPUPool, body)


@kopf.index(GROUP, VERSION, "inferencedeployments")
def inference_deployment_index(body: kopf.Body, **_: Any) -> dict[None, InferenceDeployment]:
    return _validated(InferenceDeployment, body)


@kopf.index(GROUP, VERSION, "sharedengines")
def shared_engine_index(body: kopf.Body, **_: Any) -> dict[None, SharedEngine]:
    return _validated(SharedEngine, body)


#: (namespace, the ``inference-deployment`` label's value): an engine object's tenant.
EngineKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class OwnedDeployment:
    controller: tuple[str, str] | None
    """(kind, name) of its Tidepool controller, if it has one."""
    deployment: ObservedDeployment


def _tenant_key(body: kopf.Body) -> EngineKey:
    return str(body.metadata.namespace), str(body.metadata.labels[labels.INFERENCE_DEPLOYMENT])


@kopf.index("apps", "v1", "deployments", labels=TENANT_ENGINES)
def engine_deployment_index(body: kopf.Body, **_: Any) -> dict[EngineKey, OwnedDeployment]:
    dep = kube_adapter.model_from_json(body, "V1Deployment")
    owned = OwnedDeployment(
        kube_adapter.controller_of(dep.metadata), kube_adapter.observed_deployment(dep)
    )
    return {_tenant_key(body): owned}


@dataclass(frozen=True, slots=True)
class EnginePod:
    """What the reconcile reads of an engine pod, worked out once per watch event rather than
    kept as the whole pod (a few hundred bytes instead of tens of kilobytes per pod)."""

    deleting: bool
    problem: PodProblem | None


@kopf.index("v1", "pods", labels=TENANT_ENGINES)
def engine_pod_index(body: kopf.Body, **_: Any) -> dict[EngineKey, EnginePod]:
    pod = kube_adapter.model_from_json(body, "V1Pod")
    deleting = bool(pod.metadata and pod.metadata.deletion_timestamp)
    return {_tenant_key(body): EnginePod(deleting, kube_adapter.pod_problem(pod))}


@dataclass(frozen=True)
class Indices:
    """The indices above, as Kopf hands them to a handler (keyword arguments by these names)."""

    gpupool_index: kopf.Index[None, GPUPool]
    inference_deployment_index: kopf.Index[None, InferenceDeployment]
    shared_engine_index: kopf.Index[None, SharedEngine]
    engine_deployment_index: kopf.Index[EngineKey, OwnedDeployment]
    engine_pod_index: kopf.Index[EngineKey, EnginePod]

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "Indices":
        """Kopf passes each index to every handler as a keyword argument named after it."""
        return cls(**{f.name: kwargs[f.name] for f in fields(cls)})


def _all(index: kopf.Index[None, _Model]) -> list[_Model]:
    return list(index.get(None, ()))


class _IndexedObjects:
    """The cluster-wide reads both reconciles make at every tick, from the indices."""

    def __init__(self, kube: Kube, indices: Indices) -> None:
        self._kube = kube
        self._indices = indices

    def list_pools(self) -> list[GPUPool]:
        return sorted(_all(self._indices.gpupool_index), key=lambda p: p.name)

    def inference_deployments(self) -> list[InferenceDeployment]:
        return _all(self._indices.inference_deployment_index)

    def shared_engines(self) -> list[SharedEngine]:
        return sorted(_all(self._indices.shared_engine_index), key=lambda e: e.name)


class WatchedKube(_IndexedObjects):
    """The reconcile's cluster port (``reconcile.ports.KubePort``): the reads each tick makes
    come from the indices, everything else from :class:`Kube`."""

    # ---- from the indices

    def engine_deployments(self, namespace: str, infd_name: str) -> list[ObservedDeployment]:
        """Those it controls: a Deployment someone else made with its labels is not ours."""
        owner = (InferenceDeployment.KIND, infd_name)
        key = (namespace, names.label_value(infd_name))
        found = self._indices.engine_deployment_index.get(key, ())
        return sorted((o.deployment for o in found if o.controller == owner), key=lambda d: d.name)

    def pod_problems(self, namespace: str, infd_name: str) -> list[PodProblem]:
        key = (namespace, names.label_value(infd_name))
        pods: Iterable[EnginePod] = self._indices.engine_pod_index.get(key, ())
        return [p.problem for p in pods if p.problem is not None and not p.deleting]

    # ---- from the API server

    def engine_services(self, namespace: str, infd_name: str) -> list[str]:
        return self._kube.engine_services(namespace, infd_name)

    def pod_timelines(self, namespace: str, infd_name: str, since: datetime) -> list[PodTimeline]:
        return self._kube.pod_timelines(namespace, infd_name, since)

    def first_responses(self, namespace: str, infd_name: str) -> list[datetime]:
        return self._kube.first_responses(namespace, infd_name)

    def apply(self, obj: JSON) -> None:
        self._kube.apply(obj)

    def delete_deployments(self, namespace: str, names: list[str]) -> None:
        self._kube.delete_deployments(namespace, names)

    def delete_services(self, namespace: str, names: list[str]) -> None:
        self._kube.delete_services(namespace, names)


class WatchedFleetKube(_IndexedObjects):
    """The SharedEngine reconcile's cluster port (``reconcile.shared_engine.SharedEngineKubePort``):
    the pools and every tenant from the indices, the fleet's own objects from :class:`Kube`.

    Why: a SharedEngine reconciles every tick and reads every InferenceDeployment to find its
    tenants; at 1,000 tenants that was a LIST of 1,000 objects per engine every 5 s, parsed
    into models each time. The fleet's few Deployments, Services and pods stay API reads (the
    pod addresses the adapter calls need are not in the pod index).
    """

    def shared_engine_deployments(self, namespace: str, engine: str) -> list[ObservedDeployment]:
        return self._kube.shared_engine_deployments(namespace, engine)

    def shared_engine_services(self, namespace: str, engine: str) -> list[str]:
        return self._kube.shared_engine_services(namespace, engine)

    def shared_engine_pods(
        self, namespace: str, engine_label: str, port: int
    ) -> list[EnginePodAddress]:
        return self._kube.shared_engine_pods(namespace, engine_label, port)

    def delete_deployments(self, namespace: str, names: list[str]) -> None:
        self._kube.delete_deployments(namespace, names)

    def delete_services(self, namespace: str, names: list[str]) -> None:
        self._kube.delete_services(namespace, names)

    def apply(self, obj: JSON) -> None:
        self._kube.apply(obj)

    def patch_shared_engine_status(self, name: str, status: JSON) -> None:
        self._kube.patch_shared_engine_status(name, status)

    def patch_tenant_status(self, namespace: str, name: str, status: JSON) -> None:
        self._kube.patch_tenant_status(namespace, name, status)
