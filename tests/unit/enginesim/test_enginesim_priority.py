"""vLLM's ``--scheduling-policy`` and the request ``priority`` (vLLM PR #5958): under
``priority`` waiters are admitted by (priority, arrival); under ``fcfs`` (vLLM's default) by
arrival, and a priority other than 0 is refused with vLLM's 400."""

import argparse
import asyncio

import aiohttp
import pytest

from tidepool.enginesim import engine, program, server

VLLM_FCFS_MESSAGE = "Got priority 3 but Priority scheduling is not enabled."


async def _admission_order(policy: str, priorities: list[int]) -> list[int]:
    """One batch slot, held by a first request; then requests arrive with ``priorities`` and
    the slot is freed one request at a time. Returns the arrival indexes in the order the
    requests got the slot."""
    e = engine.Engine(engine.EngineConfig(model="m", max_num_seqs=1, scheduling_policy=policy))
    await e.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await e.acquire(None, priority=priorities[i])
        order.append(i)

    tasks = []
    for i in range(len(priorities)):
        tasks.append(asyncio.create_task(wait(i)))
        await asyncio.sleep(0)  # each one queued before the next arrives
    assert (e.running, e.waiting) == (1, len(priorities))
    for _ in range(len(priorities) + 1):
        e.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return order


A, B = engine.Adapter("a", "/a", 8), engine.Adapter("b", "/b", 8)


@pytest.mark.parametrize(
    ("policy", "priorities", "expected"),
    [
        pytest.param("priority", [5, 0, 5, 1], [1, 3, 0, 2], id="priority-lower-first-ties-fifo"),
        pytest.param("priority", [0, 0, 0], [0, 1, 2], id="priority-all-equal-is-arrival"),
        pytest.param("priority", [3, -2, 3, -2], [1, 3, 0, 2], id="priority-negative-first"),
        pytest.param("fcfs", [0, 0, 0, 0], [0, 1, 2, 3], id="fcfs-arrival-order"),
    ],
)
async def test_waiters_are_admitted_in_the_policys_order(policy, priorities, expected):
    assert await _admission_order(policy, priorities) == expected


async def test_priority_keeps_skipping_a_waiter_whose_adapter_does_not_fit():
    """max_loras 1, two batch slots: while an ``a`` request runs, the most urgent waiter (of
    ``b``) is skipped, not waited for, and an ``a`` request of a lower priority goes past."""
    lora = engine.LoraConfig(modules=(A, B))
    cfg = engine.EngineConfig(model="m", max_num_seqs=2, scheduling_policy="priority", lora=lora)
    e = engine.Engine(cfg)
    await e.acquire(A)
    await e.acquire(A)
    order: list[str] = []

    async def wait(name: str, adapter: engine.Adapter, priority: int) -> None:
        await e.acquire(adapter, priority)
        order.append(name)

    tasks = [
        asyncio.create_task(wait("b-urgent", B, 0)),
        asyncio.create_task(wait("a-late", A, 9)),
    ]
    await asyncio.sleep(0)
    e.release(A)  # a still runs: b does not fit, a-late does
    await asyncio.sleep(0)
    assert order == ["a-late"]
    e.release(A)
    e.release(A)  # no a left: b gets in
    await asyncio.gather(*tasks)
    assert order == ["a-late", "b-urgent"]


@pytest.mark.parametrize(
    ("policy", "priority", "error"),
    [
        pytest.param("fcfs", 3, VLLM_FCFS_MESSAGE, id="fcfs-refuses-nonzero"),
        pytest.param("fcfs", 0, None, id="fcfs-takes-zero"),
        pytest.param("priority", 3, None, id="priority-takes-any"),
    ],
)
async def test_engine_refuses_a_priority_as_vllm_does(policy, priority, error):
    e = engine.Engine(engine.EngineConfig(model="m", scheduling_policy=policy))
    if error is None:
        assert await e.acquire(None, priority) == 0.0
        assert e.running == 1
    else:
        with pytest.raises(ValueError, match=error):
            await e.acquire(None, priority)
        assert (e.running, e.waiting) == (0, 0)


def test_config_rejects_an_unknown_policy_naming_flag_value_and_choices():
    with pytest.raises(ValueError, match=r"--scheduling-policy.*fcfs, priority.*'bogus'"):
        engine.EngineConfig(model="m", scheduling_policy="bogus")


# ---- the flag -----------------------------------------------------------------------------


def _parse(*argv):
    parser = argparse.ArgumentParser()
    program.configure(parser)
    return parser.parse_args(["--model", "m", *argv])


@pytest.mark.parametrize(
    ("argv", "policy"),
    [
        pytest.param([], "fcfs", id="vllm-default-fcfs"),
        pytest.param(["--scheduling-policy", "priority"], "priority", id="priority"),
        pytest.param(["--scheduling-policy", "fcfs"], "fcfs", id="fcfs"),
    ],
)
def test_scheduling_policy_flag_reaches_the_config(argv, policy):
    assert program.config_from_args(_parse(*argv), {}).scheduling_policy == policy


def test_an_unknown_scheduling_policy_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse("--scheduling-policy", "bogus")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--scheduling-policy" in err
    assert "invalid choice: 'bogus'" in err
    assert "'fcfs', 'priority'" in err


# ---- over HTTP ----------------------------------------------------------------------------


def _url(srv, path):
    return f"http://127.0.0.1:{srv.port}{path}"


BODIES = {
    "/v1/completions": {"model": "m", "prompt": "hi", "max_tokens": 2},
    "/v1/chat/completions": {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    },
}


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize(
    ("policy", "priority", "error"),
    [
        pytest.param("fcfs", 3, VLLM_FCFS_MESSAGE, id="fcfs-nonzero-vllm-400"),
        pytest.param("fcfs", "high", "priority must be an integer, got 'high'", id="string"),
        pytest.param("priority", "high", "priority", id="string-under-priority"),
        pytest.param("fcfs", True, "priority must be an integer, got True", id="bool"),
        pytest.param("priority", 1.5, "priority must be an integer, got 1.5", id="float"),
        pytest.param("fcfs", 0, None, id="fcfs-zero-ok"),
        pytest.param("priority", 7, None, id="priority-seven-ok"),
        pytest.param("priority", -1, None, id="priority-negative-ok"),
    ],
)
async def test_server_answers_priority_as_vllm_does(start, path, policy, priority, error):
    """200, or 400 in OpenAI's error shape with ``error`` in its message."""
    srv = await start(scheduling_policy=policy)
    body = BODIES[path] | {"priority": priority}
    async with aiohttp.ClientSession() as s, s.post(_url(srv, path), json=body) as r:
        assert r.status == (200 if error is None else 400)
        data = await r.json()
    if error is None:
        assert data["usage"]["completion_tokens"] == 2
    else:
        assert set(data["error"]) == {"message", "type", "param", "code"}
        assert error in data["error"]["message"]
        assert data["error"]["type"] == "BadRequestError"


async def test_server_admits_waiting_requests_by_priority(start):
    """One batch slot held by a first request; a priority-5 request arrives, then a priority-0
    one: the later, more urgent one is served first."""
    srv = await start(scheduling_policy="priority", max_num_seqs=1, decode_ms_per_token=5.0)
    eng = srv.app[server.SIM_KEY].engine
    done: list[str] = []

    async def post(s: aiohttp.ClientSession, name: str, priority: int, tokens: int) -> None:
        body = BODIES["/v1/completions"] | {"priority": priority, "max_tokens": tokens}
        async with s.post(_url(srv, "/v1/completions"), json=body) as r:
            assert r.status == 200
            await r.read()
        done.append(name)

    async def until(cond) -> None:
        for _ in range(1000):
            if cond():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("the simulator never got there")

    async with aiohttp.ClientSession() as s:
        first = asyncio.create_task(post(s, "first", 0, 20))
        await until(lambda: eng.running == 1)
        late = asyncio.create_task(post(s, "five", 5, 2))
        await until(lambda: eng.waiting == 1)
        urgent = asyncio.create_task(post(s, "zero", 0, 2))
        await until(lambda: eng.waiting == 2 or done)
        assert not done, "the first request ended before both others queued"
        await asyncio.gather(first, late, urgent)
    assert done == ["first", "zero", "five"]
