"""The gateway in-process in front of real engine simulators on 127.0.0.1."""

import asyncio
import json

import aiohttp
import pytest
from gateway_fakes import FakeDiscovery, FakeWaker
from snapshots import HYBRID_POOLS, endpoint, route, snapshot

from tidepool.gateway import auth, proxy

BODY = {"model": "llama", "prompt": "hello", "max_tokens": 3}


def _ep(name, server, pool="shared", deployment="llama"):
    return endpoint(name, port=server.port, pool=pool, deployment=deployment)


async def _post(session, gw, body=BODY, headers=None, path="/v1/completions"):
    async with session.post(
        f"http://127.0.0.1:{gw.port}{path}", json=body, headers=headers or {}
    ) as r:
        return r.status, r.headers.copy(), await r.read()


async def _settle():
    for _ in range(3):
        await asyncio.sleep(0)


async def test_routes_by_model_and_404_for_unknown(engines, gateway):
    a = await engines("llama")
    b = await engines("qwen")
    source = FakeDiscovery(
        snapshot((route("llama"), route("qwen")), (_ep("l1", a), _ep("q1", b, deployment="qwen")))
    )
    gw = await gateway(source)
    async with aiohttp.ClientSession() as s:
        status, headers, body = await _post(s, gw)
        assert status == 200
        assert headers[proxy.BACKEND_HEADER] == "default/l1"
        status, headers, _ = await _post(s, gw, {**BODY, "model": "qwen"})
        assert headers[proxy.BACKEND_HEADER] == "default/q1"
        status, _, body = await _post(s, gw, {**BODY, "model": "nope"})
        assert status == 404
        assert json.loads(body)["error"]["code"] == "model_not_found"
        status, _, body = await _post(s, gw, {"prompt": "x"})
        assert status == 400


async def test_least_outstanding_spreads_concurrent_requests(engines, gateway):
    a, b = await engines(decode_ms_per_token=20.0), await engines(decode_ms_per_token=20.0)
    gw = await gateway(FakeDiscovery(snapshot((route(),), (_ep("a", a), _ep("b", b)))))
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *[_post(s, gw, {**BODY, "max_tokens": 10}) for _ in range(6)]
        )
    served = [h[proxy.BACKEND_HEADER] for _, h, _ in results]
    assert sorted(served) == ["default/a"] * 3 + ["default/b"] * 3


async def test_streaming_passes_chunks_through_as_they_come(engines, gateway):
    e = await engines(decode_ms_per_token=30.0)
    gw = await gateway(FakeDiscovery(snapshot((route(),), (_ep("a", e),))))
    body = {**BODY, "max_tokens": 8, "stream": True}
    arrivals = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{gw.port}/v1/completions", json=body) as r,
    ):
        assert r.headers["Content-Type"].startswith("text/event-stream")
        loop = asyncio.get_running_loop()
        text = b""
        async for chunk in r.content.iter_any():
            arrivals.append(loop.time())
            text += chunk
    assert text.rstrip().endswith(b"data: [DONE]")
    # Not buffered: bytes arrived spread over the ~210 ms of decoding, not in one lump.
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] > 0.1
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as r,
    ):
        metrics = await r.text()
    assert (
        'tidepool_gateway_tokens_total{kind="completion",model="llama",'
        'namespace="default",tenant="default"} 8.0' in metrics
    )


async def test_held_request_released_when_endpoint_appears_and_wakes_once(engines, gateway):
    e = await engines()
    source, waker = FakeDiscovery(snapshot((route(),))), FakeWaker()
    gw = await gateway(source, waker, queue_timeout=10.0)
    async with aiohttp.ClientSession() as s:
        pending = [asyncio.create_task(_post(s, gw)) for _ in range(3)]
        await asyncio.sleep(0.1)
        async with s.get(f"http://127.0.0.1:{gw.metrics_port}/metrics") as r:
            assert (
                'tidepool_gateway_queue_depth{model="llama",namespace="default"} 3.0'
                in await r.text()
            )
        assert [c[:2] for c in waker.calls] == [("default", "llama")]  # rate-limited to one
        source.publish(snapshot((route(),), (_ep("a", e),)))
        results = await asyncio.gather(*pending)
        assert (await _post(s, gw))[0] == 200  # warm: no wake, nothing more to report
        for _ in range(100):
            if waker.reports:
                break
            await asyncio.sleep(0.01)
    assert [r[0] for r in results] == [200, 200, 200]
    # The first response routed after the wake is reported once, with that wake's time: the
    # last mark of the cold start the operator measures.
    [(namespace, name, wake_at, routed_at)] = waker.reports
    assert (namespace, name, wake_at) == ("default", "llama", waker.calls[0][2])
    assert routed_at > wake_at


@pytest.mark.parametrize(
    ("queue_size", "queue_timeout", "code"),
    [
        pytest.param(0, 5.0, "queue_full", id="queue-full-503"),
        pytest.param(5, 0.2, "queue_timeout", id="deadline-passed-503"),
    ],
)
async def test_503_when_nothing_ready(gateway, queue_size, queue_timeout, code):
    gw = await gateway(
        FakeDiscovery(snapshot((route(),))), queue_size=queue_size, queue_timeout=queue_timeout
    )
    async with aiohttp.ClientSession() as s:
        status, _, body = await _post(s, gw)
    assert status == 503
    err = json.loads(body)["error"]
    assert err["code"] == code
    assert set(err) == {"message", "type", "param", "code"}


async def test_held_request_survives_routing_table_changes(engines, gateway):
    e = await engines()
    source = FakeDiscovery(snapshot((route(),)))
    gw = await gateway(source, queue_timeout=10.0)
    async with aiohttp.ClientSession() as s:
        pending = asyncio.create_task(_post(s, gw))
        await asyncio.sleep(0.05)
        source.publish(snapshot(()))  # the model vanished from the watch for a moment
        await asyncio.sleep(0.05)
        source.publish(snapshot((route(),), (_ep("a", e),)))
        status, _, _ = await pending
    assert status == 200


async def test_hybrid_spills_above_cap_to_overflow(engines, gateway):
    d, o = await engines(decode_ms_per_token=20.0), await engines(decode_ms_per_token=20.0)
    model = route(hybrid=True, cap=2, pools=HYBRID_POOLS)
    gw = await gateway(
        FakeDiscovery(snapshot((model,), (_ep("d1", d, pool="dedicated-a"), _ep("o1", o))))
    )
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *[_post(s, gw, {**BODY, "max_tokens": 10}) for _ in range(5)]
        )
    served = sorted(h[proxy.BACKEND_HEADER] for _, h, _ in results)
    assert served == ["default/d1"] * 2 + ["default/o1"] * 3


async def test_hybrid_without_overflow_wakes_and_uses_freed_dedicated_slot(engines, gateway):
    d = await engines(decode_ms_per_token=20.0)
    model = route(hybrid=True, cap=1, pools=HYBRID_POOLS)
    waker = FakeWaker()
    gw = await gateway(
        FakeDiscovery(snapshot((model,), (_ep("d1", d, pool="dedicated-a"),))),
        waker,
        queue_timeout=10.0,
    )
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*[_post(s, gw, {**BODY, "max_tokens": 5}) for _ in range(2)])
    assert [r[0] for r in results] == [200, 200]
    assert {h[proxy.BACKEND_HEADER] for _, h, _ in results} == {"default/d1"}
    assert len(waker.calls) == 1


KEYS = auth.KeyRing.parse(
    {"sk-acme": {"tenant": "acme", "requestsPerMinute": 2}, "sk-beta": {"tenant": "beta"}}
)


@pytest.mark.parametrize(
    ("headers", "model", "expected"),
    [
        pytest.param({}, "llama", [401], id="missing-key-401"),
        pytest.param({"Authorization": "Bearer sk-nope"}, "llama", [401], id="bad-key-401"),
        pytest.param(
            {"Authorization": "Bearer sk-beta"}, "llama", [404], id="other-tenant-same-as-unknown"
        ),
        pytest.param(
            {"Authorization": "Bearer sk-acme"}, "llama", [200, 200, 429], id="over-limit-429"
        ),
        pytest.param({"Authorization": "Bearer sk-beta"}, "nope", [404], id="unknown-model-404"),
    ],
)
async def test_auth_and_limits(engines, gateway, headers, model, expected):
    e = await engines()
    gw = await gateway(FakeDiscovery(snapshot((route(tenant="acme"),), (_ep("a", e),))), keys=KEYS)
    async with aiohttp.ClientSession() as s:
        results = [await _post(s, gw, {**BODY, "model": model}, headers) for _ in expected]
    assert [r[0] for r in results] == expected
    if expected[-1] == 429:
        assert results[-1][1]["Retry-After"] == "30"
    assert all(
        set(json.loads(b)["error"]) == {"message", "type", "param", "code"}
        for st, _, b in results
        if st != 200
    )


async def test_graceful_drain_finishes_stream_and_refuses_new(engines, gateway):
    e = await engines(decode_ms_per_token=10.0)
    gw = await gateway(FakeDiscovery(snapshot((route(),), (_ep("a", e),))))
    port = gw.port
    body = {**BODY, "max_tokens": 30, "stream": True}
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
        await r.content.readline()
        closing = asyncio.create_task(gw.close())
        await _settle()
        text = await r.read()
        await closing
    assert text.rstrip().endswith(b"data: [DONE]")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as s:
            await s.get(f"http://127.0.0.1:{port}/healthz")


async def test_connect_failure_retries_another_replica(engines, gateway, unused_port):
    e = await engines()
    dead = endpoint("dead", port=unused_port)
    gw = await gateway(FakeDiscovery(snapshot((route(),), (dead, _ep("live", e)))))
    async with aiohttp.ClientSession() as s:
        results = [await _post(s, gw) for _ in range(4)]
    assert [r[0] for r in results] == [200] * 4
    assert {r[1][proxy.BACKEND_HEADER] for r in results} == {"default/live"}


async def test_readyz_and_models(engines, gateway):
    e = await engines()
    source = FakeDiscovery()
    gw = await gateway(source)
    base = f"http://127.0.0.1:{gw.port}"
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/readyz") as r:
            assert r.status == 503
        source.publish(snapshot((route(),), (_ep("a", e),)))
        await _settle()
        async with s.get(base + "/readyz") as r:
            assert r.status == 200
        async with s.get(base + "/v1/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["llama"]


@pytest.fixture
def unused_port():
    """A loopback port that refuses connections for the whole test.

    The socket stays bound but never listens, so the kernel answers a connect
    with RST and no other server in the test (a gateway's metrics port picked
    by the OS, say) can take the number after the fixture returns it.
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
