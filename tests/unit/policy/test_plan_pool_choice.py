"""Which GPUPool an InferenceDeployment lands on when its spec names none."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tidepool.api.v1alpha1 import GPUPool, Tenancy
from tidepool.policy import placement, plan
from tidepool.policy.capacity import EngineCapacity
from tidepool.policy.pools import pick_pool
from tidepool.policy.signals import NoData


def _pool(name: str, tenancy: str, default: bool = False) -> GPUPool:
    meta: dict[str, object] = {"name": name}
    if default:
        meta["annotations"] = {"tidepool.dev/is-default-pool": "true"}
    spec: dict[str, object] = {"tenancy": tenancy, "gpuType": "A100", "pricePerGpuHour": 4.0}
    return GPUPool.model_validate({"metadata": meta, "spec": spec})


@pytest.mark.parametrize(
    ("pools", "tenancy", "preferred", "expected"),
    [
        pytest.param(
            [_pool("a-shared", "shared"), _pool("z-shared", "shared", default=True)],
            Tenancy.SHARED,
            None,
            "z-shared",
            id="the-default-pool-wins-over-name-order",
        ),
        pytest.param(
            [_pool("b-shared", "shared"), _pool("a-shared", "shared")],
            Tenancy.SHARED,
            None,
            "a-shared",
            id="no-default-first-pool-by-name",
        ),
        pytest.param(
            [_pool("x", "shared", default=True), _pool("y", "shared")],
            Tenancy.SHARED,
            "y",
            "y",
            id="a-preference-beats-the-default",
        ),
        pytest.param(
            [_pool("d", "dedicated", default=True)],
            Tenancy.SHARED,
            None,
            None,
            id="no-pool-of-that-tenancy",
        ),
    ],
)
def test_pool_choice(
    pools: list[GPUPool], tenancy: Tenancy, preferred: str | None, expected: str | None
) -> None:
    chosen = pick_pool(tuple(pools), tenancy, preferred)

    assert (chosen.name if chosen else None) == expected


def test_offered_concurrency_is_work_times_the_batch() -> None:
    cap = EngineCapacity(40_000.0, 2_000.0, 64, "test")
    # 10,000 input and 500 output tokens/s: 0.25 + 0.25 = 0.5 replicas of work, 32 in flight.
    load = placement.Load(5.0, 10_000.0, 500.0)
    traffic = placement.Traffic(
        mean=load, peak=load, span=timedelta(minutes=10), active_fraction=1.0, wakes=0.0
    )
    assert plan.offered_concurrency(traffic, cap) is None  # no last minute measured
    recent = replace(traffic, recent=load)
    assert plan.offered_concurrency(recent, cap) == pytest.approx(32.0)
    assert plan.offered_concurrency(NoData("down"), cap) is None
