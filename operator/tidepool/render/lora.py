"""vLLM's LoRA flags, for a tenant's own engine and for a SharedEngine fleet.

Facts from vLLM's LoRA documentation and engine arguments that shape what is rendered:

- ``--enable-lora`` turns adapter serving on; without it vLLM ignores adapters.
- ``--lora-modules name=path`` loads an adapter at start. vLLM splits that form on ``=`` and treats
  an item holding ``,`` as JSON, so a path holding either is sent in the JSON form
  ``{"name": ..., "path": ...}``, which the same flag accepts.
- ``--max-lora-rank`` accepts 8, 16, 32, 64, 128, 256, 320 or 512 (default 16) and must be at
  least each adapter's rank, or the adapter fails to load.
- ``--max-loras`` (adapters in one batch, on the GPU) and ``--max-cpu-loras`` (kept in CPU memory;
  vLLM refuses fewer than ``--max-loras``) bound how many adapters a replica juggles.
- ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` enables the ``/v1/load_lora_adapter`` and
  ``/v1/unload_lora_adapter`` endpoints, through which tenants join and leave a shared fleet
  without a restart.
"""

import json
from typing import Final

from tidepool.api.v1alpha1 import LORA_RANKS, AdapterSpec, LoraSpec

#: The environment variable that lets adapters be loaded and unloaded while the engine runs.
RUNTIME_UPDATING_ENV: Final = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def max_lora_rank_for(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds an adapter of ``rank``: 12 -> 16."""
    return next(allowed for allowed in LORA_RANKS if allowed >= rank)


def lora_module(adapter: AdapterSpec) -> str:
    """The ``--lora-modules`` value: ``name=source``, or JSON if the source holds ``=`` or ``,``."""
    if "=" in adapter.source or "," in adapter.source:
        return json.dumps({"name": adapter.name, "path": adapter.source}, sort_keys=True)
    return f"{adapter.name}={adapter.source}"


def tenant_lora_args(adapter: AdapterSpec) -> list[str]:
    """Flags for a promoted tenant's own replicas: load its one adapter at start."""
    return [
        "--enable-lora",
        "--lora-modules",
        lora_module(adapter),
        "--max-lora-rank",
        str(max_lora_rank_for(adapter.rank)),
    ]


def shared_lora_args(spec: LoraSpec) -> list[str]:
    """Flags for a SharedEngine replica: room for ``maxLoras`` adapters, loaded at runtime."""
    return [
        "--enable-lora",
        "--max-loras",
        str(spec.max_loras),
        "--max-cpu-loras",
        str(spec.max_cpu_loras if spec.max_cpu_loras is not None else spec.max_loras),
        "--max-lora-rank",
        str(spec.max_lora_rank),
    ]
