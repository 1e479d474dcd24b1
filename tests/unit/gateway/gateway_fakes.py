"""Stand-ins for the gateway's discovery source and wake port.

A module of its own, not the conftest: test modules import these by name, and with several
test directories on one pytest command line the name ``conftest`` may be another directory's.
"""

import threading


class FakeDiscovery:
    """Publishes whatever snapshot a test hands it, like the watch thread would."""

    def __init__(self, snapshot=None):
        self.snapshot = snapshot
        self.on_change = None
        self.stopped = False

    def start(self, on_change):
        self.on_change = on_change
        if self.snapshot is not None:
            on_change(self.snapshot)

    def publish(self, snapshot):
        self.snapshot = snapshot
        self.on_change(snapshot)

    def stop(self):
        self.stopped = True


class FakeWaker:
    def __init__(self):
        self.calls = []
        self._lock = threading.Lock()

    def request_wake(self, namespace, name, now):
        with self._lock:
            self.calls.append((namespace, name, now))
