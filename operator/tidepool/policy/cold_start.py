"""Cold starts explained by phase: where the seconds of a scale from zero went.

Role: a scale from zero is a chain of hand-offs, each owned by a different component, and a
user who waited 40 s wants to know whose they were. The marks, in order:

* **requested**: the gateway held a request and asked for a wake (the wake's own timestamp);
* **replicas set**: the operator raised the replicas (its own decision time);
* **scheduled**: the pod's ``PodScheduled`` condition turned True (the Deployment and ReplicaSet
  controllers and the scheduler);
* **image pulled**: the kubelet's ``Pulled`` Event (kwok's fake kubelet reports none);
* **started**: the containers' ``state.running.startedAt``;
* **ready**: the pod's ``Ready`` condition (the engine loading the model, then its readiness
  probe);
* **routed**: the gateway's report that it routed the first response (a ``FirstResponseRouted``
  Event, :mod:`tidepool.adapters.wake`).

Each phase is named after the mark that ends it and lasts from the previous mark to that one, so
the phases always sum to the last mark minus the first. A mark never reported (kwok's image pull)
folds its phase into the next one, named for both (``imagePulled+started``); a mark earlier than
its predecessor (the API server keeps condition times to the second, and the gateway's clock is
not the kubelet's) counts as its predecessor's time, so no phase is negative.

The status block (:class:`~tidepool.api.v1alpha1.ColdStartStatus`) is keyed by the wake's
timestamp: it opens once per wake, is measured on every sync while open (an operator restart
resumes it from status), and is completed once, which is when the shell observes the
``tidepool_cold_start_seconds`` histogram (:func:`just_completed`).

Pure: no clock, no I/O.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from tidepool.api.v1alpha1 import ColdStartPhase, ColdStartStatus

#: After Ready, how long to wait for the gateway's first-response report before recording the
#: cold start without it: a held request is routed within a routing-table update of Ready, so
#: a report this late is not coming (the request timed out, or the report could not be made).
ROUTED_GRACE: Final = timedelta(seconds=60)
#: A cold start still open this long after it was requested is recorded with what was measured:
#: longer than any engine's model download should take, short enough to free the status block.
GIVE_UP_AFTER: Final = timedelta(minutes=15)


class Phase(StrEnum):
    """A phase, named after the mark that ends it."""

    HELD = "held"
    SCHEDULED = "scheduled"
    IMAGE_PULLED = "imagePulled"
    STARTED = "started"
    READY = "ready"
    ROUTED = "routed"


#: Joins the names of phases folded into one because the mark between them was not reported.
FOLD: Final = "+"


@dataclass(frozen=True, slots=True)
class PodTimeline:
    """One engine pod's marks as the API server shows them (None: not reached or not reported)."""

    pod: str
    created: datetime
    scheduled: datetime | None = None
    """``PodScheduled=True``'s lastTransitionTime."""
    image_pulled: datetime | None = None
    """The latest of the kubelet's ``Pulled`` Events for the pod."""
    started: datetime | None = None
    """The latest ``startedAt`` of its running containers, once all run."""
    ready: datetime | None = None
    """``Ready=True``'s lastTransitionTime."""


@dataclass(frozen=True, slots=True)
class Marks:
    """The marks of one cold start, in order; only the first two are always known."""

    requested: datetime
    replicas_set: datetime
    pod: PodTimeline | None = None
    """The pod measured (None: none seen yet, or gone before it was read)."""
    routed: datetime | None = None

    def ends(self) -> tuple[tuple[Phase, datetime | None], ...]:
        """Each phase with the mark that ends it, in order."""
        pod = self.pod
        return (
            (Phase.HELD, self.replicas_set),
            (Phase.SCHEDULED, pod.scheduled if pod else None),
            (Phase.IMAGE_PULLED, pod.image_pulled if pod else None),
            (Phase.STARTED, pod.started if pod else None),
            (Phase.READY, pod.ready if pod else None),
            (Phase.ROUTED, self.routed),
        )

    def last(self) -> datetime:
        """The last mark known."""
        return next(at for _, at in reversed(self.ends()) if at is not None)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Consecutive phases (name, seconds) that sum to ``total_seconds``, and the marks that were
    not reported, folded into the phase after them."""

    phases: tuple[tuple[str, float], ...]
    total_seconds: float
    folded: tuple[Phase, ...]


def _ms(delta: timedelta) -> int:
    return round(delta / timedelta(milliseconds=1))


def breakdown(marks: Marks) -> Breakdown:
    """The phases up to the last mark known, each from the previous mark, in seconds to the
    millisecond; they sum to the last mark minus ``requested`` (0 if earlier).

    E.g. requested 10:00:00.000, replicas set 00.250, scheduled 01, no image pull, started 02,
    ready 05, routed 05.300 gives held 0.25, scheduled 0.75, imagePulled+started 1.0, ready 3.0,
    routed 0.3: total 5.3, with imagePulled folded.
    """
    ends = marks.ends()
    last = max(i for i, (_, at) in enumerate(ends) if at is not None)  # replicas_set is known
    end_ms = max(_ms(marks.last() - marks.requested), 0)
    phases: list[tuple[str, float]] = []
    folded: list[Phase] = []
    pending: list[str] = []
    previous_ms = 0
    for phase, at in ends[: last + 1]:
        pending.append(phase)
        if at is None:
            folded.append(phase)
            continue
        # Monotone and within [requested, end]: a mark before its predecessor counts as it.
        offset_ms = min(max(_ms(at - marks.requested), previous_ms), end_ms)
        phases.append((FOLD.join(pending), (offset_ms - previous_ms) / 1000))
        previous_ms, pending = offset_ms, []
    return Breakdown(tuple(phases), previous_ms / 1000, tuple(folded))


def replica_start(pod: PodTimeline) -> Breakdown | None:
    """How one new engine replica's start divides, from its pod's creation to Ready: scheduled,
    imagePulled, started, ready (the same phases as a cold start's, without the held request
    before and the routed response after, which belong to a scale from zero). None until the
    pod is Ready. Every new replica has one, scale-outs included, where a cold start is only
    the first replica after zero.

    E.g. created 10:00:00, scheduled 00.5, no image pull, started 01, ready 31 gives scheduled
    0.5, imagePulled+started 0.5, ready 30.0: total 31.0.
    """
    if pod.ready is None:
        return None
    whole = breakdown(Marks(requested=pod.created, replicas_set=pod.created, pod=pod))
    # The held phase is created-to-created, 0 s; it is always reported, so never folded.
    return Breakdown(whole.phases[1:], whole.total_seconds, whole.folded)


def parse_wake(value: str | None) -> datetime | None:
    """The time in a wake value (RFC 3339, e.g. ``2026-09-02T10:00:00.123Z``), or None."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def first_pod(pods: Sequence[PodTimeline], since: datetime) -> PodTimeline | None:
    """The pod a cold start that began at ``since`` is measured on: of those created since then
    (creation times are kept to the second), the first to become Ready, else the furthest
    along, else the first created; ties by name."""
    floor = since.replace(microsecond=0)
    new = [p for p in pods if p.created >= floor]
    if not new:
        return None
    return min(
        new,
        key=lambda p: (
            p.ready is None,
            p.ready or p.created,
            -sum(m is not None for m in (p.scheduled, p.image_pulled, p.started)),
            p.created,
            p.pod,
        ),
    )


def first_response(responses: Sequence[datetime], since: datetime) -> datetime | None:
    """The earliest first response a gateway reported at or after ``since`` (a report from an
    earlier cold start, or from another gateway replica later, is not this one's)."""
    return min((r for r in responses if r >= since), default=None)


def open_cold_start(
    previous: ColdStartStatus | None, wake: str | None, now: datetime
) -> ColdStartStatus:
    """The cold start of a scale from zero decided at ``now``, keyed by the wake's time (or by
    ``now`` when no request asked for it).

    ``previous`` is kept when it is this one (the same wake seen again after a restart) or is
    still being measured; a wake for a request held before that one began (the autoscaler's
    metrics scaled first, the wake came after) moves its start back to that request.
    """
    requested = min(parse_wake(wake) or now, now)
    if previous is not None and previous.completed_at is None:
        return previous.model_copy(update={"requested_at": min(previous.requested_at, requested)})
    if previous is not None and previous.requested_at == requested:
        return previous
    return ColdStartStatus(requested_at=requested, replicas_set_at=now)


def expects_response(cold: ColdStartStatus) -> bool:
    """Whether a held request asked for this cold start, so a first response will be routed:
    one opened without a wake is keyed by its own decision time."""
    return cold.requested_at < cold.replicas_set_at


def _ending(cold: ColdStartStatus, marks: Marks, desired: int, now: datetime) -> str | None:
    """Why the measurement ends now ("" when every mark it waits for is in), or None."""
    if marks.routed is not None:
        return ""
    ready = marks.pod.ready if marks.pod else None
    if ready is not None and not expects_response(cold):
        return ""
    if ready is not None and now - ready > ROUTED_GRACE:
        return f"no first response was reported within {ROUTED_GRACE.seconds}s of Ready"
    if now - cold.requested_at > GIVE_UP_AFTER:
        return f"not Ready and routed within {GIVE_UP_AFTER.seconds // 60}m"
    if desired == 0:
        return "scaled back to zero before the cold start finished"
    return None


def measure(
    cold: ColdStartStatus,
    pods: Sequence[PodTimeline],
    responses: Sequence[datetime],
    *,
    desired: int,
    now: datetime,
) -> ColdStartStatus:
    """``cold`` with the phases measured so far, completed once every mark it waits for is in
    (or it is given up on); a completed one is returned as it is, never measured twice."""
    if cold.completed_at is not None:
        return cold
    pod = first_pod(pods, cold.requested_at)
    marks = Marks(
        cold.requested_at, cold.replicas_set_at, pod, first_response(responses, cold.requested_at)
    )
    result = breakdown(marks)
    ending = _ending(cold, marks, desired, now)
    notes = [f"{p} not reported; folded into the next phase" for p in result.folded]
    if ending:
        notes.append(ending)
    return cold.model_copy(
        update={
            "pod": pod.pod if pod else cold.pod,
            "phases": [ColdStartPhase(name=n, seconds=s) for n, s in result.phases],
            "total_seconds": result.total_seconds,
            "completed_at": now if ending is not None else None,
            "message": "; ".join(notes),
        }
    )


def step(
    previous: ColdStartStatus | None,
    *,
    from_zero: bool,
    wake: str | None,
    pods: Sequence[PodTimeline],
    responses: Sequence[datetime],
    desired: int,
    now: datetime,
) -> ColdStartStatus | None:
    """The ``coldStart`` status after this sync: opened on a scale from zero (``from_zero``:
    no replica was Ready and the serving replicas are set above zero now, or a wake is handled
    while none is Ready), then measured."""
    cold = previous
    if from_zero and desired > 0:
        cold = open_cold_start(previous, wake, now)
    if cold is None:
        return None
    return measure(cold, pods, responses, desired=desired, now=now)


def just_completed(
    before: ColdStartStatus | None, after: ColdStartStatus | None
) -> ColdStartStatus | None:
    """``after`` if this sync completed it (so its phases are observed once), else None."""
    if after is None or after.completed_at is None:
        return None
    if before is not None and before.requested_at == after.requested_at:
        return after if before.completed_at is None else None
    return after
