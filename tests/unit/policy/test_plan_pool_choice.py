"""Which GPUPool an InferenceDeployment lands on when its spec names none."""

from __future__ import annotations

import pytest

from tidepool.api.v1alpha1 import GPUPool, Tenancy
from tidepool.policy import plan


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
    chosen = plan.pick_pool(tuple(pools), tenancy, preferred)

    assert (chosen.name if chosen else None) == expected
