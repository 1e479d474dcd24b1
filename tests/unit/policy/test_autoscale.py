"""Table-driven tests and properties for tidepool.policy.autoscale.decide."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.api.conditions import Reason
from tidepool.api.v1alpha1 import ScalingSpec
from tidepool.policy import autoscale, signals

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=1)
POLICY = autoscale.AutoscalePolicy(
    min_replicas=0,
    max_replicas=10,
    target_queue_depth=8,
    scale_to_zero_after=timedelta(minutes=5),
    scale_up_stabilization=timedelta(0),
    scale_down_stabilization=timedelta(minutes=2),
    max_scale_up_rate=2.0,
)


def q(value: float) -> signals.Signal:
    return signals.Sample(value, NOW)


def rec(ago_s: float, replicas: int, sustained: int | None = None) -> autoscale.Recommendation:
    return autoscale.Recommendation(
        at=NOW - timedelta(seconds=ago_s), replicas=replicas, sustained=sustained
    )


def inputs(**kw: object) -> autoscale.AutoscaleInputs:
    base = autoscale.AutoscaleInputs(
        policy=POLICY,
        current_replicas=2,
        ready_replicas=2,
        queue=q(16),
        wake_requested=False,
        pinned_replicas=None,
        last_active_at=NOW,
        history=(),
        operator_started_at=LONG_AGO,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


#: The rule functions :func:`autoscale.decide` runs, by name, and the reasons each may give. A
#: table row names its rule in its id, so a failing id says which rule broke; a reason from
#: another rule's set means the row no longer reaches the rule it names.
RULE_REASONS: dict[str, frozenset[Reason]] = {
    "pinned": frozenset({Reason.PINNED}),
    "without_metrics": frozenset({Reason.WAKE_REQUESTED, Reason.METRICS_UNKNOWN}),
    "scale_up": frozenset(
        {Reason.SCALED_UP, Reason.SCALED_FROM_ZERO, Reason.WAKE_REQUESTED, Reason.HOLDING}
    ),
    "scale_down": frozenset({Reason.SCALED_DOWN, Reason.COOLING_DOWN}),
    "toward_zero": frozenset(
        {Reason.SCALED_TO_ZERO_AFTER_IDLE, Reason.COOLING_DOWN, Reason.SCALED_DOWN}
    ),
    "stabilized_down": frozenset({Reason.SCALED_DOWN, Reason.COOLING_DOWN}),
    "hold": frozenset({Reason.HOLDING, Reason.HOLDING_WARM_MINIMUM}),
}


def case(
    rule: str, given: autoscale.AutoscaleInputs, replicas: int, reason: Reason, name: str
) -> object:
    """A row of :data:`CASES`, its id ``rule:name``."""
    return pytest.param(rule, given, replicas, reason, id=f"{rule}:{name}")


CASES = [
    # Rule 6 after an outage: idle 6m since the last demand, but metrics returned 2m ago, and
    # nobody saw the 4m before: 2m of the 5m window observed, so one replica stays.
    case(
        "toward_zero",
        inputs(
            current_replicas=1,
            ready_replicas=1,
            queue=q(0),
            last_active_at=NOW - timedelta(minutes=6),
            metrics_known_since=NOW - timedelta(minutes=2),
        ),
        1,
        Reason.COOLING_DOWN,
        "idle-6m-but-metrics-back-2m-ago-keeps-one",
    ),
    case(
        "toward_zero",
        inputs(
            current_replicas=1,
            ready_replicas=1,
            queue=q(0),
            last_active_at=NOW - timedelta(minutes=9),
            metrics_known_since=NOW - timedelta(minutes=5),
        ),
        0,
        Reason.SCALED_TO_ZERO_AFTER_IDLE,
        "metrics-back-5m-ago-and-idle-since-scales-to-zero",
    ),
    case(
        "scale_up",
        inputs(queue=q(37)),
        4,
        Reason.SCALED_UP,
        "queue-37-target-8-ready-2-rate-2-gives-4-not-5",
    ),
    case(
        "scale_up",
        inputs(queue=q(37), current_replicas=4, ready_replicas=4),
        5,
        Reason.SCALED_UP,
        "queue-37-with-4-ready-reaches-5",
    ),
    case(
        "scale_up",
        inputs(current_replicas=0, ready_replicas=0, queue=q(3)),
        1,
        Reason.SCALED_FROM_ZERO,
        "scales-from-zero-on-queue",
    ),
    # Rule 4: the rate limit stops a backlog's overshoot, not what the arrivals need. Queue 96
    # asks 12 and 2 ready may double to 4, but the last minute's arrivals keep 48 busy: 6.
    case(
        "scale_up",
        inputs(queue=q(96), offered=48.0),
        6,
        Reason.SCALED_UP,
        "offered-48-lifts-the-rate-limit-to-6-not-12",
    ),
    case(
        "scale_up",
        inputs(queue=q(200), policy=replace(POLICY, min_replicas=5)),
        5,
        Reason.SCALED_UP,
        "below-a-raised-minimum-goes-to-it-but-no-further-than-the-rate",
    ),
    case(
        "scale_up",
        inputs(queue=q(96), offered=8.0),
        4,
        Reason.SCALED_UP,
        "offered-below-the-rate-limit-changes-nothing",
    ),
    case(
        "scale_up",
        inputs(current_replicas=0, ready_replicas=0, queue=q(100)),
        2,
        Reason.SCALED_FROM_ZERO,
        "from-zero-limited-to-rate-times-one",
    ),
    case(
        "without_metrics",
        inputs(
            current_replicas=0,
            ready_replicas=0,
            queue=signals.NoData("no series"),
            wake_requested=True,
        ),
        1,
        Reason.WAKE_REQUESTED,
        "wake-at-zero-scales-without-metrics",
    ),
    case(
        "without_metrics",
        inputs(
            current_replicas=0,
            ready_replicas=0,
            queue=signals.NoData("no series"),
            wake_requested=True,
            policy=replace(POLICY, min_replicas=3),
        ),
        3,
        Reason.WAKE_REQUESTED,
        "wake-at-zero-goes-to-warm-minimum",
    ),
    case(
        "without_metrics",
        inputs(current_replicas=3, queue=signals.NoData("prometheus unreachable")),
        3,
        Reason.METRICS_UNKNOWN,
        "holds-on-missing-metrics",
    ),
    case(
        "without_metrics",
        inputs(current_replicas=1, queue=signals.NoData("NaN"), last_active_at=LONG_AGO),
        1,
        Reason.METRICS_UNKNOWN,
        "never-to-zero-on-missing-metrics-even-when-idle",
    ),
    case(
        "stabilized_down",
        inputs(current_replicas=3, queue=q(0), history=(rec(60, 3),)),
        3,
        Reason.COOLING_DOWN,
        "holds-highest-recommendation-in-window",
    ),
    case(
        "stabilized_down",
        inputs(current_replicas=3, queue=q(8), history=(rec(200, 3),)),
        1,
        Reason.SCALED_DOWN,
        "scales-down-after-window",
    ),
    case(
        "scale_down",
        inputs(current_replicas=3, queue=q(8), operator_started_at=NOW - timedelta(seconds=30)),
        3,
        Reason.COOLING_DOWN,
        "no-scale-down-right-after-restart",
    ),
    case(
        "toward_zero",
        inputs(current_replicas=1, queue=q(0), last_active_at=NOW - timedelta(minutes=2)),
        1,
        Reason.COOLING_DOWN,
        "idle-2m-of-5m-holds-one",
    ),
    case(
        "toward_zero",
        inputs(current_replicas=1, queue=q(0), last_active_at=NOW - timedelta(minutes=6)),
        0,
        Reason.SCALED_TO_ZERO_AFTER_IDLE,
        "idle-6m-scales-to-zero",
    ),
    case(
        "hold",
        inputs(
            current_replicas=2,
            queue=q(0),
            policy=replace(POLICY, min_replicas=2),
            last_active_at=LONG_AGO,
        ),
        2,
        Reason.HOLDING_WARM_MINIMUM,
        "holds-warm-minimum-when-queue-empty",
    ),
    case(
        "hold",
        inputs(current_replicas=2, queue=q(16)),
        2,
        Reason.HOLDING,
        "holds-when-on-target",
    ),
    case(
        "pinned",
        inputs(pinned_replicas=7, queue=q(0)),
        7,
        Reason.PINNED,
        "pinned-by-scale-subresource",
    ),
    case(
        "pinned",
        inputs(pinned_replicas=50, queue=q(0)),
        10,
        Reason.PINNED,
        "pinned-is-clamped-to-max",
    ),
    case(
        "scale_down",
        inputs(current_replicas=12, ready_replicas=12, queue=q(200)),
        10,
        Reason.SCALED_DOWN,
        "above-max-is-cut-at-once",
    ),
    # Rule 5 with the offered load measured. A minute ago 6 replicas were loading and the queue
    # of 48 asked for 6, but the arrivals only for 2 (sustained): that backlog is drained now
    # (queue 16 asks 2), so 6 -> 2 at once instead of holding 6 for the window.
    case(
        "stabilized_down",
        inputs(current_replicas=6, ready_replicas=6, queue=q(16), history=(rec(60, 6, 2),)),
        2,
        Reason.SCALED_DOWN,
        "backlog-seen-while-loading-is-not-held",
    ),
    case(
        "stabilized_down",
        inputs(current_replicas=6, ready_replicas=6, queue=q(16), history=(rec(60, 6),)),
        6,
        Reason.COOLING_DOWN,
        "burst-seen-with-every-replica-ready-is-held",
    ),
    # Rule 4 with a scale-up window: queue 64 asks 8, but 30 s ago the recommendation was 2,
    # the lowest in the 60 s window, so 2 replicas stay.
    case(
        "scale_up",
        inputs(
            policy=replace(POLICY, scale_up_stabilization=timedelta(seconds=60)),
            queue=q(64),
            history=(rec(30, 2),),
        ),
        2,
        Reason.HOLDING,
        "a-lower-recommendation-in-the-scale-up-window-holds",
    ),
    # Rule 2 with the metrics present: an empty queue, but the gateway holds a request.
    case(
        "scale_up",
        inputs(current_replicas=0, ready_replicas=0, queue=q(0), wake_requested=True),
        1,
        Reason.WAKE_REQUESTED,
        "wake-at-zero-with-an-empty-queue-scales-to-one",
    ),
    # Rule 2 inside a scale-up window: 30 s ago, idle, the recommendation was 0, the lowest in
    # the 60 s window; the wake still scales to one at once.
    case(
        "scale_up",
        inputs(
            policy=replace(POLICY, scale_up_stabilization=timedelta(seconds=60)),
            current_replicas=0,
            ready_replicas=0,
            queue=q(0),
            wake_requested=True,
            history=(rec(30, 0),),
        ),
        1,
        Reason.WAKE_REQUESTED,
        "wake-at-zero-is-not-held-by-the-scale-up-window",
    ),
    case(
        "without_metrics",
        inputs(current_replicas=12, ready_replicas=12, queue=signals.NoData("no series")),
        10,
        Reason.METRICS_UNKNOWN,
        "above-max-is-clamped-even-without-metrics",
    ),
    # Rule 6 before the idle window ends, from more than one replica: down to one, not zero.
    case(
        "toward_zero",
        inputs(current_replicas=3, queue=q(0), last_active_at=NOW - timedelta(minutes=2)),
        1,
        Reason.SCALED_DOWN,
        "idle-2m-of-5m-steps-3-down-to-one",
    ),
    case(
        "toward_zero",
        inputs(current_replicas=1, ready_replicas=1, queue=q(0), last_active_at=None),
        1,
        Reason.COOLING_DOWN,
        "no-activity-on-record-starts-the-idle-clock",
    ),
]


@pytest.mark.parametrize(
    ("ready", "offered", "held"),
    [
        pytest.param(2, 12.0, 6, id="all-ready-the-queue-is-demand"),
        pytest.param(1, 12.0, 2, id="loading-the-offered-load-is-remembered"),
        pytest.param(1, None, 6, id="loading-offered-unknown-falls-back-to-the-queue"),
    ],
)
def test_what_the_scale_down_window_remembers(ready: int, offered: float | None, held: int) -> None:
    # Queue 48 at target 8 asks 6; 12 requests offered ask 2.
    d = autoscale.decide(inputs(queue=q(48), ready_replicas=ready, offered=offered), NOW)
    assert d.history[-1].held == held


@pytest.mark.parametrize(("rule", "given_inputs", "replicas", "reason"), CASES)
def test_decide(
    rule: str, given_inputs: autoscale.AutoscaleInputs, replicas: int, reason: Reason
) -> None:
    d = autoscale.decide(given_inputs, NOW)
    assert (d.replicas, d.reason) == (replicas, reason), d.message
    assert d.reason in RULE_REASONS[rule], f"{d.reason} is not a reason {rule} gives"


def test_every_rule_has_a_row() -> None:
    assert {p.values[0] for p in CASES} == set(RULE_REASONS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("last_active_at", "queue", "idle_clock"),
    [
        pytest.param(None, 0, NOW, id="no-activity-on-record-starts-now"),
        pytest.param(LONG_AGO, 0, LONG_AGO, id="idle-since-long-ago-stays"),
    ],
)
def test_toward_zero_idle_clock(
    last_active_at: datetime | None, queue: float, idle_clock: datetime
) -> None:
    given = inputs(
        current_replicas=1, ready_replicas=1, queue=q(queue), last_active_at=last_active_at
    )
    assert autoscale.decide(given, NOW).last_active_at == idle_clock


@pytest.mark.parametrize(
    ("queue", "idle_clock"),
    [
        pytest.param(q(5), NOW, id="demand-while-pinned-refreshes-the-idle-clock"),
        pytest.param(q(0), LONG_AGO, id="no-demand-while-pinned-keeps-it"),
        pytest.param(signals.NoData("no series"), LONG_AGO, id="no-metrics-while-pinned-keeps-it"),
    ],
)
def test_pinned_idle_clock(queue: signals.Signal, idle_clock: datetime) -> None:
    """Unpinning must not scale an active tenant to zero on an idle clock pinning froze."""
    given = inputs(pinned_replicas=3, queue=queue, last_active_at=LONG_AGO)
    assert autoscale.decide(given, NOW).last_active_at == idle_clock


def test_message_carries_the_numbers() -> None:
    d = autoscale.decide(inputs(queue=q(37)), NOW)
    assert "queue 37" in d.message
    assert "2 -> 4" in d.message
    assert "max rate 2" in d.message


def test_missing_metrics_keep_last_active_and_history() -> None:
    hist = (rec(10, 2),)
    d = autoscale.decide(
        inputs(queue=signals.NoData("no series"), history=hist, last_active_at=LONG_AGO), NOW
    )
    assert d.metrics_known is False
    assert d.last_active_at == LONG_AGO
    assert d.history == hist


def test_demand_refreshes_last_active_and_history_is_trimmed() -> None:
    d = autoscale.decide(inputs(queue=q(5), history=(rec(600, 4), rec(30, 2))), NOW)
    assert d.last_active_at == NOW
    assert [r.at for r in d.history] == [NOW - timedelta(seconds=30), NOW]


def test_from_spec_parses_durations() -> None:
    p = autoscale.AutoscalePolicy.from_spec(ScalingSpec())
    assert p.scale_to_zero_after == timedelta(minutes=5)
    assert p.scale_down_stabilization == timedelta(minutes=10)
    assert (p.min_replicas, p.max_replicas, p.target_queue_depth) == (0, 4, 56)


def test_scale_up_stabilization_takes_lowest_recommendation() -> None:
    pol = replace(POLICY, scale_up_stabilization=timedelta(seconds=60))
    d = autoscale.decide(inputs(policy=pol, queue=q(64), history=(rec(30, 3),)), NOW)
    assert d.replicas == 3


# ---- properties ------------------------------------------------------------------------------

policies = st.builds(
    lambda lo, span, target, rate: replace(
        POLICY,
        min_replicas=lo,
        max_replicas=lo + span,
        target_queue_depth=target,
        max_scale_up_rate=rate,
    ),
    st.integers(0, 5),
    st.integers(1, 20),
    st.integers(1, 64),
    st.floats(1.0, 10.0),
)
queues = st.one_of(
    st.floats(0, 5000, allow_nan=False).map(q),
    st.sampled_from([signals.NoData("no series"), signals.NoData("NaN")]),
)
histories = st.lists(st.builds(rec, st.floats(0, 400), st.integers(0, 30)), max_size=6).map(tuple)
snapshots = st.builds(
    lambda pol, cur, ready, queue, wake, hist, idle, restart, known: inputs(
        policy=pol,
        current_replicas=cur,
        ready_replicas=min(cur, ready),
        queue=queue,
        wake_requested=wake,
        history=hist,
        last_active_at=NOW - timedelta(seconds=idle),
        operator_started_at=NOW - timedelta(seconds=restart),
        metrics_known_since=None if known is None else NOW - timedelta(seconds=known),
    ),
    policies,
    st.integers(0, 30),
    st.integers(0, 30),
    queues,
    st.booleans(),
    histories,
    st.floats(0, 3600),
    st.floats(0, 86400),
    st.one_of(st.none(), st.floats(0, 3600)),
)


@given(snapshots)
def test_never_above_max_nor_below_min(s: autoscale.AutoscaleInputs) -> None:
    d = autoscale.decide(s, NOW)
    assert s.policy.min_replicas <= d.replicas <= s.policy.max_replicas


@given(snapshots)
def test_missing_metrics_never_scale_down(s: autoscale.AutoscaleInputs) -> None:
    d = autoscale.decide(s, NOW)
    if isinstance(s.queue, signals.NoData):
        assert d.replicas >= min(s.current_replicas, s.policy.max_replicas)
        assert d.metrics_known is False
        assert d.replicas > 0 or s.current_replicas == 0


@given(snapshots)
def test_zero_only_after_idle_window(s: autoscale.AutoscaleInputs) -> None:
    d = autoscale.decide(s, NOW)
    if d.replicas == 0 and s.current_replicas > 0:
        assert s.last_active_at is not None
        assert NOW - s.last_active_at >= s.policy.scale_to_zero_after
        # Observed idleness only: never a window that an outage cut into.
        if s.metrics_known_since is not None:
            assert NOW - s.metrics_known_since >= s.policy.scale_to_zero_after
        assert s.policy.min_replicas == 0
        assert not s.wake_requested


@given(snapshots)
def test_wake_at_zero_always_scales_up(s: autoscale.AutoscaleInputs) -> None:
    if s.current_replicas == 0 and s.wake_requested and s.pinned_replicas is None:
        assert autoscale.decide(s, NOW).replicas >= max(1, s.policy.min_replicas)


@given(snapshots, st.floats(0, 5000), st.floats(0, 5000))
def test_monotone_in_queue_depth(s: autoscale.AutoscaleInputs, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    d_lo = autoscale.decide(replace(s, queue=q(lo)), NOW)
    d_hi = autoscale.decide(replace(s, queue=q(hi)), NOW)
    assert d_lo.replicas <= d_hi.replicas


@given(snapshots)
def test_pure(s: autoscale.AutoscaleInputs) -> None:
    assert autoscale.decide(s, NOW) == autoscale.decide(s, NOW)
