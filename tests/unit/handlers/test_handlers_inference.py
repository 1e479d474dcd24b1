"""The InferenceDeployment handlers' own logic: own-write tracking, error translation, logs."""

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from tidepool.adapters.kube import TransientKubeError
from tidepool.api.v1alpha1 import (
    ColdStartPhase,
    ColdStartStatus,
    InferenceDeployment,
    InferenceDeploymentStatus,
)
from tidepool.handlers import daemon, inference
from tidepool.handlers.deps import Deps, Telemetry
from tidepool.handlers.main import configure_logging

TIMEOUT = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def obj(version: str, marker: str = "") -> dict[str, Any]:
    return {"metadata": {"resourceVersion": version}, "status": {"marker": marker}}


# Each step: ("write", version) stores our write and gets it back as ``version``;
# ("write-seen", version) is a write whose own event Kopf delivers before the write returns;
# ("event", version) is a watch event reaching Kopf; ("wait", seconds) advances the clock.
# ``expect`` is what the daemon reconciles from next, given Kopf's live view ``live``.
OWN_WRITE_CASES = [
    pytest.param([], "live-1", "live", id="nothing-written"),
    pytest.param([("write", "abc")], "live-1", "ours", id="opaque-version-not-yet-delivered"),
    pytest.param([("write", "abc")], "abc", "live", id="live-view-shows-our-version"),
    pytest.param(
        [("write", "abc"), ("event", "abc")], "zzz", "live", id="our-event-seen-then-newer"
    ),
    pytest.param([("write-seen", "abc")], "zzz", "live", id="our-event-before-write-returned"),
    pytest.param(
        [("write", "abc"), ("event", "other")], "other", "ours", id="another-event-is-not-ours"
    ),
    # Numerically larger, yet not ours: no ordering is read into resourceVersion.
    pytest.param([("write", "9")], "10", "ours", id="numeric-versions-not-compared"),
    pytest.param(
        [("write", "abc"), ("wait", TIMEOUT)], "live-1", "live", id="kopf-consistency-timeout"
    ),
    pytest.param(
        [("write", "abc"), ("wait", TIMEOUT - 0.1)], "live-1", "ours", id="within-timeout"
    ),
    pytest.param(
        [("write", "abc"), ("event", "abc"), ("write", "def")],
        "abc",
        "ours",
        id="second-write-awaited-anew",
    ),
]


@pytest.mark.parametrize(("steps", "live", "expect"), OWN_WRITE_CASES)
def test_own_write_preferred_until_delivered(
    steps: list[tuple[str, Any]], live: str, expect: str
) -> None:
    clock = Clock()
    writes = inference.OwnWrites(TIMEOUT, clock=clock)
    last_written = None
    for action, arg in steps:
        if action in {"write", "write-seen"}:
            last_written = obj(arg, marker=f"ours-{arg}")

            def do_write(stored: dict[str, Any] = last_written, seen: bool = action != "write"):
                if seen:
                    writes.observe(stored["metadata"]["resourceVersion"])
                return stored

            assert writes.write(do_write) is last_written
        elif action == "event":
            writes.observe(arg)
        else:
            clock.now += arg
    live_obj = obj(live, marker="live")
    assert writes.newest(live_obj) is (live_obj if expect == "live" else last_written)


def test_failed_write_keeps_the_previous_pending_one() -> None:
    writes = inference.OwnWrites(TIMEOUT, clock=Clock())
    first = obj("a", "ours-a")
    writes.write(lambda: first)

    def failing() -> dict[str, Any]:
        raise TransientKubeError("API server answered 503 Service Unavailable")

    with pytest.raises(TransientKubeError):
        writes.write(failing)
    assert writes.newest(obj("older")) is first
    assert writes.awaiting()


def test_a_write_to_a_deleted_object_leaves_nothing_to_await() -> None:
    writes = inference.OwnWrites(TIMEOUT, clock=Clock())

    assert writes.write(lambda: None) is None
    assert not writes.awaiting()
    live = obj("a")
    assert writes.newest(live) is live


@dataclass
class StatusRecorder:
    """The Kube calls a reconcile of an invalid object makes."""

    statuses: list[dict[str, Any]] = field(default_factory=list)

    def apply_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        self.statuses.append(status)


def make_deps(kube: Any = None, tick: float = 2.0) -> Deps:
    return Deps(
        kube=kube or StatusRecorder(),
        metrics=None,  # type: ignore[arg-type]  # never reached in these tests
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        tick_seconds=tick,
        max_concurrent_migrations=1,
        telemetry=Telemetry(),
    )


def _raise(exc: Exception) -> Callable[[], float]:
    def reconcile() -> float:
        raise exc

    return reconcile


@pytest.mark.parametrize(
    ("error", "delay"),
    [
        pytest.param(TransientKubeError("429", retry_after=7.0), 7.0, id="server-said-retry-after"),
        pytest.param(TransientKubeError("503"), 2.0, id="no-retry-after-one-tick"),
        pytest.param(TransientKubeError("429", retry_after=0.0), 0.0, id="retry-after-zero-kept"),
    ],
)
def test_transient_errors_become_kopf_temporary_errors(
    error: TransientKubeError, delay: float
) -> None:
    deps = make_deps(tick=2.0)
    with pytest.raises(kopf.TemporaryError) as caught:
        daemon.reconcile_or_raise(_raise(error), deps=deps)
    assert caught.value.delay == delay
    assert caught.value.__cause__ is error
    assert deps.telemetry.reconciles.labels(result="retry")._value.get() == 1
    assert deps.last_error == str(error)


def test_other_errors_propagate_for_kopfs_backoff() -> None:
    deps = make_deps()
    bug = KeyError("spec")
    with pytest.raises(KeyError) as caught:
        daemon.reconcile_or_raise(_raise(bug), deps=deps)
    assert caught.value is bug
    assert deps.telemetry.reconciles.labels(result="error")._value.get() == 1
    assert deps.last_reconciled is None


def test_a_clean_reconcile_clears_the_error() -> None:
    deps = make_deps()
    deps.last_error = "earlier"
    assert daemon.reconcile_or_raise(lambda: 12.5, deps=deps) == 12.5
    assert deps.last_error is None
    assert deps.last_reconciled is not None
    assert deps.telemetry.reconciles.labels(result="ok")._value.get() == 1


INVALID = {
    "apiVersion": "tidepool.dev/v1alpha1",
    "kind": "InferenceDeployment",
    "metadata": {"namespace": "team-a", "name": "broken", "generation": 3, "resourceVersion": "x"},
    "spec": {"mode": "no-such-mode"},
}


@pytest.fixture
def operator_log() -> Iterator[io.StringIO]:
    """What the operator's logging setup prints, undone afterwards (it owns the root logger)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(verbose=False)
    (installed,) = (h for h in root.handlers if h not in handlers)
    assert isinstance(installed, logging.StreamHandler)
    out = io.StringIO()
    installed.setStream(out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def test_handler_log_lines_name_the_object(operator_log: io.StringIO) -> None:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # no event queue outside a running operator
    logger = kopf.ObjectLogger(body=kopf.Body(INVALID), settings=settings)
    deps = make_deps()
    wait = inference._reconcile_once(
        INVALID,
        body=kopf.Body(INVALID),
        deps=deps,
        kube=deps.kube,
        cache=inference.inference.ObjectCache(),
        writes=inference.OwnWrites(TIMEOUT),
        logger=logger,
        key="team-a/broken",
    )
    line = next(ln for ln in operator_log.getvalue().splitlines() if "does not validate" in ln)
    assert "[team-a/broken]" in line
    assert wait == 30.0
    (status,) = deps.kube.statuses
    (ready,) = status["conditions"]
    assert ready["type"] == "Ready"
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidSpec"
    assert ready["observedGeneration"] == 3
    assert ready["lastTransitionTime"].endswith("Z")


def test_a_completed_cold_start_feeds_each_phase_and_its_total_to_the_histogram() -> None:
    telemetry = Telemetry()
    at = datetime(2026, 9, 2, 10, 0, tzinfo=UTC)
    cold = ColdStartStatus(
        requested_at=at,
        replicas_set_at=at,
        phases=[
            ColdStartPhase(name="held", seconds=0.2),
            ColdStartPhase(name="imagePulled+started", seconds=1.0),
            ColdStartPhase(name="ready", seconds=3.0),
        ],
        total_seconds=4.2,
        completed_at=at,
    )
    telemetry.observe_cold_start(cold)
    registry = telemetry.registry

    def sample(phase: str, suffix: str) -> float | None:
        return registry.get_sample_value(f"tidepool_cold_start_seconds_{suffix}", {"phase": phase})

    assert [sample(p, "sum") for p in ("held", "imagePulled+started", "ready", "total")] == [
        0.2,
        1.0,
        3.0,
        4.2,
    ]
    assert sample("total", "count") == 1.0


def _tenant(adapter: bool = False) -> InferenceDeployment:
    model: dict[str, Any] = {"name": "meta-llama/Llama-3.1-8B-Instruct"}
    if adapter:
        model["adapter"] = {"name": "support-bot", "source": "/models/adapters/support-bot"}
    return InferenceDeployment.model_validate(
        {"metadata": {"name": "llama", "namespace": "team-a"}, "spec": {"model": model}}
    )


# (status fields, a LoRA tenant, plan's requeue s, tick s, expected seconds to the next look)
NEXT_LOOK_CASES = [
    pytest.param({}, False, 15, 5, 15, id="idle-at-zero-waits-the-plan"),
    pytest.param({"replicas": 1, "desiredReplicas": 1}, False, 15, 5, 5, id="warm-keeps-the-tick"),
    pytest.param({"desiredReplicas": 1}, False, 15, 5, 5, id="waking-keeps-the-tick"),
    pytest.param({}, True, 15, 5, 5, id="lora-tenant-keeps-the-tick"),
    pytest.param({}, False, 2, 5, 2, id="a-sooner-plan-wins"),
    pytest.param(
        {
            "migration": {
                "fromPool": "a",
                "toPool": "b",
                "phase": "StartingTarget",
                "toMode": "dedicated",
                "startedAt": "2026-01-01T00:00:00Z",
                "phaseSince": "2026-01-01T00:00:00Z",
            }
        },
        False,
        15,
        5,
        5,
        id="migrating-keeps-the-tick",
    ),
]


@pytest.mark.parametrize(("status", "adapter", "requeue", "tick", "expected"), NEXT_LOOK_CASES)
def test_next_look(
    status: dict[str, Any], adapter: bool, requeue: float, tick: float, expected: float
) -> None:
    parsed = InferenceDeploymentStatus.model_validate(status)
    seconds = inference.next_look_seconds(
        _tenant(adapter), parsed, timedelta(seconds=requeue), tick=tick
    )
    assert seconds == expected
