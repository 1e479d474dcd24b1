"""Kubernetes reads and server-side-apply writes for the operator.

Every write is a server-side apply under the fixed field manager ``tidepool`` with
``force=True``: the operator is the one writer of the objects it owns, and a forced apply is
idempotent (re-applying the same object is a no-op and bumps no generation).
"""

import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from tidepool.adapters import wake
from tidepool.adapters.discovery import FLEET_SELECTOR
from tidepool.api import labels, names
from tidepool.api.conditions import Reason
from tidepool.api.v1alpha1 import API_VERSION, GROUP, GPUPool, InferenceDeployment, SharedEngine
from tidepool.policy import fair_share
from tidepool.policy.children import ObservedDeployment, PodProblem
from tidepool.policy.cold_start import PodTimeline
from tidepool.policy.shared_engine import EnginePodAddress

_M = TypeVar("_M", InferenceDeployment, SharedEngine)

JSON = dict[str, Any]
TRANSIENT_STATUS: Final = frozenset({409, 429, 500, 502, 503, 504})
#: Characters YAML does not take raw in a double-quoted scalar (outside its printable set, or a
#: line break in YAML 1.1, which the API server's parser follows): they stay JSON escapes.
_YAML_UNSAFE: Final = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


def apply_body(obj: JSON) -> bytes:
    """The body of a server-side apply: JSON, which is YAML, in UTF-8 with text as it is.

    Why not the client's serialisation: it is ``json.dumps``, which escapes all non-ASCII text,
    an emoji as a surrogate pair (``\\ud83e\\udd99``); an apply patch is parsed as YAML, and the
    API server's YAML parser refuses such a pair, so an object with an emoji anywhere in it
    could never be applied. A ``bytes`` body is sent by the client as it is.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


class TransientKubeError(RuntimeError):
    """The API server refused for a reason that retrying fixes (conflict, throttling, restart).

    A plain exception: adapters may not import Kopf (import-linter), so the Kopf handler turns
    it into ``kopf.TemporaryError`` with ``retry_after`` as the delay.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the server asked for in ``Retry-After`` (API Priority and Fairness sends it
        with a 429), if it said."""


def load_client(
    kubeconfig: str | None = None, *, pool_maxsize: int | None = None
) -> client.ApiClient:
    """One ``ApiClient`` with its own ``Configuration`` (no global client state), for the
    operator and the gateway alike.

    An explicit ``kubeconfig`` wins; without one, the in-cluster service account, then the
    default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).

    ``pool_maxsize``: urllib3 keeps at most this many connections per host for reuse and
    discards each one returned beyond that, warning "Connection pool is full" (urllib3's docs
    on ``PoolManager(maxsize=...)``). A caller whose threads share the client should pass how
    many of them may call at once; the client's default is a small multiple of the CPU count.
    """
    loaders: Any = config  # its loaders are untyped
    cfg = client.Configuration()
    if kubeconfig:
        loaders.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            loaders.load_incluster_config(client_configuration=cfg)
        except loaders.ConfigException:
            loaders.load_kube_config(client_configuration=cfg)
    if pool_maxsize is not None:
        cfg.connection_pool_maxsize = pool_maxsize
    return client.ApiClient(cfg)


def _retry_after(exc: ApiException) -> float | None:
    text = (exc.headers or {}).get("Retry-After")
    try:
        return float(text) if text is not None else None
    except ValueError:  # the HTTP-date form; the caller's own delay is good enough then
        return None


class RefusedKubeError(RuntimeError):
    """The API server refused a request as invalid (400 Bad Request, 422 Unprocessable Entity):
    sending the same again cannot succeed. The message is the server's own, which names the
    object, the field and the value (its ``Status.message``)."""


class NamespaceGoneError(RuntimeError):
    """The object's namespace is being deleted or is gone (404 for the namespace, or 403 "being
    terminated"): nothing can be written in it, and everything in it, the InferenceDeployment
    included, goes with it. Nothing to retry and nothing to report: the daemon stops when Kopf
    sees the object deleted."""


def _namespace_gone(exc: ApiException) -> bool:
    try:
        body = json.loads(exc.body or "{}")
    except (ValueError, AttributeError):
        return False
    if exc.status == 404:
        return (body.get("details") or {}).get("kind") == "namespaces"
    # The NamespaceLifecycle admission plugin's refusal while the namespace terminates.
    return exc.status == 403 and "because it is being terminated" in str(body.get("message"))


def _server_message(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{exc.status} {exc.reason}")


def _wrap(exc: ApiException) -> Exception:
    if _namespace_gone(exc):
        return NamespaceGoneError(_server_message(exc))
    if exc.status in TRANSIENT_STATUS:
        return TransientKubeError(
            f"API server answered {exc.status} {exc.reason}", retry_after=_retry_after(exc)
        )
    if exc.status in (400, 422):
        return RefusedKubeError(_server_message(exc))
    return exc


class Kube:
    """The operator's view of the cluster."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client
        self._dyn = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)

    # ---------------------------------------------------------------- reads

    def list_pools(self) -> list[GPUPool]:
        pools = self._dyn.resources.get(api_version=API_VERSION, kind="GPUPool")
        items = pools.get().to_dict().get("items", [])
        return sorted((GPUPool.model_validate(i) for i in items), key=lambda p: p.name)

    def engine_deployments(self, namespace: str, infd_name: str) -> list[ObservedDeployment]:
        """The InferenceDeployment's engine Deployments, whatever their name: those with its pod
        labels that it controls (a Deployment someone else made with the same labels is not the
        operator's to scale or delete)."""
        selector = _selector(labels.selector_labels(infd_name))
        return self._owned_deployments(namespace, selector, InferenceDeployment.KIND, infd_name)

    def engine_services(self, namespace: str, infd_name: str) -> list[str]:
        """The names of the InferenceDeployment's engine Services (labelled and controlled by
        it), whatever their name."""
        selector = _selector(labels.selector_labels(infd_name))
        return self._service_names(namespace, selector, InferenceDeployment.KIND, infd_name)

    def _owned_deployments(
        self, namespace: str, selector: str, kind: str, owner: str
    ) -> list[ObservedDeployment]:
        try:
            items = self._apps.list_namespaced_deployment(namespace, label_selector=selector).items
        except ApiException as exc:
            raise _wrap(exc) from exc
        out = [observed_deployment(d) for d in items if controlled_by(d.metadata, kind, owner)]
        return sorted(out, key=lambda d: d.name)

    def _service_names(self, namespace: str, selector: str, kind: str, owner: str) -> list[str]:
        try:
            items = self._core.list_namespaced_service(namespace, label_selector=selector).items
        except ApiException as exc:
            raise _wrap(exc) from exc
        return sorted(
            str(svc.metadata.name)
            for svc in items
            if svc.metadata is not None and controlled_by(svc.metadata, kind, owner)
        )

    def _live_pods(self, namespace: str, match: dict[str, str]) -> list[client.V1Pod]:
        """Pods matching ``match`` that are not being deleted."""
        try:
            pods = self._core.list_namespaced_pod(namespace, label_selector=_selector(match)).items
        except ApiException as exc:
            raise _wrap(exc) from exc
        return [p for p in pods if not (p.metadata and p.metadata.deletion_timestamp)]

    def pod_problems(self, namespace: str, infd_name: str) -> list[PodProblem]:
        pods = self._live_pods(namespace, labels.selector_labels(infd_name))
        return [p for p in (pod_problem(pod) for pod in pods) if p is not None]

    def pod_timelines(self, namespace: str, infd_name: str, since: datetime) -> list[PodTimeline]:
        """The marks of the tenant's engine pods created since ``since`` (to the second), for
        a cold start being measured: their conditions, and the kubelet's Pulled Events for
        them (one field-selected list per such pod)."""
        floor = since.replace(microsecond=0)
        out = []
        for pod in self._live_pods(namespace, labels.selector_labels(infd_name)):
            meta = pod.metadata or client.V1ObjectMeta()
            if meta.creation_timestamp is None or meta.creation_timestamp < floor:
                continue
            pulled = self.image_pulled_at(namespace, str(meta.name))
            out.append(pod_timeline(pod, meta.creation_timestamp, pulled))
        return sorted(out, key=lambda t: t.pod)

    def image_pulled_at(self, namespace: str, pod: str) -> datetime | None:
        """The latest of the kubelet's ``Pulled`` Events for ``pod`` (None: none reported)."""
        pulled = self._event_times(
            namespace, f"involvedObject.kind=Pod,involvedObject.name={pod},reason=Pulled"
        )
        return max(pulled, default=None)

    def first_responses(self, namespace: str, infd_name: str) -> list[datetime]:
        """When the gateways reported routing a first response after a wake of the tenant
        (:func:`tidepool.adapters.wake.first_response_event`)."""
        selector = f"involvedObject.name={infd_name},reason={wake.FIRST_RESPONSE_REASON}"
        items = self._list_events(namespace, selector)
        found = (
            wake.first_response_at(e.metadata.annotations if e.metadata else None) for e in items
        )
        return sorted(at for at in found if at is not None)

    def _list_events(self, namespace: str, field_selector: str) -> list[client.CoreV1Event]:
        try:
            events = self._core.list_namespaced_event(namespace, field_selector=field_selector)
        except ApiException as exc:
            raise _wrap(exc) from exc
        return list(events.items)

    def _event_times(self, namespace: str, field_selector: str) -> list[datetime]:
        """When each matching Event first happened (a repeated Event counts from its first)."""
        times: list[datetime] = []
        for event in self._list_events(namespace, field_selector):
            created = event.metadata.creation_timestamp if event.metadata else None
            at = event.event_time or event.first_timestamp or created
            if at is not None:
                times.append(at)
        return times

    def pool_nodes(self, node_selector: dict[str, str]) -> tuple[int, int]:
        """(nodes, allocatable GPUs) matching a pool's selector."""
        nodes = self._core.list_node(label_selector=_selector(node_selector)).items
        gpus = 0
        for node in nodes:
            allocatable = (node.status.allocatable if node.status else None) or {}
            gpus += int(allocatable.get("nvidia.com/gpu", 0))
        return len(nodes), gpus

    # ---------------------------------------------------------------- writes

    def apply(self, obj: JSON, *, field_manager: str = labels.FIELD_MANAGER) -> None:
        """Server-side apply ``obj`` (must carry apiVersion, kind, metadata.name)."""
        resource = self._dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        try:
            resource.server_side_apply(
                body=apply_body(obj),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=field_manager,
                force_conflicts=True,
            )
        except ApiException as exc:
            raise _wrap(exc) from exc

    def apply_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: JSON
    ) -> None:
        """Server-side apply the status subresource (for objects no Kopf handler patches)."""
        resource = self._dyn.resources.get(api_version=api_version, kind=kind)
        body = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "status": status,
        }
        try:
            resource.status.server_side_apply(
                body=apply_body(body),
                name=name,
                namespace=namespace,
                field_manager=labels.FIELD_MANAGER,
                force_conflicts=True,
            )
        except ApiException as exc:
            raise _wrap(exc) from exc

    def merge_patch_status(self, namespace: str, name: str, status: JSON) -> JSON | None:
        """JSON-merge-patch the InferenceDeployment's status (a null deletes a field).

        Returns the object as the API server stored it: the freshest copy there is, fresher
        than any watch event that may still be in flight. Returns None when the object was
        deleted since it was read (404): its status went with it, and there is nothing left to
        write to. Raising instead would put a traceback in the log for an ordinary
        ``kubectl delete`` during a sync.
        """
        return self._merge_patch_status("InferenceDeployment", name, status, namespace=namespace)

    def _merge_patch_status(
        self, kind: str, name: str, status: JSON, *, namespace: str | None = None
    ) -> JSON | None:
        resource = self._dyn.resources.get(api_version=API_VERSION, kind=kind)
        try:
            stored = resource.status.patch(
                body={"status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:  # the dynamic client's NotFoundError is one
            if exc.status == 404:
                return None
            raise _wrap(exc) from exc
        result: JSON = stored.to_dict()
        return result

    def delete_deployments(self, namespace: str, names: Iterable[str]) -> None:
        for name in names:
            try:
                self._apps.delete_namespaced_deployment(
                    name, namespace, propagation_policy="Background"
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise _wrap(exc) from exc
            except NotFoundError:
                pass

    def delete_services(self, namespace: str, names: Iterable[str]) -> None:
        for name in names:
            try:
                self._core.delete_namespaced_service(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise _wrap(exc) from exc

    # ---------------------------------------------------------- SharedEngine fleets

    def _valid_objects(self, model: type[_M]) -> list[_M]:
        """Every object of ``model``'s kind in the cluster; one that does not validate is skipped
        (its own reconcile reports it as InvalidSpec)."""
        resource = self._dyn.resources.get(api_version=API_VERSION, kind=model.KIND)
        try:
            items = resource.get().to_dict().get("items", [])
        except ApiException as exc:
            raise _wrap(exc) from exc
        out = []
        for item in items:
            try:
                out.append(model.model_validate(item))
            except ValueError:
                continue
        return out

    def inference_deployments(self) -> list[InferenceDeployment]:
        """Every valid InferenceDeployment in the cluster."""
        return self._valid_objects(InferenceDeployment)

    def shared_engines(self) -> list[SharedEngine]:
        """Every valid SharedEngine (cluster-scoped), by name."""
        return sorted(self._valid_objects(SharedEngine), key=lambda e: e.name)

    def shared_engine_deployments(self, namespace: str, engine: str) -> list[ObservedDeployment]:
        """The SharedEngine's engine Deployments, whatever their name: every fleet Deployment
        (by the label key, whose value an older naming rule may have written differently) it
        controls."""
        return self._owned_deployments(namespace, FLEET_SELECTOR, SharedEngine.KIND, engine)

    def shared_engine_services(self, namespace: str, engine: str) -> list[str]:
        """The names of the SharedEngine's Services (every fleet Service it controls)."""
        return self._service_names(namespace, FLEET_SELECTOR, SharedEngine.KIND, engine)

    def shared_engine_pods(
        self, namespace: str, engine_label: str, port: int
    ) -> list[EnginePodAddress]:
        """The fleet's engine pods that are not being deleted: name, ``http://IP:port``, Ready."""
        out = []
        for pod in self._live_pods(namespace, labels.shared_engine_selector_labels(engine_label)):
            meta = pod.metadata or client.V1ObjectMeta()
            status = pod.status or client.V1PodStatus()
            ip = status.pod_ip or ""
            host = f"[{ip}]" if ":" in ip else ip
            ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
            endpoint = f"http://{host}:{port}" if ip else ""
            out.append(EnginePodAddress(name=str(meta.name), endpoint=endpoint, ready=ready))
        return sorted(out, key=lambda p: p.name)

    def patch_shared_engine_status(self, name: str, status: JSON) -> None:
        """JSON-merge-patch a (cluster-scoped) SharedEngine's status; one deleted meanwhile is
        skipped."""
        self._merge_patch_status("SharedEngine", name, status)

    def patch_tenant_status(self, namespace: str, name: str, status: JSON) -> None:
        """The SharedEngine's part of a tenant's status (``engine``, ``AdapterLoaded``).

        A tenant deleted since the SharedEngine's sync listed it (404) is skipped, as
        ``merge_patch_status`` skips it: raising would fail the sync of every other tenant and
        of the fleet, and restart the SharedEngine's daemon only after Kopf's backoff. The
        fleet unloads the adapter on its next sync, which no longer lists the tenant.
        """
        self.merge_patch_status(namespace, name, status)


#: Container waiting reasons that mean the image cannot be had (the kubelet's words); all are
#: reported as ImagePullBackOff, the state they settle in.
IMAGE_PULL_FAILURES: Final = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
)


def pod_problem(pod: client.V1Pod) -> PodProblem | None:
    """Why an engine pod cannot serve, in the kubelet's and scheduler's words, or None.

    Most specific first: OOMKilled (a container's current or last termination; it shows as
    CrashLoopBackOff too, but memory is the cause to fix), then ImagePullBackOff, then
    CreateContainerConfigError (the kubelet's message names the missing Secret or ConfigMap,
    e.g. ``secret "hf-token" not found``), then CrashLoopBackOff, then Unschedulable
    (PodScheduled=False). A pod that is merely starting, e.g. waiting in ContainerCreating or
    loading the model, is no problem.
    """
    meta = pod.metadata or client.V1ObjectMeta()
    status = pod.status or client.V1PodStatus()

    def problem(reason: Reason, message: str) -> PodProblem:
        return PodProblem(
            pod=str(meta.name),
            pool=(meta.labels or {}).get(labels.POOL, ""),
            reason=reason,
            message=message,
        )

    containers = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
    for cs in containers:
        running = cs.state is not None and cs.state.running is not None
        # An OOM kill long ago on a container that runs again is history, not a problem.
        for state in (cs.state,) if running else (cs.state, cs.last_state):
            ended = state.terminated if state is not None else None
            if ended is not None and ended.reason == "OOMKilled":
                return problem(
                    Reason.OOM_KILLED,
                    f"container {cs.name} was killed for running out of memory"
                    f" (restarted {cs.restart_count} times)",
                )
    for cs in containers:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason in IMAGE_PULL_FAILURES:
            return problem(
                Reason.IMAGE_PULL_BACK_OFF,
                f"container {cs.name} cannot pull {cs.image}: {waiting.message or waiting.reason}",
            )
    for cs in containers:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason == Reason.CREATE_CONTAINER_CONFIG_ERROR:
            return problem(
                Reason.CREATE_CONTAINER_CONFIG_ERROR,
                f"container {cs.name} cannot start: {waiting.message or waiting.reason}",
            )
    for cs in containers:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason == "CrashLoopBackOff":
            ended = cs.last_state.terminated if cs.last_state is not None else None
            why = f"exit code {ended.exit_code}" if ended is not None else "it keeps exiting"
            return problem(
                Reason.CRASH_LOOP_BACK_OFF,
                f"container {cs.name} keeps crashing ({why}, restarted {cs.restart_count} times)",
            )
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return problem(Reason.UNSCHEDULABLE, cond.message or cond.reason or "")
    return None


def _selector(match: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match.items()))


def model_from_json(body: Mapping[str, Any], model: str) -> Any:
    """A watched object (a Kopf body: plain JSON) as the client's model class, e.g. ``"V1Pod"``,
    the type the readers here take, through the client's own deserializer."""
    return _json_models().deserialize(json.dumps(body, default=dict), model, "application/json")


@functools.cache
def _json_models() -> client.ApiClient:
    return client.ApiClient()


def controlled_by(meta: client.V1ObjectMeta | None, kind: str, name: str) -> bool:
    """Whether ``meta``'s controller owner reference is Tidepool's ``kind`` named ``name``."""
    return controller_of(meta) == (kind, name)


def controller_of(meta: client.V1ObjectMeta | None) -> tuple[str, str] | None:
    """(kind, name) of the object's controller, if that is one of Tidepool's kinds."""
    refs = (meta.owner_references if meta is not None else None) or []
    for ref in refs:
        if ref.controller and ref.api_version.split("/")[0] == GROUP:
            return str(ref.kind), str(ref.name)
    return None


def replica_failure(status: client.V1DeploymentStatus) -> str | None:
    """Why the Deployment's ReplicaSet cannot create pods, in its own words, or None.

    The Deployment controller copies the ReplicaSet's ``ReplicaFailure`` condition (reason
    ``FailedCreate``), whose message is the API server's refusal, e.g. ``pods "x-7c9d-" is
    forbidden: error looking up service account team-a/engine: serviceaccount "engine" not
    found``. No pod exists then, so no pod can say it.
    """
    for cond in status.conditions or []:
        if cond.type == "ReplicaFailure" and cond.status == "True":
            return str(cond.message or cond.reason or "ReplicaFailure")
    return None


def observed_deployment(dep: client.V1Deployment) -> ObservedDeployment:
    meta = dep.metadata or client.V1ObjectMeta()
    status = dep.status or client.V1DeploymentStatus()
    return ObservedDeployment(
        name=str(meta.name),
        pool=(meta.labels or {}).get(labels.POOL, ""),
        replicas=(dep.spec.replicas or 0) if dep.spec else 0,
        ready_replicas=status.ready_replicas or 0,
        updated_replicas=status.updated_replicas or 0,
        generation_observed=(status.observed_generation or 0) >= (meta.generation or 0),
        replica_failure=replica_failure(status),
        outdated_replicas=max(0, (status.replicas or 0) - (status.updated_replicas or 0)),
        scheduling_policy=fair_share.scheduling_policy(engine_args(dep)),
    )


def engine_args(dep: client.V1Deployment) -> list[str]:
    """The engine container's arguments in a Deployment's pod template ([] when it has none)."""
    template = dep.spec.template if dep.spec else None
    containers = template.spec.containers if template and template.spec else None
    engine = next((c for c in containers or [] if c.name == names.ENGINE_CONTAINER), None)
    return list(engine.args or []) if engine is not None else []


def pod_timeline(
    pod: client.V1Pod, created: datetime, image_pulled: datetime | None
) -> PodTimeline:
    """A pod's cold-start marks from its status (see :mod:`tidepool.policy.cold_start`):
    PodScheduled and Ready from their conditions' transition times, started once every
    container runs (the latest ``startedAt``)."""
    meta = pod.metadata or client.V1ObjectMeta()
    status = pod.status or client.V1PodStatus()
    became_true = {
        c.type: c.last_transition_time for c in status.conditions or [] if c.status == "True"
    }
    running = [
        cs.state.running.started_at if cs.state and cs.state.running else None
        for cs in status.container_statuses or []
    ]
    started = max(running) if running and None not in running else None  # type: ignore[type-var]
    return PodTimeline(
        pod=str(meta.name),
        created=created,
        scheduled=became_true.get("PodScheduled"),
        image_pulled=image_pulled,
        started=started,
        ready=became_true.get("Ready"),
    )
