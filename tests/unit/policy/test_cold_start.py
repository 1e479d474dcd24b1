"""Cold starts explained by phase: worked examples and the properties that make them add up."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api.v1alpha1 import ColdStartStatus
from tidepool.policy import cold_start
from tidepool.policy.cold_start import Breakdown, Marks, PodTimeline

T0 = datetime(2026, 9, 2, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _pod(name: str = "llama-abc", created: float = 0.5, **marks: float) -> PodTimeline:
    return PodTimeline(pod=name, created=at(created), **{k: at(v) for k, v in marks.items()})


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        pytest.param(
            Marks(at(0), at(0.25), _pod(scheduled=1, started=2, ready=5), at(5.3)),
            Breakdown(
                (
                    ("held", 0.25),
                    ("scheduled", 0.75),
                    ("imagePulled+started", 1.0),
                    ("ready", 3.0),
                    ("routed", 0.3),
                ),
                5.3,
                (cold_start.Phase.IMAGE_PULLED,),
            ),
            id="kwok-no-image-pull-folded-into-started",
        ),
        pytest.param(
            Marks(
                at(0),
                at(0.1),
                _pod(scheduled=0.6, image_pulled=30.6, started=31, ready=91),
                at(91.02),
            ),
            Breakdown(
                (
                    ("held", 0.1),
                    ("scheduled", 0.5),
                    ("imagePulled", 30.0),
                    ("started", 0.4),
                    ("ready", 60.0),
                    ("routed", 0.02),
                ),
                91.02,
                (),
            ),
            id="kubelet-pull-of-30s-and-a-60s-model-load",
        ),
        pytest.param(
            # Conditions are kept to the second: scheduled reads 10:00:00 though the replicas
            # were set at 00.400; it counts as 00.400 (scheduled 0 s), never negative.
            Marks(at(0), at(0.4), _pod(scheduled=0, started=1, ready=3), at(3.5)),
            Breakdown(
                (
                    ("held", 0.4),
                    ("scheduled", 0.0),
                    ("imagePulled+started", 0.6),
                    ("ready", 2.0),
                    ("routed", 0.5),
                ),
                3.5,
                (cold_start.Phase.IMAGE_PULLED,),
            ),
            id="a-mark-before-its-predecessor-counts-as-it",
        ),
        pytest.param(
            Marks(at(0), at(0.2), _pod(scheduled=1, started=2)),
            Breakdown(
                (("held", 0.2), ("scheduled", 0.8), ("imagePulled+started", 1.0)),
                2.0,
                (cold_start.Phase.IMAGE_PULLED,),
            ),
            id="still-loading-phases-so-far",
        ),
        pytest.param(
            Marks(at(0), at(0.5), None, at(4)),
            Breakdown(
                (("held", 0.5), ("scheduled+imagePulled+started+ready+routed", 3.5)),
                4.0,
                (
                    cold_start.Phase.SCHEDULED,
                    cold_start.Phase.IMAGE_PULLED,
                    cold_start.Phase.STARTED,
                    cold_start.Phase.READY,
                ),
            ),
            id="pod-gone-before-it-was-read-all-in-routed",
        ),
    ],
)
def test_breakdown_worked_examples(marks: Marks, expected: Breakdown) -> None:
    assert cold_start.breakdown(marks) == expected


_offsets = st.floats(min_value=-5, max_value=600, allow_nan=False)


@given(
    st.lists(st.one_of(st.none(), _offsets), min_size=5, max_size=5),
    st.floats(min_value=0, max_value=10, allow_nan=False),
)
def test_phases_are_non_negative_and_sum_to_the_last_mark_minus_the_first(
    later: list[float | None], held: float
) -> None:
    scheduled, pulled, started, ready, routed = (None if o is None else at(o) for o in later)
    pod = PodTimeline("llama-abc", at(0), scheduled, pulled, started, ready)
    marks = Marks(at(0), at(held), pod, routed)
    result = cold_start.breakdown(marks)
    assert all(seconds >= 0 for _, seconds in result.phases)
    assert sum(seconds for _, seconds in result.phases) == pytest.approx(result.total_seconds)
    expected = max(marks.last() - marks.requested, timedelta(0)).total_seconds()
    assert result.total_seconds == pytest.approx(expected, abs=0.001)
    # Every phase up to the last mark is named exactly once, in order.
    names = [n for name, _ in result.phases for n in name.split(cold_start.FOLD)]
    assert names == [p for p, _ in marks.ends()][: len(names)]


WAKE = "2026-09-02T10:00:00.000Z"


def _open() -> ColdStartStatus:
    opened = cold_start.step(
        None, from_zero=True, wake=WAKE, pods=(), responses=(), desired=1, now=at(0.25)
    )
    assert opened is not None
    return opened


def test_a_wake_at_zero_opens_a_cold_start_keyed_by_the_wake() -> None:
    cold = _open()
    assert (cold.requested_at, cold.replicas_set_at, cold.completed_at) == (at(0), at(0.25), None)
    assert [(p.name, p.seconds) for p in cold.phases] == [("held", 0.25)]
    assert cold_start.expects_response(cold)


def test_it_completes_when_the_first_response_is_routed_and_is_observed_once() -> None:
    cold = _open()
    pod = _pod(scheduled=1, started=2, ready=5)
    loading = cold_start.step(
        cold, from_zero=False, wake=None, pods=(pod,), responses=(), desired=1, now=at(5.1)
    )
    assert loading is not None
    assert loading.completed_at is None, "waits for the gateway's report"
    assert cold_start.just_completed(cold, loading) is None
    done = cold_start.step(
        loading,
        from_zero=False,
        wake=None,
        pods=(pod,),
        responses=(at(-30), at(5.3), at(6)),  # an earlier cold start's report is not this one's
        desired=1,
        now=at(8),
    )
    assert done is not None
    assert done.completed_at == at(8)
    assert done.pod == "llama-abc"
    assert done.total_seconds == 5.3
    assert [(p.name, p.seconds) for p in done.phases] == [
        ("held", 0.25),
        ("scheduled", 0.75),
        ("imagePulled+started", 1.0),
        ("ready", 3.0),
        ("routed", 0.3),
    ]
    assert done.message == "imagePulled not reported; folded into the next phase"
    assert cold_start.just_completed(loading, done) == done
    again = cold_start.step(
        done, from_zero=False, wake=None, pods=(pod,), responses=(at(5.3),), desired=1, now=at(20)
    )
    assert again == done, "a completed cold start is never measured twice"
    assert cold_start.just_completed(done, again) is None


def test_the_same_wake_seen_again_after_a_restart_does_not_reopen_it() -> None:
    done = cold_start.measure(_open(), (_pod(ready=3),), (at(3.2),), desired=1, now=at(4))
    assert done.completed_at is not None
    # A restarted operator that scaled but never wrote lastWakeHandled sees the wake again.
    same = cold_start.step(
        done, from_zero=True, wake=WAKE, pods=(), responses=(), desired=1, now=at(9)
    )
    assert same == done
    later = cold_start.step(
        done,
        from_zero=True,
        wake="2026-09-02T10:05:00.000Z",
        pods=(),
        responses=(),
        desired=1,
        now=at(300.1),
    )
    assert later is not None
    assert later.requested_at == at(300)
    assert later.completed_at is None


def test_a_second_wake_during_a_cold_start_keeps_measuring_the_first() -> None:
    cold = _open()
    still = cold_start.step(
        cold,
        from_zero=True,
        wake="2026-09-02T10:00:01.000Z",
        pods=(),
        responses=(),
        desired=1,
        now=at(1.5),
    )
    assert still is not None
    assert still.requested_at == cold.requested_at


def test_a_wake_after_the_metrics_scaled_first_moves_the_start_back_to_the_held_request() -> None:
    by_metrics = cold_start.step(
        None, from_zero=True, wake=None, pods=(), responses=(), desired=1, now=at(2)
    )
    assert by_metrics is not None
    assert not cold_start.expects_response(by_metrics)
    woken = cold_start.step(
        by_metrics, from_zero=True, wake=WAKE, pods=(), responses=(), desired=1, now=at(2.5)
    )
    assert woken is not None
    assert (woken.requested_at, woken.replicas_set_at) == (at(0), at(2))
    assert cold_start.expects_response(woken)


@pytest.mark.parametrize(
    ("pods", "desired", "now", "message"),
    [
        pytest.param(
            (_pod(ready=5),),
            1,
            at(5) + cold_start.ROUTED_GRACE + s(1),
            "no first response was reported within 60s of Ready",
            id="ready-but-no-report",
        ),
        pytest.param(
            (_pod(scheduled=1),),
            1,
            at(0) + cold_start.GIVE_UP_AFTER + s(1),
            "not Ready and routed within 15m",
            id="given-up",
        ),
        pytest.param(
            (), 0, at(30), "scaled back to zero before the cold start finished", id="back-to-zero"
        ),
    ],
)
def test_it_ends_early_with_what_was_measured(
    pods: tuple[PodTimeline, ...], desired: int, now: datetime, message: str
) -> None:
    done = cold_start.measure(_open(), pods, (), desired=desired, now=now)
    assert done.completed_at == now
    assert done.message.endswith(message)


def test_without_a_wake_it_starts_at_the_scale_and_ends_at_ready() -> None:
    cold = cold_start.step(
        None, from_zero=True, wake=None, pods=(), responses=(), desired=2, now=at(0)
    )
    assert cold is not None
    assert not cold_start.expects_response(cold)
    done = cold_start.measure(
        cold, (_pod(created=0.2, scheduled=0.5, started=1, ready=4),), (), desired=2, now=at(4.5)
    )
    assert done.completed_at == at(4.5)
    assert [p.name for p in done.phases] == ["held", "scheduled", "imagePulled+started", "ready"]
    assert done.phases[0].seconds == 0.0
    assert done.total_seconds == 4.0


def test_no_cold_start_while_nothing_scales_from_zero() -> None:
    assert (
        cold_start.step(None, from_zero=False, wake=None, pods=(), responses=(), desired=3, now=T0)
        is None
    )
    assert (
        cold_start.step(None, from_zero=True, wake=WAKE, pods=(), responses=(), desired=0, now=T0)
        is None
    )


def test_the_first_new_pod_to_become_ready_is_the_one_measured() -> None:
    old = _pod("old", created=-60, scheduled=-59, ready=-50)
    slow = _pod("b-slow", created=1, scheduled=1.5, started=2)
    fast = _pod("c-fast", created=1, scheduled=1.5, started=2, ready=4)
    assert cold_start.first_pod((old, slow, fast), at(0)) == fast
    assert cold_start.first_pod((old, slow), at(0)) == slow
    assert cold_start.first_pod((old,), at(0)) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-09-02T10:00:00.123Z", at(0.123)),
        ("2026-09-02T10:00:00+00:00", at(0)),
        ("2026-09-02T10:00:00", None),  # no zone: not a wake value
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_wake(value: str | None, expected: datetime | None) -> None:
    assert cold_start.parse_wake(value) == expected


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(
            _pod(created=0, scheduled=0.5, started=1, ready=31),
            Breakdown(
                (("scheduled", 0.5), ("imagePulled+started", 0.5), ("ready", 30.0)),
                31.0,
                (cold_start.Phase.IMAGE_PULLED,),
            ),
            id="docstring-example-no-image-pull",
        ),
        pytest.param(
            _pod(created=0, scheduled=2, image_pulled=92, started=93, ready=153),
            Breakdown(
                (("scheduled", 2.0), ("imagePulled", 90.0), ("started", 1.0), ("ready", 60.0)),
                153.0,
                (),
            ),
            id="a-kubelet-that-reports-the-pull",
        ),
        pytest.param(_pod(created=0, scheduled=1, started=2), None, id="not-ready-yet"),
    ],
)
def test_replica_start_worked_examples(pod: PodTimeline, expected: Breakdown | None) -> None:
    assert cold_start.replica_start(pod) == expected


@given(st.lists(st.one_of(st.none(), _offsets), min_size=3, max_size=3), _offsets)
def test_a_replica_start_sums_from_creation_to_ready(
    earlier: list[float | None], ready: float
) -> None:
    scheduled, pulled, started = (None if o is None else at(o) for o in earlier)
    pod = PodTimeline("llama-abc", at(0), scheduled, pulled, started, at(ready))
    result = cold_start.replica_start(pod)
    assert result is not None
    assert [n for name, _ in result.phases for n in name.split(cold_start.FOLD)] == [
        "scheduled", "imagePulled", "started", "ready",
    ]  # fmt: skip
    assert all(seconds >= 0 for _, seconds in result.phases)
    assert sum(sec for _, sec in result.phases) == pytest.approx(result.total_seconds)
    assert result.total_seconds == pytest.approx(max(ready, 0.0), abs=0.001)
