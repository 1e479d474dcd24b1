"""Fixtures for in-process simulator tests: real engine-sim apps on 127.0.0.1."""

import pytest
from aiohttp.test_utils import TestServer

from tidepool.enginesim import engine
from tidepool.enginesim import server as sim_app

FAST = {"load_delay": 0.0, "prefill_ms_per_1k_tokens": 1.0, "decode_ms_per_token": 1.0}


@pytest.fixture
async def start():
    """Start simulators of model ``m`` (fast timing unless overridden); closed at teardown."""
    servers: list[TestServer] = []

    async def _start(**kw):
        cfg = engine.EngineConfig(model="m", **{**FAST, **kw})
        server = TestServer(sim_app.create_app(cfg), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield _start
    for s in servers:
        await s.close()
