"""The simulated engine: vLLM's batch scheduler and latency model, without a GPU.

Role: decide *when* each token of a request is produced. Like vLLM, at most ``max_num_seqs``
sequences run at once and later ones wait (in arrival order, or by priority; see below); a
request first pays prefill time proportional to its prompt tokens (its first token comes out at
the end of prefill), then one decode step per further token, and each decode step slows down
as the batch grows (``batch_slowdown`` per extra running sequence). Output length is
``max_tokens`` when given, else a length drawn from a seeded generator, so runs with ``--seed``
are reproducible.

LoRA, as vLLM serves it with ``--enable-lora`` (its ``LoRAConfig`` and scheduler): a request
names an adapter in its ``model`` field; at most ``max_loras`` distinct adapters are in the
running batch at once, and a request whose adapter would be one too many waits (counted as
waiting) while requests of adapters already running, or of the base model, go past it. GPU
slots hold ``max_loras`` adapters and CPU memory ``max_cpu_loras``, each evicting its least
recently used adapter that no running request needs; a request whose adapter is not on the GPU
first pays a swap-in, plus a load from disk (growing with the rank) when it is not in CPU
memory either.

Scheduling policy, vLLM's ``--scheduling-policy``: ``fcfs`` (vLLM's default) admits waiters in
arrival order; ``priority`` (vLLM's priority scheduling, vLLM PR #5958) admits them by the
request's ``priority`` (lower first), ties in arrival order. Under ``fcfs`` vLLM refuses a
request whose priority is not 0. vLLM's priority policy also preempts running requests of a
lower priority for a waiting one; the simulator never preempts, it only orders the waiters.

Must not: know about HTTP or metrics formats (:mod:`tidepool.enginesim.server` and
:mod:`tidepool.enginesim.metrics` do), read files, or import ``kubernetes``/``kopf``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from tidepool.policy import lora_timing

_VOCAB: Final = (
    "the", "tide", "pool", "holds", "small", "bright", "creatures", "under", "stones", "while",
    "waves", "come", "and", "go", "in", "the", "cold", "morning", "light", "a", "crab", "waits",
    "for", "the", "sea", "to", "return", "and", "carry", "it", "home",
)  # fmt: skip


#: vLLM's ``--scheduling-policy`` values: its default, and priority scheduling.
FCFS: Final = "fcfs"
PRIORITY: Final = "priority"
SCHEDULING_POLICIES: Final = (FCFS, PRIORITY)


def check_priority(priority: int, scheduling_policy: str) -> None:
    """Raise ValueError as vLLM does (its server answers 400 BadRequestError) for a request
    ``priority`` other than 0 when the priority policy is off."""
    if priority != 0 and scheduling_policy != PRIORITY:
        raise ValueError(f"Got priority {priority} but Priority scheduling is not enabled.")


class Residency(StrEnum):
    """Where a request's adapter was when the request got its batch slot: already in a GPU slot
    (no wait), in CPU memory (a swap-in first), or neither (loaded from disk, then swapped in)."""

    GPU = "gpu"
    CPU = "cpu"
    DISK = "disk"


@dataclass(frozen=True, slots=True)
class Adapter:
    """A LoRA adapter as vLLM's ``LoRARequest`` names it: what requests put in ``model``, the
    path it was loaded from (``root`` in ``/v1/models``) and its rank."""

    name: str
    path: str
    rank: int


class LoraError(ValueError):
    """A load or unload vLLM refuses; ``status`` and ``type`` are those of vLLM's answer."""

    def __init__(self, message: str, status: int, type_: str) -> None:
        super().__init__(message)
        self.status, self.type = status, type_


def check_rank(rank: int, max_lora_rank: int) -> None:
    """vLLM refuses an adapter whose rank exceeds ``--max-lora-rank`` (400 BadRequestError)."""
    if rank > max_lora_rank:
        raise LoraError(
            f"LoRA rank {rank} is greater than max_lora_rank {max_lora_rank}.",
            400,
            "BadRequestError",
        )


@dataclass(frozen=True, slots=True)
class LoraConfig:
    """``--enable-lora`` and its settings; the defaults are vLLM's where vLLM has the flag."""

    max_loras: int = 1
    """Distinct adapters in one running batch, and GPU adapter slots (vLLM's default: 1)."""
    max_cpu_loras: int | None = None
    """Adapters kept in CPU memory; None: ``max_loras``, as in vLLM."""
    max_lora_rank: int = 16
    """Largest rank an adapter may have (vLLM's default: 16)."""
    modules: tuple[Adapter, ...] = ()
    """``--lora-modules``: adapters loaded at start, as vLLM loads them before serving."""
    runtime_updating: bool = False
    """vLLM's ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``: only then does it serve
    ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``."""
    default_rank: int = 8
    """Rank of a simulated adapter whose path holds no ``adapter_config.json`` (PEFT's
    ``LoraConfig`` defaults ``r`` to 8)."""
    load_seconds_per_rank: float = lora_timing.LOAD_SECONDS_PER_RANK
    """Loading an adapter from disk into CPU memory takes this times its rank."""
    swap_in_seconds: float = lora_timing.SWAP_IN_SECONDS
    """Copying an adapter from CPU memory into a GPU slot."""

    def __post_init__(self) -> None:
        if self.max_loras < 1:
            raise ValueError(f"--max-loras must be >= 1, got {self.max_loras}")
        if self.cpu_slots < self.max_loras:
            raise ValueError(
                f"--max-cpu-loras ({self.cpu_slots}) must be >= --max-loras ({self.max_loras})"
            )
        if self.max_lora_rank < 1 or self.default_rank < 1:
            raise ValueError("--max-lora-rank and --default-lora-rank must be >= 1")
        for name in ("load_seconds_per_rank", "swap_in_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        names = [a.name for a in self.modules]
        if len(set(names)) != len(names):
            raise ValueError(f"--lora-modules names an adapter twice: {names}")
        for adapter in self.modules:
            check_rank(adapter.rank, self.max_lora_rank)

    @property
    def cpu_slots(self) -> int:
        return self.max_loras if self.max_cpu_loras is None else self.max_cpu_loras

    def load_seconds(self, rank: int) -> float:
        """E.g. rank 16 at 2 ms per rank -> 0.032 s."""
        return lora_timing.load_seconds(rank, self.load_seconds_per_rank)


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
    lora: LoraConfig | None = None
    """None: LoRA is off (vLLM without ``--enable-lora``)."""
    scheduling_policy: str = FCFS
    """vLLM's ``--scheduling-policy``: ``fcfs`` (arrival order) or ``priority``."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"--max-num-seqs must be >= 1, got {self.max_num_seqs}")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(
                f"--scheduling-policy must be one of {', '.join(SCHEDULING_POLICIES)}, "
                f"got {self.scheduling_policy!r}"
            )
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


@dataclass(slots=True)
class _Waiter:
    adapter: Adapter | None
    priority: int
    seq: int
    """Arrival number: breaks ties between equal priorities in arrival order."""
    granted: asyncio.Future[float] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Engine:
    """Batch slots, the waiting queue, LoRA adapter slots, and per-request token generators."""

    def __init__(self, config: EngineConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.running = 0
        self._waiting: list[_Waiter] = []
        """In admission order: arrival order, or (priority, arrival) under ``priority``."""
        self._arrivals = itertools.count()
        self._requests = 0
        self.adapters: dict[str, Adapter] = {}
        """The served adapters, in load order (``/v1/models`` lists them so)."""
        self._running_adapters: Counter[str] = Counter()
        self._cpu: OrderedDict[str, None] = OrderedDict()
        self._gpu: OrderedDict[str, float] = OrderedDict()
        """Adapter name -> when its swap into the GPU slot is done (clock time)."""
        self.admissions: Counter[tuple[str, str]] = Counter()
        """(adapter, where it was when a request of it got its batch slot) -> requests."""
        for adapter in config.lora.modules if config.lora else ():
            self.register(adapter)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running_adapters(self) -> list[str]:
        """Adapters with a request in the running batch."""
        return sorted(self._running_adapters)

    @property
    def waiting_adapters(self) -> list[str]:
        """Adapters with a request waiting for the batch."""
        return sorted({w.adapter.name for w in self._waiting if w.adapter is not None})

    @property
    def gpu_adapters(self) -> list[str]:
        """Adapters in GPU slots, least recently used first."""
        return list(self._gpu)

    @property
    def cpu_adapters(self) -> list[str]:
        """Adapters in CPU memory, least recently used first."""
        return list(self._cpu)

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

    # ---- adapters ----------------------------------------------------------------------
    def _lora(self) -> LoraConfig:
        if self.config.lora is None:
            # vLLM's model runner says so when asked to add an adapter without --enable-lora.
            raise LoraError("LoRA is not enabled. Use --enable-lora to enable LoRA.", 400,
                            "BadRequestError")  # fmt: skip
        return self.config.lora

    def check_load(self, name: str, rank: int) -> None:
        """Raise :class:`LoraError` as vLLM answers a load it refuses."""
        lora = self._lora()
        if name in self.adapters:
            raise LoraError(
                f"The lora adapter '{name}' has already been loaded.", 400, "InvalidUserInput"
            )
        check_rank(rank, lora.max_lora_rank)

    def register(self, adapter: Adapter) -> None:
        """Serve ``adapter`` from now on; like vLLM's ``add_lora`` it lands in CPU memory.
        The caller has waited out the load time (:meth:`LoraConfig.load_seconds`)."""
        self.check_load(adapter.name, adapter.rank)
        self.adapters[adapter.name] = adapter
        self._into_cpu(adapter.name)

    def unregister(self, name: str) -> None:
        """Stop serving ``name``: new requests for it get 404; requests already accepted
        finish (vLLM's requests carry their adapter with them)."""
        if name not in self.adapters:
            raise LoraError(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")
        del self.adapters[name]
        self._cpu.pop(name, None)
        self._gpu.pop(name, None)

    def _evictable(self, slots: OrderedDict[str, float] | OrderedDict[str, None]) -> str | None:
        """The least recently used adapter in ``slots`` that no running request needs."""
        return next((n for n in slots if n not in self._running_adapters), None)

    def _into_cpu(self, name: str) -> None:
        """Make ``name`` the most recently used adapter in CPU memory. When every resident
        adapter is in use (possible only for a load with ``max_cpu_loras == max_loras``), the
        new one stays on disk until a request needs it."""
        if name in self._cpu:
            self._cpu.move_to_end(name)
            return
        if len(self._cpu) >= self._lora().cpu_slots:
            evicted = self._evictable(self._cpu)
            if evicted is None:
                return
            del self._cpu[evicted]
            self._gpu.pop(evicted, None)  # a GPU slot is a copy of a CPU-resident adapter
        self._cpu[name] = None

    def _activate(self, adapter: Adapter) -> float:
        """Put ``adapter`` in a GPU slot; seconds until it is usable there."""
        lora, now = self._lora(), self.clock()
        if adapter.name in self._gpu:
            self.admissions[(adapter.name, Residency.GPU)] += 1
            self._gpu.move_to_end(adapter.name)
            self._cpu.move_to_end(adapter.name)
            return max(0.0, self._gpu[adapter.name] - now)
        delay = lora.swap_in_seconds
        if adapter.name in self._cpu:
            self.admissions[(adapter.name, Residency.CPU)] += 1
        else:
            self.admissions[(adapter.name, Residency.DISK)] += 1
            delay += lora.load_seconds(adapter.rank)
        self._into_cpu(adapter.name)
        # Some GPU adapter is idle: at most max_loras adapters run, this one among them.
        evicted = self._evictable(self._gpu) if len(self._gpu) >= lora.max_loras else None
        if evicted is not None:
            del self._gpu[evicted]
        self._gpu[adapter.name] = now + delay
        return delay

    # ---- batch slots -------------------------------------------------------------------
    def _fits(self, adapter: Adapter | None) -> bool:
        if adapter is None or adapter.name in self._running_adapters:
            return True
        return len(self._running_adapters) < self._lora().max_loras

    def _admit(self, adapter: Adapter | None) -> float:
        self.running += 1
        if adapter is None:
            return 0.0
        self._running_adapters[adapter.name] += 1
        return self._activate(adapter)

    def _schedule(self) -> None:
        """Admit waiters in order while the batch has room. As in vLLM's scheduler, a waiter
        whose adapter would exceed ``max_loras`` is skipped, not waited for."""
        for waiter in list(self._waiting):
            if self.running >= self.config.max_num_seqs:
                return
            if waiter.granted.done():  # cancelled: acquire() is about to forget it
                continue
            if self._fits(waiter.adapter):
                self._waiting.remove(waiter)
                waiter.granted.set_result(self._admit(waiter.adapter))

    async def acquire(self, adapter: Adapter | None = None, priority: int = 0) -> float:
        """Take a batch slot, waiting when full behind earlier requests (under ``priority``:
        behind those of a lower priority value, then earlier ones of the same). Returns the
        seconds the adapter needs before the request can start (its swap into a GPU slot).
        Raises ValueError, as vLLM does, for a priority other than 0 under ``fcfs``."""
        check_priority(priority, self.config.scheduling_policy)
        waiter = _Waiter(adapter, priority, next(self._arrivals))
        if self.config.scheduling_policy == PRIORITY:
            bisect.insort(self._waiting, waiter, key=lambda w: (w.priority, w.seq))
        else:
            self._waiting.append(waiter)
        self._schedule()
        try:
            return await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release(adapter)  # the slot was handed over just as we were cancelled
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def release(self, adapter: Adapter | None = None) -> None:
        """Free a slot (and the adapter's share of the batch); waiters take it in order."""
        self.running -= 1
        if adapter is not None:
            self._running_adapters[adapter.name] -= 1
            if self._running_adapters[adapter.name] <= 0:
                del self._running_adapters[adapter.name]
        self._schedule()
