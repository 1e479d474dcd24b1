"""Pydantic models for ``InferenceDeployment``, ``GPUPool`` and ``SharedEngine``: the CRDs' source.

``tidepool crd`` turns these into ``crds/*.yaml`` (see :mod:`tidepool.api.crdgen`); a test
regenerates and diffs. Field descriptions become ``kubectl explain`` text, and the
``x-kubernetes-validations`` entries are CEL rules the API server enforces at admission, so a bad
manifest is refused with a message that names the field, before the operator ever sees it.

Defaults come from published practice: scale to zero after 5 idle minutes (OpenPipe's hourly
deployments), promote above 50% utilization and demote below 30% (a serverless-vs-dedicated
decision guide's utilization band).
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tidepool.api import durations, labels, quantities
from tidepool.api.durations import Duration

GROUP: Final = "tidepool.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"


#: A duration field of a spec. Its description sits here, on the field, where it wins over the
#: field's docstring: every duration's ``kubectl explain`` text says what a duration looks like,
#: as the CRDs have always said.
DurationField = Annotated[Duration, Field(description=durations.DESCRIPTION)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain: what Kubernetes requires of a Secret's, ConfigMap's,
#: PersistentVolumeClaim's and ServiceAccount's name (apimachinery's IsDNS1123Subdomain).
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Secret or ConfigMap key (apimachinery's IsConfigMapKey): letters, digits, '-', '_' and '.',
#: never '.' or '..' nor starting with '..'.
CONFIG_KEY: Final = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"
#: An environment variable name (or envFrom prefix): printable ASCII other than '=', as
#: Kubernetes takes it since its relaxed environment variable validation.
ENV_NAME: Final = r"^[ -<>-~]+$"


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """A CEL rule. No ``messageExpression``: string building there exceeds the API server's
    CEL cost budget for this schema, so ``fieldPath`` plus a plain message names the field."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


#: camelCase on the wire, snake_case in Python, unknown fields refused, frozen, field docstrings
#: as the schema's descriptions: the CRDs' models and the chart's values model both use it.
KUBERNETES_STYLE: Final = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    frozen=True,
    use_attribute_docstrings=True,
)


class _Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = KUBERNETES_STYLE


class _Status(_Model):
    """Status models tolerate fields written by newer operator versions."""

    model_config = ConfigDict(extra="ignore")


class _Object(_Status):
    """A whole object of one of the kinds: apiVersion, kind, metadata, spec and status."""

    api_version: str = API_VERSION
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def generation(self) -> int | None:
        gen = self.metadata.get("generation")
        return int(gen) if gen is not None else None


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------

#: On a scaling block (InferenceDeployment and SharedEngine alike).
_MIN_LE_MAX: Final = _cel(
    "self.minReplicas <= self.maxReplicas",
    "minReplicas must be less than or equal to maxReplicas",
    ".minReplicas",
)
#: On a spec with a scale subresource: ``kubectl scale`` must stay within the scaling bounds.
_REPLICAS_IN_RANGE: Final = _cel(
    "!has(self.replicas) || !has(self.scaling)"
    " || (self.replicas >= self.scaling.minReplicas"
    " && self.replicas <= self.scaling.maxReplicas)",
    "replicas (set through the scale subresource) must lie within"
    " scaling.minReplicas..scaling.maxReplicas",
    ".replicas",
)


#: The most replicas any replica field accepts: a bound the API server enforces, so a typo such as
#: 10000 is refused instead of asking the cluster for ten thousand GPUs.
MAX_REPLICAS: Final = 1000

#: Bound on model ids, paths and URIs: a long object-store URI fits, a pasted file does not.
MAX_MODEL_REF: Final = 1024

# Every string and list of a spec is bounded, so that the whole spec stays small: Kopf copies it
# into its last-handled-configuration annotation, and the API server refuses every write to an
# object whose annotations pass 256 KiB, the finalizer's removal included, so an oversized spec
# could never be deleted. tests/unit/api/test_api_bounds.py adds the bounds up.

#: A label key (a 253-character DNS prefix, "/", a 63-character name) and a label value.
MAX_LABEL_KEY: Final = 317
MAX_LABEL_VALUE: Final = 63
MAX_SELECTOR_LABELS: Final = 16
MAX_TOLERATIONS: Final = 16
#: Items of ``engine.extraArgs`` and ``engine.env``.
MAX_LIST_ITEMS: Final = 64
#: Characters of all ``engine.extraArgs`` together (a CEL rule sums them).
MAX_EXTRA_ARGS_CHARS: Final = 4096
#: Characters of all ``engine.env`` names, values and valueFrom names and keys together (a CEL
#: rule sums them).
MAX_ENV_CHARS: Final = 8192
#: Items of ``engine.envFrom`` and of ``engine.imagePullSecrets``: objects an engine refers to.
MAX_OBJECT_REFS: Final = 8

# Status is written by the operator alone; its bounds are generous, and only say to the API
# server what the operator's own values already keep to.

#: An object's name (a DNS subdomain).
MAX_OBJECT_NAME: Final = 253
#: A condition's message, as ``metav1.Condition`` bounds it.
MAX_MESSAGE: Final = 32768
#: A short status text: a selector, a list of pools, a decision's action.
MAX_STATUS_TEXT: Final = 4096
MAX_CONDITIONS: Final = 16
MAX_STATUS_POOLS: Final = 16
#: InferenceDeployments one SharedEngine may list in its status.
MAX_ADAPTERS: Final = 10000

#: vLLM's --max-lora-rank accepts 8, 16, 32, 64, 128, 256, 320 or 512 (the choices of the default
#: image's v0.11 engine arguments; later releases' LoRAConfig also allows 1, never anything else).
LoraRank = Literal[8, 16, 32, 64, 128, 256, 320, 512]
LORA_RANKS: Final[tuple[int, ...]] = get_args(LoraRank)

#: An adapter name: a DNS label that may also hold dots (``support-bot.v2``).
ADAPTER_NAME: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

#: Requests one replica should carry, shared by InferenceDeployment and SharedEngine scaling.
DEFAULT_TARGET_QUEUE_DEPTH: Final = 56


class Tenancy(StrEnum):
    SHARED = "shared"
    DEDICATED = "dedicated"


class DeploymentMode(StrEnum):
    SERVERLESS = "serverless"
    DEDICATED = "dedicated"
    HYBRID = "hybrid"
    AUTO = "auto"


class PoolRole(StrEnum):
    """What one pool's engine Deployment does for its tenant."""

    PRIMARY = "primary"
    """Serves traffic."""
    OVERFLOW = "overflow"
    """Hybrid's spill-over on the shared pool."""
    TARGET = "target"
    """Being started by a migration; not routed yet."""
    DRAINING = "draining"
    """Takes no new requests; the ones in flight finish."""


class Toleration(_Model):
    """A Kubernetes toleration, copied onto engine pods placed in the pool."""

    key: str | None = Field(default=None, max_length=MAX_LABEL_KEY)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=MAX_LABEL_VALUE)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


ObjectName = Annotated[str, Field(min_length=1, max_length=MAX_OBJECT_NAME, pattern=DNS_SUBDOMAIN)]
"""The name of an object in the engine's namespace (a DNS-1123 subdomain)."""
CpuQuantity = Annotated[
    str,
    Field(pattern=quantities.CPU_PATTERN, max_length=quantities.MAX_TEXT, examples=["8", "500m"]),
]
MemoryQuantity = Annotated[
    str,
    Field(pattern=quantities.MEMORY_PATTERN, max_length=quantities.MAX_TEXT, examples=["64Gi"]),
]


def _one_of(first: str, second: str) -> dict[str, Any]:
    """CEL: exactly one of two optional fields (Kubernetes' own rule for these sources)."""
    return _cel(
        f"has(self.{first}) != has(self.{second})", f"set exactly one of {first} or {second}"
    )


def _check_one_of(where: str, first: tuple[str, object], second: tuple[str, object]) -> None:
    """Python mirror of :func:`_one_of`: ``first`` and ``second`` are (wire name, value)."""
    given = [name for name, value in (first, second) if value is not None]
    if len(given) != 1:
        raise ValueError(
            f"{where} sets {' and '.join(given) or 'neither'}; set exactly one of"
            f" {first[0]} or {second[0]}"
        )


class ObjectRef(_Model):
    """A Secret or ConfigMap in the engine's namespace (a SharedEngine's: the operator's)."""

    name: ObjectName
    optional: bool = False
    """Start the engine even if the object (or key) does not exist."""


class KeyRef(ObjectRef):
    """One key of a Secret or ConfigMap."""

    key: str = Field(min_length=1, max_length=MAX_OBJECT_NAME, pattern=CONFIG_KEY)


class EnvVarSource(_Model):
    """Where a variable's value comes from: a Secret's or a ConfigMap's key."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_one_of("secretKeyRef", "configMapKeyRef")]}
    )

    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "EnvVarSource":
        _check_one_of(
            "valueFrom",
            ("secretKeyRef", self.secret_key_ref),
            ("configMapKeyRef", self.config_map_key_ref),
        )
        return self


class EnvVar(_Model):
    """An environment variable for the engine container: a literal ``value``, or ``valueFrom`` a
    Secret or ConfigMap key (e.g. HF_TOKEN for gated models, kept out of the manifest)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.value) || !has(self.valueFrom)",
                    "value and valueFrom are mutually exclusive: set one",
                    ".valueFrom",
                )
            ]
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    """Printable ASCII other than '=', as Kubernetes takes it (since its relaxed environment
    variable validation; older clusters take only C identifiers, and say so in Ready)."""
    value: str | None = Field(default=None, max_length=MAX_ENV_CHARS)
    """A literal value. Unset (and no valueFrom): the empty string."""
    value_from: EnvVarSource | None = None
    """The value of a Secret's or ConfigMap's key, read by the kubelet when the pod starts."""

    @property
    def characters(self) -> int:
        """What this variable counts toward :data:`MAX_ENV_CHARS`: its name, its value, and the
        names and keys it refers to (the CEL rule on ``engine.env`` sums the same)."""
        source = self.value_from
        refs = [source.secret_key_ref, source.config_map_key_ref] if source else []
        return (
            len(self.name)
            + len(self.value or "")
            + sum(len(r.name) + len(r.key) for r in refs if r is not None)
        )

    @model_validator(mode="after")
    def _value_or_value_from(self) -> "EnvVar":
        if self.value is not None and self.value_from is not None:
            raise ValueError(
                f"env {self.name!r} sets both value and valueFrom; they are mutually exclusive:"
                " set value for a literal, or valueFrom for a Secret's or ConfigMap's key"
            )
        return self


def _key_ref_chars(ref: str) -> str:
    """CEL: the characters of an env item's ``valueFrom.<ref>`` name and key, 0 if unset."""
    path = f"e.valueFrom.{ref}"
    return f"(has(e.valueFrom) && has({path}) ? size({path}.name) + size({path}.key) : 0)"


class EnvFromSource(_Model):
    """Every key of a Secret or ConfigMap as environment variables, optionally prefixed."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_one_of("secretRef", "configMapRef")]}
    )

    prefix: str | None = Field(default=None, max_length=256, pattern=ENV_NAME)
    """Prepended to each key to make the variable's name."""
    secret_ref: ObjectRef | None = None
    config_map_ref: ObjectRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "EnvFromSource":
        _check_one_of(
            "envFrom", ("secretRef", self.secret_ref), ("configMapRef", self.config_map_ref)
        )
        return self


class Condition(_Status):
    """A ``metav1.Condition``, with the same length bounds Kubernetes puts on it."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = None


# --------------------------------------------------------------------------------------------
# GPUPool
# --------------------------------------------------------------------------------------------


class GPUPoolSpec(_Model):
    """A node pool that engine pods may be placed on. Tidepool never creates nodes."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.tenancy == 'shared' || !has(self.pricePerMillionTokens)",
                    "pricePerMillionTokens applies only to shared pools;"
                    " dedicated pools bill GPU-hours",
                    ".pricePerMillionTokens",
                ),
            ]
        }
    )

    tenancy: Tenancy
    """shared: tenants are packed onto the same nodes and billed per token. dedicated: one
    tenant per node (taints plus anti-affinity), billed per GPU-hour."""
    gpu_type: str = Field(
        min_length=1, max_length=MAX_LABEL_VALUE, examples=["NVIDIA-A100-SXM4-80GB"]
    )
    """GPU model of the nodes, as GPU feature discovery labels it (nvidia.com/gpu.product)."""
    gpus_per_node: int = Field(default=8, ge=1, le=64)
    """GPUs on each node of this pool."""
    node_selector: dict[str, Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=dict,
        max_length=MAX_SELECTOR_LABELS,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, size(k) <= {MAX_LABEL_KEY})",
                    f"label keys are at most {MAX_LABEL_KEY} characters",
                )
            ]
        },
    )
    """Labels a node must carry to belong to this pool."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_TOLERATIONS)
    """Tolerations engine pods need to land on this pool's tainted nodes."""
    price_per_gpu_hour: float = Field(ge=0.0, examples=[4.0])
    """What one GPU-hour in this pool costs, in dollars. Drives the placement cost model."""
    price_per_million_tokens: float | None = Field(default=None, ge=0.0)
    """For shared pools: what a tenant is billed per million tokens (input plus output)."""


class GPUPoolStatus(_Status):
    """Observed state of a GPUPool."""

    nodes: int = 0
    """Nodes matching the pool's selector."""
    gpus_allocatable: int = 0
    """Sum of nvidia.com/gpu allocatable over those nodes."""
    observed_generation: int | None = None


class GPUPool(_Object):
    """The whole GPUPool object (cluster-scoped)."""

    KIND: ClassVar[str] = "GPUPool"
    kind: str = "GPUPool"
    spec: GPUPoolSpec
    status: GPUPoolStatus = Field(default_factory=GPUPoolStatus)


# --------------------------------------------------------------------------------------------
# InferenceDeployment
# --------------------------------------------------------------------------------------------


class BaseModelSpec(_Model):
    """Which base model a SharedEngine runs."""

    name: str = Field(
        min_length=1, max_length=MAX_MODEL_REF, examples=["meta-llama/Llama-3.1-8B-Instruct"]
    )
    """Model id passed to ``vllm serve`` (a hub id or a local path)."""
    source: str | None = Field(
        default=None, max_length=MAX_MODEL_REF, examples=["s3://models/llama-3.1-8b"]
    )
    """Where the weights come from, if not the model id itself (a URI the engine image can read)."""
    revision: str | None = Field(default=None, max_length=256)
    """Model revision (branch, tag or commit) to pin."""


class AdapterSpec(_Model):
    """A LoRA adapter served on top of the base model ``model.name``."""

    name: str = Field(pattern=ADAPTER_NAME, max_length=63, examples=["support-bot"])
    """Name the engine serves the adapter under (the OpenAI ``model`` field of a request sent to
    the engine itself). Lower-case letters, digits, '-' and '.', at most 63, so that it is also a
    valid label value and never holds the '=' or ',' that vLLM's --lora-modules syntax splits on."""
    source: str = Field(
        min_length=1, max_length=MAX_MODEL_REF, examples=["/models/adapters/support-bot"]
    )
    """What vLLM gets as the adapter's ``lora_path``: a directory on a model-cache volume the engine
    mounts, or a reference (such as a hub id) passed through as is for the engine to resolve."""
    rank: int = Field(default=16, ge=1, le=max(LORA_RANKS))
    """The adapter's LoRA rank (``r`` in its adapter_config.json). An engine loads it only if its
    --max-lora-rank is at least this, and vLLM's largest allowed --max-lora-rank is 512."""


class ModelSpec(BaseModelSpec):
    """Which model to serve. With ``adapter`` set, the tenant is a LoRA fine-tune: ``name`` is the
    base model the adapter was trained on, so that tenants of one base model can share one
    SharedEngine fleet instead of each loading a full copy of the weights."""

    served_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$", max_length=253
    )
    """Name clients send in the OpenAI ``model`` field. Defaults to the resource name."""
    adapter: AdapterSpec | None = None
    """A LoRA adapter on the base model ``name``; absent for a tenant serving the model as is."""


class SpeculativeDecoding(_Model):
    """Speculative decoding settings passed to vLLM's ``--speculative-config``."""

    method: Literal["ngram"] = "ngram"
    """Only n-gram prompt lookup needs no draft model, so it is the one offered here."""
    num_speculative_tokens: int = Field(default=4, ge=1, le=16)
    prompt_lookup_max: int = Field(default=4, ge=1, le=16)


class EngineCapacitySpec(_Model):
    """Measured throughput of one engine replica, overriding the calibrated and learned figures."""

    prefill_tokens_per_second: float = Field(ge=1.0, examples=[32500.0])
    """Prompt tokens one replica processes per second with its batch full (aggregate over the
    replica, not per sequence). Default when unset: a table calibrated on Fireworks' published
    cost of Llama 3 8B on one H100 (32,500 for that pair), scaled by the GPU's FLOPs, the
    model's size and gpusPerReplica; the operator then learns it from vLLM's
    vllm:prompt_tokens_total counter while replicas are busy."""
    decode_tokens_per_second: float = Field(ge=1.0, examples=[3600.0])
    """Tokens one replica generates per second across all its sequences with its batch full.
    Default when unset: the same calibration (3,600 for Llama 3 8B on one H100 at 64 sequences),
    scaled by the GPU's memory bandwidth, the model's size and maxNumSeqs; the operator then
    learns it from vLLM's vllm:generation_tokens_total counter while replicas are busy."""


def _request_le_limit(resource: str) -> dict[str, Any]:
    """CEL: a request no larger than its limit, which Kubernetes refuses at pod creation."""
    return _cel(
        f"!has(self.requests) || !has(self.limits) || !has(self.requests.{resource})"
        f" || !has(self.limits.{resource})"
        f" || quantity(self.requests.{resource}).compareTo(quantity(self.limits.{resource})) <= 0",
        f"requests.{resource} must be less than or equal to limits.{resource}",
        f".requests.{resource}",
    )


class ResourceAmounts(_Model):
    """CPU and memory of the engine container (GPUs come from gpusPerReplica)."""

    cpu: CpuQuantity | None = None
    """CPUs: 8, 1.5 or 500m."""
    memory: MemoryQuantity | None = None
    """Bytes: 64Gi, 512Mi or 64G."""


class EngineResources(_Model):
    """CPU, memory and shared memory of each engine replica."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_request_le_limit("cpu"), _request_le_limit("memory")]
        }
    )

    requests: ResourceAmounts | None = None
    """What the scheduler reserves on the node. Unset where a limit is set: the limit."""
    limits: ResourceAmounts | None = None
    """The most the container may use; above the memory limit it is OOM-killed."""
    shared_memory: MemoryQuantity = "8Gi"
    """Size of /dev/shm (an in-memory emptyDir). vLLM's docs ask for more than a container's
    default 64Mi (Docker's --shm-size or --ipc=host): PyTorch shares data between processes
    through shared memory, particularly for tensor-parallel inference. What is used counts
    against the pod's memory limit, which also caps the size."""

    @model_validator(mode="after")
    def _requests_le_limits(self) -> "EngineResources":
        # Mirrors the CEL rules, so manifests validated in Python (examples, tests) fail the same.
        if self.requests is None or self.limits is None:
            return self
        for resource in ("cpu", "memory"):
            request, limit = getattr(self.requests, resource), getattr(self.limits, resource)
            both = request is not None and limit is not None
            if both and quantities.value(request) > quantities.value(limit):
                raise ValueError(
                    f"engine.resources.requests.{resource} ({request}) must be less than or"
                    f" equal to engine.resources.limits.{resource} ({limit})"
                )
        return self


#: Where vLLM (through huggingface_hub) keeps downloaded weights when the image runs as root.
DEFAULT_MODEL_CACHE_PATH: Final = "/root/.cache/huggingface"


class ModelCache(_Model):
    """A volume for downloaded weights: an existing PersistentVolumeClaim, so that a replica
    starts from weights already on disk instead of downloading them, or else an emptyDir."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.claimName) || !has(self.sizeLimit)",
                    "sizeLimit applies only to an emptyDir cache (no claimName); a claim's size"
                    " is set on the PersistentVolumeClaim",
                    ".sizeLimit",
                ),
                _cel(
                    "self.mountPath != '/dev/shm'",
                    "mountPath must not be /dev/shm, where the engine's shared memory is mounted",
                    ".mountPath",
                ),
            ]
        }
    )

    claim_name: ObjectName | None = None
    """An existing PersistentVolumeClaim in the engine's namespace (a SharedEngine's: the
    operator's). Replicas on several nodes need a ReadWriteMany or ReadOnlyMany claim. Unset: an
    emptyDir, empty at each pod start."""
    size_limit: MemoryQuantity | None = None
    """The emptyDir's size limit (only without claimName): beyond it the kubelet evicts the pod."""
    mount_path: str = Field(
        default=DEFAULT_MODEL_CACHE_PATH, min_length=2, max_length=1024, pattern=r"^/[^:]*$"
    )
    """Where the engine container sees the cache: an absolute path without ':'. The default is
    huggingface_hub's cache for root, the user of vLLM's image."""
    read_only: bool = False
    """Mount read-only: for a claim filled beforehand and shared by many replicas."""

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCache":
        # Mirrors the CEL rules, so manifests validated in Python (examples, tests) fail the same.
        if self.claim_name is not None and self.size_limit is not None:
            raise ValueError(
                f"engine.modelCache.sizeLimit ({self.size_limit}) applies only to an emptyDir"
                f" cache; with claimName ({self.claim_name}) the claim sets the size"
            )
        if self.mount_path == "/dev/shm":
            raise ValueError(
                "engine.modelCache.mountPath (/dev/shm) is where the engine's shared memory is"
                " mounted; choose another absolute path"
            )
        return self


class EngineSpec(_Model):
    """The vLLM engine container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.tensorParallelSize)"
                    " || self.tensorParallelSize <= self.gpusPerReplica",
                    "tensorParallelSize must not exceed gpusPerReplica",
                    ".tensorParallelSize",
                ),
            ]
        }
    )

    image: str = Field(default="vllm/vllm-openai:v0.11.0", min_length=1, max_length=512)
    """Engine image. Any image whose entrypoint accepts ``vllm serve`` arguments."""
    gpus_per_replica: int = Field(default=1, ge=1, le=16)
    """nvidia.com/gpu requested by each replica."""
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=16)
    """Defaults to gpusPerReplica."""
    max_model_len: int | None = Field(default=None, ge=128)
    """Context length cap (``--max-model-len``)."""
    max_num_seqs: int = Field(default=64, ge=1, le=4096)
    """Batch capacity of one replica (``--max-num-seqs``); beyond it requests wait."""
    capacity: EngineCapacitySpec | None = None
    """Throughput of one replica, if measured. Unset: calibrated from the GPU type and model
    size, then learned from the engine's counters (status.capacity shows the figures in use)."""
    prefix_caching: bool = False
    """Enable automatic prefix caching."""
    speculative_decoding: SpeculativeDecoding | None = None
    """Speculative decoding; OpenPipe reports 50%+ lower latency on dedicated deployments."""
    extra_args: list[Annotated[str, Field(max_length=MAX_EXTRA_ARGS_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"self.map(a, size(a)).sum() <= {MAX_EXTRA_ARGS_CHARS}",
                    f"extraArgs may hold at most {MAX_EXTRA_ARGS_CHARS} characters in all",
                )
            ]
        },
    )
    """More ``vllm serve`` arguments, appended verbatim."""
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.map(e, size(e.name) + (has(e.value) ? size(e.value) : 0)"
                    f" + {_key_ref_chars('secretKeyRef')} + {_key_ref_chars('configMapKeyRef')}"
                    f").sum() <= {MAX_ENV_CHARS}",
                    f"env names, values and valueFrom names and keys may hold at most"
                    f" {MAX_ENV_CHARS} characters in all",
                )
            ]
        },
    )
    """Environment for the engine container: literal values, or values from a Secret's or
    ConfigMap's key (valueFrom)."""
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=MAX_OBJECT_REFS)
    """Every key of a Secret or ConfigMap as environment variables (env wins on a clash)."""
    resources: EngineResources = Field(default_factory=EngineResources)
    """CPU and memory requests and limits, and the size of /dev/shm."""
    model_cache: ModelCache | None = None
    """A volume for downloaded weights, mounted at mountPath."""
    image_pull_secrets: list[ObjectName] = Field(default_factory=list, max_length=MAX_OBJECT_REFS)
    """Secrets (of type kubernetes.io/dockerconfigjson) to pull a private engine image with."""
    service_account_name: ObjectName | None = None
    """The ServiceAccount the engine pods run as (e.g. one bound to a cloud identity that can
    read model weights from object storage). Unset: the namespace's default."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port the engine listens on."""

    @model_validator(mode="after")
    def _totals(self) -> "EngineSpec":
        # Mirrors the CEL rules on extraArgs and env, so Python-validated manifests fail the same.
        args = sum(len(a) for a in self.extra_args)
        if args > MAX_EXTRA_ARGS_CHARS:
            raise ValueError(
                f"engine.extraArgs holds {args} characters; at most {MAX_EXTRA_ARGS_CHARS} in all"
            )
        env = sum(e.characters for e in self.env)
        if env > MAX_ENV_CHARS:
            raise ValueError(
                f"engine.env names, values and valueFrom names and keys hold {env} characters;"
                f" at most {MAX_ENV_CHARS} in all"
            )
        return self


class ScalingSpec(_Model):
    """Queue-depth autoscaling. The autoscaler, not Git, owns the replica count."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_MIN_LE_MAX]})

    min_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    """Warm minimum. 0 lets the deployment scale to zero after the idle window."""
    max_replicas: int = Field(default=4, ge=1, le=MAX_REPLICAS)
    """Upper bound on replicas across all pools."""
    target_queue_depth: int = Field(default=DEFAULT_TARGET_QUEUE_DEPTH, ge=1, le=10000)
    """Requests (waiting plus running plus held at the gateway) one replica should carry.
    56 is 7/8 of the default 64-seat batch (maxNumSeqs): auto prices dedicated replicas at full
    batches, so a target far below the batch runs GPUs the projection never priced; the other 8
    seats absorb arrivals while the 30s queue signal catches up. Lower it for latency-first."""
    scale_to_zero_after: DurationField = Duration("5m")
    """Idle time before scaling to zero (only when minReplicas is 0)."""
    scale_up_stabilization: DurationField = Duration("0s")
    """Scale up only to the lowest recommendation seen in this window (0s: react at once)."""
    scale_down_stabilization: DurationField = Duration("10m")
    """Scale down only to the highest recommendation seen in this window. 10m: bursty tenants
    come back within minutes, and each return on a replica given back costs a model load
    (60s+) of queueing; 2m and 5m missed the p99 queue-wait SLO on the ServeGen traces."""
    max_scale_up_rate: float = Field(default=2.0, ge=1.0, le=100.0)
    """At most this factor more replicas per decision (from at least 1)."""
    initial_replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    """Replicas at first create; defaults to minReplicas."""


class HybridSpec(_Model):
    """Hybrid serving: a dedicated floor, with overflow spilled to the shared pool."""

    overflow_concurrency_per_replica: int = Field(default=56, ge=1, le=10000)
    """In-flight requests one dedicated replica takes before the gateway spills to shared
    (default: the scaling target, so the floor runs as loaded as an autoscaled replica)."""
    max_overflow_replicas: int = Field(default=4, ge=0, le=MAX_REPLICAS)
    """Upper bound on shared-pool overflow replicas."""


class PoolPreferences(_Model):
    """Which GPUPools to use. Empty means the first pool of the needed tenancy, by name."""

    shared: str | None = Field(default=None, pattern=DNS_LABEL, max_length=MAX_LABEL_VALUE)
    dedicated: str | None = Field(default=None, pattern=DNS_LABEL, max_length=MAX_LABEL_VALUE)


class PlacementSpec(_Model):
    """When ``auto`` moves the tenant between shared and dedicated GPUs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.demoteBelow < self.promoteAbove",
                    "demoteBelow must be lower than promoteAbove, or the tenant would flap",
                    ".demoteBelow",
                ),
                _cel(
                    "duration(self.sloP99TimeToFirstByte) > duration('0s')",
                    "sloP99TimeToFirstByte must be longer than 0s: every request would miss it",
                    ".sloP99TimeToFirstByte",
                ),
            ]
        }
    )

    promote_above: Fraction = 0.5
    """Utilization above this (with dedicated not dearer) is evidence for promoting."""
    demote_below: Fraction = 0.3
    """Utilization below this (with shared cheaper) is evidence for demoting."""
    window: DurationField = Duration("10m")
    """Traffic window each decision measures. A move needs its evidence to hold for another
    max(2 x window, minDwell) - window (20m by default); a new tenant's first window excepted."""
    min_dwell: DurationField = Duration("30m")
    """Minimum time in a placement before moving again."""
    cost_margin: float = Field(default=0.15, ge=0.0, le=10.0)
    """A cost advantage counts as evidence for a move from this fraction on."""
    slo_p99_time_to_first_byte: DurationField = Duration("10s")
    """The tenant's latency SLO: the p99 time to first byte at the gateway over the window. A
    LoRA tenant of a SharedEngine observed above it there has evidence for replicas of its own;
    ``tidepool simulate`` judges every tenant's p99 queue wait against it."""
    expected_tokens_per_minute: float | None = Field(default=None, ge=0.0)
    """The tenant's declared load (input plus output tokens per minute). Used only to choose the
    first placement, before any traffic has been seen; measured traffic replaces it after."""
    pools: PoolPreferences = Field(default_factory=PoolPreferences)
    """Preferred pools per tenancy."""


def _check_min_le_max(min_replicas: int, max_replicas: int) -> None:
    """Python mirror of :data:`_MIN_LE_MAX`."""
    if min_replicas > max_replicas:
        raise ValueError(
            f"scaling.minReplicas ({min_replicas}) must be <= scaling.maxReplicas ({max_replicas})"
        )


def _check_tensor_parallel(engine: EngineSpec) -> None:
    """Python mirror of EngineSpec's CEL rule."""
    tp = engine.tensor_parallel_size
    if tp is not None and tp > engine.gpus_per_replica:
        raise ValueError(
            f"engine.tensorParallelSize ({tp}) must not exceed engine.gpusPerReplica"
            f" ({engine.gpus_per_replica})"
        )


class InferenceDeploymentSpec(_Model):
    """Desired state of an InferenceDeployment."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.mode != 'dedicated'"
                    " || (has(self.scaling) && self.scaling.minReplicas >= 1)",
                    "mode dedicated keeps warm replicas: scaling.minReplicas must be at least 1",
                    ".scaling.minReplicas",
                ),
                _cel(
                    "self.mode != 'hybrid' || (has(self.scaling) && self.scaling.minReplicas >= 1)",
                    "mode hybrid needs a dedicated floor: scaling.minReplicas must be at least 1",
                    ".scaling.minReplicas",
                ),
                _cel(
                    "!has(self.hybrid) || self.mode == 'hybrid' || self.mode == 'auto'",
                    "hybrid settings apply only to mode hybrid or auto",
                    ".hybrid",
                ),
                _REPLICAS_IN_RANGE,
            ]
        }
    )

    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    mode: DeploymentMode = DeploymentMode.SERVERLESS
    """serverless: shared pool, scale to zero. dedicated: single-tenant GPUs, warm minimum.
    hybrid: dedicated floor plus shared overflow. auto: Tidepool chooses and moves the tenant."""
    tenant: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    """Tenant (billing and isolation unit). Defaults to the namespace."""
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    hybrid: HybridSpec | None = None
    """Hybrid overflow settings (mode hybrid, or auto when it picks hybrid)."""
    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    """Manual pin, normally absent. Written by ``kubectl scale``; while set, the autoscaler holds
    this count. Do not keep it in Git: the autoscaler owns the replica count."""

    @model_validator(mode="after")
    def _cross_field(self) -> "InferenceDeploymentSpec":
        # Mirrors the CEL rules, so manifests validated in Python (examples, tests) fail the same.
        s = self.scaling
        _check_min_le_max(s.min_replicas, s.max_replicas)
        if self.mode in (DeploymentMode.DEDICATED, DeploymentMode.HYBRID) and s.min_replicas < 1:
            raise ValueError(f"mode {self.mode} needs scaling.minReplicas >= 1 (got 0)")
        if self.placement.demote_below >= self.placement.promote_above:
            raise ValueError(
                f"placement.demoteBelow ({self.placement.demote_below}) must be lower than"
                f" placement.promoteAbove ({self.placement.promote_above})"
            )
        if self.placement.slo_p99_time_to_first_byte.seconds <= 0:
            raise ValueError(
                f"placement.sloP99TimeToFirstByte ({self.placement.slo_p99_time_to_first_byte})"
                " must be longer than 0s: every request would miss it"
            )
        _check_tensor_parallel(self.engine)
        return self


class PoolStatus(_Status):
    """Replicas of this InferenceDeployment in one pool."""

    name: str = Field(max_length=MAX_OBJECT_NAME)
    tenancy: Tenancy
    role: PoolRole = PoolRole.PRIMARY
    """primary: serves traffic. overflow: hybrid spill-over. target: being started by a
    migration, not routed yet. draining: no new requests; in-flight ones finish."""
    replicas: int = 0
    ready_replicas: int = 0
    deployment: str = Field(default="", max_length=MAX_LABEL_VALUE)
    """Name of the engine Deployment."""


class MigrationPhase(StrEnum):
    STARTING_TARGET = "StartingTarget"
    SHIFTING_TRAFFIC = "ShiftingTraffic"
    DRAINING = "Draining"


class MigrationStatus(_Status):
    """Progress of a make-before-break move, durable so a restarted operator resumes it."""

    phase: MigrationPhase
    from_pool: str = Field(max_length=MAX_STATUS_TEXT)
    to_pool: str = Field(max_length=MAX_STATUS_TEXT)
    to_mode: DeploymentMode
    started_at: datetime
    phase_since: datetime
    reason: str = Field(default="", max_length=MAX_MESSAGE)


class LastDecision(_Status):
    """The last scaling or placement decision, with its reason in numbers."""

    time: datetime
    action: str = Field(max_length=MAX_STATUS_TEXT)
    reason: str = Field(max_length=MAX_STATUS_TEXT)
    message: str = Field(max_length=MAX_MESSAGE)


class CapacityStatus(_Status):
    """The engine throughput the operator currently plans with, and where it came from."""

    prefill_tokens_per_second: float
    """Prompt tokens one replica processes per second with its batch full."""
    decode_tokens_per_second: float
    """Tokens one replica generates per second across all its sequences with its batch full."""
    source: str = Field(max_length=MAX_STATUS_TEXT)
    """Where the figures came from: spec.engine.capacity, the calibration table, or learned from
    vLLM's counters."""
    updated: datetime | None = None
    """When the figures last changed."""


class ColdStartPhase(_Status):
    """One phase of a cold start: the time from the previous mark to this one."""

    name: str = Field(max_length=MAX_LABEL_VALUE)
    """held, scheduled, imagePulled, started, ready or routed; phases joined by '+' when the
    mark between them was never reported (kwok's kubelet reports no image pull)."""
    seconds: float = Field(ge=0)


class ColdStartStatus(_Status):
    """The latest scale from zero, phase by phase, from the request the gateway held to the
    first response it routed (pod conditions, the kubelet's Pulled event, the gateway's report).

    Durable, so an operator restart mid cold start resumes measuring it: the wake's timestamp
    (``requestedAt``) is its key, and it is measured once (``completedAt`` set) and never again.
    """

    requested_at: datetime
    """When the gateway held the request and asked for a wake (the wake's own timestamp), or,
    for a scale from zero no request asked for, when the replicas were set."""
    replicas_set_at: datetime
    """When the operator set the replicas above zero."""
    pod: str = Field(default="", max_length=MAX_OBJECT_NAME)
    """The engine pod measured: the first of the new ones to become Ready."""
    phases: list[ColdStartPhase] = Field(default_factory=list, max_length=8)
    """Consecutive phases; they sum to ``totalSeconds``."""
    total_seconds: float | None = Field(default=None, ge=0)
    """``requestedAt`` to the last mark measured (the first response routed, when complete)."""
    completed_at: datetime | None = None
    """None while the cold start is still being measured."""
    message: str = Field(default="", max_length=MAX_STATUS_TEXT)
    """What was not reported and how it was folded, or why the measurement ended early."""


class InferenceDeploymentStatus(_Status):
    """Observed state, written only by the operator."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    replicas: int = 0
    """Replicas across all pools (the scale subresource's status replicas)."""
    ready_replicas: int = 0
    desired_replicas: int = 0
    ready: str = Field(default="0/0", max_length=32)
    """ready/desired, for kubectl get."""
    selector: str = Field(default="", max_length=MAX_STATUS_TEXT)
    """Label selector of the engine pods (for the scale subresource)."""
    engine: str = Field(default="", max_length=MAX_OBJECT_NAME)
    """The SharedEngine serving this tenant's adapter, or "" while it runs replicas of its own,
    so that kubectl get shows which tenants share which engine fleet."""
    served_model: str = Field(default="", max_length=MAX_OBJECT_NAME)
    endpoint: str = Field(default="", max_length=MAX_STATUS_TEXT)
    """In-cluster URL of the engine Service (the gateway is the usual front door)."""
    effective_mode: DeploymentMode | None = None
    """What Tidepool runs now: serverless (replicas on the shared pool, or for an auto LoRA tenant
    a SharedEngine's fleet), dedicated or hybrid. For mode auto, the layout placement chose;
    while a move is in flight, the one still serving. Unset for a fixed-mode tenant a SharedEngine
    serves (status.engine names it): it runs nothing of its own, so a later mode change starts
    its new layout directly rather than a move from replicas it never had."""
    pool: str = Field(default="", max_length=MAX_STATUS_TEXT)
    """Pools in use, comma-separated, for kubectl get."""
    pools: list[PoolStatus] = Field(default_factory=list, max_length=MAX_STATUS_POOLS)
    routable_pools: list[Annotated[str, Field(max_length=MAX_OBJECT_NAME)]] = Field(
        default_factory=list, max_length=MAX_STATUS_POOLS
    )
    """Pools the gateway may send new requests to. A migration shifts traffic by changing this."""
    queue_depth: int | None = None
    """Last observed queue (waiting plus running plus held); absent when metrics are unknown."""
    utilization: float | None = None
    """Last observed busy/provisioned capacity over the placement window."""
    spend: str | None = Field(default=None, max_length=MAX_STATUS_TEXT)
    """Projected monthly GPU spend of each placement option at the last measured traffic, and
    the chargeback the shared pool's per-token price would bill (never part of spend)."""
    spend_per_month: float | None = None
    """Projected monthly GPU spend of where the tenant runs now, in dollars. On a SharedEngine:
    the fleet's GPU-hours apportioned by the tenant's share of the fleet's tokens."""
    chargeback_per_month: float | None = None
    """What the per-token price of its pool (or its SharedEngine's pool) bills the tenant a month,
    in dollars: reported beside spend, never part of it."""
    offered_input_tokens_per_second: float | None = None
    """Prompt tokens per second the tenant's clients sent over the placement window (the
    gateway's counters). A SharedEngine's tenants' figures apportion the fleet's spend."""
    offered_output_tokens_per_second: float | None = None
    """Completion tokens per second over the placement window (the gateway's counters)."""
    hybrid_floor: int | None = Field(default=None, ge=1)
    """For auto placed hybrid: the dedicated replicas kept warm, as the placement decision chose."""
    last_active_time: datetime | None = None
    """Last time there was any demand. Scale to zero counts idleness from here."""
    last_scale_time: datetime | None = None
    last_wake_handled: str | None = Field(default=None, max_length=labels.MAX_WAKE_VALUE)
    """The wake-requested-at annotation value last acted on."""
    placement_since: datetime | None = None
    """When the current placement began (minimum dwell counts from here)."""
    utilization_above_since: datetime | None = None
    """Since when the evidence has favoured dedicated GPUs: cheaper than serverless by costMargin,
    or utilization above promoteAbove and not dearer (None: it does not)."""
    utilization_below_since: datetime | None = None
    """Since when the evidence has favoured serverless: cheaper by costMargin, or utilization below
    demoteBelow and cheaper (None: it does not)."""
    migration: MigrationStatus | None = None
    last_migration_time: datetime | None = None
    last_decision: LastDecision | None = None
    capacity: CapacityStatus | None = None
    """Engine throughput used for sizing and placement (learned when busy, else calibrated)."""
    cold_start: ColdStartStatus | None = None
    """The latest cold start (scale from zero), explained by phase."""


class InferenceDeployment(_Object):
    """The whole InferenceDeployment object."""

    KIND: ClassVar[str] = "InferenceDeployment"
    kind: str = "InferenceDeployment"
    spec: InferenceDeploymentSpec
    status: InferenceDeploymentStatus = Field(default_factory=InferenceDeploymentStatus)

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))

    @property
    def served_model(self) -> str:
        return self.spec.model.served_name or self.name

    @property
    def tenant(self) -> str:
        return self.spec.tenant or self.namespace


# --------------------------------------------------------------------------------------------
# SharedEngine
# --------------------------------------------------------------------------------------------


class SharedEngineScaling(_Model):
    """Queue-depth autoscaling of the whole fleet, on the demand of every tenant it serves."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_MIN_LE_MAX]})

    min_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    """Warm minimum. 0 lets the fleet scale to zero once no tenant has sent a request for
    scaleToZeroAfter."""
    max_replicas: int = Field(default=4, ge=1, le=MAX_REPLICAS)
    """Upper bound on replicas of the fleet, whatever the number of tenants."""
    target_queue_depth: int = Field(default=DEFAULT_TARGET_QUEUE_DEPTH, ge=1, le=10000)
    """Requests (waiting plus running plus held at the gateway) one replica should carry, summed
    over all tenants: adapters share the replica's batch, so the fleet sizes on their total.
    Default as for an InferenceDeployment (7/8 of the default 64-seat batch)."""
    scale_to_zero_after: DurationField = Duration("5m")
    """Idle time of every tenant together before scaling to zero (only when minReplicas is 0)."""


class LoraSpec(_Model):
    """How many adapters each engine replica holds, passed to vLLM's LoRA flags."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.maxCpuLoras) || self.maxCpuLoras >= self.maxLoras",
                    "maxCpuLoras must be greater than or equal to maxLoras",
                    ".maxCpuLoras",
                ),
            ]
        }
    )

    max_loras: int = Field(default=4, ge=1, le=256)
    """Adapters one batch may mix, held in GPU memory (vLLM's --max-loras). Each slot reserves
    GPU memory for an adapter of maxLoraRank whether used or not, which is why it is bounded."""
    max_cpu_loras: int | None = Field(default=None, ge=1, le=4096)
    """Adapters kept in CPU memory for a quick swap onto the GPU (vLLM's --max-cpu-loras).
    Unset: maxLoras, vLLM's own default. vLLM refuses a value below maxLoras."""
    max_lora_rank: LoraRank = 16
    """Largest adapter rank the engine accepts (vLLM's --max-lora-rank). vLLM allows 8, 16, 32,
    64, 128, 256, 320 or 512; an adapter of a higher rank than this cannot join the fleet."""

    @property
    def adapter_slots(self) -> int:
        """Adapters one replica holds: ``maxCpuLoras``, else ``maxLoras`` (vLLM's own default)."""
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras


class SharedEngineSpec(_Model):
    """A fleet of vLLM engines of one base model, shared by the LoRA tenants of that model."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_REPLICAS_IN_RANGE]})

    model: BaseModelSpec
    """The base model. InferenceDeployments whose spec.model.adapter is set and whose
    spec.model.name equals this name can be served by this engine."""
    pool: str = Field(pattern=DNS_LABEL, max_length=63, examples=["shared-a100"])
    """The GPUPool the engine replicas run on (its node selector and tolerations are copied)."""
    engine: EngineSpec = Field(default_factory=EngineSpec)
    scaling: SharedEngineScaling = Field(default_factory=SharedEngineScaling)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    """Manual pin, normally absent. Written by ``kubectl scale``; while set, the autoscaler holds
    this count. Do not keep it in Git: the autoscaler owns the replica count."""

    @model_validator(mode="after")
    def _cross_field(self) -> "SharedEngineSpec":
        # Mirrors the CEL rules, so manifests validated in Python (examples, tests) fail the same.
        s, lora = self.scaling, self.lora
        _check_min_le_max(s.min_replicas, s.max_replicas)
        if lora.max_cpu_loras is not None and lora.max_cpu_loras < lora.max_loras:
            raise ValueError(
                f"lora.maxCpuLoras ({lora.max_cpu_loras}) must be >= lora.maxLoras"
                f" ({lora.max_loras})"
            )
        if self.replicas is not None and not s.min_replicas <= self.replicas <= s.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) must lie within scaling.minReplicas"
                f"..scaling.maxReplicas ({s.min_replicas}..{s.max_replicas})"
            )
        _check_tensor_parallel(self.engine)
        return self


class LoadedAdapter(_Status):
    """One tenant's adapter on the fleet."""

    name: str = Field(max_length=63)
    """The adapter name the engines serve (the tenant's spec.model.adapter.name)."""
    tenant: str = Field(max_length=317)
    """The InferenceDeployment it belongs to, as namespace/name."""
    loaded_replicas: int = 0
    """Replicas that have the adapter loaded now."""
    replicas: list[Annotated[str, Field(max_length=MAX_OBJECT_NAME)]] = Field(
        default_factory=list, max_length=MAX_REPLICAS
    )
    """The fleet pods that have it loaded now, by name: the gateway sends the tenant's requests
    only to these, so a replica receives an adapter's traffic only after the adapter is loaded."""


class SharedEngineStatus(_Status):
    """Observed state, written only by the operator."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    replicas: int = 0
    """Replicas of the fleet (the scale subresource's status replicas)."""
    ready_replicas: int = 0
    ready: str = Field(default="0/0", max_length=32)
    """ready/desired, for kubectl get."""
    selector: str = Field(default="", max_length=1024)
    """Label selector of the engine pods (for the scale subresource)."""
    tenants: int = 0
    """InferenceDeployments the fleet serves now."""
    adapters: list[LoadedAdapter] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """Each served tenant's adapter and on how many replicas it is loaded."""
    last_active_time: datetime | None = None
    """Last time any tenant had demand. Scale to zero counts idleness from here."""
    last_scale_time: datetime | None = None
    spend: str | None = Field(default=None, max_length=1024)
    """Projected monthly GPU spend of the fleet at the last measured traffic."""
    scheduling_policy: str | None = Field(default=None, max_length=32)
    """vLLM's scheduling policy every replica of the fleet runs: ``priority`` once the spec
    renders it and no replica of an older template or name is left (the gateway then sends each
    request its tenant's priority, so one tenant's burst does not queue the others behind it),
    else ``fcfs``, under which vLLM refuses any priority but 0."""


class SharedEngine(_Object):
    """The whole SharedEngine object (cluster-scoped)."""

    KIND: ClassVar[str] = "SharedEngine"
    kind: str = "SharedEngine"
    spec: SharedEngineSpec
    status: SharedEngineStatus = Field(default_factory=SharedEngineStatus)
