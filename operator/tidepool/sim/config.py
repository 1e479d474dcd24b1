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
    """One vLLM replica of an 8B model on one A100, reduced to four numbers.

    * ``cold_start_s``: pod scheduled to Ready (weights from a node-local cache). The anchors
      measured 85 s for a 32B model (llm-d#2492) and 2-7 min including node provisioning (WVA);
      60 s is an 8B model on a node that already exists.
    * ``max_num_seqs``: batch capacity, vLLM's ``--max-num-seqs`` (the CRD default 64); beyond it
      requests wait.
    * a request's service time is ``input/prefill_tokens_per_s + output*decode_s_per_token``.

    Worked example (Azure conversation trace means: 1,155 input and 211 output tokens):
    ``1155/8000 + 211*0.03 = 6.47 s``; a full replica serves ``64/6.47 = 9.9`` requests/s, i.e.
    13,500 tokens/s, so at $4.00/h it costs $0.082 per 1M tokens saturated, close to seed 002's
    "$0.09/1M on a saturated GPU"; the crossover with $0.20/1M serverless is at 41% utilization.
    """

    cold_start_s: float = 60.0
    max_num_seqs: int = 64
    prefill_tokens_per_s: float = 8000.0
    decode_s_per_token: float = 0.03
    gpus_per_replica: int = 1

    def service_seconds(self, input_tokens: float, output_tokens: float) -> float:
        return input_tokens / self.prefill_tokens_per_s + output_tokens * self.decode_s_per_token


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
