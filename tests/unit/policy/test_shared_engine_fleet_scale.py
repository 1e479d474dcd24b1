"""The fleet autoscaler of a SharedEngine: its offered-load input (the sum of its tenants' last
minute), the adapters in flight a fleet's batches must make room for, and a backlog sized at the
seats that clear it within a model load rather than held at its peak for the scale-down window."""

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes import steady_traffic
from tidepool.policy import autoscale, placement
from tidepool.policy import shared_engine as se
from tidepool.policy.capacity import EngineCapacity
from tidepool.policy.signals import NoData, Sample, Signal

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
#: A replica of 1,000 prompt tokens/s and 64 seats: ``x`` requests in flight are a tenant
#: sending ``x * 1000 / 64`` prompt tokens/s (Little's law at full batches).
CAP = EngineCapacity(
    prefill_tokens_per_s=1000.0, decode_tokens_per_s=100.0, max_num_seqs=64, source="test"
)
POLICY = autoscale.AutoscalePolicy(
    min_replicas=1,
    max_replicas=1000,
    target_queue_depth=56,
    scale_to_zero_after=timedelta(minutes=5),
    scale_up_stabilization=timedelta(0),
    scale_down_stabilization=timedelta(minutes=10),
    max_scale_up_rate=2.0,
)
START = timedelta(seconds=60)


def traffic(in_flight: float, requests_per_second: float = 1.0) -> placement.Traffic:
    """A tenant whose last minute keeps ``in_flight`` requests busy on :data:`CAP`."""
    return steady_traffic(
        placement.Load(
            requests_per_second, in_flight * CAP.prefill_tokens_per_s / CAP.max_num_seqs, 0.0
        )
    )


def scale_inputs(
    queue: Signal,
    load: se.FleetLoad | NoData,
    *,
    current: int,
    ready: int | None = None,
    history: tuple[autoscale.Recommendation, ...] = (),
    floor: int = 1,
) -> se.FleetScaleInputs:
    return se.FleetScaleInputs(
        queue=autoscale.AutoscaleInputs(
            policy=POLICY,
            current_replicas=current,
            ready_replicas=current if ready is None else ready,
            queue=queue,
            wake_requested=False,
            pinned_replicas=None,
            last_active_at=NOW - timedelta(seconds=30),
            history=history,
            operator_started_at=NOW - timedelta(hours=1),
        ),
        load=load,
        max_loras=4,
        max_num_seqs=64,
        adapter_floor=floor,
        cold_start=START,
    )


# ------------------------------------------------------------------------------ offered load


def test_the_fleets_load_is_its_tenants_sum() -> None:
    """Three tenants at 0.5, 1 and 20 in flight: 21.5 in flight, and at a random instant
    ``(1 - e^-0.5) + (1 - e^-1) + (1 - e^-20) = 0.39 + 0.63 + 1.0 = 2.03`` adapters."""
    seen = {"t/a": traffic(0.5, 2.0), "t/b": traffic(1.0, 3.0), "t/c": traffic(20.0, 5.0)}

    load = se.fleet_load(seen, ["t/a", "t/b", "t/c"], CAP)

    assert isinstance(load, se.FleetLoad)
    assert load.in_flight == pytest.approx(21.5)
    assert load.requests_per_second == pytest.approx(10.0)
    assert load.active_adapters == pytest.approx(2.0256, abs=1e-4)
    assert load.tenants == 3


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        pytest.param({"t/b": NoData("gateway down")}, "gateway down", id="a-tenants-read-failed"),
        pytest.param({}, "traffic not read", id="a-tenant-not-read"),
        pytest.param(
            {"t/b": placement.declared(600.0)},
            "its last minute is not measured",
            id="a-declared-load-has-no-last-minute",
        ),
    ],
)
def test_one_unknown_tenant_makes_the_fleets_load_unknown(
    seen: dict[str, placement.Traffic | NoData], why: str
) -> None:
    """A sum missing a part would read as less load and shrink the fleet."""
    load = se.fleet_load({"t/a": traffic(30.0), **seen}, ["t/a", "t/b"], CAP)

    assert isinstance(load, NoData)
    assert load.reason == f"offered load of tenant t/b unknown: {why}"


@pytest.mark.parametrize(
    ("active", "tenants", "busiest", "replicas"),
    [
        pytest.param(2.0, 200, 5.29, 2, id="200-tenants-2-in-flight-5.3-at-p99-2-replicas"),
        pytest.param(13.1, 18, 18.0, 6, id="13.1-of-18-capped-at-18-6-replicas"),
        pytest.param(0.0, 5, 0.0, 0, id="nothing-in-flight-no-replica"),
        pytest.param(40.0, 400, 54.71, 16, id="40-in-flight-54.7-at-p99-16-replicas"),
    ],
)
def test_adapters_in_flight_at_the_99th_percentile(
    active: float, tenants: int, busiest: float, replicas: int
) -> None:
    """``min(T, mean + 2.326 sqrt(mean))``, over ``maxLoras`` 4 at 56/64 of a batch (3.5)."""
    load = se.FleetLoad(
        in_flight=0.0, requests_per_second=0.0, active_adapters=active, tenants=tenants
    )

    assert load.busiest_adapters == pytest.approx(busiest, abs=0.01)
    assert se.adapter_replicas(load, max_loras=4, utilization=56 / 64) == replicas


# ------------------------------------------------------------------------------ the backlog


LOAD = se.FleetLoad(in_flight=2930.0, requests_per_second=586.0, active_adapters=22.0, tenants=22)


@pytest.mark.parametrize(
    ("queue", "load", "expected"),
    [
        pytest.param(2983.0, LOAD, 2934.42, id="53-backlog-needs-4.4-seats"),
        pytest.param(17000.0, LOAD, 4102.5, id="burst-17000-needs-2930+14070x5/60"),
        pytest.param(2500.0, LOAD, 2500.0, id="below-the-offered-load-as-it-is"),
        pytest.param(
            300.0,
            se.FleetLoad(in_flight=0.0, requests_per_second=0.0, active_adapters=0.0, tenants=1),
            300.0,
            id="no-arrivals-no-service-time-as-it-is",
        ),
        pytest.param(
            1000.0,
            se.FleetLoad(in_flight=600.0, requests_per_second=5.0, active_adapters=1.0, tenants=1),
            1000.0,
            id="requests-longer-than-a-start-the-whole-backlog",
        ),
    ],
)
def test_clearing_queue(queue: float, load: se.FleetLoad, expected: float) -> None:
    """In flight plus ``backlog x W / T``, ``W = in flight / arrivals`` (5 s), ``T`` 60 s."""
    assert se.clearing_queue(queue, load, START) == pytest.approx(expected, abs=0.01)


def test_a_burst_held_at_what_clears_it_within_a_start() -> None:
    """The worked example of :func:`decide_fleet`: 70 replicas, 2,930 in flight at 586/s, a
    burst leaves a queue of 17,000. Queue-only: 304 wanted, 140 at the rate limit, and three
    minutes later, the burst gone, the window still holds all 140. With the offered load:
    ``ceil(4102.5 / 56) = 74``, and 74 is what the window holds."""
    burst = Sample(17000.0, NOW)
    later = NOW + timedelta(minutes=3)

    queue_only = se.decide_fleet(scale_inputs(burst, NoData("not read"), current=70), NOW)
    offered = se.decide_fleet(scale_inputs(burst, LOAD, current=70), NOW)

    assert (queue_only.replicas, offered.replicas) == (140, 74)
    assert "sized for 4102 of queue 17000" in offered.message
    calm = Sample(2930.0, later)
    held = se.decide_fleet(
        scale_inputs(calm, NoData("not read"), current=140, history=queue_only.scale.history),
        later,
    )
    followed = se.decide_fleet(
        scale_inputs(calm, LOAD, current=74, history=offered.scale.history), later
    )
    assert (held.replicas, followed.replicas) == (140, 74)


def test_noise_above_the_offered_load_starts_no_replica() -> None:
    """53 replicas, 2,930 in flight: a queue of 2,983 asks the queue-only rule for 54 (a start
    given back at the next look); its 53 of backlog clear on 4.4 seats, so 53 it stays."""
    noisy = Sample(2983.0, NOW)

    assert se.decide_fleet(scale_inputs(noisy, NoData("not read"), current=53), NOW).replicas == 54
    assert se.decide_fleet(scale_inputs(noisy, LOAD, current=53), NOW).replicas == 53


def test_many_small_tenants_get_batches_for_their_adapters() -> None:
    """30 tenants at 2 in flight each: 60 in flight fit 2 replicas at 56, but 26 adapters are in
    flight at once (30 at the 99th percentile): ``ceil(30 / 3.5) = 9`` replicas, in one step
    from 2 (what the arrivals need is no backlog: no rate limit)."""
    seen = {f"t/{k}": traffic(2.0, 0.5) for k in range(30)}
    load = se.fleet_load(seen, list(seen), CAP)

    decision = se.decide_fleet(scale_inputs(Sample(60.0, NOW), load, current=2), NOW)

    assert decision.replicas == 9
    assert "30.0 at the 99th percentile: 9 replicas" in decision.message
    queue_only = se.decide_fleet(scale_inputs(Sample(60.0, NOW), NoData("-"), current=2), NOW)
    assert queue_only.replicas == 2


# ----------------------------------------------------------------------------- properties


tenant_loads = st.lists(
    st.tuples(st.floats(0.0, 300.0), st.floats(0.1, 50.0)), min_size=1, max_size=12
)


def _load(tenants: list[tuple[float, float]], factor: float = 1.0) -> se.FleetLoad | NoData:
    seen = {f"t/{k}": traffic(x * factor, rps * factor) for k, (x, rps) in enumerate(tenants)}
    return se.fleet_load(seen, list(seen), CAP)


@given(
    tenants=tenant_loads,
    factor=st.floats(1.0, 10.0),
    queue=st.floats(0.0, 20000.0),
    current=st.integers(1, 200),
    loading=st.integers(0, 5),
)
def test_more_offered_load_never_gives_fewer_replicas(
    tenants: list[tuple[float, float]], factor: float, queue: float, current: int, loading: int
) -> None:
    """Every tenant sending ``factor`` times more (same request shape) never shrinks the fleet."""
    ready = max(0, current - loading)
    less = se.decide_fleet(
        scale_inputs(Sample(queue, NOW), _load(tenants), current=current, ready=ready), NOW
    )
    more = se.decide_fleet(
        scale_inputs(Sample(queue, NOW), _load(tenants, factor), current=current, ready=ready),
        NOW,
    )
    assert more.replicas >= less.replicas


@given(
    tenants=tenant_loads,
    queue=st.floats(0.0, 20000.0),
    current=st.integers(0, 200),
    floor=st.integers(0, 10),
)
def test_unknown_traffic_sizes_on_the_queue_alone(
    tenants: list[tuple[float, float]], queue: float, current: int, floor: int
) -> None:
    """One tenant unknown: exactly the queue-only autoscaler (and the adapter floor)."""
    seen: dict[str, placement.Traffic | NoData] = {
        f"t/{k}": traffic(x, rps) for k, (x, rps) in enumerate(tenants)
    }
    seen["t/unknown"] = NoData("gateway down")
    load = se.fleet_load(seen, list(seen), CAP)
    inputs = scale_inputs(Sample(queue, NOW), load, current=current, floor=floor)

    decision = se.decide_fleet(inputs, NOW)

    alone = autoscale.decide(inputs.queue, NOW).replicas
    assert decision.replicas == (max(alone, floor) if alone > 0 else 0)
    assert "sizing on the queue alone" in decision.message


@given(tenants=tenant_loads, current=st.integers(0, 200), known=st.booleans())
def test_an_unknown_queue_never_scales_down(
    tenants: list[tuple[float, float]], current: int, known: bool
) -> None:
    """Whatever the offered load says, a queue that could not be read holds the fleet."""
    load = _load(tenants) if known else NoData("not read")

    decision = se.decide_fleet(scale_inputs(NoData("replica p0"), load, current=current), NOW)

    assert decision.replicas == POLICY.clamp(current)


@given(tenants=tenant_loads, queue=st.floats(0.0, 1e6), current=st.integers(0, 1000))
def test_the_fleet_stays_within_its_bounds(
    tenants: list[tuple[float, float]], queue: float, current: int
) -> None:
    decision = se.decide_fleet(
        scale_inputs(Sample(queue, NOW), _load(tenants), current=current), NOW
    )

    assert decision.replicas <= POLICY.max_replicas
    assert decision.replicas >= min(current, POLICY.min_replicas)
    assert math.isfinite(decision.scale.requeue_after.total_seconds())
