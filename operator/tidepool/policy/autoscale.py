"""Queue-depth autoscaling: how many replicas an InferenceDeployment should run, and why.

Role: one pure function, :func:`decide`, of an :class:`AutoscaleInputs` snapshot and ``now``. The
operator calls it on every reconcile and the simulator (``tidepool simulate``) calls the very same
function on every tick, so what the benchmark measures is what production runs.

The rules, in the order :func:`decide` applies them:

1. **Pinned** (``spec.replicas`` set through the scale subresource): hold exactly that, clamped to
   ``[min, max]``.
2. **Wake** (the gateway holds requests while nothing runs): at 0 replicas scale to
   ``max(1, min)`` at once, even without metrics. The push itself is evidence of demand, and
   Prometheus has no series for a deployment with no pods (llm-d/llm-d#2492).
3. **Unknown metrics** (:class:`~tidepool.policy.signals.NoData`): hold the current count,
   clamped to ``[min, max]``. Never scale to zero because Prometheus is down (kedacore/keda#3065).
4. **Scale up fast**: ``ceil(queue / target)``, at most ``max_scale_up_rate`` times the ready
   replicas (from at least 1) per decision, as Knative's ``ceil(maxScaleUpRate * ready)``. The
   limit exists because a queue that built during a model load overstates demand; what the
   last minute's *arrivals* ask for (``offered``, where it is measured) is no backlog, so a
   step up to it is never limited: a load that jumps sixfold gets its replicas in one model
   load, not in three doublings of one each.
5. **Scale down slowly**: to the highest recommendation seen within ``scale_down_stabilization``
   (HPA's and Knative's stable window), and not at all until that window has refilled after an
   operator restart (Knative "starts in panic mode", because the history is lost). While
   replicas are loading, and where the offered load is measured, the window remembers what the
   *arrivals* asked for, not the queue: a backlog that builds during a model load is drained
   once, by the scale-up it caused, and is no reason to keep those replicas for ten minutes. A
   queue with every replica ready is demand (a burst) and is remembered as it is. Never below
   what the queue asks right now.
6. **Scale to zero** only when ``min_replicas == 0`` and there has been no demand since
   ``last_active_at`` for ``scale_to_zero_after``. ``last_active_at`` lives in status, so the idle
   clock survives a restart (KEDA's ``status.lastActiveTime``). Idle time is *observed* idle
   time: the clock starts again when metrics return after an outage (``metrics_known_since``),
   because nobody saw whether requests came while Prometheus was down. Unknown is not zero.

Worked example (also the test ``queue-37-target-8-ready-2-rate-2-gives-4-not-5``): queue 37,
target 8, 2 replicas ready, max rate 2.0. ``ceil(37/8) = 5`` replicas are wanted, but one decision
may only double the ready replicas: ``ceil(2.0 * 2) = 4``. The decision is 4, not 5; the next
reconcile, once the new replicas are ready, goes to 5.

This module must not import ``kopf``, ``kubernetes`` or ``prometheus_api_client``, read the clock,
do I/O, or know about placement (an import-linter independence contract keeps
``policy.placement`` out).
"""

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from tidepool.api import durations, v1alpha1
from tidepool.api.conditions import Reason
from tidepool.policy import signals

#: How soon to look again when nothing is pending. Knative decides every 2 s, KEDA polls every
#: 30 s; 15 s keeps reaction well inside a model load (tens of seconds) without hammering the API.
DEFAULT_REQUEUE: Final = timedelta(seconds=15)
#: After scaling from zero, look again soon: the first ready replica changes the rate limit.
AFTER_WAKE_REQUEUE: Final = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class AutoscalePolicy:
    """The scaling knobs, parsed from ``spec.scaling`` (durations as ``timedelta``)."""

    min_replicas: int
    max_replicas: int
    target_queue_depth: int
    scale_to_zero_after: timedelta
    scale_up_stabilization: timedelta
    scale_down_stabilization: timedelta
    max_scale_up_rate: float

    @classmethod
    def from_spec(cls, spec: v1alpha1.ScalingSpec) -> "AutoscalePolicy":
        """Build from the CRD model; the CRD schema has already range-checked every field."""
        return cls(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            target_queue_depth=spec.target_queue_depth,
            scale_to_zero_after=spec.scale_to_zero_after.delta,
            scale_up_stabilization=spec.scale_up_stabilization.delta,
            scale_down_stabilization=spec.scale_down_stabilization.delta,
            max_scale_up_rate=spec.max_scale_up_rate,
        )

    def clamp(self, replicas: int) -> int:
        """``replicas`` bounded by ``[min_replicas, max_replicas]``."""
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What the queue asked for at ``at`` (already clamped to ``[min, max]``)."""

    at: datetime
    replicas: int
    #: What the offered load alone asked for at ``at`` (the queue's ask when the offered load
    #: was unknown): what scale-down keeps within its window (module docstring, rule 5).
    sustained: int | None = None

    @property
    def held(self) -> int:
        """The replicas scale-down stabilization keeps for this recommendation."""
        return self.replicas if self.sustained is None else self.sustained


@dataclass(frozen=True, slots=True)
class AutoscaleInputs:
    """Everything :func:`decide` may look at. Durable fields come from status; ``history`` is a
    rebuildable cache (empty after a restart)."""

    policy: AutoscalePolicy
    current_replicas: int
    ready_replicas: int
    queue: signals.Signal
    wake_requested: bool
    pinned_replicas: int | None
    last_active_at: datetime | None
    history: tuple[Recommendation, ...]
    operator_started_at: datetime
    #: In-flight requests the last minute's arrivals keep busy with no queue (Little's law, in
    #: the queue's unit); ``None`` when the offered load is not measured.
    offered: float | None = None
    #: Since when the queue has been known without a gap: the end of the last metrics outage,
    #: or ``None`` with no outage on record. Rule 6 counts idle time from here at the earliest.
    metrics_known_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """The target, why, and the state to carry to the next call."""

    replicas: int
    reason: Reason
    message: str
    metrics_known: bool
    last_active_at: datetime | None
    history: tuple[Recommendation, ...]
    requeue_after: timedelta


def _window(history: tuple[Recommendation, ...], now: datetime, span: timedelta) -> list[int]:
    return [r.replicas for r in history if now - r.at <= span]


def _trim(
    history: tuple[Recommendation, ...], now: datetime, keep: timedelta
) -> tuple[Recommendation, ...]:
    """Drop recommendations older than ``keep``, and any from the future (a clock step back)."""
    return tuple(r for r in history if timedelta(0) <= now - r.at <= keep)


def _fmt(td: timedelta) -> str:
    return durations.format_seconds(td.total_seconds())


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What one rule concluded: the part of a :class:`ScaleDecision` that differs per rule.

    The rules return verdicts and :func:`_decision` alone builds the decision, so the state every
    decision carries (metrics known, the idle clock, the history) is set in one place.
    """

    replicas: int
    reason: Reason
    message: str
    requeue_after: timedelta = DEFAULT_REQUEUE
    #: Set by a rule that starts the idle clock itself (rule 6 with no activity on record).
    last_active_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Demand:
    """What a known queue asks for, and the state the decision carries on (rules 4 to 6)."""

    #: ``ceil(queue / target)``, at least 1 while the gateway holds requests.
    wanted: int
    #: ``wanted`` clamped to ``[min, max]``: this call's recommendation.
    raw: int
    last_active_at: datetime | None
    history: tuple[Recommendation, ...]
    #: The start of every message: the queue against the replicas that serve it.
    base: str


def _decision(
    verdict: _Verdict,
    *,
    metrics_known: bool,
    last_active_at: datetime | None,
    history: tuple[Recommendation, ...],
) -> ScaleDecision:
    """The one place a :class:`ScaleDecision` is built: a rule's verdict plus the carried state."""
    return ScaleDecision(
        replicas=verdict.replicas,
        reason=verdict.reason,
        message=verdict.message,
        metrics_known=metrics_known,
        last_active_at=(
            verdict.last_active_at if verdict.last_active_at is not None else last_active_at
        ),
        history=history,
        requeue_after=verdict.requeue_after,
    )


def decide(inputs: AutoscaleInputs, now: datetime) -> ScaleDecision:
    """The replica count for ``now``, with its reason. Pure: same inputs, same decision.

    The rules of the module docstring in their order: the first that applies decides.
    """
    if inputs.pinned_replicas is not None:
        return _pinned(inputs, inputs.pinned_replicas, now)
    if isinstance(inputs.queue, signals.NoData):
        return _without_metrics(inputs, now)
    demand = _demand(inputs, inputs.queue.value, now)
    if demand.raw > inputs.current_replicas:
        verdict = _scale_up(inputs, demand, now)
    elif demand.raw < inputs.current_replicas:
        verdict = _scale_down(inputs, demand, now)
    else:
        verdict = _hold(inputs, demand)
    return _decision(
        verdict, metrics_known=True, last_active_at=demand.last_active_at, history=demand.history
    )


def _pinned(inputs: AutoscaleInputs, pinned: int, now: datetime) -> ScaleDecision:
    """Rule 1: ``spec.replicas`` wins over every signal; the idle clock still sees demand, so
    that unpinning does not scale an active tenant to zero."""
    p, queue = inputs.policy, inputs.queue
    n = p.clamp(pinned)
    demand = inputs.wake_requested or (isinstance(queue, signals.Sample) and queue.value > 0)
    verdict = _Verdict(
        n,
        Reason.PINNED,
        f"spec.replicas pins {pinned} (clamped to {n} within"
        f" {p.min_replicas}..{p.max_replicas}); queue {signals.describe(queue)}; autoscaler paused",
    )
    return _decision(
        verdict,
        metrics_known=isinstance(queue, signals.Sample),
        last_active_at=now if demand else inputs.last_active_at,
        history=inputs.history,
    )


def _without_metrics(inputs: AutoscaleInputs, now: datetime) -> ScaleDecision:
    """Rules 2 and 3: with no queue signal only the gateway's wake may move the count (from
    zero); anything else holds, because a Prometheus outage is no evidence of idleness."""
    p, cur = inputs.policy, inputs.current_replicas
    qtext = signals.describe(inputs.queue)
    if inputs.wake_requested and cur == 0:
        n = p.clamp(max(1, p.min_replicas))
        verdict = _Verdict(
            n,
            Reason.WAKE_REQUESTED,
            f"gateway is holding requests at 0 replicas: scaling 0 -> {n} (queue {qtext})",
            requeue_after=AFTER_WAKE_REQUEUE,
        )
        return _decision(verdict, metrics_known=False, last_active_at=now, history=inputs.history)
    n = p.clamp(cur)
    clamped = f" (was {cur}, clamped to {p.min_replicas}..{p.max_replicas})" if n != cur else ""
    verdict = _Verdict(
        n,
        Reason.METRICS_UNKNOWN,
        f"queue {qtext}: holding {n} replicas{clamped}; never scaling down on missing metrics",
    )
    return _decision(
        verdict, metrics_known=False, last_active_at=inputs.last_active_at, history=inputs.history
    )


def _demand(inputs: AutoscaleInputs, q: float, now: datetime) -> _Demand:
    """This call's recommendation, recorded in the history the stabilization windows read."""
    p, cur = inputs.policy, inputs.current_replicas
    target = p.target_queue_depth
    wanted = math.ceil(q / target)
    if inputs.wake_requested:
        wanted = max(wanted, 1)
    raw = p.clamp(wanted)
    # While replicas load, the queue holds the backlog they will drain: remember the offered
    # load instead (rule 5). With every replica ready, a queue is demand, bursts included.
    loading = inputs.ready_replicas < cur
    sustained = (
        p.clamp(math.ceil(inputs.offered / target))
        if inputs.offered is not None and loading
        else None
    )
    keep = max(p.scale_up_stabilization, p.scale_down_stabilization)
    history = _trim(
        (*inputs.history, Recommendation(at=now, replicas=raw, sustained=sustained)), now, keep
    )
    base = f"queue {q:g} vs {cur} replicas x target {p.target_queue_depth}"
    if inputs.wake_requested and cur == 0:
        # The metrics lag the push: say what actually triggered the scale-up.
        base = f"woken by the gateway (requests held at zero replicas); {base}"
    demand = q > 0 or inputs.wake_requested
    return _Demand(
        wanted=wanted,
        raw=raw,
        last_active_at=now if demand else inputs.last_active_at,
        history=history,
        base=base,
    )


def _scale_up(inputs: AutoscaleInputs, d: _Demand, now: datetime) -> _Verdict:
    """Rule 4: up to the lowest recommendation of the scale-up window, at most the rate limit
    beyond the warm minimum, and the measured arrivals' need in one step."""
    p, cur = inputs.policy, inputs.current_replicas
    # Scale-up stabilization: the lowest recommendation in the window (0s: just ``raw``).
    desired = max(cur, min(_window(d.history, now, p.scale_up_stabilization)))
    if cur == 0 and inputs.wake_requested:
        # Rule 2: the gateway holds requests now; an earlier recommendation of zero in the
        # window is no reason to keep them waiting.
        desired = max(desired, 1)
    limit = math.ceil(p.max_scale_up_rate * max(1, inputs.ready_replicas))
    if inputs.offered is not None:
        # The rate limit guards against a backlog's overshoot; what the measured arrivals
        # need is no backlog, so it is granted in one step (rule 4).
        limit = max(limit, math.ceil(inputs.offered / p.target_queue_depth))
    rate_note = ""
    if desired > max(limit, p.min_replicas):
        # Up to the minimum at once (a warm floor is owed, not a backlog's guess), and only
        # the rate limit beyond it.
        desired = max(cur, limit, p.min_replicas)
        rate_note = f", max rate {p.max_scale_up_rate:g} x {max(1, inputs.ready_replicas)} ready"
    desired = max(desired, p.min_replicas)
    if desired == cur:
        return _Verdict(
            cur,
            Reason.HOLDING,
            f"{d.base}: want {d.raw} but holding {cur} (scale-up stabilization"
            f" {_fmt(p.scale_up_stabilization)}{rate_note})",
        )
    if cur == 0:
        reason = Reason.WAKE_REQUESTED if inputs.wake_requested else Reason.SCALED_FROM_ZERO
    else:
        reason = Reason.SCALED_UP
    return _Verdict(
        desired,
        reason,
        f"{d.base}: scaling {cur} -> {desired} (wanted {d.wanted}{rate_note})",
        requeue_after=AFTER_WAKE_REQUEUE if cur == 0 else DEFAULT_REQUEUE,
    )


def _scale_down(inputs: AutoscaleInputs, d: _Demand, now: datetime) -> _Verdict:
    """Rule 5: an illegal count is cut to the bound at once; otherwise nothing until the
    scale-down window has refilled after a restart, then to the window's highest
    recommendation, and to zero only by rule 6."""
    p, cur = inputs.policy, inputs.current_replicas
    if cur > p.max_replicas:
        # Above the bound (the spec shrank): no stabilization protects an illegal count.
        # Cut to the bound only; the usual rules (and the idle clock) take it from there.
        return _Verdict(
            p.max_replicas,
            Reason.SCALED_DOWN,
            f"{cur} replicas exceed maxReplicas {p.max_replicas}: scaling {cur} ->"
            f" {p.max_replicas} ({d.base})",
        )
    since_start = now - inputs.operator_started_at
    if since_start < p.scale_down_stabilization:
        left = p.scale_down_stabilization - since_start
        return _Verdict(
            cur,
            Reason.COOLING_DOWN,
            f"{d.base}: want {d.raw} but operator started {_fmt(since_start)} ago; no"
            f" scale-down until the {_fmt(p.scale_down_stabilization)} window refills"
            f" ({_fmt(left)} left)",
            requeue_after=min(DEFAULT_REQUEUE, left),
        )
    peak = max(d.raw, *(r.held for r in d.history if now - r.at <= p.scale_down_stabilization))
    if min(cur, peak) == 0:
        return _toward_zero(inputs, d, peak, now)
    return _stabilized_down(inputs, d, min(cur, peak), peak)


def _toward_zero(inputs: AutoscaleInputs, d: _Demand, peak: int, now: datetime) -> _Verdict:
    """Rule 6: zero only after ``scale_to_zero_after`` without demand; until then one replica
    stays. With no activity on record the idle clock starts now (and is kept in status).

    The idle time counts from the last demand or the end of the last metrics outage, whichever
    is later. E.g. last demand 12:00, Prometheus down 12:01 to 12:03, scale to zero after 5m:
    zero at 12:08, not at 12:05 on a window that was two-fifths unseen.
    """
    p, cur = inputs.policy, inputs.current_replicas
    last_active = d.last_active_at if d.last_active_at is not None else now
    known_since = inputs.metrics_known_since
    idle_since = max(last_active, known_since) if known_since is not None else last_active
    seen = " since metrics returned" if idle_since > last_active else ""
    idle = now - idle_since
    if idle >= p.scale_to_zero_after:
        return _Verdict(
            0,
            Reason.SCALED_TO_ZERO_AFTER_IDLE,
            f"no demand for {_fmt(idle)}{seen} (>= {_fmt(p.scale_to_zero_after)}):"
            f" scaling {cur} -> 0",
            last_active_at=last_active,
        )
    left = p.scale_to_zero_after - idle
    if cur == 1:
        return _Verdict(
            cur,
            Reason.COOLING_DOWN,
            f"{d.base}: idle {_fmt(idle)}{seen} of {_fmt(p.scale_to_zero_after)};"
            f" scaling to zero in {_fmt(left)}",
            requeue_after=min(DEFAULT_REQUEUE, left),
            last_active_at=last_active,
        )
    return dataclasses.replace(_stabilized_down(inputs, d, 1, peak), last_active_at=last_active)


def _stabilized_down(inputs: AutoscaleInputs, d: _Demand, desired: int, peak: int) -> _Verdict:
    """Rule 5's step: to ``desired``, the highest recommendation of the scale-down window."""
    p, cur = inputs.policy, inputs.current_replicas
    if desired == cur:
        return _Verdict(
            cur,
            Reason.COOLING_DOWN,
            f"{d.base}: want {d.raw} but the highest recommendation in the last"
            f" {_fmt(p.scale_down_stabilization)} is {peak}; holding {cur}",
        )
    return _Verdict(
        desired,
        Reason.SCALED_DOWN,
        f"{d.base}: scaling {cur} -> {desired} (highest recommendation in the last"
        f" {_fmt(p.scale_down_stabilization)})",
    )


def _hold(inputs: AutoscaleInputs, d: _Demand) -> _Verdict:
    """The recommendation is the current count; say whether the warm minimum is why."""
    p, cur = inputs.policy, inputs.current_replicas
    warm = cur == p.min_replicas and cur > 0 and d.wanted < p.min_replicas
    return _Verdict(
        cur,
        Reason.HOLDING_WARM_MINIMUM if warm else Reason.HOLDING,
        f"{d.base}: holding {cur}"
        + (f" (warm minimum {p.min_replicas})" if warm else f" (wanted {d.wanted})"),
    )
