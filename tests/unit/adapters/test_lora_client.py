"""HttpLoraClient against a real engine-sim (in-process, LoRA and runtime updating on): loads,
unloads, the adapters /v1/models lists, the queue from /metrics, and vLLM's refusals as messages.

The client is synchronous (it runs in Kopf's executor threads), so each call runs in a worker
thread while the simulator serves on the test's event loop.
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tidepool.adapters.lora import HttpLoraClient
from tidepool.enginesim import engine
from tidepool.enginesim import server as sim_app

FAST = {"load_delay": 0.0, "prefill_ms_per_1k_tokens": 1.0, "decode_ms_per_token": 1.0}
SQL = engine.Adapter("sql", "/adapters/sql", 8)


async def _sim(lora: engine.LoraConfig | None) -> TestServer:
    cfg = engine.EngineConfig(model="base", lora=lora, **FAST)
    server = TestServer(sim_app.create_app(cfg), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    """An engine-sim with ``sql`` loaded at start and runtime LoRA updating allowed."""
    server = await _sim(
        engine.LoraConfig(max_loras=2, max_cpu_loras=4, modules=(SQL,), runtime_updating=True)
    )
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def _rank_dir(tmp: Path, rank: int) -> str:
    (tmp / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return str(tmp)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


@pytest.mark.parametrize(
    ("steps", "answers", "loaded"),
    [
        pytest.param([("load", "new", "/adapters/new")], [None], {"sql", "new"}, id="load"),
        pytest.param(
            [("load", "sql", "/elsewhere")],
            ["The lora adapter 'sql' has already been loaded."],
            {"sql"},
            id="load-a-loaded-name",
        ),
        pytest.param(
            [("load", "big", "RANK64")],
            ["LoRA rank 64 is greater than max_lora_rank 16."],
            {"sql"},
            id="rank-over-max-lora-rank",
        ),
        pytest.param([("unload", "sql")], [None], set(), id="unload"),
        pytest.param(
            [("unload", "nope")],
            ["The lora adapter 'nope' cannot be found."],
            {"sql"},
            id="unload-an-unknown-name",
        ),
        pytest.param(
            [("load", "new", "/adapters/new"), ("unload", "new")],
            [None, None],
            {"sql"},
            id="load-then-unload",
        ),
    ],
)
async def test_load_unload_and_loaded(
    endpoint: str,
    tmp_path: Path,
    steps: list[tuple[str, ...]],
    answers: list[str | None],
    loaded: set[str],
) -> None:
    client = HttpLoraClient()
    got = []
    for op, *args in steps:
        if op == "load":
            name, path = args
            path = _rank_dir(tmp_path, 64) if path == "RANK64" else path
            got.append(await _call(client.load, endpoint, name, path))
        else:
            got.append(await _call(client.unload, endpoint, *args))

    assert got == answers
    assert await _call(client.loaded, endpoint) == frozenset(loaded)


async def test_the_queue_comes_from_vllms_gauges(endpoint: str) -> None:
    assert await _call(HttpLoraClient().queue, endpoint) == 0.0


async def test_without_runtime_updating_a_load_is_refused_not_raised() -> None:
    server = await _sim(engine.LoraConfig(runtime_updating=False))
    try:
        url = str(server.make_url("")).rstrip("/")
        client = HttpLoraClient()
        answer = await _call(client.load, url, "new", "/adapters/new")
        listed = await _call(client.loaded, url)
    finally:
        await server.close()

    assert answer is not None
    assert "404" in answer or "Not Found" in answer
    assert listed == frozenset()


async def test_an_unreachable_replica_is_a_message_and_unknowns() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = HttpLoraClient(read_timeout=1.0, load_timeout=1.0)
        answer = await _call(client.load, url, "new", "/adapters/new")
        listed = await _call(client.loaded, url)
        queue = await _call(client.queue, url)

    assert answer is not None
    assert answer.startswith(f"engine unreachable at {url}/v1/load_lora_adapter")
    assert (listed, queue) == (None, None)
