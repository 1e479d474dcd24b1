"""Every default number the simulator and the advisor use, in one place, with where it comes from.

Role: prices, the engine (vLLM replica) model, the tenant's scaling and placement settings, the
baselines' windows and the SLO. ``tidepool simulate`` runs every trace with these same values; the
benchmark is not tuned per trace. :func:`for_prices` is the one way the programs and the
benchmark build a config from a price set and their overrides.

This module must not read files, the clock or the environment; command-line flags override fields
by building a new (frozen) config.
"""

import math
from dataclasses import dataclass, field, replace
from typing import Final

from tidepool.api import labels
from tidepool.api.v1alpha1 import (
    DeploymentMode,
    GPUPool,
    HybridSpec,
    InferenceDeployment,
    PlacementSpec,
    ScalingSpec,
    Tenancy,
)
from tidepool.policy.capacity import EngineCapacity, calibrated

#: Names of the simulated shared and dedicated GPUPools.
SHARED_POOL: Final = "shared"
DEDICATED_POOL: Final = "dedicated"

#: An H100 80GB on demand, $7.79 per GPU-hour: Fireworks' on-demand H100 price, from its post
#: "GPUs on-demand: Not serverless, not reserved, but some third thing" (June 2024).
H100_PER_GPU_HOUR: Final = 7.79
#: An A100 on demand, $4.00 per GPU-hour: the worked break-even example of the article "When to
#: Use Serverless vs Dedicated GPU" ($4.00/hour x 720 h = $2,880 a month).
A100_PER_GPU_HOUR: Final = 4.00
#: What the platform bills a tenant per 1M tokens (input plus output) served on the shared pool:
#: Fireworks' serverless price for Llama 3 8B in the same post, $0.20 per 1M tokens. It is a price
#: for the model, not for the GPU under it, so both price sets use it.
CHARGEBACK_PER_MILLION_TOKENS: Final = 0.20


@dataclass(frozen=True, slots=True)
class Prices:
    """A price set: the GPU both pools run, what its GPU-hours cost, and the chargeback.

    Why two numbers: Tidepool runs on the platform's own GPUs, so every pool costs GPU-hours
    (spend), the shared pool included; the per-token price is only what tenants are billed for
    the shared pool (chargeback), and adding it to spend would count the same GPUs twice.

    These are the two GPUPools' fields (:meth:`SimConfig.pools` builds them);
    the maths is the operator's: :meth:`tidepool.policy.placement.PoolPrice.gpus_held` (whole
    nodes on the single-tenant dedicated pool: 3 one-GPU replicas on 8-GPU nodes hold 8 GPUs),
    :func:`tidepool.policy.cost.dedicated_cost` and :func:`tidepool.policy.cost.serverless_cost`.

    ``gpu_type`` is the only place the simulator names its GPU: the pools carry it, and the
    engine's throughput is calibrated for it (:meth:`SimConfig.capacity`).
    """

    #: The price set's name, as ``--prices`` selects it.
    name: str = "h100"
    shared_per_gpu_hour: float = H100_PER_GPU_HOUR
    dedicated_per_gpu_hour: float = H100_PER_GPU_HOUR
    #: GPUs per node of the dedicated pool. Default 1: single-GPU instance types (one H100 or
    #: A100 per VM, as cloud on-demand catalogues sell them), where whole-node rounding changes
    #: nothing. ``--gpus-per-node 8`` prices a dedicated pool of 8-GPU servers.
    gpus_per_node: int = 1
    chargeback_per_million_tokens: float = CHARGEBACK_PER_MILLION_TOKENS
    gpu_type: str = "NVIDIA-H100-80GB-HBM3"

    def __post_init__(self) -> None:
        for what, value in (
            ("shared $/GPU-hour", self.shared_per_gpu_hour),
            ("dedicated $/GPU-hour", self.dedicated_per_gpu_hour),
            ("chargeback $/1M tokens", self.chargeback_per_million_tokens),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
        if self.gpus_per_node < 1:
            raise ValueError(f"gpus per node must be >= 1, got {self.gpus_per_node}")


#: The named price sets ``--prices`` selects; ``h100`` is the default.
PRICE_SETS: Final[dict[str, Prices]] = {
    "h100": Prices(),
    "a100": Prices(
        name="a100",
        shared_per_gpu_hour=A100_PER_GPU_HOUR,
        dedicated_per_gpu_hour=A100_PER_GPU_HOUR,
        gpu_type="NVIDIA-A100-SXM4-80GB",
    ),
}


@dataclass(frozen=True, slots=True)
class EngineModel:
    """One vLLM replica: its cold start, its batch, and the model it serves.

    * ``cold_start_s``: pod scheduled to Ready (weights from a node-local cache). The anchors
      measured 85 s for a 32B model (llm-d#2492) and 2-7 min including node provisioning (WVA);
      60 s is an 8B model on a node that already exists.
    * ``max_num_seqs``: batch capacity, vLLM's ``--max-num-seqs`` (the CRD default 64); beyond it
      requests wait.
    * throughput: :func:`tidepool.policy.capacity.calibrated` for the pools' GPU (the price set's
      ``gpu_type``), ``model_params_b``, ``max_num_seqs`` and ``gpus_per_replica``, the same table
      the operator plans with. A request holds a seat for ``capacity.service_seconds(input,
      output)``, so a full replica serves ``1 / seconds_per_request`` requests/s whatever the mix.

    Worked example, an 8B model on one H100 (the defaults), Azure conversation trace means of
    1,155 input and 211 output tokens: ``1155/32517 + 211/3600 = 0.0941`` replica-seconds per
    request, so a request holds a seat ``64 * 0.0941 = 6.02`` s and a full replica serves 10.6
    requests/s, 14,500 tokens/s: at $7.79/h that is $0.149 per 1M tokens saturated. On the Azure
    code trace (2,048 in, 28 out) a seat is held 4.53 s and a replica serves 14.1 requests/s,
    29,300 tokens/s.
    """

    cold_start_s: float = 60.0
    max_num_seqs: int = 64
    gpus_per_replica: int = 1
    model_params_b: float = 8.0

    def capacity(self, gpu_type: str) -> EngineCapacity:
        """The replica's calibrated throughput on ``gpu_type``: P 32,517 and D 3,600 tokens/s
        on an H100 by default."""
        return calibrated(gpu_type, self.model_params_b, self.max_num_seqs, self.gpus_per_replica)


def _sim_scaling() -> ScalingSpec:
    # The CRD defaults (targetQueueDepth, scaleDownStabilization): the same code and the same
    # defaults run in the operator and here. Only the bounds are the tenant's: scale to zero, and
    # no artificial cap (the CRD's maxReplicas 4 would cap the busiest ServeGen clients).
    return ScalingSpec(min_replicas=0, max_replicas=1000)


def _sim_hybrid() -> HybridSpec:
    # The CRD default overflowConcurrencyPerReplica; the overflow is uncapped like maxReplicas.
    return HybridSpec(max_overflow_replicas=1000)


@dataclass(frozen=True, slots=True)
class Reactive:
    """The HPA/KEDA-like baseline's windows, at the projects' defaults (see the anchors notes)."""

    keda_polling_s: float = 30.0  # KEDA pollingInterval: 0 <-> 1 activation
    keda_cooldown_s: float = 300.0  # KEDA cooldownPeriod: 1 -> 0 after the last activity
    hpa_sync_s: float = 15.0  # HPA --horizontal-pod-autoscaler-sync-period
    hpa_scale_down_stabilization_s: float = 300.0  # HPA behavior.scaleDown default
    #: HPA default scale-up policy: the larger of +100% and +4 pods per 15 s.
    hpa_scale_up_percent: float = 100.0
    hpa_scale_up_pods: int = 4


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The whole simulation setup. Same values for every trace."""

    prices: Prices = field(default_factory=Prices)
    engine: EngineModel = field(default_factory=EngineModel)
    scaling: ScalingSpec = field(default_factory=_sim_scaling)
    placement: PlacementSpec = field(default_factory=PlacementSpec)
    hybrid: HybridSpec = field(default_factory=_sim_hybrid)
    reactive: Reactive = field(default_factory=Reactive)
    #: The autoscalers' queue signal is in-flight requests averaged over this many seconds (two
    #: 15 s Prometheus scrapes), not a 1 s spike.
    queue_signal_s: float = 30.0

    @property
    def slo_p99_s(self) -> float:
        """The p99 every tenant must stay under to "meet the SLO": the tenants' own
        ``placement.sloP99TimeToFirstByte`` (10 s by default), the figure the placement policy
        promotes a LoRA tenant on, so the simulation judges by the SLO its policy acts on.

        The report measures it on the queue wait (the part of time to first token that scaling
        controls; the rest is one prompt's prefill, 0.036 s for a mean Azure conversation prompt
        on an H100). 10 s: users who wait 15 s or more for a first token after a cold start are
        the experience serverless is known for and Tidepool must avoid.
        """
        return self.placement.slo_p99_time_to_first_byte.seconds

    def capacity(self) -> EngineCapacity:
        """The engine's throughput on the price set's GPU (the pools' ``gpuType``)."""
        return self.engine.capacity(self.prices.gpu_type)

    def pools(self) -> tuple[GPUPool, GPUPool]:
        """The shared and the dedicated GPUPool the simulated tenants run on, at these prices."""
        prices = self.prices

        def pool(name: str, tenancy: Tenancy, per_gpu_hour: float, per_node: int) -> GPUPool:
            spec: dict[str, object] = {
                "tenancy": tenancy,
                "gpuType": prices.gpu_type,
                "gpusPerNode": per_node,
                "nodeSelector": {labels.POOL: name},
                "pricePerGpuHour": per_gpu_hour,
            }
            if tenancy == Tenancy.SHARED:
                spec["pricePerMillionTokens"] = prices.chargeback_per_million_tokens
            return GPUPool.model_validate({"metadata": {"name": name}, "spec": spec})

        return (
            pool(SHARED_POOL, Tenancy.SHARED, prices.shared_per_gpu_hour, 8),
            pool(
                DEDICATED_POOL,
                Tenancy.DEDICATED,
                prices.dedicated_per_gpu_hour,
                prices.gpus_per_node,
            ),
        )

    def model_name(self) -> str:
        """The simulated base model's name, e.g. ``sim-8b``."""
        return f"sim-{self.engine.model_params_b:g}b"

    def engine_spec(self) -> dict[str, object]:
        """The ``spec.engine`` block of every simulated tenant and SharedEngine. The simulated
        engine's throughput is known exactly: the spec's capacity override, so the plan sizes
        with the very model that runs the requests."""
        cap = self.capacity()
        return {
            "maxNumSeqs": self.engine.max_num_seqs,
            "gpusPerReplica": self.engine.gpus_per_replica,
            "capacity": {
                "prefillTokensPerSecond": cap.prefill_tokens_per_s,
                "decodeTokensPerSecond": cap.decode_tokens_per_s,
            },
        }

    def tenant(self, mode: DeploymentMode, name: str = "tenant") -> InferenceDeployment:
        """The InferenceDeployment a simulated tenant stands for, with these settings."""
        return InferenceDeployment.model_validate(
            {
                "metadata": {"name": name, "namespace": "sim", "generation": 1, "annotations": {}},
                "spec": {
                    "model": {"name": self.model_name()},
                    "mode": mode,
                    "engine": self.engine_spec(),
                    "scaling": self.scaling.model_dump(by_alias=True, exclude_none=True),
                    "placement": self.placement.model_dump(by_alias=True, exclude_none=True),
                    "hybrid": self.hybrid.model_dump(by_alias=True, exclude_none=True),
                },
            }
        )


def for_prices(
    name: str = "h100",
    *,
    shared_per_gpu_hour: float | None = None,
    dedicated_per_gpu_hour: float | None = None,
    chargeback_per_million_tokens: float | None = None,
    gpus_per_node: int | None = None,
    cold_start_s: float | None = None,
) -> SimConfig:
    """The config for price set ``name`` with the given overrides (None keeps the set's value).

    The set names the GPU, so the pools' ``gpuType`` and the engine's throughput follow it:
    ``for_prices("a100")`` prices $4.00/GPU-hour and runs A100 replicas (P 10,258 tokens/s).
    Raises ``ValueError`` for an unknown set or a price that is not a finite number > 0.
    """
    if name not in PRICE_SETS:
        raise ValueError(f"unknown price set {name!r}; known: {', '.join(sorted(PRICE_SETS))}")
    base = PRICE_SETS[name]
    prices = replace(
        base,
        shared_per_gpu_hour=_or(shared_per_gpu_hour, base.shared_per_gpu_hour),
        dedicated_per_gpu_hour=_or(dedicated_per_gpu_hour, base.dedicated_per_gpu_hour),
        chargeback_per_million_tokens=_or(
            chargeback_per_million_tokens, base.chargeback_per_million_tokens
        ),
        gpus_per_node=base.gpus_per_node if gpus_per_node is None else gpus_per_node,
    )
    engine = EngineModel()
    if cold_start_s is not None:
        engine = replace(engine, cold_start_s=cold_start_s)
    return SimConfig(prices=prices, engine=engine)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
