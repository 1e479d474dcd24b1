"""The wake Event handler: a held request reaches its model's annotation on the urgent lane,
not behind the ticks queued on Kopf's executor."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from fakes import make_deps
from tidepool.adapters import wake
from tidepool.adapters.prometheus import utc_now
from tidepool.handlers.deps import MEMO_KEY
from tidepool.handlers.wake import FORWARDER_KEY, forward_wake


class RecordingForwarder:
    """Stands in for the API server's side of the patch only: records where it ran."""

    def __init__(self, exists: bool = True) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.exists = exists

    def forward(self, namespace: str, name: str, value: str) -> bool:
        self.calls.append((namespace, name, value, threading.current_thread().name))
        return self.exists


class Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)


async def call(event: dict[str, Any], forwarder: RecordingForwarder, logger: Logger) -> None:
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kopf") as executor:
        blocked = executor.submit(release.wait, 30)  # every tick's thread is busy
        deps = make_deps(executor, tick=5.0)
        memo = kopf.Memo(**{MEMO_KEY: deps, FORWARDER_KEY: forwarder})
        try:
            await forward_wake(body=kopf.Body(event), memo=memo, logger=logger)  # type: ignore[arg-type]
        finally:
            release.set()
            blocked.result(timeout=5)


async def test_a_fresh_wake_is_patched_on_the_urgent_lane_while_the_executor_is_busy() -> None:
    event = wake.wake_event("team-a", "llama", utc_now())
    forwarder, logger = RecordingForwarder(), Logger()
    await call(event, forwarder, logger)
    [(namespace, name, value, thread)] = forwarder.calls
    assert (namespace, name) == ("team-a", "llama")
    assert value == event["metadata"]["annotations"][wake.labels.WAKE_REQUESTED_AT]
    assert thread.startswith("urgent")
    assert logger.lines == []


async def test_a_wake_for_a_deleted_model_is_logged_not_raised() -> None:
    forwarder, logger = RecordingForwarder(exists=False), Logger()
    await call(wake.wake_event("team-a", "gone", utc_now()), forwarder, logger)
    assert logger.lines == ["wake for team-a/gone: no such InferenceDeployment"]


async def test_another_components_event_is_not_forwarded() -> None:
    event = wake.wake_event("team-a", "llama", utc_now())
    event["source"] = {"component": "someone-else"}
    forwarder = RecordingForwarder()
    await call(event, forwarder, Logger())
    assert forwarder.calls == []
