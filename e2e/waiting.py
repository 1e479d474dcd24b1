"""Waiting on a condition: the one ``wait_for`` of the e2e scripts, the benchmarks and the tests.

Why one: against a real control plane a test polls for the condition it needs instead of
sleeping a fixed time, and whichever script waited, a timeout must say the same three things:
how long, for what, and what the probe last returned (or raised).

Imports nothing but the standard library, so every script can use it: ``e2e/*.py`` run as
scripts (their folder is on ``sys.path``), ``e2e/bench/*.py`` put ``e2e/`` on it themselves, and
pytest gets it from ``pythonpath`` in ``pyproject.toml``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitAbortedError(RuntimeError):
    """A probe saw that waiting longer cannot help (a process it waits on exited):
    :func:`wait_for` lets it through at once instead of polling on to the timeout."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` every ``interval`` seconds until it returns something truthy; return that.

    An exception from the probe counts as "not yet" (the API server may be restarting, a port
    forward reconnecting); a :class:`WaitAbortedError` ends the wait at once. After ``timeout``
    seconds: TimeoutError naming ``what``, the last value and the last exception, e.g.
    ``timed out after 30s waiting for 2 Ready pods (last: None; last error: ApiException(...))``.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    last_error: Exception | None = None
    while True:
        try:
            last = probe()
        except WaitAbortedError:
            raise
        except Exception as exc:
            last, last_error = None, exc
        if last:
            return last
        if time.monotonic() >= deadline:
            error = f"; last error: {last_error!r}" if last_error is not None else ""
            raise TimeoutError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r}{error})"
            )
        time.sleep(interval)
