"""Tenancy across gateway replicas, in-process on 127.0.0.1: real gateways in front of a real
engine simulator, a tenant's limit shared by the replicas, and keys reloaded from their file."""

import asyncio
import itertools
import time

import aiohttp
import pytest
from gateway_fakes import FakeDiscovery, FakeReplicas
from snapshots import endpoint, route, snapshot

from tidepool.gateway import auth

BODY = {"model": "llama", "prompt": "hi", "max_tokens": 1}
RPM = 120
KEYS = auth.KeyRing.parse({"sk-acme": {"tenant": "acme", "requestsPerMinute": RPM}})


async def _post(session, port, key):
    async with session.post(
        f"http://127.0.0.1:{port}/v1/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        await r.read()
        return r.status


async def _round_robin(ports, total, in_flight=12):
    """``total`` requests of tenant acme, request i to ``ports[i % len(ports)]``, as a Service
    spreading many connections would; returns (admitted, seconds from first to last)."""
    order = itertools.cycle(ports)
    admitted = 0
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        for _ in range(0, total, in_flight):
            batch = [_post(s, next(order), "sk-acme") for _ in range(in_flight)]
            statuses = await asyncio.gather(*batch)
            assert set(statuses) <= {200, 429}
            admitted += statuses.count(200)
        return admitted, time.monotonic() - started


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
async def test_a_tenant_holds_its_limit_within_10_percent_over_any_replica_count(
    engines, gateway, replicas
):
    """Each replica learns the count (here from a replica source, as from the Service's
    EndpointSlices) and enforces RPM / replicas. A tenant asking for 3x its limit gets its
    burst plus its rate over the run, within 10%, however many replicas share it."""
    e = await engines()
    table = snapshot((route(tenant="acme"),), (endpoint("a", port=e.port),))
    gateways = [
        await gateway(FakeDiscovery(table), keys=KEYS, replica_source=FakeReplicas(replicas))
        for _ in range(replicas)
    ]
    admitted, seconds = await _round_robin([gw.port for gw in gateways], 3 * RPM)
    limit = RPM + RPM * seconds / 60
    assert abs(admitted - limit) <= 0.1 * limit, (admitted, limit)


async def test_replicas_that_do_not_know_of_each_other_multiply_the_limit(engines, gateway):
    """The defect this split fixes: the chart's 2 replicas each enforced the whole limit."""
    e = await engines()
    table = snapshot((route(tenant="acme"),), (endpoint("a", port=e.port),))
    gateways = [await gateway(FakeDiscovery(table), keys=KEYS) for _ in range(2)]
    admitted, _ = await _round_robin([gw.port for gw in gateways], 3 * RPM)
    assert admitted >= 2 * RPM


async def test_the_replica_count_follows_its_source_and_zero_keeps_the_hint(engines, gateway):
    e = await engines()
    replicas = FakeReplicas(3)
    gw = await gateway(
        FakeDiscovery(snapshot((route(tenant="acme"),), (endpoint("a", port=e.port),))),
        keys=KEYS,
        replicas=2,
        replica_source=replicas,
    )
    assert gw.gateway.replicas == 3
    for published, expected in [(5, 5), (0, 2), (1, 1)]:
        replicas.publish(published)
        await asyncio.sleep(0.01)  # the count hops onto the loop
        assert gw.gateway.replicas == expected
    await gw.close()
    assert replicas.stopped


async def test_a_429_closes_its_connection_so_the_retry_can_land_elsewhere(engines, gateway):
    e = await engines()
    ring = auth.KeyRing.parse({"sk-acme": {"tenant": "acme", "requestsPerMinute": 1}})
    gw = await gateway(
        FakeDiscovery(snapshot((route(tenant="acme"),), (endpoint("a", port=e.port),))), keys=ring
    )
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": "Bearer sk-acme"}
        url = f"http://127.0.0.1:{gw.port}/v1/completions"
        async with s.post(url, json=BODY, headers=headers) as ok:
            assert ok.status == 200
            assert ok.headers.get("Connection", "").lower() != "close"
        async with s.post(url, json=BODY, headers=headers) as limited:
            assert limited.status == 429
            assert limited.headers["Connection"].lower() == "close"


async def _until(check, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "the gateway did not pick up the key file"
        await asyncio.sleep(0.02)


async def test_keys_reload_from_their_file_without_a_restart(engines, gateway, tmp_path):
    """Revoke a key and add one by rewriting the file; a broken rewrite keeps the keys."""
    e = await engines()
    path = tmp_path / "api-keys.yaml"
    path.write_text("keys:\n  sk-old: {tenant: acme}\n")
    gw = await gateway(
        FakeDiscovery(snapshot((route(tenant="acme"),), (endpoint("a", port=e.port),))),
        key_file=auth.KeyFile(path),
        key_reload_interval=0.02,
    )
    async with aiohttp.ClientSession() as s:
        assert await _post(s, gw.port, "sk-old") == 200
        assert await _post(s, gw.port, "sk-new") == 401

        path.write_text("keys:\n  sk-new: {tenant: acme}\n")

        async def new_key_works():
            return await _post(s, gw.port, "sk-new") == 200

        await _until(new_key_works)
        assert await _post(s, gw.port, "sk-old") == 401

        path.write_text("keys:\n  sk-new: {tenant: acme, requestsPerMinute: 0}\n")
        await asyncio.sleep(0.2)  # ten looks at the broken file
        assert await _post(s, gw.port, "sk-new") == 200
        path.unlink()
        await asyncio.sleep(0.1)
        assert await _post(s, gw.port, "sk-new") == 200
