"""The wake push as Events: what the gateway creates and which Events the operator acts on."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidepool.adapters import wake
from tidepool.api import labels

NOW = datetime(2026, 9, 2, 10, 0, 0, 123000, tzinfo=UTC)


def test_wake_event_names_the_model_and_carries_the_exact_time() -> None:
    event = wake.wake_event("team-a", "llama", NOW, "gw-0")
    assert event["metadata"]["namespace"] == "team-a"
    assert event["metadata"]["generateName"] == "llama.wake-"
    assert event["metadata"]["annotations"] == {
        labels.WAKE_REQUESTED_AT: "2026-09-02T10:00:00.123Z"
    }
    assert event["involvedObject"] == {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "namespace": "team-a",
        "name": "llama",
    }
    assert (event["reason"], event["type"], event["source"]) == (
        "WakeRequested",
        "Normal",
        {"component": "tidepool-gateway"},
    )
    # core/v1 timestamps are whole seconds; the annotation keeps the milliseconds.
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-09-02T10:00:00Z"


def _changed(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    node = event
    for key in parents:
        node = node[key]
    node[leaf] = value
    return event


@pytest.mark.parametrize(
    ("age", "path", "value", "expected"),
    [
        pytest.param(timedelta(seconds=2), None, None, True, id="fresh"),
        pytest.param(timedelta(seconds=59), None, None, True, id="just-in-time"),
        pytest.param(timedelta(seconds=61), None, None, False, id="stale-at-operator-restart"),
        pytest.param(timedelta(seconds=-60), None, None, False, id="from-the-future"),
        pytest.param(timedelta(0), "reason", "Scheduled", False, id="other-reason"),
        pytest.param(timedelta(0), "source.component", "kubelet", False, id="other-component"),
        pytest.param(timedelta(0), "involvedObject.kind", "Deployment", False, id="other-kind"),
        pytest.param(timedelta(0), "involvedObject.apiVersion", "apps/v1", False, id="other-group"),
        pytest.param(
            timedelta(0),
            "metadata.annotations",
            {labels.WAKE_REQUESTED_AT: "soon"},
            False,
            id="unreadable-time",
        ),
    ],
)
def test_requested_wake(age: timedelta, path: str | None, value: Any, expected: bool) -> None:
    event = wake.wake_event("team-a", "llama", NOW - age)
    if path is not None:
        event = _changed(event, path, value)
    got = wake.requested_wake(event, NOW)
    if expected:
        assert got == ("team-a", "llama", wake.rfc3339(NOW - age))
    else:
        assert got is None


def test_the_forwarded_patch_is_the_one_annotation() -> None:
    assert wake.annotation_patch("2026-09-02T10:00:00.123Z") == {
        "metadata": {"annotations": {labels.WAKE_REQUESTED_AT: "2026-09-02T10:00:00.123Z"}}
    }


def test_the_first_response_report_carries_its_wake_and_its_own_time() -> None:
    event = wake.first_response_event("team-a", "llama", NOW, NOW + timedelta(seconds=4.5), "gw-0")
    assert event["metadata"]["generateName"] == "llama.routed-"
    assert event["metadata"]["annotations"] == {
        labels.WAKE_REQUESTED_AT: "2026-09-02T10:00:00.123Z",
        wake.FIRST_RESPONSE_AT: "2026-09-02T10:00:04.623Z",
    }
    assert (event["reason"], event["involvedObject"]["name"]) == ("FirstResponseRouted", "llama")
    assert event["message"] == "first response routed 4.500s after the wake"
    assert wake.first_response_at(event["metadata"]["annotations"]) == NOW + timedelta(seconds=4.5)
    # It is no wake: the operator's wake handler ignores it.
    assert wake.requested_wake(event, NOW) is None
