"""What one vLLM replica can serve per second: prefill and decode throughput at full batch.

Role: the one throughput model placement, the autoscaler's sizing and ``tidepool simulate`` share.
A replica is two numbers, both aggregate over the whole replica when its batch is full:

* ``prefill_tokens_per_s`` (P): prompt tokens it can process per second. Prefill is
  compute-bound (thousands of prompt tokens share each read of the weights), so P follows the
  GPU's tensor FLOPs.
* ``decode_tokens_per_s`` (D): tokens it can generate per second across all batch seats. Decode
  reads the weights and every seat's KV cache once per generated token per seat, so D follows the
  GPU's memory bandwidth.

A request of ``i`` input and ``o`` output tokens needs ``i/P + o/D`` replica-seconds of work, so a
saturated replica serves ``1 / (i/P + o/D)`` requests/s whatever the mix. Why two numbers and not
one tokens/s figure: a prompt token is roughly 9x cheaper than a generated one on an H100, so the
same replica moves 26,000 tokens/s of short chat turns with a few output tokens, 23,500 of 4,000-in
/ 200-out RAG requests, and 14,500 of the Azure conversation trace's 1,155-in / 211-out mean
request (tests ``test_mix_throughput``). The simulator's former model (8,000 prompt tokens/s *per
seat*, 512k per 64-seat replica, and 30 ms per output token) put a 2,048-in / 28-out code request
at 4.1x what an H100 does and a 200-in / 1,000-out one at 0.61x.

**Calibration anchor.** Fireworks' post "GPUs on-demand: Not serverless, not reserved, but some
third thing" (June 2024) prices Llama 3 8B on one saturated H100 at $0.092 per 1M tokens (its table
rounds to $0.09) at $7.79/h, with 4,000 input + 200 output tokens per request: ``7.79 / 0.092 =
84.7M`` tokens/h, i.e. 23,520 tokens/s or 1.41M tokens/min, 5.6 requests/s. That was Fireworks' own
stack, which it put at ~3.5x the vLLM of the day; since then vLLM's blog reported 2.7x throughput
for Llama 8B on an H100 from v0.5.3 to v0.6.0 ("vLLM v0.6.0: 2.7x Throughput Improvement", Sept
2024) and up to 1.7x more from the V1 engine ("vLLM V1: A Major Upgrade", Jan 2025); 2.7 x 1.7 =
4.6 > 3.5, so the anchor is a fair figure for the V1 images the CRD defaults to. Where it is off,
:func:`refine` learns the difference from the engine's own counters.

**The split** (one anchor, two unknowns) comes from the decode side, which is arithmetic on
published hardware and model figures: a decode step of 64 seats at the anchor's ~4,100-token
contexts reads the 16.1 GB of BF16 weights (8.03B params x 2 bytes) once plus 64 KV caches of
4,100 x 128 KiB (Llama 3 8B: 32 layers x 8 KV heads x 128 dims x K and V x 2 bytes) = 34.4 GB:
50.5 GB per step. At the H100 SXM's 3.35 TB/s that is 15.1 ms, 4,250 tokens/s; at the ~85% of peak
bandwidth memory-bound kernels reach, D = 3,600 tokens/s. The anchor then leaves ``4000 / (1/5.6 -
200/3600) = 32,517`` prompt tokens/s for P. Cross-check: at ~2 x 8.03 GFLOP per token plus ~1 GFLOP
of attention at 4k context (Kaplan et al. 2020, "Scaling Laws for Neural Language Models": a
forward pass is ~2N FLOPs), that is 556 TFLOPS, 56% of the H100's 989 dense BF16 TFLOPS: a
plausible utilisation for large-chunk prefill, so the split is self-consistent.

**Other GPUs** scale P by dense BF16 tensor TFLOPS and D by memory bandwidth, both from NVIDIA's
datasheets (:data:`GPUS`). That makes an A100 2.69x slower than an H100 at the anchor mix, 1.64x
on pure decode and 3.17x on pure prefill; Lambda's vLLM benchmark ("LLMs inference benchmarks,
using vLLM, on Lambda Cloud", 2024) measured ~2x output throughput for 7-8B models (Llama 3.1 8B
3,400 vs 1,518 tokens/s; Mistral 7B 3,281 vs 1,591), between the two bounds as it should be.
The A10G and L4 have 24 GB: a long-prompt 64-seat batch of an 8B model does not fit in their KV
memory, so vLLM will run fewer seats than configured there; this model does not see that.

**Model size.** Both P and D scale as 1/params: prefill FLOPs per token are ~2 x params, and the
weights decode reads each step are params x bytes. Roughly, not exactly: the KV cache part of a
decode step grows more slowly than the weights (a 70B model's KV per token is 2.5x the 8B's for
8.8x the params), and a mixture-of-experts model is charged for all its experts (Mixtral 8x7B as
47B) though each token uses two: Fireworks' same table prices Mixtral 8x7B at $0.23/1M, 0.40x the
8B's throughput where 8/47 predicts 0.17x, so MoE estimates err on the safe side until
:func:`refine` corrects them.

**Tensor parallelism.** A replica of ``n > 1`` GPUs is ``n x`` :data:`TP_EFFICIENCY` (0.9) times
one GPU: each layer ends in an all-reduce over NVLink. Lambda's report (vLLM v0.6.0 tables) shows
Llama 3.1 70B on 4 H100s at 3,543 output tokens/s against 8,088 for the 8B on one, 0.44x; this
model predicts ``8/70 x 4 x 0.9 = 0.41x``.

**Batch size.** The table is for the CRD's default 64 seats. Prefill does not depend on it
(vLLM chunks prompts into a fixed token budget per step); decode does, because the weights are
read once per step for all seats: D(B) is proportional to ``B / (1 + B x KV_PER_SEAT)`` with
:data:`KV_PER_SEAT` = 34.4 / 64 / 16.1 = 0.0334 of the weights per seat (the numbers above).
64 -> 256 seats adds 31% decode throughput; 8 seats keep 31% of it; one seat decodes at 171
tokens/s, 5.8 ms per token, near the ~5 ms GPU step vLLM's V1 post gives for Llama 8B on an H100.

This module must not do I/O, read the clock, or import ``kopf``, ``kubernetes`` or
``prometheus_api_client``.
"""

import math
import re
from dataclasses import dataclass
from typing import Final

from tidepool.api import v1alpha1
from tidepool.policy.signals import Signal

# --------------------------------------------------------------------------------- the anchor

#: Fireworks' on-demand H100 price in the anchor post, dollars per GPU-hour.
ANCHOR_PRICE_PER_GPU_HOUR: Final = 7.79
#: Fireworks' saturated-H100 cost of Llama 3 8B, dollars per 1M tokens (input plus output).
ANCHOR_PRICE_PER_MILLION_TOKENS: Final = 0.092
#: The request shape behind the anchor: "input lengths of 4000 and output lengths of 200".
ANCHOR_INPUT_TOKENS: Final = 4000.0
ANCHOR_OUTPUT_TOKENS: Final = 200.0
#: Saturated throughput of the anchor: ``7.79 / 0.092 * 1e6 / 3600 = 23,520.5`` tokens/s.
ANCHOR_TOKENS_PER_SECOND: Final = (
    ANCHOR_PRICE_PER_GPU_HOUR / ANCHOR_PRICE_PER_MILLION_TOKENS * 1e6 / 3600.0
)
#: Replica-seconds per anchor request: ``4,200 / 23,520.5 = 0.17857`` s (5.6 requests/s).
ANCHOR_SECONDS_PER_REQUEST: Final = (
    ANCHOR_INPUT_TOKENS + ANCHOR_OUTPUT_TOKENS
) / ANCHOR_TOKENS_PER_SECOND
#: Model size the table is for, in billions of parameters (Llama 3 8B).
CALIBRATION_PARAMS_B: Final = 8.0
#: Batch seats the table is for: the CRD's default ``maxNumSeqs``.
CALIBRATION_MAX_NUM_SEQS: Final = 64
#: What callers assume when a model name carries no size.
DEFAULT_MODEL_PARAMS_B: Final = CALIBRATION_PARAMS_B

#: Llama 3 8B decode on one H100 at 64 seats, tokens/s: 50.5 GB read per step (module docstring)
#: at 85% of 3.35 TB/s is 17.7 ms per step, 3,610 tokens/s; rounded to 3,600.
H100_DECODE_TOKENS_PER_S: Final = 3600.0
#: Llama 3 8B prefill on one H100, tokens/s: what the anchor leaves after decode,
#: ``4000 / (0.17857 - 200/3600) = 32,517``.
H100_PREFILL_TOKENS_PER_S: Final = ANCHOR_INPUT_TOKENS / (
    ANCHOR_SECONDS_PER_REQUEST - ANCHOR_OUTPUT_TOKENS / H100_DECODE_TOKENS_PER_S
)

#: One seat's KV cache as a fraction of the weights, for Llama 3 8B at the anchor's ~4,100-token
#: contexts: ``4,100 x 128 KiB / 16.06 GB = 0.0334``. Sets how decode throughput grows with seats.
KV_PER_SEAT: Final = 4100 * 131_072 / 16.06e9
#: Throughput of an ``n``-GPU tensor-parallel replica is ``n * TP_EFFICIENCY`` single GPUs.
TP_EFFICIENCY: Final = 0.9


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """A GPU family's datasheet figures: dense BF16 tensor TFLOPS (no sparsity) and memory TB/s."""

    name: str
    bf16_tflops: float
    memory_tb_per_s: float
    source: str


#: Datasheet figures per GPU family. P scales with ``bf16_tflops``, D with ``memory_tb_per_s``,
#: both relative to the H100 row. Family-level: the H100 row is the SXM part (the PCIe card has
#: 756 TFLOPS and 2.0 TB/s, so it is overestimated by ~30%), the A100 row the 80GB part (the 40GB
#: part has 1.56 TB/s).
GPUS: Final[dict[str, GpuSpec]] = {
    "H100": GpuSpec("H100", 989.0, 3.35, "NVIDIA H100 datasheet, SXM5: 989 TFLOPS, 3.35 TB/s"),
    "A100": GpuSpec("A100", 312.0, 2.039, "NVIDIA A100 datasheet, 80GB SXM: 312 TFLOPS, 2.0 TB/s"),
    "L40S": GpuSpec("L40S", 362.0, 0.864, "NVIDIA L40S datasheet: 362 TFLOPS, 864 GB/s"),
    "A10G": GpuSpec("A10G", 125.0, 0.600, "NVIDIA A10 datasheet (AWS A10G): 125 TFLOPS, 600 GB/s"),
    "L4": GpuSpec("L4", 121.0, 0.300, "NVIDIA L4 datasheet: 121 TFLOPS, 300 GB/s"),
}
#: What an unrecognised GPU type is assumed to be.
FALLBACK_GPU: Final = "A100"
#: Product-name tokens that name each family ("NVIDIA-A10" is the A10G's datasheet part).
_FAMILY_TOKENS: Final[dict[str, str]] = {
    "H100": "H100",
    "A100": "A100",
    "L40S": "L40S",
    "A10G": "A10G",
    "A10": "A10G",
    "L4": "L4",
}


@dataclass(frozen=True, slots=True)
class EngineCapacity:
    """One replica's throughput at full batch, and where the numbers came from.

    Worked example, Llama 3 8B on one H100 (the calibration anchor), a 4,000-in / 200-out request:
    ``seconds_per_request = 4000/32517 + 200/3600 = 0.1786`` s, so the replica saturates at
    5.6 requests/s = 23,520 tokens/s = 1.41M tokens/min, and each request holds one of its 64 seats
    for ``64 * 0.1786 = 11.4`` s.
    """

    prefill_tokens_per_s: float
    """Prompt tokens per second, aggregate over the replica, at full batch."""
    decode_tokens_per_s: float
    """Generated tokens per second, aggregate over all seats of the replica, at full batch."""
    max_num_seqs: int
    """Batch seats (vLLM's ``--max-num-seqs``)."""
    source: str
    """Where the numbers came from, for status and messages."""

    def __post_init__(self) -> None:
        for name, value in (
            ("prefill tokens/s", self.prefill_tokens_per_s),
            ("decode tokens/s", self.decode_tokens_per_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")

    def seconds_per_request(self, input_tokens: float, output_tokens: float) -> float:
        """Replica-seconds of work one request needs when the replica is saturated.

        ``input/prefill + output/decode``: the anchor request on an H100 8B is 0.1786 s; a
        128-in / 4-out chat turn is ``128/32517 + 4/3600 = 0.00505`` s.
        """
        _check_tokens(input_tokens, output_tokens)
        return input_tokens / self.prefill_tokens_per_s + output_tokens / self.decode_tokens_per_s

    def service_seconds(self, input_tokens: float, output_tokens: float) -> float:
        """How long one request holds one batch seat when the batch is full.

        ``max_num_seqs * seconds_per_request``, so that ``max_num_seqs`` seats each turning over
        every ``service_seconds`` give exactly ``1 / seconds_per_request`` requests/s: a full
        replica's throughput, whatever the mix. Anchor request, 64 seats: ``64 * 0.1786 = 11.4`` s.
        """
        return self.max_num_seqs * self.seconds_per_request(input_tokens, output_tokens)

    def tokens_per_second(self, input_tokens: float, output_tokens: float) -> float:
        """Saturated throughput (input plus output tokens/s) for requests of this shape.

        Anchor: ``4200 / 0.1786 = 23,520``; 128-in / 4-out: ``132 / 0.00505 = 26,150``. A request
        of no tokens moves none: 0.
        """
        seconds = self.seconds_per_request(input_tokens, output_tokens)
        if seconds == 0:
            return 0.0
        return (input_tokens + output_tokens) / seconds

    def replicas_for(
        self, requests_per_s: float, input_tokens: float, output_tokens: float
    ) -> float:
        """Replicas of work an offered load keeps busy: ``requests/s * seconds_per_request``.

        E.g. 10 anchor requests/s on H100 8B replicas: ``10 * 0.1786 = 1.79`` replicas. A float:
        the caller rounds up against its target utilization.
        """
        if not (math.isfinite(requests_per_s) and requests_per_s >= 0):
            raise ValueError(f"requests/s must be a finite number >= 0, got {requests_per_s!r}")
        return requests_per_s * self.seconds_per_request(input_tokens, output_tokens)


def _check_tokens(input_tokens: float, output_tokens: float) -> None:
    for name, value in (("input", input_tokens), ("output", output_tokens)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} tokens must be a finite number >= 0, got {value!r}")


# --------------------------------------------------------------------------------- calibration


def gpu_family(gpu_type: str) -> str | None:
    """The :data:`GPUS` family a GPU product name belongs to; None when none matches.

    Matches whole name tokens, case-insensitively, so "L4" never matches an "L40S":
    ``"NVIDIA-A100-SXM4-80GB" -> "A100"``, ``"NVIDIA-H100-80GB-HBM3" -> "H100"``,
    ``"nvidia-l4" -> "L4"``, ``"A10G" -> "A10G"``, ``"Tesla-T4" -> None``.
    """
    for token in re.split(r"[^A-Z0-9]+", gpu_type.upper()):
        if token in _FAMILY_TOKENS:
            return _FAMILY_TOKENS[token]
    return None


def decode_batch_factor(max_num_seqs: int) -> float:
    """Decode throughput at ``max_num_seqs`` seats relative to the table's 64.

    ``B / (1 + B * KV_PER_SEAT)`` over the same at 64: 256 seats: 1.31; 8 seats: 0.31; 1 seat:
    0.047 (module docstring, "Batch size").
    """

    def per_step(seats: int) -> float:
        return seats / (1.0 + seats * KV_PER_SEAT)

    return per_step(max_num_seqs) / per_step(CALIBRATION_MAX_NUM_SEQS)


def tensor_parallel_factor(gpus_per_replica: int) -> float:
    """Throughput of a ``gpus_per_replica``-GPU replica in single GPUs: 1 -> 1.0, 4 -> 3.6."""
    if gpus_per_replica < 1:
        raise ValueError(f"gpus_per_replica must be >= 1, got {gpus_per_replica}")
    return 1.0 if gpus_per_replica == 1 else gpus_per_replica * TP_EFFICIENCY


def calibrated(
    gpu_type: str, model_params_b: float | None, max_num_seqs: int, gpus_per_replica: int
) -> EngineCapacity:
    """The table's capacity for a GPU product name, model size, batch size and GPU count.

    ``calibrated("NVIDIA-H100-80GB-HBM3", 8, 64, 1)`` is the anchor (P 32,517, D 3,600);
    the A100 has ``312/989`` of its P and ``2.039/3.35`` of its D (10,258 and 2,191); a 70B model
    on 4 H100s has ``8/70 * 3.6 = 0.41`` of the anchor's P and D. An unrecognised GPU gets A100
    figures and an unknown model size 8B, and ``source`` says so.
    """
    family = gpu_family(gpu_type)
    notes: list[str] = []
    if family is None:
        family = FALLBACK_GPU
        notes.append(f"unknown GPU {gpu_type!r}: {FALLBACK_GPU} figures")
    if model_params_b is None:
        params = DEFAULT_MODEL_PARAMS_B
        notes.append(f"model size unknown: assumed {params:g}B")
    else:
        params = model_params_b
    if not (math.isfinite(params) and params > 0):
        raise ValueError(f"model size must be a finite number > 0 (billions), got {params!r}")
    gpu, h100 = GPUS[family], GPUS["H100"]
    scale = CALIBRATION_PARAMS_B / params * tensor_parallel_factor(gpus_per_replica)
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    prefill = H100_PREFILL_TOKENS_PER_S * gpu.bf16_tflops / h100.bf16_tflops * scale
    decode = (
        H100_DECODE_TOKENS_PER_S
        * gpu.memory_tb_per_s
        / h100.memory_tb_per_s
        * scale
        * decode_batch_factor(max_num_seqs)
    )
    source = f"calibrated: NVIDIA-{family} {params:g}B"
    if gpus_per_replica > 1:
        source += f" x{gpus_per_replica} GPUs"
    if notes:
        source += f" ({'; '.join(notes)})"
    return EngineCapacity(prefill, decode, max_num_seqs, source)


# Mixture-of-experts totals where N x M overcounts (the experts share attention and embeddings):
# Mistral AI's model cards give Mixtral 8x7B 46.7B and 8x22B 141B total parameters.
_MOE_TOTAL_B: Final[dict[tuple[int, float], float]] = {(8, 7.0): 46.7, (8, 22.0): 141.0}
_MOE = re.compile(r"(?<![a-z0-9.])(\d+)x(\d+(?:\.\d+)?)b(?![a-z0-9])")
_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z0-9])")


def model_params_b(model_name: str) -> float | None:
    """Billions of parameters a model name states; None when it states none.

    The first size token wins: ``"meta-llama/Llama-3.1-8B-Instruct" -> 8``, ``"llama-70b" -> 70``,
    ``"Qwen2.5-0.5B" -> 0.5``, ``"SmolLM-135M" -> 0.135``, ``"Qwen3-30B-A3B" -> 30`` (total, not
    active), ``"Mixtral-8x7B" -> 46.7`` (Mistral's total; other ``NxM`` names count N x M, an
    upper bound), ``"gpt2" -> None``. Version and quantisation tags ("v0.3", "4bit") are not sizes.
    """
    name = model_name.lower()
    moe = _MOE.search(name)
    if moe:
        experts, each = int(moe.group(1)), float(moe.group(2))
        return _MOE_TOTAL_B.get((experts, each), experts * each)
    size = _SIZE.search(name)
    if size is None:
        return None
    value = float(size.group(1))
    if value <= 0:
        return None
    return value if size.group(2) == "b" else value / 1000.0


def for_spec(engine_spec: v1alpha1.EngineSpec, model_name: str, gpu_type: str) -> EngineCapacity:
    """The capacity to plan with before traffic: ``spec.engine.capacity`` if set, else the table.

    A tenant who has measured their engine knows better than any table, so the override wins;
    its ``source`` is ``"spec.engine.capacity"`` and callers should not :func:`refine` it. With no
    override, e.g. Llama 3.1 8B on an ``NVIDIA-H100-80GB-HBM3`` pool at the default 64 seats:
    P 32,517 and D 3,600 tokens/s, source ``"calibrated: NVIDIA-H100 8B"``.
    """
    override = engine_spec.capacity
    if override is not None:
        return EngineCapacity(
            prefill_tokens_per_s=override.prefill_tokens_per_second,
            decode_tokens_per_s=override.decode_tokens_per_second,
            max_num_seqs=engine_spec.max_num_seqs,
            source="spec.engine.capacity",
        )
    return calibrated(
        gpu_type,
        model_params_b(model_name),
        engine_spec.max_num_seqs,
        engine_spec.gpus_per_replica,
    )


# -------------------------------------------------------------------------------------- refine

#: Refine only from windows in which replicas ran at least this share of their seats. An idle
#: engine's token rate is its load, not its capacity; at 80% busy the scale-up below is at most
#: 1.25x, so a misjudged busy fraction cannot inflate the estimate much.
REFINE_MIN_BUSY: Final = 0.8
#: Weight of one window in the moving average: ``new = prior + 0.2 * (target - prior)``. A window
#: that says the engine is twice as fast moves the estimate 20%; five agreeing windows in a row
#: close 67% of the gap (``1 - 0.8^5``), so one noisy window cannot swing sizing.
REFINE_WEIGHT: Final = 0.2
#: No single window may suggest more than this factor up or down on either rate (before the
#: average): a counter reset or a scrape gap can produce absurd rates.
REFINE_MAX_STEP: Final = 4.0
#: Prefix of a learned capacity's ``source``.
LEARNED: Final = "learned from vllm counters"


def refine(
    prior: EngineCapacity,
    prompt_tokens_per_s: float,
    generation_tokens_per_s: float,
    busy_fraction: float,
) -> EngineCapacity:
    """Move ``prior`` toward what a busy replica was seen to do; unchanged when not busy enough.

    Inputs are per replica over one window: ``rate(vllm:prompt_tokens_total)``,
    ``rate(vllm:generation_tokens_total)``, and the busy fraction (running requests /
    ``max_num_seqs``). Steps:

    1. Below :data:`REFINE_MIN_BUSY` busy, return ``prior`` itself: the rates measured load.
    2. Scale the rates by ``1/busy`` to what a full batch would have done.
    3. One window gives one equation for two unknowns: a saturated replica satisfies
       ``prompt/P + gen/D = 1``. Under the prior the left side is the window's *load*: 1 means the
       prior was right, 1.5 that the engine did 50% more than the prior allows. The target moves
       P and D (in log terms) in proportion to each phase's share of the window's time, just
       enough to make the load 1: a prompt-heavy window corrects mostly P, a decode-heavy one
       mostly D, so windows of different mixes pin down both.
    4. Keep it sane: each rate's target stays within :data:`REFINE_MAX_STEP` of the prior, and if
       the target would make a prompt token dearer than a generated one (P < D, which batched
       prefill never is) both rates move by the load alone, keeping the prior's ratio.
    5. Blend: ``prior + REFINE_WEIGHT * (target - prior)``.

    Worked example: prior H100 8B (P 32,517, D 3,600); a window fully busy on anchor requests at
    6.16 requests/s (24,640 prompt and 1,232 generated tokens/s), i.e. 10% above the anchor's
    5.6. Load = ``24640/32517 + 1232/3600 = 0.758 + 0.342 = 1.10``; the target puts 0.69 of the
    correction on P and 0.31 on D (target P 36,490, D 3,793), and the blend gives P 33,313 and
    D 3,639: the anchor mix now saturates at 5.71 requests/s, a fifth of the way to 6.16.
    """
    busy = busy_fraction
    rates = (prompt_tokens_per_s, generation_tokens_per_s)
    if not (math.isfinite(busy) and busy >= REFINE_MIN_BUSY):
        return prior
    if not all(math.isfinite(r) and r >= 0 for r in rates) or sum(rates) == 0:
        return prior
    busy = min(busy, 1.0)
    prompt, generated = prompt_tokens_per_s / busy, generation_tokens_per_s / busy
    p_time = prompt / prior.prefill_tokens_per_s
    d_time = generated / prior.decode_tokens_per_s
    load = p_time + d_time
    if not (math.isfinite(load) and load > 0):
        return prior
    p_share, d_share = p_time / load, d_time / load
    t = _solve_log_step(p_time, p_share, d_time, d_share)
    p_factor = _clamp(math.exp(t * p_share))
    d_factor = _clamp(math.exp(t * d_share))
    prior_ratio = prior.prefill_tokens_per_s / prior.decode_tokens_per_s
    if prior_ratio * p_factor / d_factor < min(1.0, prior_ratio):
        p_factor = d_factor = _clamp(load)
    w = REFINE_WEIGHT
    prefill = prior.prefill_tokens_per_s * (1.0 + w * (p_factor - 1.0))
    decode = prior.decode_tokens_per_s * (1.0 + w * (d_factor - 1.0))
    source = prior.source if prior.source.startswith(LEARNED) else f"{LEARNED} ({prior.source})"
    return EngineCapacity(prefill, decode, prior.max_num_seqs, source)


def _clamp(factor: float) -> float:
    return min(REFINE_MAX_STEP, max(1.0 / REFINE_MAX_STEP, factor))


def _solve_log_step(p_time: float, p_share: float, d_time: float, d_share: float) -> float:
    """The ``t`` with ``p_time * exp(-t * p_share) + d_time * exp(-t * d_share) == 1``.

    The left side falls monotonically in ``t`` from ``+inf`` to 0 (the shares are >= 0 and sum
    to 1), so bisection finds the one root. E.g. equal shares and load 2: ``t = 2 ln 2``, which
    doubles both rates.
    """

    def load_after(t: float) -> float:
        return p_time * math.exp(-t * p_share) + d_time * math.exp(-t * d_share)

    # |t| <= 64 bounds the search: beyond it every factor with a share above 2% is clamped to
    # REFINE_MAX_STEP anyway, and exp() stays finite.
    lo, hi = -64.0, 64.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if load_after(mid) > 1.0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


@dataclass(frozen=True, slots=True)
class EngineThroughput:
    """What one engine replica did over a window, for :func:`tidepool.policy.capacity.refine`.

    All three are per replica (averaged over the tenant's engine pods): prompt and generated
    tokens/s from vLLM's counters, and the mean share of batch seats running
    (``vllm:num_requests_running / max_num_seqs``). Each is :class:`NoData` when unknown.
    """

    prompt_tokens_per_s: Signal
    generation_tokens_per_s: Signal
    busy_fraction: Signal
