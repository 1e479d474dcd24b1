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
