"""How long vLLM takes to make a LoRA adapter usable: one source for the engine simulator and
``tidepool simulate``.

Role: two constants and the load time they give. The engine simulator
(:class:`tidepool.enginesim.engine.LoraConfig`) waits them out per request, and the shared-engine
simulation (:mod:`tidepool.sim.shared`) charges them to the fleet's requests, so that a wake of a
tenant whose fleet is up costs what the engine simulator shows: an adapter load, not a model load.

Loading reads the adapter's weights from disk into CPU memory (vLLM's ``add_lora``), and its
size grows with the rank: ``A`` and ``B`` matrices of ``rank x hidden`` per adapted layer.
Activating copies it from CPU memory into one of the ``--max-loras`` GPU slots.

This module must not do I/O or read the clock.
"""

from typing import Final

#: Seconds per unit of rank to load an adapter from disk into CPU memory: a rank-16 adapter
#: of an 8B model (tens of MB) in 32 ms, a local-disk read.
LOAD_SECONDS_PER_RANK: Final = 0.002
#: Seconds to copy an adapter from CPU memory into a GPU slot.
SWAP_IN_SECONDS: Final = 0.005


def load_seconds(rank: int, seconds_per_rank: float = LOAD_SECONDS_PER_RANK) -> float:
    """Seconds to load an adapter of ``rank`` from disk: rank 16 at 2 ms per rank -> 0.032 s."""
    return seconds_per_rank * rank
