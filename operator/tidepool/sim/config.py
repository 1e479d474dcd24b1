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

#: A100 on-demand, $4.00 per GPU-hour: seed 004's worked example ("Dedicated: $4.00 per hour
#: (A100)", $2,880 for 720 h).
A100_PER_GPU_HOUR: Final = 4.00
#: Serverless price per 1M tokens (input plus output): seed 002's Llama 3 8B serverless row,
#: "$0.2" per 1M tokens.
SERVERLESS_PER_MILLION_TOKENS: Final = 0.20


@dataclass(frozen=True, slots=True)
class Prices:
    """What the tenant is billed. Shared pool: per token. Dedicated pool: per GPU-hour."""

    dedicated_per_gpu_hour: float = A100_PER_GPU_HOUR
    #: GPU-hour price of the shared pool's nodes: only for reporting GPU-hours, never billed to
    #: a serverless tenant (they pay per token).
    shared_per_gpu_hour: float = A100_PER_GPU_HOUR
    shared_per_million_tokens: float = SERVERLESS_PER_MILLION_TOKENS
    gpu_type: str = "NVIDIA-A100-SXM4-80GB"

    def shared_pool(self) -> placement.PoolPrice:
        return placement.PoolPrice(
            name="shared",
            tenancy=Tenancy.SHARED,
            gpu_type=self.gpu_type,
            price_per_gpu_hour=self.shared_per_gpu_hour,
            price_per_million_tokens=self.shared_per_million_tokens,
        )

    def dedicated_pool(self) -> placement.PoolPrice:
        return placement.PoolPrice(
            name="dedicated",
            tenancy=Tenancy.DEDICATED,
            gpu_type=self.gpu_type,
            price_per_gpu_hour=self.dedicated_per_gpu_hour,
            price_per_million_tokens=None,
        )


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
    #: Percentile of in-flight requests over the window used as the "peak" for sizing.
    peak_percentile: float = 95.0

    def replicas_for(self, concurrency: float) -> int:
        """Replicas a static deployment needs for ``concurrency`` in flight (full batches)."""
        return max(0, math.ceil(concurrency / self.engine.max_num_seqs - 1e-9))
