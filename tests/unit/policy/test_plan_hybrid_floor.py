"""The hybrid floor the plan keeps: what placement chose, within the spec's replica limits."""

from __future__ import annotations

from typing import Any

import pytest

from tidepool.api.v1alpha1 import InferenceDeployment
from tidepool.policy import pools


def tenant(mode: str, min_replicas: int, max_replicas: int) -> InferenceDeployment:
    spec: dict[str, Any] = {
        "model": {"name": "m"},
        "mode": mode,
        "scaling": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
    }
    return InferenceDeployment.model_validate({"metadata": {"name": "t"}, "spec": spec})


@pytest.mark.parametrize(
    ("mode", "min_replicas", "max_replicas", "chosen", "floor"),
    [
        pytest.param("auto", 0, 4, 3, 3, id="auto-keeps-what-placement-chose"),
        pytest.param("auto", 0, 4, 9, 4, id="never-above-maxReplicas"),
        pytest.param("auto", 0, 1000, 3044, 1000, id="the-x100-servegen-client"),
        pytest.param("auto", 2, 4, 1, 2, id="never-below-minReplicas"),
        pytest.param("auto", 0, 4, None, 1, id="nothing-chosen-keeps-one"),
        pytest.param("hybrid", 2, 4, 9, 2, id="a-fixed-hybrid-keeps-its-minimum"),
    ],
)
def test_hybrid_floor(
    mode: str, min_replicas: int, max_replicas: int, chosen: int | None, floor: int
) -> None:
    assert pools.hybrid_floor(tenant(mode, min_replicas, max_replicas), chosen) == floor
