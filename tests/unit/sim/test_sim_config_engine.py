"""The simulator's engine model delegates throughput to the operator's capacity table."""

import pytest

from tidepool.policy import capacity
from tidepool.sim import config


def test_defaults_are_an_8b_model_on_one_h100_with_64_seats() -> None:
    eng = config.EngineModel()
    assert (eng.max_num_seqs, eng.gpus_per_replica, eng.cold_start_s) == (64, 1, 60.0)
    assert (eng.gpu_type, eng.model_params_b) == ("NVIDIA-H100-80GB-HBM3", 8.0)
    assert eng.capacity() == capacity.calibrated("NVIDIA-H100-80GB-HBM3", 8.0, 64, 1)
    assert eng.capacity().source == "calibrated: NVIDIA-H100 8B"


@pytest.mark.parametrize(
    ("inp", "out", "seat_seconds", "requests_per_s"),
    [
        pytest.param(1155, 211, 6.02, 10.62, id="azure-conversation"),
        pytest.param(2048, 28, 4.53, 14.13, id="azure-code"),
        pytest.param(4000, 200, 11.43, 5.60, id="fireworks-anchor"),
    ],
)
def test_service_seconds_worked_examples(
    inp: float, out: float, seat_seconds: float, requests_per_s: float
) -> None:
    eng = config.EngineModel()
    svc = eng.service_seconds(inp, out)
    assert svc == pytest.approx(seat_seconds, abs=0.01)
    assert eng.max_num_seqs / svc == pytest.approx(requests_per_s, abs=0.01)


def test_conversation_mix_costs_0149_per_million_tokens_saturated_at_779() -> None:
    tps = config.EngineModel().capacity().tokens_per_second(1155, 211)
    assert tps == pytest.approx(14_512, abs=1)
    assert 7.79 / (tps * 3600 / 1e6) == pytest.approx(0.149, abs=1e-3)


def test_per_seat_rates_reproduce_service_seconds_for_array_callers() -> None:
    eng = config.EngineModel()
    assert eng.prefill_tokens_per_s == pytest.approx(32_517 / 64, abs=0.1)
    assert eng.decode_s_per_token == pytest.approx(64 / 3600)
    by_rates = 1155 / eng.prefill_tokens_per_s + 211 * eng.decode_s_per_token
    assert by_rates == pytest.approx(eng.service_seconds(1155, 211))


def test_gpu_type_size_and_tensor_parallelism_change_service_time() -> None:
    base = config.EngineModel().service_seconds(1155, 211)
    a100 = config.EngineModel(gpu_type="NVIDIA-A100-SXM4-80GB").service_seconds(1155, 211)
    big = config.EngineModel(model_params_b=70.0).service_seconds(1155, 211)
    big_tp = config.EngineModel(model_params_b=70.0, gpus_per_replica=4).service_seconds(1155, 211)
    assert a100 / base == pytest.approx(2.22, abs=0.01)  # Lambda measured ~2x on vLLM
    assert big / base == pytest.approx(70 / 8)
    assert big / big_tp == pytest.approx(3.6)
