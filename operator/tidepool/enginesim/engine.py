"""The simulated engine: vLLM's batch scheduler and latency model, without a GPU.

Role: decide *when* each token of a request is produced. Like vLLM, at most ``max_num_seqs``
sequences run at once and later ones wait in FIFO order; a request first pays prefill time
proportional to its prompt tokens (its first token comes out at the end of prefill), then one
decode step per further token, and each decode step slows down as the batch grows
(``batch_slowdown`` per extra running sequence). Output length is ``max_tokens`` when given,
else a length drawn from a seeded generator, so runs with ``--seed`` are reproducible.

Must not: know about HTTP or metrics formats (:mod:`tidepool.enginesim.app` does), or import
``kubernetes``/``kopf``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

_VOCAB: Final = (
    "the", "tide", "pool", "holds", "small", "bright", "creatures", "under", "stones", "while",
    "waves", "come", "and", "go", "in", "the", "cold", "morning", "light", "a", "crab", "waits",
    "for", "the", "sea", "to", "return", "and", "carry", "it", "home",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str
    load_delay: float = 5.0
    """Seconds from start until /health turns 200 (stands for model loading)."""
    prefill_ms_per_1k_tokens: float = 40.0
    decode_ms_per_token: float = 20.0
    max_num_seqs: int = 64
    seed: int | None = None
    batch_slowdown: float = 0.01
    """Each extra running sequence makes a decode step this fraction slower (0.01: 64 running
    sequences decode at 1.63x the single-sequence step)."""
    random_output_tokens: tuple[int, int] = (16, 256)
    """Range of output lengths when the request gives no max_tokens."""
    drain_timeout: float = 3600.0
    """On SIGTERM, how long in-flight requests (long streams included) may take."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"--max-num-seqs must be >= 1, got {self.max_num_seqs}")
        for name in ("load_delay", "prefill_ms_per_1k_tokens", "decode_ms_per_token"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def prefill_seconds(prompt_tokens: int, config: EngineConfig) -> float:
    """E.g. 2,000 prompt tokens at 40 ms per 1k -> 0.08 s."""
    return prompt_tokens / 1000.0 * config.prefill_ms_per_1k_tokens / 1000.0


def decode_step_seconds(running: int, config: EngineConfig) -> float:
    """E.g. 20 ms per token, slowdown 0.01, 11 running -> 20 ms x 1.10 = 22 ms."""
    return config.decode_ms_per_token / 1000.0 * (1.0 + config.batch_slowdown * max(0, running - 1))


def count_text_tokens(text: str) -> int:
    """About four characters per token, as tokenizers average on English; at least one."""
    return max(1, math.ceil(len(text) / 4))


def count_prompt_tokens(prompt: object) -> int:
    """Tokens of a completions ``prompt``: a string, a list of strings, or token ids."""
    if isinstance(prompt, str):
        return count_text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list):
        return sum(count_prompt_tokens(p) for p in prompt) or 1
    return 1


def count_chat_tokens(messages: Sequence[object]) -> int:
    """Message contents plus 4 tokens of chat-template overhead per message."""
    total = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += 4 + (count_text_tokens(content) if isinstance(content, str) and content else 0)
    return max(1, total)


class Engine:
    """Batch slots, the FIFO waiting queue, and per-request token generators."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._requests = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def rng_for_next_request(self) -> random.Random:
        """Per-request generator: request number n under seed s always gets the same draws."""
        self._requests += 1
        if self.config.seed is None:
            return random.Random()
        return random.Random(f"{self.config.seed}:{self._requests}")

    def output_length(self, max_tokens: object, rng: random.Random) -> int:
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
            return max_tokens
        low, high = self.config.random_output_tokens
        return rng.randint(low, high)

    @staticmethod
    def token(rng: random.Random) -> str:
        return " " + rng.choice(_VOCAB)

    async def acquire(self) -> None:
        """Take a batch slot, waiting in FIFO order behind earlier requests when full."""
        if self.running < self.config.max_num_seqs and not self._waiting:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                self._waiting.remove(fut)
            raise

    def release(self) -> None:
        """Free a slot; the oldest waiter inherits it (``running`` stays the same)."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1
