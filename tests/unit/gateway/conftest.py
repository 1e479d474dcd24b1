"""Fixtures for in-process gateway tests: real engine-sim apps and the gateway's own listeners.

Everything binds to 127.0.0.1 with ephemeral ports; nothing leaves loopback.
"""

import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tidepool.enginesim import engine
from tidepool.enginesim import server as sim_app
from tidepool.gateway import proxy

# Lets the test modules here import the local ``snapshots`` builders and ``gateway_fakes``.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
async def engines():
    servers = []

    async def _start(model="llama", **kw):
        cfg = engine.EngineConfig(
            model=model,
            **{
                "load_delay": 0.0,
                "prefill_ms_per_1k_tokens": 1.0,
                "decode_ms_per_token": 1.0,
                **kw,
            },
        )
        server = TestServer(sim_app.create_app(cfg), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield _start
    for s in servers:
        await s.close()


@pytest.fixture
async def gateway():
    """Start gateways exactly as ``tidepool gateway`` does (same runner and listeners).

    Why not aiohttp's TestServer: it turns on handler cancellation itself, which hid that the
    program's own runner did not.
    """
    running = []

    async def _start(source, waker=None, **config):
        app = proxy.create_app(proxy.GatewayConfig(**config), source, waker)
        listeners = await proxy.start(app, "127.0.0.1", 0, 0)
        running.append(listeners)
        return listeners

    yield _start
    for listeners in running:
        await listeners.close()
