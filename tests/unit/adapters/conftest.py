"""A fake Prometheus over real HTTP on 127.0.0.1 for the Prometheus adapter's tests."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Lets the test modules here import the shared fakes (``tests/fakes.py``), as in reconcile/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fake_prometheus import FakePrometheus


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    """The server, answering no series until the test sets ``answer``."""
    with FakePrometheus().serving() as server:
        yield server
