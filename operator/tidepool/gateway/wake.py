"""When to wake: at most one wake push per model per interval.

Role: the first held request for a sleeping model must wake the operator at once, but a burst
of a thousand held requests must not become a thousand API patches. :class:`WakeLimiter`
allows one wake per model per ``interval`` (1 s by default).

Must not: call the Kubernetes API (that is :mod:`tidepool.adapters.wake`) or read the clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Protocol


class Waker(Protocol):
    """The wake port (``tidepool.adapters.wake.KubeWaker`` in production; a fake in tests)."""

    def request_wake(self, namespace: str, name: str, now: datetime) -> None: ...

    def report_first_response(
        self, namespace: str, name: str, wake_at: datetime, now: datetime
    ) -> None:
        """The first response after the wake pushed at ``wake_at`` was routed at ``now``: the
        last mark of the cold start the operator measures (``status.coldStart``)."""


class WakeLimiter:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[Hashable, float] = {}

    def should_wake(self, model: Hashable, now: float) -> bool:
        last = self._last.get(model)
        if last is not None and now - last < self.interval:
            return False
        self._last[model] = now
        return True
