"""Fixtures for in-process simulator tests: real engine-sim apps of model ``m``."""

import pytest


@pytest.fixture
def start(engine_sims):
    """Start simulators of model ``m`` (fast timing unless overridden); closed at teardown."""
    return lambda **kw: engine_sims("m", **kw)
