"""The Helm chart's values, as a pydantic model, and the ``values.schema.json`` derived from it.

``charts/tidepool/values.yaml`` must equal ``ChartValues().model_dump(...)`` (a unit test checks),
and ``tidepool crd`` writes :func:`values_schema` to ``charts/tidepool/values.schema.json``, so
``helm install --set operator.replica=2`` (a typo) or ``--set gateway.port=0`` fails before any
object reaches the cluster, with the offending key in the message.

Helm validates values with a JSON Schema draft-07 validator. The schema is therefore draft-07,
self-contained (``$ref``/``$defs`` inlined, since not every Helm version resolves them), and
closed (``additionalProperties: false``) wherever the chart defines the keys. Free-form Kubernetes
fragments (affinity, extra env entries, tolerations of the chart's own pods) stay open: the API
server validates those.

No I/O here; this module only describes data.
"""

import copy
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from tidepool.api import durations, sizes
from tidepool.api.v1alpha1 import types

DRAFT_07: Final = "http://json-schema.org/draft-07/schema#"

#: Kubernetes resource quantities may be written as strings ("500m", "1Gi") or plain numbers.
Quantity = str | int | float
Port = Annotated[int, Field(ge=1, le=65535)]
DnsLabel = Annotated[str, Field(pattern=types.DNS_LABEL, max_length=63)]
PromDuration = Annotated[str, Field(pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$")]


class _Values(BaseModel):
    """Base: camelCase keys as in every Helm chart, unknown keys refused, docstrings as help."""

    model_config = types.KUBERNETES_STYLE


class Crds(_Values):
    """CustomResourceDefinitions (InferenceDeployment, GPUPool), templated like KEDA's chart."""

    install: StrictBool = True
    """Install and upgrade the CRDs with the chart. Set false when CRDs are managed elsewhere
    (e.g. applied from crds/ by a platform pipeline)."""
    keep: StrictBool = True
    """Annotate the CRDs with helm.sh/resource-policy: keep, so `helm uninstall` does not delete
    them, and with them every InferenceDeployment in the cluster (cert-manager's crds.keep)."""


class Image(_Values):
    """A container image. No registry host by default: set `imageRegistry` (or put one in
    `repository`) to pull from your mirror."""

    repository: str = Field(min_length=1)
    """Image repository, e.g. tidepool/operator."""
    tag: str = ""
    """Image tag. Empty means the chart's appVersion."""
    digest: str = Field(default="", pattern=r"^(sha256:[a-f0-9]{64})?$")
    """Image digest (sha256:...). When set it wins over the tag."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Kubernetes imagePullPolicy."""


class ServiceAccount(_Values):
    """The ServiceAccount a component runs as."""

    create: StrictBool = True
    """Create the ServiceAccount. When false, `name` must name an existing one."""
    name: str = ""
    """Name; empty means <fullname>-<component>."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations, e.g. for workload identity."""


class Resources(_Values):
    """Container resource requests and limits."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Requested resources, e.g. {cpu: 100m, memory: 256Mi}."""
    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Resource limits, e.g. {memory: 512Mi}."""


#: The images run as this numeric user (images/Dockerfile), with no passwd entry of their own.
IMAGE_UID: Final = 65532


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "fsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


class PodPlacement(_Values):
    """Shared pod-level settings of the operator and gateway Deployments."""

    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations on the pods."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on the pods."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector for the pods (these are CPU pods; keep them off GPU nodes)."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations for the pods (Kubernetes Toleration objects)."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity for the pods (a Kubernetes Affinity object)."""
    priority_class_name: str = ""
    """PriorityClass of the pods."""
    topology_spread_constraints: list[dict[str, Any]] = Field(default_factory=list)
    """topologySpreadConstraints of the pods (Kubernetes TopologySpreadConstraint objects).
    The chart's selector labels must be spelled out in each labelSelector."""
    pod_security_context: dict[str, Any] = Field(default_factory=_pod_security_context)
    """Pod securityContext. The default meets the "restricted" Pod Security Standard with the
    images' numeric user; on OpenShift's restricted SCC, which assigns the UID itself, set
    runAsUser, runAsGroup and fsGroup to null."""
    security_context: dict[str, Any] = Field(default_factory=_container_security_context)
    """Container securityContext (read-only root filesystem, no capabilities, no privilege
    escalation by default)."""
    env: list[dict[str, Any]] = Field(default_factory=list)
    """Extra environment variables (Kubernetes EnvVar objects) for the container."""
    env_from: list[dict[str, Any]] = Field(default_factory=list)
    """Extra environment from ConfigMaps or Secrets (Kubernetes EnvFromSource objects)."""
    extra_volumes: list[dict[str, Any]] = Field(default_factory=list)
    """Extra volumes of the pods (Kubernetes Volume objects), beside the chart's /tmp."""
    extra_volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    """Extra volumeMounts of the container (Kubernetes VolumeMount objects)."""
    extra_args: list[str] = Field(default_factory=list)
    """Extra command-line arguments, appended after the chart's own."""


def _operator_resources() -> Resources:
    return Resources(requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "512Mi"})


def _gateway_resources() -> Resources:
    return Resources(requests={"cpu": "250m", "memory": "256Mi"}, limits={"memory": "1Gi"})


#: An optional object name: empty, or a DNS-1123 subdomain.
OptionalObjectName = Annotated[
    str, Field(max_length=types.MAX_OBJECT_NAME, pattern=f"^({types.DNS_SUBDOMAIN[1:-1]})?$")
]


class Peering(_Values):
    """Kopf's peering among the operator replicas (on whenever `replicas` is more than 1)."""

    name: OptionalObjectName = ""
    """Name of the ClusterKopfPeering the replicas share (with watchNamespaces: of the
    KopfPeering in each watched namespace). The operator creates it if missing. Empty means
    <fullname>-operator."""
    lifetime: int = Field(default=10, ge=1, le=600)
    """Seconds a crashed replica's peering record stays alive (`--peering-lifetime`): the bound
    on how long a standby waits before it takes over. A clean exit hands over at once."""


class OperatorPodDisruptionBudget(_Values):
    """A PodDisruptionBudget for the operator, rendered only with more than one replica."""

    enabled: StrictBool = True
    """Create it when replicas is more than 1 (a budget over one pod would block node drains
    or protect nothing)."""
    max_unavailable: int = Field(default=1, ge=1)
    """Operator pods a voluntary disruption (a node drain) may take at once. 1 leaves a standby
    running to take over while the evicted replica restarts elsewhere."""


class Operator(PodPlacement):
    """The Kopf operator. Kopf has a single active operator per resource, so with more than one
    replica every replica runs with Kopf's peering and exactly one acts while the others stand
    by. The strategy is always Recreate: the old replicas stop before new ones start, so a
    rollout never runs two operator versions side by side and never hands over mid-handler."""

    replicas: int = Field(default=2, ge=1, le=10)
    """Operator replicas. More than 1 turns on Kopf's peering (`--peering`): exactly one
    replica acts, the others stand by with every watch, daemon and timer paused and take over
    when the active one exits or its record expires (peering.lifetime). 1 runs a single
    standalone operator."""
    peering: Peering = Field(default_factory=Peering)
    pod_disruption_budget: OperatorPodDisruptionBudget = Field(
        default_factory=OperatorPodDisruptionBudget
    )
    image: Image = Field(default_factory=lambda: Image(repository="tidepool/operator"))
    watch_namespaces: list[DnsLabel] = Field(default_factory=list)
    """Namespaces whose InferenceDeployments the operator reconciles. Empty: all namespaces
    (`--all-namespaces`, ClusterRole). Non-empty: one `--namespace` each, with namespaced
    permissions granted by a Role in each of those namespaces only."""
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090", pattern=r"^https?://.+"
    )
    """Prometheus base URL the autoscaler queries (vLLM and gateway queue metrics). While it is
    unreachable, replicas are held, never scaled to zero."""
    metrics_port: Port = 9090
    """Port of the operator's own Prometheus metrics (/metrics)."""
    health_port: Port = 8080
    """Port of Kopf's health endpoint (/healthz), probed for liveness and readiness."""
    termination_grace_period_seconds: int = Field(default=60, ge=1, le=3600)
    """Time between SIGTERM and SIGKILL. Kopf finishes the handlers in flight and releases its
    watches; a migration interrupted here resumes from status on the next start."""
    resources: Resources = Field(default_factory=_operator_resources)
    """Resources of the operator container."""
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)
    """ServiceAccount of the operator."""


class GatewayService(_Values):
    """The Service in front of the gateway: the OpenAI-compatible endpoint for every model."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type."""
    port: Port = 80
    """Service port."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations on the Service (e.g. for a cloud load balancer)."""


class PodDisruptionBudget(_Values):
    """A PodDisruptionBudget for the gateway."""

    enabled: StrictBool = False
    """Create it (useful with replicas >= 2)."""
    min_available: int = Field(default=1, ge=0)
    """Gateway pods that voluntary disruptions must leave running."""


class ApiKeys(_Values):
    """Tenant API keys and rate limits for the gateway, from a Secret you create."""

    existing_secret: str = ""
    """Secret holding the key file (YAML: keys: {<key or sha256:<hex of it>>: {tenant,
    requestsPerMinute}}). The gateway rereads it when the Secret changes (no restart) and
    keeps the keys it has if a new version does not parse. Empty: see allowNoKeys."""
    key: str = Field(default="api-keys.yaml", min_length=1)
    """Key in that Secret whose value is the key file."""
    allow_no_keys: StrictBool = False
    """Run the gateway without existingSecret: no key check, no rate limit, any caller may use
    any model. Only for trusted networks; without it the chart refuses to render."""


class Gateway(PodPlacement):
    """The OpenAI-compatible gateway: routes by model, holds requests while a model wakes from
    zero, spills hybrid overflow, meters tokens and enforces tenant keys and rate limits."""

    enabled: StrictBool = True
    """Deploy the gateway."""
    replicas: int = Field(default=2, ge=1, le=100)
    """Gateway replicas. Stateless apart from requests in flight."""
    image: Image = Field(default_factory=lambda: Image(repository="tidepool/gateway"))
    port: Port = 8080
    """Container port for the OpenAI-compatible API, /healthz and /readyz."""
    metrics_port: Port = 9090
    """Container port for the gateway's Prometheus metrics (/metrics). Separate from the API
    port because its labels name every tenant, namespace and model; only the gateway-metrics
    Service (ClusterIP) exposes it, never the API Service."""
    max_body_size: Annotated[str, Field(pattern=sizes.PATTERN)] = "8Mi"
    """Largest request body the gateway accepts (e.g. 8Mi, 512Ki); a larger one gets 413."""
    service: GatewayService = Field(default_factory=GatewayService)
    queue_size: int = Field(default=100, ge=0, le=100000)
    """Requests held per model while it wakes from zero; a full queue answers 503."""
    queue_timeout: Annotated[str, Field(pattern=durations.PATTERN)] = "120s"
    """How long a held request waits for a ready replica before it gets 503 (e.g. 90s, 5m)."""
    api_keys: ApiKeys = Field(default_factory=ApiKeys)
    termination_grace_period_seconds: int = Field(default=120, ge=15, le=3600)
    """Time between SIGTERM and SIGKILL. Long token streams in flight finish within it: the
    gateway's drain timeout is this minus 10 seconds (5 for the preStop pause, 5 to spare)."""
    resources: Resources = Field(default_factory=_gateway_resources)
    """Resources of the gateway container."""
    pod_disruption_budget: PodDisruptionBudget = Field(default_factory=PodDisruptionBudget)
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)
    """ServiceAccount of the gateway."""

    @model_validator(mode="after")
    def _ports_differ(self) -> "Gateway":
        if self.port == self.metrics_port:
            raise ValueError(
                f"gateway.metricsPort must differ from gateway.port (both {self.port}): metrics"
                " stay off the API port"
            )
        return self


class ChartGPUPool(types.GPUPoolSpec):
    """A GPUPool the chart creates: its name plus the GPUPool spec fields."""

    model_config = ConfigDict(
        json_schema_extra={
            # The CRD's CEL rule, in JSON Schema form so `helm install` reports it first.
            "if": {"properties": {"tenancy": {"const": "dedicated"}}, "required": ["tenancy"]},
            # A `false` schema for the key, so the error path names it.
            "then": {"properties": {"pricePerMillionTokens": False}},
        }
    )

    name: DnsLabel
    """GPUPool name (cluster-scoped). InferenceDeployments may name it in placement.pools."""

    @model_validator(mode="after")
    def _dedicated_has_no_token_price(self) -> "ChartGPUPool":
        if self.tenancy == types.Tenancy.DEDICATED and self.price_per_million_tokens is not None:
            raise ValueError(
                f"gpuPools[{self.name}].pricePerMillionTokens applies only to shared pools;"
                " dedicated pools bill GPU-hours"
            )
        return self


_GPU_TOLERATION: Final = types.Toleration(
    key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
)


def _default_pools() -> list[ChartGPUPool]:
    # The same two pools as examples/gpupools.yaml (a test keeps them equal). Published prices:
    # an A100 at $4.00/h (a serverless-vs-dedicated decision guide's example) and Llama-3-8B-class
    # serverless at $0.20 per million tokens (Fireworks).
    return [
        ChartGPUPool(
            name="shared-a100",
            tenancy=types.Tenancy.SHARED,
            gpu_type="NVIDIA-A100-SXM4-80GB",
            gpus_per_node=8,
            node_selector={"tidepool.dev/pool": "shared-a100"},
            tolerations=[_GPU_TOLERATION],
            price_per_gpu_hour=4.0,
            price_per_million_tokens=0.20,
        ),
        ChartGPUPool(
            name="dedicated-a100",
            tenancy=types.Tenancy.DEDICATED,
            gpu_type="NVIDIA-A100-SXM4-80GB",
            gpus_per_node=8,
            node_selector={"tidepool.dev/pool": "dedicated-a100"},
            tolerations=[
                _GPU_TOLERATION,
                types.Toleration(
                    key="tidepool.dev/tenancy",
                    operator="Equal",
                    value="dedicated",
                    effect="NoSchedule",
                ),
            ],
            price_per_gpu_hour=4.0,
        ),
    ]


class ServiceMonitor(_Values):
    """A prometheus-operator ServiceMonitor for the gateway and operator metrics."""

    enabled: StrictBool = False
    """Create it. Also requires the monitoring.coreos.com/v1 API in the cluster."""
    interval: PromDuration = "15s"
    """Scrape interval. The gateway queue drives scale-up, so keep it short."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels, e.g. the `release` label your Prometheus selects on."""


class PodMonitor(_Values):
    """A prometheus-operator PodMonitor for the engine pods (vLLM's /metrics), in all
    namespaces."""

    enabled: StrictBool = False
    """Create it. Also requires the monitoring.coreos.com/v1 API in the cluster."""
    interval: PromDuration = "15s"
    """Scrape interval of the engine pods' vllm:* metrics."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels, e.g. the `release` label your Prometheus selects on."""


class PrometheusRule(_Values):
    """A prometheus-operator PrometheusRule with Tidepool's alerts: operator down, reconcile
    errors, a migration that does not end, held requests timing out, failed wakes."""

    enabled: StrictBool = False
    """Create it. Also requires the monitoring.coreos.com/v1 API in the cluster."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels, e.g. the `release` label your Prometheus selects rules on."""
    migration_stuck_after: PromDuration = "1h"
    """Alert when pool migrations have been running without a break for this long."""


class Monitoring(_Values):
    """Prometheus scraping through prometheus-operator (off by default)."""

    service_monitor: ServiceMonitor = Field(default_factory=ServiceMonitor)
    pod_monitor: PodMonitor = Field(default_factory=PodMonitor)
    prometheus_rule: PrometheusRule = Field(default_factory=PrometheusRule)


class NetworkPolicy(_Values):
    """NetworkPolicies for the chart's pods. Ingress only; egress is left open because the
    operator needs the API server and Prometheus, and the gateway needs every engine pod."""

    enabled: StrictBool = False
    """Create the NetworkPolicies."""
    gateway_from: list[dict[str, Any]] = Field(default_factory=list)
    """NetworkPolicyPeers allowed to reach the gateway API port. Empty: any source."""
    metrics_from: list[dict[str, Any]] = Field(default_factory=list)
    """NetworkPolicyPeers allowed to scrape the operator's and the gateway's metrics ports.
    Empty: any source. Health probes come from the kubelet and are not subject to
    NetworkPolicy in common CNIs."""


class Rbac(_Values):
    """RBAC objects for the operator and the gateway."""

    create: StrictBool = True
    """Create the (Cluster)Roles and bindings. Least privilege; see the chart README."""
    aggregate_to_default_roles: StrictBool = True
    """Add InferenceDeployment rights to Kubernetes' view, edit and admin ClusterRoles (read
    for view; create, update and delete for edit and admin), so namespace users manage their
    models without extra bindings. SharedEngines and GPUPools stay with cluster admins."""


class ChartValues(_Values):
    """Values of the `tidepool` Helm chart."""

    global_: dict[str, Any] = Field(default_factory=dict, alias="global")
    """Helm's global values. Unused by this chart; accepted so that it works as a subchart
    (Helm hands every subchart its parent's `global`)."""
    name_override: str = ""
    """Replaces the chart name in object names."""
    fullname_override: str = ""
    """Replaces <release>-<chart> in object names."""
    image_registry: str = ""
    """Registry host prefixed to every image repository, e.g. registry.example.internal.
    Empty: none (the container runtime's default or mirror configuration applies)."""
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    """Pull secrets for all pods, as [{name: my-secret}]."""
    common_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every object the chart creates."""
    crds: Crds = Field(default_factory=Crds)
    operator: Operator = Field(default_factory=Operator)
    gateway: Gateway = Field(default_factory=Gateway)
    gpu_pools: list[ChartGPUPool] = Field(default_factory=_default_pools)
    """GPUPools the chart creates: by default one shared and one dedicated pool. Label (and
    taint) your GPU nodes to match each pool's nodeSelector (and tolerations). Set [] to manage
    pools yourself."""
    rbac: Rbac = Field(default_factory=Rbac)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy)
    extra_objects: list[dict[str, Any]] = Field(default_factory=list)
    """Extra Kubernetes objects to deploy with the release. Each is rendered with `tpl`, so
    strings may use template expressions such as {{ .Release.Namespace }}."""

    @model_validator(mode="after")
    def _unique_pool_names(self) -> "ChartValues":
        names = [p.name for p in self.gpu_pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"gpuPools: duplicate pool names {dupes}; each GPUPool needs its own")
        return self


def default_values() -> dict[str, Any]:
    """The chart's default values, exactly as values.yaml must hold them."""
    return ChartValues().model_dump(mode="json", by_alias=True, exclude_none=True)


def values_schema() -> dict[str, Any]:
    """JSON Schema (draft-07) for values.yaml: self-contained and closed at the top level."""
    raw = ChartValues.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs", {})
    schema = _simplify(_inline(raw, defs))
    assert isinstance(schema, dict)
    out: dict[str, Any] = {"$schema": DRAFT_07, "title": "Values of the tidepool Helm chart"}
    out.update(schema)
    out["additionalProperties"] = False
    return out


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every ``$ref`` with a copy of its definition (the models are not recursive)."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        # A field's own description (and default) win over the model docstring.
        merged = {**target, **siblings}
        return _inline(merged, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _simplify(node: Any) -> Any:
    """Drop titles, turn ``anyOf [X, null]`` into ``X`` (None means "leave the key out"), and
    unwrap docstring line breaks in descriptions."""
    if isinstance(node, list):
        return [_simplify(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _simplify(v) for k, v in node.items() if k != "title"}
    any_of = out.get("anyOf")
    if isinstance(any_of, list):
        non_null = [s for s in any_of if s != {"type": "null"}]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            out.pop("anyOf")
            out = {**non_null[0], **out}
    if out.get("default", 0) is None:
        out.pop("default")
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    return out
