"""The simulator's config: the engine's throughput from the operator's capacity table, and one
price set naming the GPU of both pools and of the engine."""

import numpy as np
import pytest

from tidepool.policy import capacity, pools
from tidepool.sim import config, engine, traces

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"


def test_defaults_are_an_8b_model_on_one_h100_with_64_seats() -> None:
    cfg = config.SimConfig()
    eng = cfg.engine
    assert (eng.max_num_seqs, eng.gpus_per_replica, eng.cold_start_s) == (64, 1, 60.0)
    assert (cfg.prices.gpu_type, eng.model_params_b) == (H100, 8.0)
    assert cfg.capacity() == capacity.calibrated(H100, 8.0, 64, 1)
    assert cfg.capacity().source == "calibrated: NVIDIA-H100 8B"


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
    cap = config.SimConfig().capacity()
    svc = cap.service_seconds(inp, out)
    assert svc == pytest.approx(seat_seconds, abs=0.01)
    assert cap.max_num_seqs / svc == pytest.approx(requests_per_s, abs=0.01)


def test_conversation_mix_costs_0149_per_million_tokens_saturated_at_779() -> None:
    tps = config.SimConfig().capacity().tokens_per_second(1155, 211)
    assert tps == pytest.approx(14_512, abs=1)
    assert 7.79 / (tps * 3600 / 1e6) == pytest.approx(0.149, abs=1e-3)


def test_gpu_type_size_and_tensor_parallelism_change_service_time() -> None:
    def seat_s(eng: config.EngineModel, gpu: str = H100) -> float:
        return eng.capacity(gpu).service_seconds(1155, 211)

    base = seat_s(config.EngineModel())
    big = seat_s(config.EngineModel(model_params_b=70.0))
    big_tp = seat_s(config.EngineModel(model_params_b=70.0, gpus_per_replica=4))
    a100 = seat_s(config.EngineModel(), A100)
    assert a100 / base == pytest.approx(2.22, abs=0.01)  # Lambda measured ~2x on vLLM
    assert big / base == pytest.approx(70 / 8)
    assert big / big_tp == pytest.approx(3.6)


def test_a_price_set_names_the_gpu_of_both_pools_and_of_the_engine() -> None:
    cfg = config.for_prices("a100")
    assert cfg.prices == config.PRICE_SETS["a100"]
    assert cfg.capacity() == capacity.calibrated(A100, 8.0, 64, 1)
    assert cfg.capacity().prefill_tokens_per_s == pytest.approx(10_258, abs=1)
    shared, dedicated = engine.pool_prices(cfg)
    assert (shared.gpu_type, dedicated.gpu_type) == (A100, A100)
    assert (shared.price_per_gpu_hour, dedicated.price_per_gpu_hour) == (4.00, 4.00)
    # The pools priced are the placement policy's view of the pools the controllers run on.
    assert (shared, dedicated) == tuple(pools.pool_price(p) for p in cfg.pools())
    assert config.for_prices() == config.SimConfig()


def test_for_prices_overrides_and_refusals() -> None:
    cfg = config.for_prices(
        "h100",
        shared_per_gpu_hour=9.0,
        dedicated_per_gpu_hour=2.5,
        chargeback_per_million_tokens=0.3,
        gpus_per_node=8,
        cold_start_s=120.0,
    )
    p = cfg.prices
    assert (p.name, p.gpu_type, p.gpus_per_node) == ("h100", H100, 8)
    assert (p.shared_per_gpu_hour, p.dedicated_per_gpu_hour) == (9.0, 2.5)
    assert p.chargeback_per_million_tokens == 0.3
    assert cfg.engine == config.EngineModel(cold_start_s=120.0)
    with pytest.raises(ValueError, match="unknown price set 'h200'; known: a100, h100"):
        config.for_prices("h200")
    with pytest.raises(ValueError, match=r"dedicated \$/GPU-hour must be a finite number > 0"):
        config.for_prices(dedicated_per_gpu_hour=float("nan"))


def test_a_binned_log_keeps_input_and_output_tokens_and_service_from_the_capacity() -> None:
    cap = config.SimConfig().capacity()
    log = traces.RequestLog(
        start=traces.SERVEGEN_EPOCH,
        offsets_s=np.array([0.0, 0.5, 2.0]),
        input_tokens=np.array([1155.0, 2048.0, 4000.0]),
        output_tokens=np.array([211.0, 28.0, 200.0]),
    )
    load = traces.bin_log(log, cap, 1.0, "t")
    np.testing.assert_array_equal(load.arrivals, [2.0, 0.0, 1.0])
    np.testing.assert_array_equal(load.input_tokens, [3203.0, 0.0, 4000.0])
    np.testing.assert_array_equal(load.output_tokens, [239.0, 0.0, 200.0])
    np.testing.assert_array_equal(load.tokens, [3442.0, 0.0, 4200.0])
    # A step's mean request holds a seat for the mean of its requests' service times.
    both = (cap.service_seconds(1155, 211) + cap.service_seconds(2048, 28)) / 2
    np.testing.assert_allclose(load.service_s, [both, 0.0, cap.service_seconds(4000, 200)])


def test_offered_load_reads_the_split_even_when_prefill_and_decode_rates_are_equal() -> None:
    # Equal rates made the former 2x2 solve for the split divide by zero.
    cap = capacity.EngineCapacity(5000.0, 5000.0, 64, "test")
    arrivals = np.array([2.0, 2.0, 0.0, 2.0])
    load = traces.tenant_load(
        "t", cap, arrivals, arrivals * 300.0, np.array([100.0, 100.0, 0.0, 20.0])
    )
    offered = engine.OfferedLoad(load, 1.0, cap, idle_s=300.0)
    offered.last = 3
    traffic = offered(4.0)
    assert traffic is not None
    assert traffic.mean.requests_per_second == 1.5
    assert traffic.mean.input_tokens_per_second == 450.0
    assert traffic.mean.output_tokens_per_second == 55.0
