"""Stand-ins for the gateway's discovery source and wake port.

A module of its own, not the conftest: test modules import these by name, and with several
test directories on one pytest command line the name ``conftest`` may be another directory's.
"""

import asyncio
import threading


class FakeDiscovery:
    """Publishes whatever value a test hands it, as a watch thread would: routing snapshots
    for the gateway's discovery source, replica counts for its replica source."""

    def __init__(self, value=None):
        self.value = value
        self.on_change = None
        self.stopped = False

    def start(self, on_change):
        self.on_change = on_change
        if self.value is not None:
            on_change(self.value)

    def publish(self, value):
        self.value = value
        self.on_change(value)

    def stop(self):
        self.stopped = True


#: The same stand-in as a replica source: ``FakeReplicas(3)`` reports 3 ready gateways.
FakeReplicas = FakeDiscovery


class FakeWaker:
    def __init__(self):
        self.calls = []
        self.reports = []
        self._lock = threading.Lock()

    def request_wake(self, namespace, name, now):
        with self._lock:
            self.calls.append((namespace, name, now))

    def report_first_response(self, namespace, name, wake_at, now):
        with self._lock:
            self.reports.append((namespace, name, wake_at, now))


async def eventually(check, timeout: float = 3.0) -> bool:
    """Whether ``check()`` comes true within ``timeout`` seconds, looking every 20 ms: what a
    test waits for happens on the gateway's own tasks, after the client already has its answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
