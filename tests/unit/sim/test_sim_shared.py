"""Shared LoRA engines in the simulator: the fleet's physics and spend (sim.shared), the comparison
of the ways to host a pool (sim.shared_compare), and ``tidepool simulate --shared-engines``."""

import gzip
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidepool import cli
from tidepool.api.v1alpha1 import PlacementSpec
from tidepool.policy import lora_timing
from tidepool.sim import config, engine, report, shared, shared_compare, traces

START = datetime(2025, 1, 1, tzinfo=UTC)
DT = 5.0
CFG = config.for_prices("h100")
#: A request of 1,000 input and 200 output tokens holds a seat 5.5 s on the default H100 8B engine.
IN, OUT = 1000.0, 200.0


def load(name: str, arrivals: list[float]) -> traces.TenantLoad:
    """A tenant sending ``arrivals[i]`` requests of IN + OUT tokens in step ``i``."""
    a = np.asarray(arrivals, dtype=np.float64)
    return traces.tenant_load(name, CFG.capacity(), a, a * IN, a * OUT)


def fleet_run(
    loads: list[traces.TenantLoad], fleet: shared.FleetSettings | None = None, **kw: object
) -> shared.FleetRun:
    return shared.simulate_fleet(
        loads,
        CFG,
        fleet or shared.FleetSettings(),
        dt=DT,
        start=START,
        **kw,  # type: ignore[arg-type]
    )


def _fleet(spend: float, tokens: list[float], gpu_hours: float = 1.0) -> shared.FleetRun:
    n = len(tokens)
    return shared.FleetRun(
        tenants=tuple(f"t{k}" for k in range(n)),
        dt=DT,
        trace_steps=1,
        gpu_hours=gpu_hours,
        spend=spend,
        price_per_million_tokens=0.20,
        tokens=np.asarray(tokens, dtype=np.float64),
        requests=np.ones(n),
        wait_weights=tuple(np.ones(1) for _ in range(n)),
        unserved=np.zeros(n),
        replicas_timeline=np.zeros(1, dtype=np.float32),
        spend_timeline=np.zeros(1),
        replica_starts=0,
        adapter_loads=0,
        adapter_swaps=0,
        max_batch_adapters=0.0,
        own_mode=np.zeros((n, 1), dtype=np.int8),
        own_floor=np.zeros((n, 1), dtype=np.int16),
        promoted_at=tuple(() for _ in range(n)),
    )


# ---------------------------------------------------------------------- spend apportionment


@pytest.mark.parametrize(
    ("spend", "tokens", "expected"),
    [
        pytest.param(30.0, [1e6, 2e6], [10.0, 20.0], id="1M-and-2M-tokens-split-30-dollars"),
        pytest.param(7.79, [3e6, 0.0], [7.79, 0.0], id="an-idle-tenant-pays-nothing"),
        pytest.param(12.0, [0.0, 0.0, 0.0], [4.0, 4.0, 4.0], id="no-tokens-equal-shares"),
    ],
)
def test_fleet_spend_is_apportioned_by_tokens(
    spend: float, tokens: list[float], expected: list[float]
) -> None:
    run = _fleet(spend, tokens)
    assert run.spend_by_tenant.tolist() == pytest.approx(expected)


def test_tenant_run_carries_its_share_and_chargeback() -> None:
    # $30 over 2 GPU-hours, 1M and 2M tokens: the second tenant pays $20 and 1.33 GPU-hours,
    # and is billed 2M x $0.20/1M = $0.40 beside it.
    run = _fleet(30.0, [1e6, 2e6], gpu_hours=2.0).tenant_run(1, "x")
    assert (run.spend, run.gpu_hours, run.chargeback) == pytest.approx((20.0, 4 / 3, 0.40))
    assert run.spend_dedicated == 0.0


def test_two_tenants_worked_example() -> None:
    """Tenant a sends 10 requests every step, b 5 every other step, for 10 minutes, on one warm
    H100 replica ($7.79/GPU-hour, kept by minReplicas 1). Every request is served at once; the
    fleet's spend is its replica-steps at $7.79/h, a pays 4/5 of it (it sent 1,200 of the 1,500
    requests, all of the same size) and b 1/5; chargeback is their tokens at $0.20/1M."""
    steps = 120
    a = load("pool/a", [10.0] * steps)
    b = load("pool/b", [5.0 if i % 2 == 0 else 0.0 for i in range(steps)])
    run = fleet_run([a, b])
    assert run.requests.tolist() == [1200.0, 300.0]
    assert run.tokens.tolist() == pytest.approx([1200 * 1200.0, 300 * 1200.0])
    assert run.unserved.tolist() == [0.0, 0.0]
    assert [float(w[0]) for w in run.wait_weights] == pytest.approx([1200.0, 300.0])
    replica_steps = float(run.replicas_timeline.sum())
    assert run.spend == pytest.approx(replica_steps * DT / 3600.0 * 7.79)
    assert run.spend_by_tenant.tolist() == pytest.approx([run.spend * 0.8, run.spend * 0.2])
    assert run.chargeback_by_tenant.tolist() == pytest.approx([0.288, 0.072])
    assert run.max_batch_adapters <= 2.0


# ----------------------------------------------------------------------------- the physics


def test_the_fleet_wakes_on_any_tenants_request_after_a_model_load() -> None:
    """A fleet at zero (minReplicas 0, nothing sent for its first 10 minutes, so the warm start
    holds nothing), and tenant b's first request at step 130: the gateway's wake makes the plan
    start a replica at once; it is Ready a 60 s model load (12 steps) later, the plan loads b's
    adapter on it (the operator looks again while a replica is not Ready), and the adapter serves
    from the next step: b waited 13 steps, 65 s."""
    quiet = [0.0] * 200
    woken = [0.0] * 200
    woken[130] = 3.0
    run = fleet_run(
        [load("pool/a", quiet), load("pool/b", woken)], shared.FleetSettings(min_replicas=0)
    )
    assert run.replicas_timeline[:130].tolist() == [0.0] * 130
    assert run.replicas_timeline[130] == 1.0
    waits = run.wait_weights[1]
    cold = math.ceil(CFG.engine.cold_start_s / DT)
    assert int(np.flatnonzero(waits)[0]) == cold + 1
    assert float(waits.sum()) == pytest.approx(3.0)
    assert run.replica_starts == 1


def test_an_adapter_wake_on_a_warm_fleet_costs_no_model_load() -> None:
    """With a replica up, a tenant idle until step 30 is served in the step its request comes:
    its adapter is already on the replica (the plan places every adapter it has room for)."""
    busy = [4.0] * 60
    late = [0.0] * 60
    late[30] = 2.0
    run = fleet_run([load("pool/a", busy), load("pool/b", late)])
    assert float(run.wait_weights[1][0]) == pytest.approx(2.0)
    assert run.replica_starts == 0


def test_the_fleet_reads_requests_in_flight_not_a_steps_arrivals() -> None:
    """Chat turns of 100 input and 10 output tokens hold a seat ``64 x (100/32517 + 10/3600) =
    0.375`` s; 1,000 a step (200/s) keep 75 in flight (Little's law): ``ceil(75/56) = 2``
    replicas throughout. The plan reads the queue after the step's admissions, as the
    per-tenant simulator does; read before them, a whole step's 1,000 arrivals looked held at
    once and asked for ``ceil(1000/56) = 18``."""
    a = np.full(240, 1000.0)
    chat = traces.tenant_load("pool/chat", CFG.capacity(), a, a * 100.0, a * 10.0)

    run = fleet_run([chat])

    assert set(run.replicas_timeline[:240].tolist()) == {2.0}
    assert run.replica_starts == 0


def test_a_burst_is_held_at_its_minutes_arrivals_not_its_queues_doublings() -> None:
    """A tenant keeping 221 in flight (200 requests a step of 5.5 s: 4 replicas) sends 20,000
    more in one step. The burst's minute offers 22,400 requests (373/s, 2,061 in flight):
    ``ceil(2061/56) = 37`` replicas in one step, held through the ten-minute window (stepping
    down as its later minutes, with less of the burst, age out), then back to 4. On its queue
    alone the fleet doubled 4 -> 8 -> ... -> 64 and held 64 as long."""
    arrivals = [200.0] * 360
    arrivals[120] += 20000.0

    run = fleet_run([load("pool/a", arrivals)])

    tl = run.replicas_timeline
    assert tl[:120].max() == 4.0
    assert tl[120:250].max() == 37.0
    assert tl[120 + 12 * 13 : 360].max() == 4.0  # the window (10 min), its last minute and one


def test_adapter_load_time_grows_with_rank() -> None:
    assert lora_timing.load_seconds(16) == pytest.approx(0.032)
    assert lora_timing.load_seconds(64) == pytest.approx(4 * lora_timing.load_seconds(16))


@pytest.mark.parametrize(
    ("others", "mine", "max_loras", "expected"),
    [
        pytest.param(3.0, 0.0, 4, math.inf, id="three-full-adapters-leave-a-whole-slot"),
        pytest.param(3.5, 0.0, 4, -math.log(0.5), id="half-a-slot-left-is-0.69-seats"),
        pytest.param(4.0, 0.0, 4, 0.0, id="every-slot-taken"),
        pytest.param(3.5, 0.2, 4, -math.log(0.5) - 0.2, id="counts-what-the-tenant-runs"),
    ],
)
def test_adapter_room_keeps_expected_adapters_within_max_loras(
    others: float, mine: float, max_loras: int, expected: float
) -> None:
    r = shared._Replica("r", 0)
    # "others" fully running adapters' worth, spread as whole and partial tenants.
    whole, part = int(others), others - int(others)
    for k in range(whole):
        r.run(100 + k, 50.0)
    if part:
        r.run(99, -math.log(1.0 - part))
    if mine:
        r.run(7, mine)
    assert r.adapters == pytest.approx(others + (1 - math.exp(-mine)), abs=1e-6)
    assert shared._adapter_room(r, 7, max_loras) == pytest.approx(expected, abs=1e-6)


#: Two minutes with no request: the warm start reads a quiet first minute and keeps the fleet's
#: one replica, so what follows meets that replica's batch until the plan has seen it.
QUIET = [0.0] * 24


def test_max_loras_makes_tenants_share_the_batch() -> None:
    """One warm replica, maxLoras 1, two tenants each sending a steady stream after a quiet start:
    the batch holds one adapter (in expectation) at a time, so the two share it and requests wait
    (until the replicas the plan adds for the second adapter are Ready) where with room for both
    adapters they would not."""
    a = load("pool/a", QUIET + [20.0] * 60)
    b = load("pool/b", QUIET + [20.0] * 60)
    one = fleet_run([a, b], shared.FleetSettings(max_loras=1, max_cpu_loras=2))
    two = fleet_run([a, b], shared.FleetSettings(max_loras=2))
    assert one.max_batch_adapters <= 1.0 + 1e-9
    waited = sum(float(w[1:].sum()) for w in one.wait_weights)
    assert waited > sum(float(w[1:].sum()) for w in two.wait_weights)


def _replica(running: dict[int, float]) -> shared._Replica:
    r = shared._Replica("r", 0)
    for tenant, seats in running.items():
        r.run(tenant, seats)
    return r


@pytest.mark.parametrize(
    ("cands", "expected"),
    [
        pytest.param([], "no adapter", id="no-ready-replica-serves-the-adapter"),
        pytest.param([{1: 64.0}], "seats", id="its-one-replica-is-full"),
        pytest.param([{1: 64.0}, {1: 30.0, 2: 34.0}], "seats", id="every-replica-full"),
        # Placed all it could, yet 24 seats are free: four other adapters fill the batch.
        pytest.param([{1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0}], "maxLoras", id="batch-out-of-slots"),
        pytest.param(
            [{1: 64.0}, {1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0}],
            "maxLoras",
            id="one-full-the-other-out-of-slots",
        ),
    ],
)
def test_hold_cause_after_the_gateway_placed_what_it_could(
    cands: list[dict[int, float]], expected: str
) -> None:
    replicas = [_replica(running) for running in cands]
    assert shared.HOLD_CAUSES[shared.hold_cause(replicas, 64)] == expected


def test_the_warm_start_has_the_replicas_the_first_minutes_adapters_need() -> None:
    """Twelve tenants each sending 2 requests a step (5.5 s each: 2.2 in flight, 0.89 adapters in
    flight in expectation, 10.7 in all) from the trace's first step, maxLoras 4. The fleet was
    serving this before the trace began, so it starts with the replicas their adapters need: 12
    at the 99th percentile over 4 slots at the target's 56/64 of a batch,
    ``ceil(12 / 3.5) = 4``, and no request waits for a slot. Read as unknown, the first minute
    started the fleet at its one warm replica, and requests waited a model load for a slot."""
    loads = [load(f"pool/t{k}", [2.0] * 120) for k in range(12)]
    run = fleet_run(loads)
    assert run.replicas_timeline[0] == 4.0
    assert run.held[:, shared.HOLD_CAUSES.index("maxLoras")].sum() == 0.0
    assert run.replica_starts == 0


def test_held_shares_worked_example() -> None:
    run = replace(_fleet(1.0, [1.0, 1.0]), held=np.array([[0.0, 9.0, 1.0], [0.0, 0.0, 0.0]]))
    assert run.held_shares([0, 1]) == pytest.approx([0.0, 0.9, 0.1])
    assert run.held_shares([1]) == pytest.approx([0.0, 0.0, 0.0])


def test_held_counts_what_max_loras_holds_back() -> None:
    """The scenario of test_max_loras_makes_tenants_share_the_batch: with one adapter per batch the
    requests that wait do so mostly for an adapter slot; with room for both, none waits for one."""
    a = load("pool/a", QUIET + [20.0] * 60)
    b = load("pool/b", QUIET + [20.0] * 60)
    one = fleet_run([a, b], shared.FleetSettings(max_loras=1, max_cpu_loras=2))
    two = fleet_run([a, b], shared.FleetSettings(max_loras=2))
    assert one.held_shares([0, 1])[shared.HOLD_CAUSES.index("maxLoras")] > 0.5
    assert two.held[:, shared.HOLD_CAUSES.index("maxLoras")].sum() == 0.0


def test_a_heavy_adapter_leaves_the_light_tenants_their_slots() -> None:
    """After a quiet start, one tenant keeping 66 requests in flight (60 a step of 5.5 s) and three
    keeping about one each, maxLoras 2, on the three replicas the plan keeps. The light tenants'
    requests go first (policy.fair_share: the heavy tenant is beyond its share of the seats) and
    the heavy adapter is packed onto the replicas it fills (policy.adapter_affinity), so the light
    tenants never wait; the heavy tenant's requests wait one step for an adapter slot 254 times in
    7,200 (3.5%). Under first come, first served the light tenants waited 20 request-steps for a
    slot, and with the heavy adapter spread over every replica running it, 605."""
    heavy = load("pool/heavy", QUIET + [60.0] * 120)
    light = [load(f"pool/l{k}", QUIET + [1.0] * 120) for k in range(3)]
    run = fleet_run([heavy, *light], shared.FleetSettings(max_loras=2, max_cpu_loras=4))
    assert [float(w[1:].sum()) for w in run.wait_weights[1:]] == [0.0, 0.0, 0.0]
    held_for_a_slot = float(run.held[0, shared.HOLD_CAUSES.index("maxLoras")])
    assert held_for_a_slot < 0.05 * float(run.requests[0])  # 254 of 7,200


def test_a_burst_does_not_hold_another_tenants_requests_behind_it() -> None:
    """A tenant sends 3,000 requests in one step (a seat each for 5.5 s) to a warm fleet of one
    replica of 64 seats; another sends one a step throughout. The engines serve the tenant with
    the fewest requests in flight first (policy.fair_share, what the gateway sends vLLM as each
    request's priority), so the light tenant's requests never wait a step behind the burst, which
    waits for the replicas the fleet adds (a 60 s model load) and for its own turn."""
    burst = load("pool/burst", [0.0] * 10 + [3000.0] + [0.0] * 109)
    light = load("pool/light", [1.0] * 120)
    run = fleet_run([burst, light])
    burst_waits, light_waits = run.wait_weights
    assert float(light_waits[1:].sum()) == 0.0, "the light tenant waited behind the burst"
    assert len(burst_waits) - 1 >= 60 / DT, "the burst waits out a model load"


@pytest.mark.parametrize(
    ("modes", "floors", "expected"),
    [
        pytest.param([0, 0], [0, 0], [], id="always-on-the-fleet"),
        pytest.param(
            [0, 1, 1, 2, 0],
            [0, 0, 0, 3, 0],
            [(1, 3, "dedicated", 0), (3, 4, "hybrid", 3)],
            id="dedicated-then-hybrid",
        ),
        pytest.param([2, 2, 2], [1, 1, 2], [(0, 2, "hybrid", 1), (2, 3, "hybrid", 2)], id="floor"),
    ],
)
def test_own_segments(
    modes: list[int], floors: list[int], expected: list[tuple[int, int, str, int]]
) -> None:
    segs = shared.own_segments(np.asarray(modes), np.asarray(floors))
    assert [(s.lo, s.hi, str(s.mode), s.floor) for s in segs] == expected


def test_aggregate_weights_service_time_by_requests() -> None:
    # 2 requests of 4 s and 1 of 10 s in a step: 3 requests of 6 s.
    a = traces.TenantLoad("a", np.array([2.0]), np.array([10.0]), np.array([1.0]), np.array([4.0]))
    b = traces.TenantLoad("b", np.array([1.0]), np.array([5.0]), np.array([2.0]), np.array([10.0]))
    total = shared.aggregate([a, b], "ab")
    assert (total.arrivals[0], total.service_s[0], total.input_tokens[0]) == (3.0, 6.0, 15.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"max_loras": 0}, "--max-loras must be >= 1, got 0", id="max-loras"),
        pytest.param(
            {"max_loras": 4, "max_cpu_loras": 2},
            "--max-cpu-loras (2) must be >= --max-loras (4)",
            id="cpu-below-gpu",
        ),
        pytest.param({"adapter_rank": 0}, "--adapter-rank must be >= 1, got 0", id="rank"),
        pytest.param({"min_replicas": -1}, "--fleet-min-replicas must be >= 0", id="min"),
    ],
)
def test_fleet_settings_refuse_bad_values(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shared.FleetSettings(**kwargs)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    streams=st.lists(
        st.lists(st.sampled_from([0.0, 0.0, 1.0, 3.0, 30.0, 200.0]), min_size=24, max_size=24),
        min_size=1,
        max_size=5,
    ),
    max_loras=st.integers(min_value=1, max_value=3),
    warm=st.integers(min_value=0, max_value=1),
)
def test_fleet_properties(streams: list[list[float]], max_loras: int, warm: int) -> None:
    """Whatever the traffic: the tenants' spends add up to the fleet's; no batch holds more than
    max_loras adapters (in expectation); every request sent is served or counted unserved, each
    with its wait."""
    loads = [load(f"pool/t{k}", s) for k, s in enumerate(streams)]
    run = fleet_run(
        loads,
        shared.FleetSettings(max_loras=max_loras, max_cpu_loras=max(max_loras, len(loads)),
                             min_replicas=warm),
    )  # fmt: skip
    assert float(run.spend_by_tenant.sum()) == pytest.approx(run.spend, rel=1e-9, abs=1e-12)
    assert run.max_batch_adapters <= max_loras + 1e-9
    for k, stream in enumerate(streams):
        assert float(run.wait_weights[k].sum()) == pytest.approx(sum(stream))
        assert run.requests[k] == pytest.approx(sum(stream))


# ------------------------------------------------------------------------ the comparison


def test_merge_adds_parts() -> None:
    # Waits [3, 1] and [2] merge to [5, 1]; spends and tokens add.
    a = replace(_fleet(10.0, [1e6]).tenant_run(0, "x"), wait_weights=np.array([3.0, 1.0]))
    b = replace(_fleet(5.0, [2e6]).tenant_run(0, "x"), wait_weights=np.array([2.0]))
    merged = shared_compare.merge([a, b], "t0", "auto")
    assert merged.wait_weights.tolist() == [5.0, 1.0]
    assert (merged.spend, merged.tokens_shared, merged.requests) == (15.0, 3e6, 2.0)


def test_by_pool_groups_servegen_clients_and_drops_silent_ones() -> None:
    w = traces.Workload(
        "t",
        DT,
        START,
        (load("m-large/1", [1.0]), load("m-small/2", [2.0]), load("m-large/3", [0.0])),
    )
    groups = shared_compare.by_pool(w)
    assert {k: [t.name for t in v] for k, v in groups.items()} == {
        "m-large": ["m-large/1"],
        "m-small": ["m-small/2"],
    }


@pytest.mark.parametrize(
    ("ratios", "missed", "expected"),
    [
        pytest.param((0.25, 1.0, 1.10), (), [], id="at-every-target"),
        pytest.param(
            (0.31, 0.9, 1.0),
            ("a",),
            ["tail/own 0.310 > 0.25", "SLO: 1/40 tenants over 10s: a (worst, p99 20s)"],
            id="tail-and-slo",
        ),
        pytest.param(
            (0.1, 1.2, math.nan),
            (),
            ["pool/own 1.200 > 1", "auto/split nan > 1.1"],
            id="pool-and-no-split",
        ),
        pytest.param((None, 0.9, 1.0), (), [], id="no-long-tail-is-not-judged"),
        pytest.param(
            (0.345, 0.6, 1.0, 0.282),
            (),
            ["tail/own 0.345 > 0.25 (floor 0.282)"],
            id="a-tail-target-below-its-floor-says-so",
        ),
        pytest.param((0.31, 0.6, 1.0, 0.2), (), ["tail/own 0.310 > 0.25"], id="a-reachable-tail"),
    ],
)
def test_missed_shared_targets(
    ratios: tuple[float | None, ...], missed: tuple[str, ...], expected: list[str]
) -> None:
    auto = report.PolicyResult(
        name="shared + auto",
        gpu_hours=1.0,
        spend=1.0,
        spend_shared=1.0,
        spend_dedicated=0.0,
        chargeback=0.0,
        replica_starts=0,
        worst_p99_wait_s=20.0,
        worst_tenant="a",
        tenants=40,
        missed=missed,
        requests=1.0,
        slo_p99_s=10.0,
    )
    tail, pool, split, *floor = ratios
    q = report.SharedRatios(
        tail_vs_own=tail,
        pool_vs_own=pool,  # type: ignore[arg-type]
        vs_best_split=split,  # type: ignore[arg-type]
        vs_lower_bound=1.0,
        tail_floor_vs_own=floor[0] if floor else None,
    )
    assert report.missed_shared_targets(auto, q) == expected


def test_tail_spend_floor_is_the_least_bound_share_over_the_splits() -> None:
    """Six tenants, each sending one request per 5 s step for a minute. A request holds a seat
    5.5 s, so a tenant's 12 requests are 12 x 5.5 / 60 = 1.1 seats over the minute, and every
    tenant has 1/6 of the tokens. A replica for the minute costs $7.79 / 60 = $0.1298.

    k = 0: all six as one fleet need ceil(6.6 / 64) = 1 replica, and the tail's 1/6 of it is
    $0.0216. k = 5 (the top five on their own): the tail alone, also 1 replica, $0.1298. The
    floor is the least of the splits: $0.0216.
    """
    loads = [load(f"p/{k}", [1.0] * 12) for k in range(6)]
    ranked = list(range(6))
    one_replica_minute = CFG.prices.shared_per_gpu_hour / 60
    floor = shared_compare.tail_spend_floor(loads, ranked, CFG, DT)
    assert floor == pytest.approx(one_replica_minute / 6)
    assert shared_compare.tail_spend_floor(loads[:5], ranked[:5], CFG, DT) is None


def test_compare_pools_hourly_progress_names_the_alternative_it_is_for() -> None:
    """Every fleet run reports each simulated hour, named: the shared engine, shared + auto and
    each static split (a user watching seven runs count hours needs to know which is which)."""
    quiet = [load(f"p/t{k}", [0.1] * 80) for k in range(2)]
    said: list[str] = []
    shared_compare.compare_pool(
        "p",
        quiet,
        CFG,
        shared.FleetSettings(),
        dt=60.0,
        start=START,
        split_max=1,
        progress=said.append,
    )
    hourly = [m.split(" (")[0] for m in said if ": fleet" in m and "hour 1 of 2" in m]
    assert hourly == [
        "p: shared engine: fleet: hour 1 of 2, 1 replicas",
        "p: shared + auto: fleet with promotions: hour 1 of 2, 1 replicas",
        "p: static split k = 1: fleet: hour 1 of 2, 1 replicas",
    ]


def test_compare_pool_runs_every_alternative() -> None:
    """A pool of one busy tenant and three small ones, 30 minutes: every alternative covers every
    tenant, spend adds up per alternative, and the best static split is one of k = 0..3.

    Its dedicated GPUs are at half the fleet's price per GPU-hour (reserved ones): at equal prices
    replicas of its own never spend less than the capacity the fleet sheds without it
    (:mod:`tidepool.policy.lora_promotion`), so only a cheaper pool promotes a tenant on spend."""
    rng = np.random.default_rng(1)
    busy = load("p/busy", rng.poisson(300.0, 360).astype(float).tolist())
    small = [load(f"p/s{k}", rng.poisson(0.3, 360).astype(float).tolist()) for k in range(3)]
    half = replace(CFG.prices, dedicated_per_gpu_hour=CFG.prices.dedicated_per_gpu_hour / 2)
    cmp = shared_compare.compare_pool(
        "p",
        [busy, *small],
        replace(CFG, prices=half),
        shared.FleetSettings(),
        dt=DT,
        start=START,
        split_max=3,
    )
    assert cmp.top[0] == 0  # the busy tenant heads the pool
    assert sorted(cmp.top) == [0, 1, 2, 3]  # four tenants: all in the top 5, no long tail
    assert cmp.tail == ()
    assert cmp.ratios.tail_vs_own is None
    for name in shared_compare.POLICIES:
        assert [r.tenant for r in cmp.runs[name]] == ["p/busy", "p/s0", "p/s1", "p/s2"]
        assert cmp.result(name).spend == pytest.approx(cmp.spend(name))
    assert 0 <= cmp.split <= 3
    # The busy tenant (60 requests/s, 5.2 replicas of steady work) forces 5.2 / 0.875 - 1 = 4.9
    # replicas beside the fleet's warm one; its own 6 or 7 (sized for its peak) at half the
    # price spend less by the margin: placement promotes it at its first evidence, and
    # make-before-break sends its requests to its own replicas from a model load later, in one
    # segment to the end; none is lost or counted twice.
    auto = cmp.fleets[shared_compare.AUTO]
    (decided,) = auto.promoted_at[0]
    (seg,) = auto.own_segments(0)
    assert (seg.lo, seg.hi) == (decided + math.ceil(CFG.engine.cold_start_s / DT), 360)
    for k, ld in enumerate([busy, *small]):
        assert cmp.runs[shared_compare.AUTO][k].requests == pytest.approx(ld.requests)
    assert cmp.bound <= cmp.spend(shared_compare.SHARED)
    text = shared_compare.render(cmp, shared.FleetSettings())
    assert "shared + auto spend / own replicas" in text
    assert "per-minute lower bound" in text

    # "Missed by every alternative": a tenant late under all four, not one late under three.
    late = np.zeros(10)
    late[4] = 100.0  # every request waited 4 steps, 20 s: over the 10 s SLO
    runs = {p: list(rs) for p, rs in cmp.runs.items()}
    for p in shared_compare.POLICIES:
        runs[p][1] = replace(runs[p][1], wait_weights=late)
        if p != shared_compare.OWN:
            runs[p][2] = replace(runs[p][2], wait_weights=late)
    marked = replace(cmp, runs=runs)
    assert marked.missed_by_every_alternative == ("p/s0",)


def _every(minutes: float, steps: int, burst: float = 3.0) -> list[float]:
    """``burst`` requests every ``minutes``, from the first step, over ``steps`` steps of ``DT``."""
    period = round(minutes * 60 / DT)
    return [burst if i % period == 0 else 0.0 for i in range(steps)]


def test_a_tenant_the_fleet_keeps_waiting_past_its_slo_is_promoted_on_the_observation() -> None:
    """A lone tenant of a fleet that scales to zero, sending 100 requests every 20 minutes for 2
    hours, with a 30-minute placement window (so every window holds a burst): each burst finds
    the fleet at zero and waits a 60 s model load, the adapter's load and a turn for a seat, up
    to 70 s to the first byte, far above the 10 s SLO. Nothing else favours its own replica:
    alone it forces one whole replica of the fleet, the price of its own at the same price per
    GPU (no 15% saving), and its busiest minute fits maxReplicas. So the observation alone
    promotes it, at its first evidence (a new tenant, 30 minutes in). Every 3 minutes the fleet
    never idles out, its first bytes come at once, and it stays."""
    cfg = replace(CFG, placement=PlacementSpec(window="30m", min_dwell="30m"))
    steps = 2 * 3600 // round(DT)

    def run(minutes: float, burst: float = 100.0) -> shared.FleetRun:
        return shared.simulate_fleet(
            [load("pool/t", _every(minutes, steps, burst))],
            cfg,
            shared.FleetSettings(min_replicas=0),
            dt=DT,
            start=START,
            promote=True,
        )

    cold = run(20)
    assert cold.promoted_at == ((round(30 * 60 / DT),),)
    (decision,) = cold.decisions
    assert "p99 time to first byte on SharedEngine fleet was 70.0 s" in decision
    assert "above its 10 s SLO" in decision
    warm = run(3)
    assert (warm.promoted_at, warm.decisions) == (((),), ())
    # The same waits over 3-request bursts are too few requests for a p99 (fewer than
    # lora_promotion.MIN_REQUESTS_FOR_P99 in any window): no observation, no promotion.
    sparse = run(20, burst=3.0)
    assert (sparse.promoted_at, sparse.decisions) == (((),), ())


def test_p99_time_to_first_byte_over_the_window_worked_example() -> None:
    """The gateway histogram's quantile as the fleet loop computes it from its admissions: 990
    requests at 0.5 s and 10 at 12 s give 0.5 s; one more at 12 s gives 12 s; admissions older
    than the 10-minute window (120 steps) drop out; a window of fewer than 100 requests, or
    none, is unknown."""
    loop = shared._FleetLoop(
        [load("pool/a", [0.0] * 400)],
        CFG,
        shared.FleetSettings(),
        dt=DT,
        start=START,
        own=frozenset(),
        promote=True,
    )
    admitted = loop.first_bytes[0]
    assert loop._p99_time_to_first_byte(0, 300) is None
    admitted.extend([(200, 0.5, 990.0), (250, 12.0, 10.0)])
    assert loop._p99_time_to_first_byte(0, 300) == 0.5
    admitted.append((260, 12.0, 1.0))
    assert loop._p99_time_to_first_byte(0, 300) == 12.0
    # 200 is out of the window: the 11 requests left are too few for a p99
    assert loop._p99_time_to_first_byte(0, 375) is None
    assert loop._p99_time_to_first_byte(0, 381) is None  # 381 - 120 > 260: nothing left


# -------------------------------------------------------------------------------- the program


def _servegen(path: Path) -> Path:
    """A small ServeGen rate file: two pools, three clients, 30 minutes of 600 s windows."""
    rows = ["model_pool,client_id,window_start_s,window_len_s,rate_rps,cv"]
    for start in (0, 600, 1200):
        rows += [f"a,1,{start},600,4.0,1.0", f"a,2,{start},600,0.05,1.0", f"b,3,{start},600,1,1"]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    return path


def main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


def test_program_compares_each_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = _servegen(tmp_path / "servegen_tiny.csv.gz")
    out = tmp_path / "plots"
    code = main(["simulate", str(trace), "--shared-engines", "--pools", "a", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "pool a: 2 LoRA tenants" in captured.out
    assert "pool b" not in captured.out
    assert "[1/1] pool a" in captured.err  # progress
    assert (out / "servegen_tiny_a_shared.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--pools", "c"], "--pools: no pool 'c' in the trace; pools: a, b", id="unknown-pool"
        ),
        pytest.param(["--max-loras", "0"], "--max-loras: must be an integer >= 1", id="loras"),
        pytest.param(
            ["--max-loras", "4", "--max-cpu-loras", "2"],
            "--max-cpu-loras (2) must be >= --max-loras (4)",
            id="cpu-loras",
        ),
    ],
)
def test_bad_shared_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    trace = _servegen(tmp_path / "servegen_tiny.csv.gz")
    code = main(["simulate", str(trace), "--shared-engines", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_lower_bound_of_the_pool_is_the_engines_bound_of_its_summed_load() -> None:
    a, b = load("p/a", [10.0] * 24), load("p/b", [5.0] * 24)
    total = shared.aggregate([a, b], "p")
    assert engine.lower_bound_spend(total, CFG, DT) <= engine.lower_bound_spend(
        a, CFG, DT
    ) + engine.lower_bound_spend(b, CFG, DT)
