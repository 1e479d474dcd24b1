"""Latency model, token counting and the FIFO batch scheduler."""

import asyncio

import pytest

from tidepool.enginesim import engine

CFG = engine.EngineConfig(model="m", prefill_ms_per_1k_tokens=40, decode_ms_per_token=20)


@pytest.mark.parametrize(
    ("prompt_tokens", "seconds"),
    [pytest.param(2000, 0.08, id="2k-tokens-at-40ms-per-1k"), pytest.param(0, 0.0, id="empty")],
)
def test_prefill_is_proportional_to_prompt(prompt_tokens, seconds):
    assert engine.prefill_seconds(prompt_tokens, CFG) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("running", "seconds"),
    [
        pytest.param(1, 0.020, id="alone"),
        pytest.param(11, 0.022, id="11-running-10pct-slower"),
        pytest.param(0, 0.020, id="never-faster-than-alone"),
    ],
)
def test_decode_step_slows_with_batch(running, seconds):
    assert engine.decode_step_seconds(running, CFG) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [
        pytest.param("abcdefgh", 2, id="four-chars-per-token"),
        pytest.param("", 1, id="at-least-one"),
        pytest.param([1, 2, 3], 3, id="token-ids"),
        pytest.param(["abcd", "abcdefgh"], 3, id="list-of-strings"),
    ],
)
def test_count_prompt_tokens(prompt, tokens):
    assert engine.count_prompt_tokens(prompt) == tokens


def test_chat_tokens_include_template_overhead():
    assert engine.count_chat_tokens([{"role": "user", "content": "abcdefgh"}]) == 6


def test_seeded_output_is_reproducible():
    def draws():
        e = engine.Engine(engine.EngineConfig(model="m", seed=7))
        rngs = [e.rng_for_next_request() for _ in range(3)]
        return [(e.output_length(None, r), e.token(r)) for r in rngs]

    assert draws() == draws()
    e = engine.Engine(CFG)
    assert e.output_length(5, e.rng_for_next_request()) == 5


@pytest.mark.parametrize("bad", [{"max_num_seqs": 0}, {"decode_ms_per_token": -1}], ids=str)
def test_config_rejects_bad_values_naming_them(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).replace("_", "-") + "|" + next(iter(bad))):
        engine.EngineConfig(model="m", **bad)


async def test_scheduler_caps_batch_and_serves_waiters_fifo():
    e = engine.Engine(engine.EngineConfig(model="m", max_num_seqs=2))
    await e.acquire()
    await e.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await e.acquire()
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert (e.running, e.waiting) == (2, 3)
    for _ in range(3):
        e.release()
        await asyncio.sleep(0)
    assert order == [0, 1, 2]
    assert e.running == 2
    await asyncio.gather(*tasks)


# ---- LoRA ---------------------------------------------------------------------------------

A8, B16, C8 = (
    engine.Adapter("a", "/a", 8),
    engine.Adapter("b", "/b", 16),
    engine.Adapter("c", "/c", 8),
)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        pytest.param({"max_loras": 0}, "--max-loras", id="no-slots"),
        pytest.param({"max_loras": 4, "max_cpu_loras": 2}, "--max-cpu-loras", id="cpu-below-gpu"),
        pytest.param(
            {"modules": (engine.Adapter("x", "/x", 32),)},
            "LoRA rank 32 is greater than max_lora_rank 16",
            id="module-rank-over-max",
        ),
        pytest.param({"modules": (A8, A8)}, "twice", id="module-named-twice"),
    ],
)
def test_lora_config_rejects_what_vllm_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        engine.LoraConfig(**bad)


@pytest.mark.parametrize(
    ("lora", "cpu_slots"),
    [
        pytest.param(engine.LoraConfig(), 1, id="vllm-defaults-one-slot"),
        pytest.param(engine.LoraConfig(max_loras=3), 3, id="cpu-defaults-to-max-loras"),
        pytest.param(engine.LoraConfig(max_loras=2, max_cpu_loras=5), 5, id="cpu-given"),
    ],
)
def test_cpu_slots_default_to_max_loras(lora, cpu_slots):
    assert lora.cpu_slots == cpu_slots


@pytest.mark.parametrize(
    ("rank", "seconds"),
    [pytest.param(8, 0.016, id="rank-8"), pytest.param(64, 0.128, id="rank-64")],
)
def test_load_time_grows_with_rank(rank, seconds):
    assert engine.LoraConfig().load_seconds(rank) == pytest.approx(seconds)


class _Clock:
    """Simulated time, set by the test (the engine reads it to know when a swap is done)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


LOAD, SWAP = 0.01, 0.001  # seconds per rank, seconds per swap-in


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            [("a", 0.0, 8 * LOAD + SWAP, ["a"], ["c", "a"])],
            id="evicted-from-cpu-loads-from-disk-then-swaps-in",
        ),
        pytest.param(
            [("c", 0.0, SWAP, ["c"], ["b", "c"])],
            id="in-cpu-only-swaps-in",
        ),
        pytest.param(
            [("c", 0.0, SWAP, ["c"], ["b", "c"]), ("c", 1.0, 0.0, ["c"], ["b", "c"])],
            id="on-gpu-is-free",
        ),
        pytest.param(
            [("c", 0.0, SWAP, ["c"], ["b", "c"]), ("c", SWAP / 2, SWAP / 2, ["c"], ["b", "c"])],
            id="mid-swap-waits-the-rest",
        ),
        pytest.param(
            [
                ("c", 0.0, SWAP, ["c"], ["b", "c"]),
                ("b", 1.0, SWAP, ["b"], ["c", "b"]),
                ("a", 2.0, 8 * LOAD + SWAP, ["a"], ["b", "a"]),
            ],
            id="lru-gpu-slot-swaps-out-lru-cpu-slot-drops",
        ),
    ],
)
async def test_gpu_and_cpu_slots_swap_least_recently_used(steps):
    """max_loras=1, max_cpu_loras=2; a, b, c loaded in that order, so a is already out of CPU
    memory. Each step: at a time, a request of an adapter runs and finishes; what it waited
    for its adapter, then the GPU and CPU residents, least recently used first."""
    clock = _Clock()
    lora = engine.LoraConfig(
        max_cpu_loras=2, modules=(A8, B16, C8), load_seconds_per_rank=LOAD, swap_in_seconds=SWAP
    )
    e = engine.Engine(engine.EngineConfig(model="m", lora=lora), clock)
    assert e.cpu_adapters == ["b", "c"]
    for name, at, delay, gpu, cpu in steps:
        clock.now = 100.0 + at
        adapter = e.adapters[name]
        assert await e.acquire(adapter) == pytest.approx(delay)
        e.release(adapter)
        assert (e.gpu_adapters, e.cpu_adapters) == (gpu, cpu)


async def test_admissions_count_where_each_requests_adapter_was():
    """Same slots as above: a is on disk, b and c in CPU memory; one GPU slot."""
    lora = engine.LoraConfig(max_cpu_loras=2, modules=(A8, B16, C8))
    e = engine.Engine(engine.EngineConfig(model="m", lora=lora))
    for adapter in (A8, A8, C8, A8, A8):
        await e.acquire(adapter)
        e.release(adapter)
    gpu, cpu, disk = engine.Residency.GPU, engine.Residency.CPU, engine.Residency.DISK
    assert e.admissions == {("a", disk): 1, ("a", gpu): 2, ("c", cpu): 1, ("a", cpu): 1}


async def test_at_most_max_loras_adapters_run_and_others_go_past():
    """vLLM's scheduler skips a request whose adapter would be one too many; requests of
    running adapters and of the base model are scheduled past it."""
    lora = engine.LoraConfig(max_loras=1, max_cpu_loras=2, modules=(A8, B16))
    e = engine.Engine(engine.EngineConfig(model="m", max_num_seqs=8, lora=lora))
    await e.acquire(A8)
    b_waits = asyncio.create_task(e.acquire(B16))
    await asyncio.sleep(0)
    await e.acquire(None)  # the base model
    await e.acquire(A8)
    assert (e.running, e.waiting) == (3, 1)
    assert (e.running_adapters, e.waiting_adapters) == (["a"], ["b"])
    e.release(A8)
    assert not b_waits.done()  # a still runs
    e.release(A8)
    await b_waits
    assert (e.running, e.waiting) == (2, 0)
    assert (e.running_adapters, e.waiting_adapters) == (["b"], [])


async def test_a_cancelled_adapter_waiter_leaves_the_queue():
    lora = engine.LoraConfig(modules=(A8, B16), max_cpu_loras=2)
    e = engine.Engine(engine.EngineConfig(model="m", lora=lora))
    await e.acquire(A8)
    waiter = asyncio.create_task(e.acquire(B16))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (e.waiting, e.waiting_adapters) == (0, [])
    e.release(A8)
    assert (e.running, e.running_adapters) == (0, [])


@pytest.mark.parametrize(
    ("call", "message", "status"),
    [
        pytest.param(lambda e: e.check_load("a", 8), "has already been loaded", 400, id="twice"),
        pytest.param(
            lambda e: e.check_load("z", 64), "LoRA rank 64 is greater than max_lora_rank 16",
            400, id="rank-over-max",
        ),
        pytest.param(lambda e: e.unregister("z"), "cannot be found", 404, id="unload-unknown"),
    ],
)  # fmt: skip
def test_loads_and_unloads_vllm_refuses(call, message, status):
    e = engine.Engine(engine.EngineConfig(model="m", lora=engine.LoraConfig(modules=(A8,))))
    with pytest.raises(engine.LoraError, match=message) as info:
        call(e)
    assert info.value.status == status


def test_without_enable_lora_nothing_loads():
    e = engine.Engine(engine.EngineConfig(model="m"))
    with pytest.raises(engine.LoraError, match="--enable-lora"):
        e.register(A8)
