"""What a hostile or careless client can do to the gateway, each case once a real defect.

Every gateway here runs with the program's own listeners (see ``conftest.gateway``), and the
engine behind it is a recorder that notes each path it is asked for, so "never forwarded" is
checked where it matters: at the engine. Raw sockets send what an HTTP library would tidy up
(``..`` segments, half-sent headers, a reset mid-upload).
"""

import asyncio
import io
import json
import logging
import socket
import struct

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gateway_fakes import FakeDiscovery, eventually
from snapshots import endpoint, route, snapshot

from tidepool.enginesim import server as sim_app
from tidepool.gateway import auth, inbound

MODEL_KEY = ("default", "llama")
BODY = {"model": "llama", "prompt": "hello", "max_tokens": 3}
ERROR_FIELDS = {"message", "type", "param", "code"}


class Recorder:
    """A stand-in engine: records the raw path of every request and whether it was cut off."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.paths: list[str] = []
        self.cancelled = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        await request.read()
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return web.json_response({"object": "text_completion", "choices": []})


@pytest.fixture
async def recorder():
    servers = []

    async def _start(delay: float = 0.0) -> tuple[Recorder, TestServer]:
        rec = Recorder(delay)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", rec.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return rec, server

    yield _start
    for s in servers:
        await s.close()


async def _with_engine(gateway, recorder, delay: float = 0.0, **config):
    rec, server = await recorder(delay)
    source = FakeDiscovery(snapshot((route(),), (endpoint("a", port=server.port),)))
    return rec, await gateway(source, **config)


def _head(path: str, length: int | None, extra: str = "", method: str = "POST") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"{size}Connection: close\r\n{extra}\r\n"
    ).encode()


async def _raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read the reply until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, body


def _lower(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _openai_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert set(err) == ERROR_FIELDS
    return err


def _count(gw, code: str) -> float:
    total = 0.0
    for metric in gw.gateway.metrics.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["code"] == code:
                total += sample.value
    return total


# ---------------------------------------------------------------- 1. clients that give up


async def test_abandoned_held_requests_free_their_slots_and_never_reach_the_engine(
    gateway, recorder
):
    rec, server = await recorder()
    source = FakeDiscovery(snapshot((route(),)))
    gw = await gateway(source, queue_size=2, queue_timeout=30.0)
    url = f"http://127.0.0.1:{gw.port}/v1/completions"
    async with aiohttp.ClientSession() as s:
        abandoned = [asyncio.create_task(s.post(url, json=BODY)) for _ in range(2)]
        assert await eventually(lambda: gw.gateway.dispatcher.depth(MODEL_KEY) == 2)
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
        assert await eventually(lambda: gw.gateway.dispatcher.depth(MODEL_KEY) == 0), (
            "the clients are gone but their slots are still held"
        )
        fresh = asyncio.create_task(s.post(url, json=BODY))
        assert await eventually(lambda: gw.gateway.dispatcher.depth(MODEL_KEY) == 1)
        source.publish(snapshot((route(),), (endpoint("a", port=server.port),)))
        async with await fresh as r:
            assert r.status == 200
    await asyncio.sleep(0.1)
    assert rec.paths == ["/v1/completions"], "an abandoned request reached the engine"
    assert _count(gw, "499") == 2


async def test_client_that_gives_up_mid_request_cancels_it_upstream(gateway, recorder):
    rec, gw = await _with_engine(gateway, recorder, delay=30.0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
        with pytest.raises(TimeoutError):
            await s.post(f"http://127.0.0.1:{gw.port}/v1/completions", json=BODY)
    assert await eventually(rec.cancelled.is_set), "the engine still works for a gone client"
    assert await eventually(lambda: gw.gateway.dispatcher.total_inflight() == 0)


async def test_client_that_leaves_mid_stream_frees_the_engines_batch_slot(engines, gateway):
    engine = await engines(decode_ms_per_token=50.0)  # 200 tokens: 10 s if nobody stops it
    source = FakeDiscovery(snapshot((route(),), (endpoint("a", port=engine.port),)))
    gw = await gateway(source)
    sim = engine.app[sim_app.SIM_KEY]
    body = {**BODY, "max_tokens": 200, "stream": True}
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"http://127.0.0.1:{gw.port}/v1/completions", json=body)
        await r.content.readline()
        assert sim.engine.running == 1
        r.close()  # the client hangs up mid-stream
    assert await eventually(lambda: sim.engine.running == 0, timeout=2.0)
    assert await eventually(lambda: gw.gateway.dispatcher.total_inflight() == 0)


# ----------------------------------------------------------------------- 2. path traversal


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/../metrics", id="dotdot-to-engine-metrics"),
        pytest.param("/v1/chat/completions/../../../health", id="dotdot-to-engine-health"),
        pytest.param("/v1/%2e%2e/tokenize", id="encoded-dotdot"),
        pytest.param("/v1/load_lora_adapter", id="engine-admin-endpoint-under-v1"),
        pytest.param("/v1/completions/../../sleep", id="dotdot-from-allowed-path"),
        pytest.param("/v1/x/../chat/completions", id="dotdot-back-to-allowed-path"),
        pytest.param("/v1/./completions", id="dot-segment"),
        pytest.param("/v1//completions", id="empty-segment"),
        pytest.param("/v1/completions/", id="trailing-slash"),
        pytest.param("/v1/completions/extra", id="below-allowed-path"),
    ],
)
async def test_only_allowlisted_paths_reach_the_engine(gateway, recorder, path):
    rec, gw = await _with_engine(gateway, recorder)
    body = json.dumps(BODY).encode()
    status, headers, reply = await _raw(gw.port, _head(path, len(body)) + body)
    err = _openai_error(status, headers, reply, 404)
    assert err["code"] == "unknown_url"
    assert _count(gw, "404") == 1
    assert rec.paths == []


@pytest.mark.parametrize("path", sorted(inbound.FORWARDED_PATHS))
async def test_every_allowlisted_path_reaches_the_engine(gateway, recorder, path):
    rec, gw = await _with_engine(gateway, recorder)
    body = json.dumps(BODY).encode()
    status, _, reply = await _raw(gw.port, _head(path, len(body)) + body)
    assert status == 200, reply
    assert rec.paths == [path]


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        pytest.param(
            "/v1/completions?api-version=2024%2D06&q=a+b%26c=d&t=%20&flag",
            "/v1/completions?api-version=2024%2D06&q=a+b%26c=d&t=%20&flag",
            id="query-byte-for-byte",
        ),
        pytest.param("/v1/%63ompletions", "/v1/completions", id="encoded-letter-as-route-path"),
    ],
)
async def test_forwarded_target_is_the_route_path_and_the_query_as_sent(
    gateway, recorder, target, forwarded
):
    rec, gw = await _with_engine(gateway, recorder)
    body = json.dumps(BODY).encode()
    status, _, reply = await _raw(gw.port, _head(target, len(body)) + body)
    assert status == 200, reply
    assert rec.paths == [forwarded]


# --------------------------------------------------------------------- 5. metrics port


async def test_metrics_are_served_on_their_own_port_only(gateway, recorder):
    rec, gw = await _with_engine(gateway, recorder)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{gw.port}/metrics") as r:
            err = _openai_error(r.status, _lower(r.headers), await r.read(), 404)
            assert err["code"] == "unknown_url"
        async with s.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "tidepool_gateway_queue_depth" in await r.text()
        # The metrics port only answers GETs with metrics; it never forwards a request.
        async with s.post(f"http://127.0.0.1:{gw.metrics_port}/v1/completions", json=BODY) as r:
            assert r.status == 405
    assert rec.paths == []


# ------------------------------------------------------------- 6. every error is OpenAI JSON


async def test_deeply_nested_body_is_a_json_400_not_a_traceback(gateway, recorder, caplog):
    rec, gw = await _with_engine(gateway, recorder)
    body = b"[" * 100_000 + b"]" * 100_000
    with caplog.at_level(logging.ERROR):
        status, headers, reply = await _raw(gw.port, _head("/v1/completions", len(body)) + body)
    _openai_error(status, headers, reply, 400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert _count(gw, "400") == 1
    assert rec.paths == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_too_large_body_is_a_json_413_counted_as_413(gateway, recorder, chunked):
    rec, gw = await _with_engine(gateway, recorder, max_body=1024)
    body = json.dumps({**BODY, "prompt": "x" * 4096}).encode()
    if chunked:
        data = _head("/v1/completions", None, "Transfer-Encoding: chunked\r\n")
        data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        data = _head("/v1/completions", len(body)) + body
    err = _openai_error(*await _raw(gw.port, data), 413)
    assert err["code"] == "request_too_large"
    assert _count(gw, "413") == 1
    assert _count(gw, "500") == 0
    assert rec.paths == []


async def test_declared_too_large_body_is_refused_before_it_arrives(gateway, recorder):
    rec, gw = await _with_engine(gateway, recorder, max_body=1024, body_timeout=30.0)
    # 10 MB declared, a few bytes sent, and the client waits: only the declared length can
    # tell, so an answer (and a closed connection) within 3 s means the body was never awaited.
    data = _head("/v1/completions", 10 * 1024 * 1024) + b'{"model": "llama", '
    err = _openai_error(*await _raw(gw.port, data, timeout=3.0), 413)
    assert err["code"] == "request_too_large"
    assert _count(gw, "413") == 1
    assert rec.paths == []


async def test_client_reset_during_upload_is_quiet(gateway, recorder, caplog):
    rec, gw = await _with_engine(gateway, recorder)
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(_head("/v1/completions", 100_000) + b'{"model": "ll')
    await writer.drain()
    await asyncio.sleep(0.1)
    # SO_LINGER 0: closing sends a RST, as a crashing or killed client does.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    assert await eventually(lambda: _count(gw, "499") == 1)
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert rec.paths == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/nope", 404, id="unknown-path"),
        pytest.param("POST", "/metrics", 404, id="metrics-not-on-the-api-port"),
        pytest.param("GET", "/v1/completions", 405, id="wrong-method"),
    ],
)
async def test_router_errors_are_openai_json(gateway, recorder, method, path, status):
    _, gw = await _with_engine(gateway, recorder)
    _openai_error(*await _raw(gw.port, _head(path, 0, method=method)), status)
    assert _count(gw, str(status)) == 1


# --------------------------------------------------------------------------- 7. tenancy


async def test_other_tenants_model_is_the_same_404_as_an_unknown_one(gateway, recorder):
    keys = auth.KeyRing.parse({"sk-acme": {"tenant": "acme"}, "sk-beta": {"tenant": "beta"}})
    rec, server = await recorder()
    source = FakeDiscovery(snapshot((route(tenant="acme"),), (endpoint("a", port=server.port),)))
    gw = await gateway(source, keys=keys)
    replies = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-beta"}) as s:
        for model in ("llama", "no-such-model"):
            body = {**BODY, "model": model}
            async with s.post(f"http://127.0.0.1:{gw.port}/v1/completions", json=body) as r:
                text = (await r.text()).replace(model, "<model>")
                replies.append((r.status, text))
    assert replies[0] == replies[1]
    assert replies[0][0] == 404
    assert rec.paths == []


async def test_default_body_limit_refuses_a_31mb_prompt(gateway, recorder):
    rec, gw = await _with_engine(gateway, recorder)
    body = io.BytesIO(json.dumps({**BODY, "prompt": "x" * (31 * 1024 * 1024)}).encode())
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{gw.port}/v1/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        _openai_error(r.status, _lower(r.headers), await r.read(), 413)
    assert rec.paths == []


@pytest.mark.parametrize(
    ("payload", "allowed"),
    [
        pytest.param({"prompt": "x" * 100}, True, id="prompt-at-limit"),
        pytest.param({"prompt": "x" * 101}, False, id="prompt-over-limit"),
        pytest.param({"prompt": ["x" * 60, "y" * 60]}, False, id="prompt-list-summed"),
        pytest.param(
            {"messages": [{"role": "user", "content": "x" * 101}]}, False, id="chat-message"
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 101}]}]},
            False,
            id="chat-content-parts",
        ),
        pytest.param({"input": "x" * 101}, False, id="embeddings-input"),
    ],
)
async def test_prompt_size_limit(gateway, recorder, payload, allowed):
    rec, gw = await _with_engine(gateway, recorder, max_prompt_chars=100)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{gw.port}/v1/completions", json={"model": "llama", **payload}
        ) as r,
    ):
        if allowed:
            assert r.status == 200
        else:
            err = _openai_error(r.status, _lower(r.headers), await r.read(), 413)
            assert err["code"] == "prompt_too_long"
    assert len(rec.paths) == (1 if allowed else 0)


async def test_slow_headers_are_cut_off(gateway, recorder):
    _, gw = await _with_engine(gateway, recorder, header_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\n")  # and never the rest
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 3.0) == b""
    finally:
        writer.close()


async def test_slow_body_gets_a_json_408(gateway, recorder):
    rec, gw = await _with_engine(gateway, recorder, body_timeout=0.3)
    data = _head("/v1/completions", 1000) + b'{"model": "llama", '  # the rest never comes
    err = _openai_error(*await _raw(gw.port, data, timeout=3.0), 408)
    assert err["code"] == "request_timeout"
    assert _count(gw, "408") == 1
    assert rec.paths == []
