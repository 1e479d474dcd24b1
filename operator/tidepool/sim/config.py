"""Every default number the simulator and the advisor use, in one place, with where it comes from.

Role: prices, the engine (vLLM replica) model, the tenant's scaling and placement settings, the
baselines' windows and the SLO. ``tidepool simulate`` runs every trace with these same values; the
benchmark is not tuned per trace.

This module must not read files, the clock or the environment; command-line flags override fields
by building a new (frozen) config.
"""

import math
from dataclasses import dataclass, field
from typing import Final

from tidepool.api.v1alpha1 import HybridSpec, PlacementSpec, ScalingSpec, Tenancy
from tidepool.policy import placement
from tidepool.policy.capacity import EngineCapacity, calibrated

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


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Prices:
    """GPU spend (what the platform pays) and chargeback (what it bills tenants): two numbers.

    Why two: Tidepool runs on the platform's own GPUs, so every pool costs GPU-hours, the shared
    pool included; the per-token price is only what tenants are billed for the shared pool, and
    adding it to spend would count the same GPUs twice.

    * Shared pool: many tenants' replicas are packed on its nodes, so a tenant's replicas cost
      exactly their GPUs: 3 replicas of 1 GPU for 2 h at $7.79 = ``3*1*2*7.79 = $46.74``.
    * Dedicated pool: single-tenant, so a tenant pays for whole nodes:
      ``ceil(replicas*gpus_per_replica/gpus_per_node)*gpus_per_node`` GPUs. 3 one-GPU replicas on
      8-GPU nodes pay for 8 GPUs (``ceil(3/8)*8``); on single-GPU nodes, 3.
    * Chargeback: tokens served on the shared pool at ``chargeback_per_million_tokens``:
      1.1M tokens at $0.20/1M = $0.22.
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
        _positive("shared $/GPU-hour", self.shared_per_gpu_hour)
        _positive("dedicated $/GPU-hour", self.dedicated_per_gpu_hour)
        _positive("chargeback $/1M tokens", self.chargeback_per_million_tokens)
        if self.gpus_per_node < 1:
            raise ValueError(f"gpus per node must be >= 1, got {self.gpus_per_node}")

    @property
    def shared_per_million_tokens(self) -> float:
        """The old name of :attr:`chargeback_per_million_tokens`."""
        return self.chargeback_per_million_tokens

    def dedicated_gpus(self, replicas: float, gpus_per_replica: int) -> int:
        """GPUs a dedicated pool pays for: whole nodes.

        E.g. 3 replicas of 2 GPUs on 8-GPU nodes: ``ceil(6/8)*8 = 8``; 0 replicas: 0.
        """
        if replicas <= 0:
            return 0
        node = self.gpus_per_node
        return math.ceil(replicas * gpus_per_replica / node - 1e-9) * node

    def shared_per_hour(self, replicas: float, gpus_per_replica: int) -> float:
        """Spend per hour of ``replicas`` on the shared pool: 2 one-GPU replicas at $7.79,
        $15.58."""
        return max(0.0, replicas) * gpus_per_replica * self.shared_per_gpu_hour

    def dedicated_per_hour(self, replicas: float, gpus_per_replica: int) -> float:
        """Spend per hour of ``replicas`` on the dedicated pool, whole nodes: 1 one-GPU replica on
        8-GPU nodes at $4.00: $32.00."""
        return self.dedicated_gpus(replicas, gpus_per_replica) * self.dedicated_per_gpu_hour

    def chargeback(self, tokens: float) -> float:
        """What tenants are billed for ``tokens`` served on the shared pool: 1.1M at $0.20/1M,
        $0.22."""
        return tokens / 1e6 * self.chargeback_per_million_tokens

    def shared_pool(self) -> placement.PoolPrice:
        return placement.PoolPrice(
            name="shared",
            tenancy=Tenancy.SHARED,
            gpu_type=self.gpu_type,
            price_per_gpu_hour=self.shared_per_gpu_hour,
            price_per_million_tokens=self.chargeback_per_million_tokens,
        )

    def dedicated_pool(self) -> placement.PoolPrice:
        return placement.PoolPrice(
            name="dedicated",
            tenancy=Tenancy.DEDICATED,
            gpu_type=self.gpu_type,
            price_per_gpu_hour=self.dedicated_per_gpu_hour,
            price_per_million_tokens=None,
            gpus_per_node=self.gpus_per_node,
        )


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
    """One vLLM replica: its cold start, its batch, and its throughput from the capacity model.

    * ``cold_start_s``: pod scheduled to Ready (weights from a node-local cache). The anchors
      measured 85 s for a 32B model (llm-d#2492) and 2-7 min including node provisioning (WVA);
      60 s is an 8B model on a node that already exists.
    * ``max_num_seqs``: batch capacity, vLLM's ``--max-num-seqs`` (the CRD default 64); beyond it
      requests wait.
    * throughput: :func:`tidepool.policy.capacity.calibrated` for ``gpu_type``,
      ``model_params_b``, ``max_num_seqs`` and ``gpus_per_replica``, the same table the operator
      plans with. A request holds a seat for ``capacity().service_seconds(input, output)``, so a
      full replica serves ``1 / seconds_per_request`` requests/s whatever the mix.

    Worked example, an 8B model on one H100 (the defaults), Azure conversation trace means of
    1,155 input and 211 output tokens: ``1155/32517 + 211/3600 = 0.0941`` replica-seconds per
    request, so a request holds a seat ``64 * 0.0941 = 6.02`` s and a full replica serves 10.6
    requests/s, 14,500 tokens/s: at $7.79/h that is $0.149 per 1M tokens saturated. On the Azure
    code trace (2,048 in, 28 out) a seat is held 4.53 s and a replica serves 14.1 requests/s,
    29,300 tokens/s; the former per-seat model (8,000 prompt tokens/s per seat, 30 ms per output
    token) gave it 58 requests/s, four times what an H100 does.
    """

    cold_start_s: float = 60.0
    max_num_seqs: int = 64
    gpus_per_replica: int = 1
    gpu_type: str = "NVIDIA-H100-80GB-HBM3"
    model_params_b: float = 8.0

    def capacity(self) -> EngineCapacity:
        """The replica's calibrated throughput: P 32,517 and D 3,600 tokens/s by default."""
        return calibrated(
            self.gpu_type, self.model_params_b, self.max_num_seqs, self.gpus_per_replica
        )

    def service_seconds(self, input_tokens: float, output_tokens: float) -> float:
        """Seconds a request holds one batch seat: 6.02 s for 1,155 in and 211 out by default."""
        return self.capacity().service_seconds(input_tokens, output_tokens)

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens/s *per seat*: ``P / max_num_seqs`` (508 by default).

        With :attr:`decode_s_per_token`, ``input / prefill_tokens_per_s + output *
        decode_s_per_token`` equals :meth:`service_seconds`, for callers that compute service
        times on whole arrays of requests at once.
        """
        return self.capacity().prefill_tokens_per_s / self.max_num_seqs

    @property
    def decode_s_per_token(self) -> float:
        """Seconds one output token holds a seat: ``max_num_seqs / D`` (17.8 ms by default)."""
        return self.max_num_seqs / self.capacity().decode_tokens_per_s


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
    #: A request misses the SLO when it waits longer than this for a batch slot (queue wait, the
    #: part of time-to-first-token that scaling controls). 10 s: seed 004 calls "first users wait
    #: 15+ seconds" the mistake to avoid.
    slo_queue_wait_s: float = 10.0
    #: The p99 queue wait a policy must stay under to "meet the SLO".
    slo_p99_s: float = 10.0
    #: The autoscalers' queue signal is in-flight requests averaged over this many seconds (two
    #: 15 s Prometheus scrapes), not a 1 s spike.
    queue_signal_s: float = 30.0
    #: Seconds between placement decisions (the policy itself needs a full window to move).
    placement_tick_s: float = 60.0

    def replicas_for(self, concurrency: float) -> int:
        """Replicas a static deployment needs for ``concurrency`` in flight (full batches)."""
        return max(0, math.ceil(concurrency / self.engine.max_num_seqs - 1e-9))
