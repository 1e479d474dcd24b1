"""The engine capacity model: the calibration anchor, the GPU table, model sizes and refine."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api.v1alpha1 import EngineSpec
from tidepool.api.v1alpha1.types import EngineCapacitySpec
from tidepool.policy import capacity
from tidepool.policy.capacity import EngineCapacity

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"
ANCHOR = capacity.calibrated(H100, 8, 64, 1)


# ------------------------------------------------------------------------------ the anchor


def test_h100_8b_at_4000_in_200_out_saturates_at_fireworks_1_41m_tokens_per_minute() -> None:
    # Fireworks: $0.092 per 1M tokens on an H100 at $7.79/h -> 84.7M tokens/h.
    per_minute = ANCHOR.tokens_per_second(4000, 200) * 60
    assert per_minute == pytest.approx(1.41e6, rel=0.01)
    assert per_minute == pytest.approx(7.79 / 0.092 * 1e6 / 60)
    assert 1 / ANCHOR.seconds_per_request(4000, 200) == pytest.approx(5.6, rel=1e-3)
    # And back to the price: $7.79/h over the saturated throughput is $0.092 per 1M tokens.
    assert 7.79 / (ANCHOR.tokens_per_second(4000, 200) * 3600 / 1e6) == pytest.approx(0.092)


def test_anchor_split_is_3600_decode_and_32517_prefill() -> None:
    assert ANCHOR.decode_tokens_per_s == 3600.0
    assert ANCHOR.prefill_tokens_per_s == pytest.approx(32_517, abs=1)
    assert ANCHOR.source == "calibrated: NVIDIA-H100 8B"
    # The prefill figure is 56% of the H100's 989 dense BF16 TFLOPS at ~17.1 GFLOP per token.
    assert ANCHOR.prefill_tokens_per_s * 17.1e9 / 989e12 == pytest.approx(0.56, abs=0.01)


MIXES = [
    pytest.param(4000, 200, 23_520, 5.60, id="anchor-rag-4000-200"),
    pytest.param(128, 4, 26_152, 198.1, id="short-chat-128-4"),
    pytest.param(1155, 211, 14_512, 10.62, id="azure-conversation-1155-211"),
    pytest.param(2048, 28, 29_339, 14.13, id="azure-code-2048-28"),
    pytest.param(200, 1000, 4_226, 3.52, id="decode-heavy-200-1000"),
]


@pytest.mark.parametrize(("inp", "out", "tokens_per_s", "requests_per_s"), MIXES)
def test_mix_throughput(inp: float, out: float, tokens_per_s: float, requests_per_s: float) -> None:
    assert ANCHOR.tokens_per_second(inp, out) == pytest.approx(tokens_per_s, rel=1e-3)
    assert 1 / ANCHOR.seconds_per_request(inp, out) == pytest.approx(requests_per_s, rel=1e-3)


def test_long_prompts_move_more_tokens_but_far_fewer_requests_than_short_ones() -> None:
    long, short = (4000, 200), (128, 4)
    requests_ratio = ANCHOR.seconds_per_request(*long) / ANCHOR.seconds_per_request(*short)
    assert requests_ratio == pytest.approx(35.4, rel=0.01)
    # The former per-seat model (8,000 prompt tokens/s per seat, 30 ms per output token) made
    # the long mix 41,000 tokens/s and the short 62,000 per 64 seats; both overstate an H100.
    old = {mix: 64 * sum(mix) / (mix[0] / 8000 + mix[1] * 0.03) for mix in (long, short)}
    assert old[long] / ANCHOR.tokens_per_second(*long) == pytest.approx(1.75, abs=0.01)
    assert old[short] / ANCHOR.tokens_per_second(*short) == pytest.approx(2.37, abs=0.01)
    for mix, off in (((2048, 28), 4.13), ((200, 1000), 0.61)):
        old_tps = 64 * sum(mix) / (mix[0] / 8000 + mix[1] * 0.03)
        assert old_tps / ANCHOR.tokens_per_second(*mix) == pytest.approx(off, abs=0.01)
    # Decode-heavy traffic moves 6x fewer tokens than prompt-heavy traffic on the same replica.
    assert ANCHOR.tokens_per_second(128, 4) / ANCHOR.tokens_per_second(200, 1000) > 6


def test_service_seconds_holds_a_seat_so_a_full_batch_gives_the_saturated_rate() -> None:
    svc = ANCHOR.service_seconds(4000, 200)
    assert svc == pytest.approx(64 * 0.17857, rel=1e-4)  # 11.43 s
    assert 64 / svc == pytest.approx(1 / ANCHOR.seconds_per_request(4000, 200))


def test_replicas_for_offered_load() -> None:
    assert ANCHOR.replicas_for(10, 4000, 200) == pytest.approx(1.786, abs=1e-3)
    assert ANCHOR.replicas_for(0, 4000, 200) == 0
    assert ANCHOR.tokens_per_second(0, 0) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"prefill_tokens_per_s": 0.0}, id="zero-prefill"),
        pytest.param({"decode_tokens_per_s": math.nan}, id="nan-decode"),
        pytest.param({"max_num_seqs": 0}, id="no-seats"),
    ],
)
def test_capacity_refuses_impossible_numbers(kwargs: dict[str, float]) -> None:
    base: dict[str, object] = {
        "prefill_tokens_per_s": 1.0,
        "decode_tokens_per_s": 1.0,
        "max_num_seqs": 1,
        "source": "t",
    }
    with pytest.raises(ValueError, match="must be"):
        EngineCapacity(**{**base, **kwargs})


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="input tokens"):
        ANCHOR.seconds_per_request(-1, 0)
    with pytest.raises(ValueError, match="requests/s"):
        ANCHOR.replicas_for(math.inf, 1, 1)


# ------------------------------------------------------------------------------ GPU table


@pytest.mark.parametrize(
    ("gpu_type", "family"),
    [
        pytest.param("NVIDIA-A100-SXM4-80GB", "A100", id="a100-sxm4"),
        pytest.param("NVIDIA-A100-80GB-PCIe", "A100", id="a100-pcie"),
        pytest.param("NVIDIA-H100-80GB-HBM3", "H100", id="h100-hbm3"),
        pytest.param("NVIDIA H100 NVL", "H100", id="h100-nvl-spaces"),
        pytest.param("nvidia-l4", "L4", id="l4-lowercase"),
        pytest.param("NVIDIA-L40S", "L40S", id="l40s-not-l4"),
        pytest.param("A10G", "A10G", id="a10g"),
        pytest.param("NVIDIA-A10", "A10G", id="a10-datasheet-part"),
        pytest.param("Tesla-T4", None, id="t4-unknown"),
        pytest.param("", None, id="empty"),
    ],
)
def test_gpu_family(gpu_type: str, family: str | None) -> None:
    assert capacity.gpu_family(gpu_type) == family


@pytest.mark.parametrize(
    ("gpu_type", "prefill", "decode", "anchor_mix_tokens_per_s"),
    [
        pytest.param(H100, 32_517, 3_600, 23_521, id="h100"),
        pytest.param(A100, 10_258, 2_191, 8_728, id="a100"),
        pytest.param("NVIDIA-L40S", 11_902, 928, 7_616, id="l40s"),
        pytest.param("A10G", 4_110, 645, 3_272, id="a10g"),
        pytest.param("NVIDIA-L4", 3_978, 322, 2_583, id="l4"),
    ],
)
def test_calibration_table_8b_64_seats(
    gpu_type: str, prefill: float, decode: float, anchor_mix_tokens_per_s: float
) -> None:
    cap = capacity.calibrated(gpu_type, 8, 64, 1)
    assert cap.prefill_tokens_per_s == pytest.approx(prefill, abs=1)
    assert cap.decode_tokens_per_s == pytest.approx(decode, abs=1)
    assert cap.tokens_per_second(4000, 200) == pytest.approx(anchor_mix_tokens_per_s, abs=1)


def test_a100_against_h100_lies_between_the_bandwidth_and_flops_ratios() -> None:
    a100 = capacity.calibrated(A100, 8, 64, 1)

    def slower(inp: float, out: float) -> float:
        return a100.seconds_per_request(inp, out) / ANCHOR.seconds_per_request(inp, out)

    assert slower(4000, 200) == pytest.approx(2.69, abs=0.01)
    assert slower(0, 1) == pytest.approx(3.35 / 2.039)  # decode: memory bandwidth, 1.64x
    assert slower(1, 0) == pytest.approx(989 / 312)  # prefill: tensor FLOPs, 3.17x
    # Lambda's vLLM benchmark measured ~2x output throughput for 7-8B models (2.06-2.24).
    assert 1.64 < slower(1000, 1000) < 2.24


def test_unknown_gpu_falls_back_to_a100_and_says_so() -> None:
    cap = capacity.calibrated("Tesla-T4", 8, 64, 1)
    assert cap.prefill_tokens_per_s == capacity.calibrated(A100, 8, 64, 1).prefill_tokens_per_s
    assert cap.source == "calibrated: NVIDIA-A100 8B (unknown GPU 'Tesla-T4': A100 figures)"


def test_unknown_model_size_assumes_8b_and_says_so() -> None:
    cap = capacity.calibrated(H100, None, 64, 1)
    assert cap.prefill_tokens_per_s == ANCHOR.prefill_tokens_per_s
    assert cap.source == "calibrated: NVIDIA-H100 8B (model size unknown: assumed 8B)"


def test_throughput_scales_inversely_with_parameters() -> None:
    big = capacity.calibrated(H100, 70, 64, 1)
    assert big.prefill_tokens_per_s == pytest.approx(ANCHOR.prefill_tokens_per_s * 8 / 70)
    assert big.decode_tokens_per_s == pytest.approx(ANCHOR.decode_tokens_per_s * 8 / 70)


def test_70b_on_4_h100s_matches_lambdas_vllm_060_ratio_to_the_8b() -> None:
    # Lambda, vLLM v0.6.0: Llama 3.1 70B at TP4 3,543 output tokens/s, 8B at TP1 8,088: 0.438.
    cap = capacity.calibrated(H100, 70, 64, 4)
    ratio = cap.tokens_per_second(4000, 200) / ANCHOR.tokens_per_second(4000, 200)
    assert ratio == pytest.approx(8 / 70 * 4 * 0.9)
    assert ratio == pytest.approx(3543 / 8088, rel=0.10)
    assert cap.source == "calibrated: NVIDIA-H100 70B x4 GPUs"


@pytest.mark.parametrize(
    ("seats", "factor"),
    [
        pytest.param(1, 0.0475, id="1-seat"),
        pytest.param(8, 0.310, id="8-seats"),
        pytest.param(64, 1.0, id="64-seats"),
        pytest.param(256, 1.314, id="256-seats"),
    ],
)
def test_decode_grows_with_seats_prefill_does_not(seats: int, factor: float) -> None:
    cap = capacity.calibrated(H100, 8, seats, 1)
    assert cap.decode_tokens_per_s / ANCHOR.decode_tokens_per_s == pytest.approx(factor, abs=1e-3)
    assert cap.prefill_tokens_per_s == ANCHOR.prefill_tokens_per_s


def test_one_seat_decodes_near_the_5ms_gpu_step_vllm_reports_for_8b_on_h100() -> None:
    ms_per_token = 1000 / capacity.calibrated(H100, 8, 1, 1).decode_tokens_per_s
    assert ms_per_token == pytest.approx(5.85, abs=0.05)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        pytest.param("meta-llama/Llama-3.1-8B-Instruct", 8.0, id="llama-3.1-8b"),
        pytest.param("meta-llama/Meta-Llama-3-70B", 70.0, id="llama-3-70b"),
        pytest.param("llama-70b", 70.0, id="lowercase-70b"),
        pytest.param("Qwen/Qwen2.5-0.5B-Instruct", 0.5, id="decimal"),
        pytest.param("HuggingFaceTB/SmolLM-135M", 0.135, id="millions"),
        pytest.param("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7, id="mixtral-8x7b-total"),
        pytest.param("mistralai/Mixtral-8x22B-v0.1", 141.0, id="mixtral-8x22b-total"),
        pytest.param("acme/moe-4x3b", 12.0, id="other-moe-upper-bound"),
        pytest.param("Qwen/Qwen3-30B-A3B", 30.0, id="total-not-active"),
        pytest.param("mistralai/Mistral-7B-Instruct-v0.3", 7.0, id="version-not-size"),
        pytest.param("s3://models/llama-3.1-8b", 8.0, id="path"),
        pytest.param("TheBloke/Llama-2-7B-AWQ-4bit", 7.0, id="4bit-not-size"),
        pytest.param("sim-8b", 8.0, id="simulator-tenant"),
        pytest.param("gpt2", None, id="no-size"),
        pytest.param("microsoft/Phi-3-mini-128k-instruct", None, id="context-not-size"),
    ],
)
def test_model_params_b(name: str, params: float | None) -> None:
    assert capacity.model_params_b(name) == params


def test_for_spec_prefers_the_override() -> None:
    spec = EngineSpec(
        max_num_seqs=32,
        capacity=EngineCapacitySpec(prefill_tokens_per_second=9000, decode_tokens_per_second=900),
    )
    cap = capacity.for_spec(spec, "meta-llama/Llama-3.1-8B-Instruct", H100)
    assert cap == EngineCapacity(9000, 900, 32, "spec.engine.capacity")


def test_for_spec_without_override_is_calibrated_for_the_model_and_pool() -> None:
    cap = capacity.for_spec(EngineSpec(), "meta-llama/Llama-3.1-8B-Instruct", H100)
    assert cap == ANCHOR
    tp = capacity.for_spec(EngineSpec(gpus_per_replica=2), "llama-70b", A100)
    assert tp == capacity.calibrated(A100, 70, 64, 2)
    unknown = capacity.for_spec(EngineSpec(), "my-model", "")
    assert unknown.source == (
        "calibrated: NVIDIA-A100 8B (unknown GPU '': A100 figures; model size unknown: assumed 8B)"
    )


gpus = st.sampled_from([H100, A100, "NVIDIA-L40S", "A10G", "nvidia-l4", "unknown"])
params = st.one_of(st.none(), st.floats(0.1, 1000))
seats = st.integers(1, 4096)
tokens = st.integers(0, 200_000)  # token counts are whole numbers


#: (gpu type, model size, seats, GPUs per replica) and (input, output) tokens.
configs = st.tuples(gpus, params, seats, st.integers(1, 15))
mixes = st.tuples(tokens, tokens)


@given(configs, mixes)
def test_throughput_is_positive_and_finite(
    config: tuple[str, float | None, int, int], mix: tuple[int, int]
) -> None:
    cap = capacity.calibrated(*config)
    tps = cap.tokens_per_second(*mix)
    assert math.isfinite(tps)
    assert tps > 0 or sum(mix) == 0
    assert math.isfinite(cap.service_seconds(*mix))


@given(configs, mixes)
def test_throughput_is_monotone_in_gpus(
    config: tuple[str, float | None, int, int], mix: tuple[int, int]
) -> None:
    gpu, size, n_seqs, n_gpus = config
    fewer = capacity.calibrated(gpu, size, n_seqs, n_gpus)
    more = capacity.calibrated(gpu, size, n_seqs, n_gpus + 1)
    assert more.seconds_per_request(*mix) <= fewer.seconds_per_request(*mix)


@given(st.floats(0.1, 1000), tokens, tokens)
def test_a100_is_never_faster_than_h100(size: float, inp: int, out: int) -> None:
    a100, h100 = (capacity.calibrated(g, size, 64, 1) for g in (A100, H100))
    assert a100.seconds_per_request(inp, out) >= h100.seconds_per_request(inp, out)


# ----------------------------------------------------------------------------------- refine


@pytest.mark.parametrize(
    ("prompt", "generated", "busy"),
    [
        pytest.param(24_640, 1_232, 0.79, id="below-threshold"),
        pytest.param(24_640, 1_232, 0.0, id="idle"),
        pytest.param(24_640, 1_232, math.nan, id="nan-busy"),
        pytest.param(0, 0, 1.0, id="no-tokens"),
        pytest.param(math.inf, 1_232, 1.0, id="inf-rate"),
        pytest.param(-5, 1_232, 1.0, id="negative-rate"),
    ],
)
def test_refine_returns_the_prior_when_the_window_says_nothing(
    prompt: float, generated: float, busy: float
) -> None:
    assert capacity.refine(ANCHOR, prompt, generated, busy) is ANCHOR


def test_refine_worked_example_moves_a_fifth_of_the_way() -> None:
    # Fully busy on anchor requests at 6.16/s, 10% above the calibrated 5.6.
    new = capacity.refine(ANCHOR, 6.16 * 4000, 6.16 * 200, 1.0)
    assert new.prefill_tokens_per_s == pytest.approx(33_313, abs=1)
    assert new.decode_tokens_per_s == pytest.approx(3_639, abs=1)
    assert 1 / new.seconds_per_request(4000, 200) == pytest.approx(5.60 + 0.2 * 0.56, abs=0.01)
    assert new.source == "learned from vllm counters (calibrated: NVIDIA-H100 8B)"
    assert capacity.refine(new, 24_640, 1_232, 1.0).source == new.source


def test_refine_scales_a_partly_busy_window_to_a_full_batch() -> None:
    at_80 = capacity.refine(ANCHOR, 0.8 * 24_640, 0.8 * 1_232, 0.8)
    at_100 = capacity.refine(ANCHOR, 24_640, 1_232, 1.0)
    assert at_80 == at_100


def test_refine_leaves_a_correct_prior_alone() -> None:
    rps = 1 / ANCHOR.seconds_per_request(1155, 211)
    new = capacity.refine(ANCHOR, rps * 1155, rps * 211, 1.0)
    assert new.prefill_tokens_per_s == pytest.approx(ANCHOR.prefill_tokens_per_s)
    assert new.decode_tokens_per_s == pytest.approx(ANCHOR.decode_tokens_per_s)


def test_a_prompt_only_window_corrects_only_prefill() -> None:
    new = capacity.refine(ANCHOR, 2 * ANCHOR.prefill_tokens_per_s, 0, 1.0)
    assert new.prefill_tokens_per_s == pytest.approx(ANCHOR.prefill_tokens_per_s * 1.2)
    assert new.decode_tokens_per_s == ANCHOR.decode_tokens_per_s


def test_repeated_windows_converge_on_the_engine_for_that_mix() -> None:
    truth = EngineCapacity(2 * 32_517, 2 * 3_600, 64, "truth")
    rps = 1 / truth.seconds_per_request(1155, 211)
    cap = ANCHOR
    for _ in range(30):
        cap = capacity.refine(cap, rps * 1155, rps * 211, 1.0)
    assert cap.seconds_per_request(1155, 211) == pytest.approx(
        truth.seconds_per_request(1155, 211), rel=0.01
    )


def test_a_window_that_would_make_prompts_dearer_than_output_keeps_the_ratio() -> None:
    prior = EngineCapacity(4000, 3600, 64, "t")
    # Decode-dominated and twice the prior's load: the split alone would put D above P.
    new = capacity.refine(prior, 400, 2 * 3600 * 0.9, 1.0)
    assert new.prefill_tokens_per_s / new.decode_tokens_per_s == pytest.approx(4000 / 3600)
    assert new.prefill_tokens_per_s > prior.prefill_tokens_per_s


def test_one_absurd_window_moves_each_rate_at_most_60_percent() -> None:
    new = capacity.refine(ANCHOR, 1e12, 1e12, 1.0)
    assert new.prefill_tokens_per_s == pytest.approx(ANCHOR.prefill_tokens_per_s * 1.6)
    assert new.decode_tokens_per_s == pytest.approx(ANCHOR.decode_tokens_per_s * 1.6)


rates = st.floats(0, 1e7)
busy_fractions = st.floats(0, 1.5)


@given(gpus, seats, rates, rates, busy_fractions)
def test_refine_never_moves_more_than_the_blend_weight_allows(
    gpu: str, n_seqs: int, prompt: float, generated: float, busy: float
) -> None:
    prior = capacity.calibrated(gpu, 8, n_seqs, 1)
    new = capacity.refine(prior, prompt, generated, busy)
    w, step = capacity.REFINE_WEIGHT, capacity.REFINE_MAX_STEP
    low, high = 1 - w * (1 - 1 / step), 1 + w * (step - 1)  # 0.85 .. 1.6
    for before, after in (
        (prior.prefill_tokens_per_s, new.prefill_tokens_per_s),
        (prior.decode_tokens_per_s, new.decode_tokens_per_s),
    ):
        assert low * before - 1e-9 <= after <= high * before + 1e-9
    if busy < capacity.REFINE_MIN_BUSY:
        assert new is prior
    # Prompt tokens never become dearer than generated ones.
    assert new.prefill_tokens_per_s >= new.decode_tokens_per_s
    assert new.max_num_seqs == prior.max_num_seqs
