"""``status.coldStart`` through ``sync``: opened by a wake at zero, measured from the pods and
the gateway's report while open (and only then read), resumed after a restart, kept once done."""

from datetime import datetime, timedelta

from reconcile_harness import MODEL, SHARED, Harness, dep

from fakes import T0
from tidepool.api import labels
from tidepool.api.v1alpha1 import SharedEngine
from tidepool.policy.cold_start import PodTimeline

WAKE = "2025-06-01T12:00:04.800Z"  # T0 + 4.8 s, the gateway's clock


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


POD = PodTimeline(pod="llama-7d9-x2", created=at(5), scheduled=at(6), started=at(7), ready=at(10))


def _woken() -> Harness:
    """Scaled to zero, then woken at T0 + 4.8 s and scaled to one at T0 + 5 s."""
    h = Harness({"mode": "serverless"})
    h.sync()
    assert h.replicas() == {SHARED: 0}
    assert h.status.cold_start is None
    h.annotations[labels.WAKE_REQUESTED_AT] = WAKE
    h.sync(advance=5)
    assert h.replicas() == {SHARED: 1}
    return h


def test_a_wake_at_zero_is_measured_phase_by_phase_until_the_first_response() -> None:
    h = _woken()
    cold = h.status.cold_start
    assert cold is not None
    assert (cold.requested_at, cold.replicas_set_at, cold.completed_at) == (at(4.8), at(5), None)
    assert h.kube.timeline_reads == 0, "the pods are read from the next sync on"

    h.kube.timelines, h.kube.ready[dep(SHARED)] = [POD], 1
    h.sync(advance=6)
    assert h.status.cold_start is not None
    assert h.status.cold_start.completed_at is None, "the held request is not answered yet"
    assert h.kube.timeline_reads == 1

    h.kube.responses = [at(-100), at(10.2)]
    h.sync(advance=1)
    done = h.status.cold_start
    assert done is not None
    assert done.completed_at == at(12)
    assert done.pod == "llama-7d9-x2"
    assert [(p.name, p.seconds) for p in done.phases] == [
        ("held", 0.2),
        ("scheduled", 1.0),
        ("imagePulled+started", 1.0),
        ("ready", 3.0),
        ("routed", 0.2),
    ]
    assert done.total_seconds == 5.4

    h.sync(advance=10)
    assert h.status.cold_start == done
    assert h.kube.timeline_reads == 2, "nothing is read once it is complete"


def test_an_operator_restart_mid_cold_start_resumes_it_from_status() -> None:
    h = _woken()
    opened = h.status.cold_start
    h.restart()
    h.kube.timelines, h.kube.ready[dep(SHARED)], h.kube.responses = [POD], 1, [at(10.2)]
    h.sync(advance=7)
    done = h.status.cold_start
    assert done is not None
    assert opened is not None
    assert (done.requested_at, done.replicas_set_at) == (
        opened.requested_at,
        opened.replicas_set_at,
    )
    assert done.total_seconds == 5.4


def test_a_restart_before_the_status_write_still_records_the_wake() -> None:
    h = Harness({"mode": "serverless"})
    h.sync()
    before = h.status
    h.annotations[labels.WAKE_REQUESTED_AT] = WAKE
    h.sync(advance=5)
    h.status = before  # the scale was applied, its status never written
    h.restart()
    h.sync(advance=1)
    cold = h.status.cold_start
    assert cold is not None
    assert (cold.requested_at, cold.replicas_set_at) == (at(4.8), at(6))


def test_a_tenant_handed_to_a_shared_engine_mid_cold_start_ends_it_with_what_was_measured() -> None:
    adapter = {"name": "support-bot", "source": "/models/adapters/support-bot", "rank": 16}
    h = Harness(
        {
            "model": {**MODEL, "adapter": adapter},
            "mode": "serverless",
            "scaling": {"minReplicas": 0},
        }
    )
    h.sync()
    h.annotations[labels.WAKE_REQUESTED_AT] = WAKE
    h.sync(advance=5)
    assert h.status.cold_start is not None
    assert h.status.cold_start.completed_at is None
    h.kube.engines = [
        SharedEngine.model_validate(
            {"metadata": {"name": "base"}, "spec": {"model": MODEL, "pool": SHARED}}
        )
    ]
    h.sync(advance=1)
    done = h.status.cold_start
    assert done is not None
    assert done.completed_at == at(6)
    assert done.message == "scaled back to zero before the cold start finished"
    reads = h.kube.timeline_reads
    h.sync(advance=5)
    assert h.kube.timeline_reads == reads, "no more reads for it"
