"""A fake Prometheus over real HTTP on 127.0.0.1 for the Prometheus adapter's tests."""

from collections.abc import Iterator

import pytest
from fake_prometheus import FakePrometheus


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    """The server, answering no series until the test sets ``answer``."""
    with FakePrometheus().serving() as server:
        yield server
