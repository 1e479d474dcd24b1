"""Fixtures for in-process gateway tests: real engine-sim apps and the gateway's own listeners.

Everything binds to 127.0.0.1 with ephemeral ports; nothing leaves loopback.
"""

import sys
from pathlib import Path

import pytest

from tidepool.gateway import proxy

# Lets the test modules here import the local ``snapshots`` builders and ``gateway_fakes``.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def engines(engine_sims):
    """Start engine simulators of ``model`` (default ``llama``); closed at teardown."""
    return lambda model="llama", **kw: engine_sims(model, **kw)


@pytest.fixture
async def gateway():
    """Start gateways exactly as ``tidepool gateway`` does (same runner and listeners).

    Why not aiohttp's TestServer: it turns on handler cancellation itself, which hid that the
    program's own runner did not.
    """
    running = []

    async def _start(source, waker=None, *, key_file=None, replica_source=None, **config):
        app = proxy.create_app(
            proxy.GatewayConfig(**config),
            source,
            waker,
            key_file=key_file,
            replica_source=replica_source,
        )
        listeners = await proxy.start(app, "127.0.0.1", 0, 0)
        running.append(listeners)
        return listeners

    yield _start
    for listeners in running:
        await listeners.close()
