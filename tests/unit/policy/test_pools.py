"""The throughput the plan sizes with, and a pool that cannot hold a replica (policy.pools)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment
from tidepool.policy import pools
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.signals import NoData, Sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"
#: A window fully busy at 10% above the calibration anchor (capacity.refine's worked example).
BUSY_ABOVE_ANCHOR = EngineThroughput(Sample(24_640.0, T0), Sample(1_232.0, T0), Sample(1.0, T0))
LEARNED = {
    "prefillTokensPerSecond": 40_000.0,
    "decodeTokensPerSecond": 4_000.0,
    "source": "learned",
}
OVERRIDE = {"prefillTokensPerSecond": 20_000.0, "decodeTokensPerSecond": 2_000.0}


def _pool(gpus_per_node: int = 8) -> GPUPool:
    spec = {"tenancy": "dedicated", "gpuType": H100, "pricePerGpuHour": 7.79}
    spec["gpusPerNode"] = gpus_per_node
    return GPUPool.model_validate({"metadata": {"name": "h100"}, "spec": spec})


def _tenant(
    capacity: dict[str, float] | None = None,
    learned: dict[str, Any] | None = None,
    gpus_per_replica: int = 1,
) -> InferenceDeployment:
    engine: dict[str, Any] = {"gpusPerReplica": gpus_per_replica}
    if capacity is not None:
        engine["capacity"] = capacity
    body: dict[str, Any] = {
        "metadata": {"name": "t"},
        "spec": {"model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"}, "engine": engine},
    }
    if learned is not None:
        body["status"] = {"capacity": learned}
    return InferenceDeployment.model_validate(body)


@pytest.mark.parametrize(
    ("capacity", "learned", "throughput", "prefill", "decode"),
    [
        pytest.param(None, None, None, 32_517, 3_600, id="the-calibration-for-the-pools-gpu"),
        pytest.param(None, None, BUSY_ABOVE_ANCHOR, 33_313, 3_639, id="refined-by-a-busy-window"),
        pytest.param(None, LEARNED, None, 40_000, 4_000, id="what-status-learned-before"),
        pytest.param(
            None,
            None,
            EngineThroughput(Sample(24_640.0, T0), NoData("no counter"), Sample(1.0, T0)),
            32_517,
            3_600,
            id="a-missing-counter-refines-nothing",
        ),
        pytest.param(
            OVERRIDE, LEARNED, BUSY_ABOVE_ANCHOR, 20_000, 2_000, id="the-spec-override-wins"
        ),
    ],
)
def test_engine_capacity(
    capacity: dict[str, float] | None,
    learned: dict[str, Any] | None,
    throughput: EngineThroughput | None,
    prefill: float,
    decode: float,
) -> None:
    cap = pools.engine_capacity(_tenant(capacity, learned), _pool(), throughput)
    assert (cap.prefill_tokens_per_s, cap.decode_tokens_per_s) == pytest.approx(
        (prefill, decode), abs=1.0
    )


def test_capacity_status_keeps_its_time_while_unchanged() -> None:
    cap = pools.engine_capacity(_tenant(), _pool(), None)
    first = pools.capacity_status(cap, None, T0)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    assert pools.capacity_status(cap, first, later) is first
    refined = pools.engine_capacity(_tenant(), _pool(), BUSY_ABOVE_ANCHOR)
    assert pools.capacity_status(refined, first, later).updated == later


def test_a_pool_whose_nodes_cannot_hold_a_replica_is_refused_by_field_and_range() -> None:
    with pytest.raises(pools.InvalidPlacementError) as err:
        pools.check_fits(_tenant(gpus_per_replica=8), _pool(gpus_per_node=4))
    assert str(err.value) == (
        "engine.gpusPerReplica: 8 GPUs per replica cannot fit GPUPool 'h100', whose nodes have 4;"
        " allowed: 1..4"
    )
    pools.check_fits(_tenant(gpus_per_replica=4), _pool(gpus_per_node=4))
