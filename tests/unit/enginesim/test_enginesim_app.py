"""The simulator over HTTP, in-process on 127.0.0.1: OpenAI shapes, health, metrics, drain."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest


def _url(server, path):
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.mark.parametrize(
    ("path", "body", "obj"),
    [
        pytest.param(
            "/v1/completions",
            {"model": "m", "prompt": "hi", "max_tokens": 4},
            "text_completion",
            id="completions",
        ),
        pytest.param(
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            "chat.completion",
            id="chat",
        ),
    ],
)
async def test_whole_response_has_openai_shape_and_usage(start, path, body, obj):
    server = await start()
    async with aiohttp.ClientSession() as s, s.post(_url(server, path), json=body) as r:
        assert r.status == 200
        data = await r.json()
    assert data["object"] == obj
    assert data["usage"]["completion_tokens"] == 4
    assert data["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_stream_is_sse_with_done_and_usage(start, path):
    server = await start()
    body = {"model": "m", "prompt": "hi", "messages": [{"role": "user", "content": "x"}]}
    body |= {"max_tokens": 5, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(_url(server, path), json=body) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        text = (await r.read()).decode()
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 6  # five tokens and the final chunk
    assert chunks[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"model": "other", "prompt": "x"}, 404, id="wrong-model-404"),
        pytest.param({"model": "m"}, 400, id="no-prompt-400"),
    ],
)
async def test_bad_requests(start, body, status):
    server = await start()
    async with (
        aiohttp.ClientSession() as s,
        s.post(_url(server, "/v1/completions"), json=body) as r,
    ):
        assert r.status == status
        assert set((await r.json())["error"]) == {"message", "type", "param", "code"}


async def test_health_503_until_loaded(start):
    server = await start(load_delay=0.3)
    async with aiohttp.ClientSession() as s:
        async with s.get(_url(server, "/health")) as r:
            assert r.status == 503
        async with s.post(_url(server, "/v1/completions"), json={"prompt": "x"}) as r:
            assert r.status == 503
        await asyncio.sleep(0.35)
        async with s.get(_url(server, "/health")) as r:
            assert r.status == 200
        async with s.get(_url(server, "/v1/models")) as r:
            assert (await r.json())["data"][0]["id"] == "m"


async def test_batch_cap_queues_and_metrics_use_vllm_names(start):
    server = await start(max_num_seqs=2, decode_ms_per_token=20.0)
    body = {"model": "m", "prompt": "x" * 400, "max_tokens": 10}
    async with aiohttp.ClientSession() as s:
        tasks = [
            asyncio.create_task(s.post(_url(server, "/v1/completions"), json=body))
            for _ in range(5)
        ]
        await asyncio.sleep(0.05)
        async with s.get(_url(server, "/metrics")) as r:
            text = await r.text()
        assert 'vllm:num_requests_running{model_name="m"} 2.0' in text
        assert 'vllm:num_requests_waiting{model_name="m"} 3.0' in text
        for t in tasks:
            (await t).release()
        await asyncio.sleep(0.3)
        async with s.get(_url(server, "/metrics")) as r:
            text = await r.text()
    for name in (
        "vllm:gpu_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert name in text
    assert 'vllm:prompt_tokens_total{model_name="m"} 500.0' in text
    assert 'vllm:generation_tokens_total{model_name="m"} 50.0' in text


async def test_shutdown_finishes_inflight_stream(start):
    server = await start(decode_ms_per_token=10.0)
    health = _url(server, "/health")
    body = {"model": "m", "prompt": "x", "max_tokens": 30, "stream": True}
    async with aiohttp.ClientSession() as s:
        r = await s.post(_url(server, "/v1/completions"), json=body)
        await r.content.readline()  # the stream has started
        closing = asyncio.create_task(server.close())
        text = (await r.read()).decode()
        await closing
    assert text.rstrip().endswith("data: [DONE]")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as s:
            await s.get(health)


def test_sigterm_drains_then_exits(unused_tcp_port):
    """The real program: SIGTERM mid-stream, the stream still ends with [DONE], exit code 0."""
    env = {**os.environ, "PYTHONPATH": "operator"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidepool", "engine-sim", "--host", "127.0.0.1",
         "--port", str(unused_tcp_port), "--model", "m", "--load-delay", "0s",
         "--decode-ms-per-token", "20"],
        stdout=subprocess.PIPE, env=env, cwd=os.path.join(os.path.dirname(__file__), "../../.."),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", unused_tcp_port, timeout=10)
        body = json.dumps({"model": "m", "prompt": "x", "max_tokens": 25, "stream": True})
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        first = resp.readline()
        proc.send_signal(signal.SIGTERM)
        rest = resp.read()
        assert first.startswith(b"data: ")
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert proc.wait(timeout=10) == 0
        conn.close()
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def unused_tcp_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "stream", [pytest.param(True, id="stream"), pytest.param(False, id="whole")]
)
async def test_a_client_that_goes_away_frees_its_batch_slot(start, stream):
    """A leaked slot reads as a request running forever: the autoscaler would never idle."""
    server = await start(max_num_seqs=4, decode_ms_per_token=50.0)
    body = {"model": "m", "prompt": "hi", "max_tokens": 200, "stream": stream}
    async with aiohttp.ClientSession() as s:
        task = asyncio.create_task(s.post(_url(server, "/v1/completions"), json=body))
        await asyncio.sleep(0.3)
        task.cancel()  # the client hangs up mid-request
        if stream and not task.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                (await task).close()
        await asyncio.sleep(0.5)
        async with s.get(_url(server, "/metrics")) as r:
            text = await r.text()

    assert 'vllm:num_requests_running{model_name="m"} 0.0' in text
