"""Fixtures shared by the unit suites: real engine-sim apps on 127.0.0.1, ephemeral ports."""

import pytest
from aiohttp.test_utils import TestServer

from tidepool.enginesim import engine
from tidepool.enginesim import server as sim_app

#: Timing fast enough that a test never waits on the simulated model.
FAST_ENGINE = {"load_delay": 0.0, "prefill_ms_per_1k_tokens": 1.0, "decode_ms_per_token": 1.0}


@pytest.fixture
async def engine_sims():
    """Start engine simulators (``model`` plus EngineConfig overrides of the fast timing);
    every one is closed at teardown."""
    servers: list[TestServer] = []

    async def _start(model: str, **kw):
        cfg = engine.EngineConfig(model=model, **{**FAST_ENGINE, **kw})
        server = TestServer(sim_app.create_app(cfg), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield _start
    for s in servers:
        await s.close()
