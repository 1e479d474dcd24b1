"""Adapter affinity on a SharedEngine fleet: a LoRA tenant's request goes to the replica running
the most of its adapter while that replica has a free seat, else to the one whose batch runs the
fewest adapters (picking's module docstring, policy.adapter_affinity), the
per-(replica, adapter) in-flight counts that rule reads, and the seats it reads from the
SharedEngine. The picker as a table and a property, the dispatcher's counts, the snapshot's
seats, and through the gateway with real engine simulators on 127.0.0.1."""

import asyncio
import socket

import aiohttp
import pytest
from gateway_fakes import FakeDiscovery, eventually
from hypothesis import given, settings
from hypothesis import strategies as st
from snapshots import endpoint, route, snapshot

from tidepool.enginesim import engine as sim_engine
from tidepool.gateway import dispatch, picking, proxy, routing
from tidepool.gateway.snapshot import DEFAULT_SEATS, build_snapshot, engine_seats

FLEET = "llama-8b"
#: Tenant "bot" served by the fleet as adapter "bot"; tenant "sql" as adapter "sql".
LORA = route("bot", served="bot-chat", upstream="bot", engine=FLEET)
SQL = route("sql", served="sql-chat", upstream="sql", engine=FLEET)
#: The "bot" tenant on replicas of its own (promoted): they load "bot" at start.
OWN_LORA = route("bot", served="bot-chat", upstream="bot")
PLAIN = route()
BOT = ("bot",)


def _fleet_pod(name, held=BOT, seats=64):
    return endpoint(name, deployment="", engine=FLEET, adapters=held, seats=seats)


def _target(model, pods):
    return routing.ModelTarget(
        model, tuple(routing.Backend(p, routing.Tier.PRIMARY, None) for p in pods)
    )


def _own(name):
    return endpoint(name)


def _ab(a_busy, b_busy, running, expected, id_):
    """A table row on fleet replicas "a" and "b" of 64 seats holding "bot": in flight on each,
    and ``running`` as pod -> adapter -> requests."""
    return pytest.param(
        LORA,
        [_fleet_pod("a"), _fleet_pod("b")],
        {"default/a": a_busy, "default/b": b_busy},
        {(f"default/{pod}", name): n for pod, by in running.items() for name, n in by.items()},
        expected,
        id=id_,
    )


# ---- the picker: a table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "pods", "inflight", "running", "expected"),
    [
        pytest.param(
            LORA, [_fleet_pod("a"), _fleet_pod("b")], {"default/a": 3}, {("default/a", "bot"): 3},
            "a", id="running-here-preferred-over-an-idle-holder",
        ),
        pytest.param(
            LORA, [_fleet_pod("a"), _fleet_pod("b")], {"default/a": 64},
            {("default/a", "bot"): 64}, "b", id="full-replica-skipped",
        ),
        pytest.param(
            LORA, [_fleet_pod("a", seats=4), _fleet_pod("b", seats=4)],
            {"default/a": 4, "default/b": 1}, {("default/a", "bot"): 1}, "b",
            id="full-by-other-adapters-skipped",
        ),
        pytest.param(
            LORA, [_fleet_pod("a"), _fleet_pod("b"), _fleet_pod("c")],
            {"default/a": 10, "default/b": 5}, {("default/a", "bot"): 1, ("default/b", "bot"): 1},
            "b", id="most-free-seats-among-those-running-it",
        ),
        pytest.param(
            LORA, [_fleet_pod("a"), _fleet_pod("b")], {"default/a": 3, "default/b": 1},
            {("default/a", "sql"): 3, ("default/b", "sql"): 1}, "b",
            id="no-running-falls-back-to-least-outstanding",
        ),
        _ab(50, 10, {"a": {"bot": 20}, "b": {"bot": 3}}, "a",
            "packed-where-it-runs-most-although-another-has-more-free-seats"),
        _ab(64, 10, {"a": {"bot": 60}, "b": {"bot": 3}}, "b",
            "where-it-runs-most-is-full-next-most"),
        _ab(40, 10, {"a": {"sql": 30, "ops": 5, "doc": 5},
                     "b": {"sql": 4, "ops": 3, "doc": 2, "eval": 1}},
            "a", "not-running-fewest-adapters-in-the-batch-before-fewest-in-flight"),
        pytest.param(
            LORA, [_fleet_pod("a", seats=4), _fleet_pod("b", seats=4)],
            {"default/a": 4, "default/b": 4}, {("default/a", "bot"): 1}, "a",
            id="every-holder-full-least-in-flight-then-rotation",
        ),
        pytest.param(
            LORA, [_fleet_pod("a", held=()), _fleet_pod("b")], {"default/a": 1},
            {("default/a", "bot"): 1}, "b", id="running-on-a-replica-no-longer-holding-it",
        ),
        pytest.param(
            LORA, [_fleet_pod("a", seats=None), _fleet_pod("b", seats=None)],
            {"default/a": DEFAULT_SEATS - 1}, {("default/a", "bot"): 1}, "a",
            id="unknown-seats-free-below-the-crd-default",
        ),
        pytest.param(
            LORA, [_fleet_pod("a", seats=None), _fleet_pod("b", seats=None)],
            {"default/a": DEFAULT_SEATS}, {("default/a", "bot"): 1}, "b",
            id="unknown-seats-full-at-the-crd-default",
        ),
        pytest.param(
            LORA, [_fleet_pod("a", held=("sql",)), _fleet_pod("b", held=())], {},
            {("default/a", "bot"): 2}, picking.HoldReason.NO_REPLICA,
            id="no-holder-still-holds",
        ),
        pytest.param(
            PLAIN, [_own("a"), _own("b")], {"default/a": 3, "default/b": 1},
            {("default/a", "bot"): 3}, "b", id="non-lora-tenant-unchanged",
        ),
        pytest.param(
            OWN_LORA, [_own("a"), _own("b")], {"default/a": 3, "default/b": 1},
            {("default/a", "bot"): 3}, "b", id="own-replica-tenant-unchanged",
        ),
    ],
)  # fmt: skip
def test_choose_prefers_a_replica_running_the_adapter(model, pods, inflight, running, expected):
    decision = picking.choose(_target(model, pods), inflight, running=running)
    if isinstance(expected, picking.HoldReason):
        assert decision == picking.Hold(expected)
    else:
        assert isinstance(decision, picking.Pick)
        assert decision.backend.endpoint.pod == expected


@pytest.mark.parametrize(
    ("model", "pod", "adapter"),
    [
        pytest.param(LORA, _fleet_pod("a"), "bot", id="fleet-replica-counts-the-adapter"),
        pytest.param(OWN_LORA, _own("a"), None, id="own-replica-counts-none"),
        pytest.param(PLAIN, _own("a"), None, id="plain-tenant-counts-none"),
    ],
)
def test_pick_names_the_adapter_it_counts(model, pod, adapter):
    decision = picking.choose(_target(model, [pod]), {})
    assert decision == picking.Pick(routing.Backend(pod, routing.Tier.PRIMARY, None), adapter)


# ---- the picker: a property ----------------------------------------------------------------

_replica = st.tuples(
    st.booleans(),  # holds "bot"
    st.one_of(st.none(), st.integers(1, 8)),  # seats
    st.integers(0, 10),  # in flight
    st.integers(0, 10),  # of which "bot"
    st.integers(0, 3),  # other adapters running there ("sql", "ops", "doc"), one request each
)
_OTHERS = ("sql", "ops", "doc")


@settings(max_examples=300, deadline=None)
@given(replicas=st.lists(_replica, min_size=1, max_size=6), rotation=st.integers(0, 5))
def test_pick_holds_the_adapter_and_packs_it_where_it_runs_most(replicas, rotation):
    """Whatever the counts: a holder; among holders running "bot" with a free seat, one running
    the most "bot" and of those the least in flight; else among holders with a free seat, one
    whose batch runs the fewest adapters and of those the least in flight; else the least in
    flight."""
    pods, inflight, running = [], {}, {}
    for i, (holds, seats, busy, asked_bot, asked_others) in enumerate(replicas):
        pod = _fleet_pod(f"r{i}", held=BOT if holds else ("sql",), seats=seats)
        pods.append(pod)
        bot = min(asked_bot, busy)
        others = min(asked_others, busy - bot)
        inflight[pod.key] = busy
        if bot:
            running[(pod.key, "bot")] = bot
        for other in _OTHERS[:others]:
            running[(pod.key, other)] = 1
    decision = picking.choose(_target(LORA, pods), inflight, running=running, rotation=rotation)
    holders = [p for p in pods if "bot" in p.adapters]
    if not holders:
        assert decision == picking.Hold(picking.HoldReason.NO_REPLICA)
        return
    assert isinstance(decision, picking.Pick)
    picked = decision.backend.endpoint
    assert "bot" in picked.adapters
    assert decision.adapter == "bot"

    def bot_on(p):
        return running.get((p.key, "bot"), 0)

    def adapters_on(p):
        return sum(1 for key, _ in running if key == p.key)

    free = [p for p in holders if inflight[p.key] < (p.seats or DEFAULT_SEATS)]
    preferred = [p for p in free if bot_on(p) > 0]
    if preferred:
        most = max(bot_on(p) for p in preferred)
        packed = [p for p in preferred if bot_on(p) == most]
        assert picked in packed
        assert inflight[picked.key] == min(inflight[p.key] for p in packed)
    elif free:
        fewest = min(adapters_on(p) for p in free)
        roomy = [p for p in free if adapters_on(p) == fewest]
        assert picked in roomy
        assert inflight[picked.key] == min(inflight[p.key] for p in roomy)
    else:
        assert inflight[picked.key] == min(inflight[p.key] for p in holders)


# ---- the dispatcher's counts ---------------------------------------------------------------


def _dispatcher(*pods, models=(LORA, SQL)):
    d = dispatch.Dispatcher(queue_size=4)
    d.set_table(routing.RoutingTable.from_snapshot(snapshot(models, pods)))
    return d


def test_dispatcher_keeps_an_adapter_on_the_replica_running_it_until_its_seats_are_full():
    d = _dispatcher(_fleet_pod("a", held=("bot", "sql"), seats=2), _fleet_pod("b", seats=2))
    leases = [d.admit(LORA.key, now=0, deadline=10) for _ in range(3)]
    assert all(isinstance(lease, dispatch.Lease) for lease in leases)
    first, *_ = (lease.backend.endpoint.pod for lease in leases)
    other = {"a": "b", "b": "a"}[first]
    # Second goes where "bot" already runs; the third finds that replica's 2 seats full.
    assert [lease.backend.endpoint.pod for lease in leases] == [first, first, other]
    assert (d.inflight(f"default/{first}", "bot"), d.inflight(f"default/{other}", "bot")) == (2, 1)
    sql = d.admit(SQL.key, now=0, deadline=10)
    assert isinstance(sql, dispatch.Lease)
    assert (sql.backend.endpoint.pod, sql.adapter) == ("a", "sql")
    assert d.inflight("default/a", "sql") == 1
    for lease in [*leases, sql]:
        d.release(lease)
    assert (d.total_inflight(), dict(d.running())) == (0, {})


def test_dispatcher_counts_no_adapter_for_a_tenants_own_replicas():
    d = _dispatcher(endpoint("a", deployment="bot"), models=(OWN_LORA,))
    lease = d.admit(OWN_LORA.key, now=0, deadline=10)
    assert isinstance(lease, dispatch.Lease)
    assert (lease.adapter, d.inflight("default/a"), dict(d.running())) == (None, 1, {})


def test_a_held_request_released_to_the_fleet_is_counted_for_its_adapter():
    d = _dispatcher()
    held = d.admit(LORA.key, now=0, deadline=10)
    assert isinstance(held, dispatch.Held)
    released = d.set_table(
        routing.RoutingTable.from_snapshot(snapshot((LORA, SQL), (_fleet_pod("a"),)))
    )
    assert [lease.adapter for _, lease in released] == ["bot"]
    assert d.inflight("default/a", "bot") == 1
    d.release(released[0][1])
    assert dict(d.running()) == {}


# ---- the snapshot's seats ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"engine": {"maxNumSeqs": 256}}, 256, id="from-the-spec"),
        pytest.param({"engine": {}}, None, id="absent"),
        pytest.param({}, None, id="no-engine-section"),
        pytest.param({"engine": {"maxNumSeqs": 0}}, None, id="zero-unreadable"),
        pytest.param({"engine": {"maxNumSeqs": "64"}}, None, id="string-unreadable"),
    ],
)
def test_engine_seats(spec, expected):
    assert engine_seats({"metadata": {"name": FLEET}, "spec": spec}) == expected


def test_build_snapshot_gives_fleet_pods_their_engines_seats():
    def pod(name, fleet_label):
        return {
            "metadata": {
                "name": name,
                "namespace": "tidepool-system",
                "labels": {"tidepool.dev/shared-engine": fleet_label},
            },
            "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
        }

    engines = {f"/{FLEET}": {"metadata": {"name": FLEET}, "spec": {"engine": {"maxNumSeqs": 8}}}}
    snap = build_snapshot({"p": pod("p0", FLEET), "q": pod("q0", "qwen-7b")}, {}, engines)
    assert [(e.pod, e.seats) for e in snap.endpoints] == [("p0", 8), ("q0", None)]


# ---- through the gateway: counts back to zero ----------------------------------------------

BASE = "meta-llama/Llama-3.1-8B"
SIM_LORA = sim_engine.LoraConfig(
    max_loras=2, modules=(sim_engine.Adapter("bot", "/adapters/bot", 8),)
)


def _pod_at(name, port, seats=64):
    return endpoint(
        name, namespace="tidepool-system", deployment="", pool="shared-a100", port=port,
        engine=FLEET, adapters=BOT, seats=seats,
    )  # fmt: skip


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_adapter_counts_return_to_zero_after_complete_fail_and_cancel(engines, gateway):
    lora = await engines(BASE, lora=SIM_LORA, decode_ms_per_token=20.0)
    # vLLM without the adapter answers 404: a request the engine refuses.
    refusing = await engines(BASE)
    pods = {
        "ok": _pod_at("sheng-ok", lora.port),
        "404": _pod_at("sheng-404", refusing.port),
        "down": _pod_at("sheng-down", _closed_port()),
    }
    source = FakeDiscovery(snapshot((LORA,), (pods["ok"],)))
    gw = await gateway(source, connect_attempts=1)
    d = gw.gateway.dispatcher
    url = f"http://127.0.0.1:{gw.port}/v1/completions"
    body = {"model": "bot-chat", "prompt": "x", "max_tokens": 2}
    key = pods["ok"].key
    async with aiohttp.ClientSession() as s:
        # Completes, several at once.
        got = await asyncio.gather(*(s.post(url, json=body) for _ in range(3)))
        assert [r.status for r in got] == [200] * 3
        for r in got:
            r.release()
        assert (d.inflight(key), d.inflight(key, "bot")) == (0, 0)
        # Cancelled: the client leaves mid-stream; counted while it streams.
        r = await s.post(url, json={**body, "max_tokens": 200, "stream": True})
        await r.content.readline()
        assert (d.inflight(key), d.inflight(key, "bot")) == (1, 1)
        r.close()
        assert await eventually(lambda: d.inflight(key, "bot") == 0)
        # Fails: the only holder answers 404, then the only holder cannot be reached.
        for pod, status in ((pods["404"], 404), (pods["down"], 502)):
            source.publish(snapshot((LORA,), (pod,)))
            async with s.post(url, json=body) as r:
                assert r.status == status
    assert await eventually(lambda: d.total_inflight() == 0)
    assert dict(d.running()) == {}


async def test_a_burst_of_one_adapter_stays_on_the_replica_running_it(engines, gateway):
    fleet = [await engines(BASE, lora=SIM_LORA, decode_ms_per_token=5.0) for _ in range(2)]
    pods = (_pod_at("sheng-0", fleet[0].port, seats=4), _pod_at("sheng-1", fleet[1].port, seats=4))
    gw = await gateway(FakeDiscovery(snapshot((LORA,), pods)))
    url = f"http://127.0.0.1:{gw.port}/v1/completions"
    body = {"model": "bot-chat", "prompt": "x", "max_tokens": 40}
    async with aiohttp.ClientSession() as s:
        # Six at once on two replicas of 4 seats: least outstanding would split them 3 and 3;
        # affinity fills the one running "bot" first (4) and only then uses the other (2).
        got = await asyncio.gather(*(s.post(url, json=body) for _ in range(6)))
        served = sorted(
            sum(1 for r in got if r.headers[proxy.BACKEND_HEADER] == p.key) for p in pods
        )
        for r in got:
            r.release()
    assert served == [2, 4]
