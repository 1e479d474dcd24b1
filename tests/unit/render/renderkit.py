"""Pools shared by the renderer tests."""

from typing import Any

from tidepool.api.v1alpha1 import GPUPool


def pool(name: str, tenancy: str, **spec: Any) -> GPUPool:
    return GPUPool.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"tenancy": tenancy, "gpuType": "A100", "pricePerGpuHour": 4.0, **spec},
        }
    )


SHARED = pool(
    "shared-a100",
    "shared",
    nodeSelector={"tidepool.dev/pool": "shared-a100", "a-first": "x"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)
