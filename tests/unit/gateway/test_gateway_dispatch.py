"""The dispatcher: leases, holds in FIFO order, releases on table change or a freed slot."""

from snapshots import HYBRID_POOLS, endpoint, route, snapshot

from tidepool.gateway import dispatch, routing

KEY = ("default", "llama")


def _table(*endpoints, model=None):
    return routing.RoutingTable.from_snapshot(snapshot((model or route(),), endpoints))


def test_lease_when_ready_and_release_counts_down():
    d = dispatch.Dispatcher(queue_size=2)
    d.set_table(_table(endpoint("a")))
    lease = d.admit(KEY, now=0, deadline=10)
    assert isinstance(lease, dispatch.Lease)
    assert d.inflight("default/a") == 1
    assert d.release(lease) == []
    assert d.inflight("default/a") == 0


def test_held_requests_released_in_fifo_order_when_a_pod_appears():
    d = dispatch.Dispatcher(queue_size=5)
    d.set_table(_table())
    held = [d.admit(KEY, now=i, deadline=100, token=i) for i in range(3)]
    assert all(isinstance(h, dispatch.Held) for h in held)
    assert d.depth(KEY) == 3
    released = d.set_table(_table(endpoint("a")))
    assert [w.token for w, _ in released] == [0, 1, 2]
    assert d.depth(KEY) == 0
    assert d.inflight("default/a") == 3


def test_queue_full_refuses():
    d = dispatch.Dispatcher(queue_size=1)
    d.set_table(_table())
    assert isinstance(d.admit(KEY, 0, 10), dispatch.Held)
    assert d.admit(KEY, 0, 10) == dispatch.QueueFull(1)


def test_held_requests_survive_table_changes_even_model_removal():
    d = dispatch.Dispatcher(queue_size=5)
    d.set_table(_table())
    d.admit(KEY, 0, 10)
    d.set_table(routing.RoutingTable())  # InferenceDeployment gone from the watch
    d.set_table(_table())
    assert d.depth(KEY) == 1
    assert len(d.set_table(_table(endpoint("a")))) == 1


def test_new_request_does_not_overtake_held_ones():
    d = dispatch.Dispatcher(queue_size=5)
    d.set_table(_table())
    first = d.admit(KEY, 0, 10, token="first")
    assert isinstance(first, dispatch.Held)
    second = d.admit(KEY, 1, 10, token="second")
    assert isinstance(second, dispatch.Held)
    assert [w.token for w, _ in d.set_table(_table(endpoint("a")))] == ["first", "second"]


def test_hybrid_held_for_overflow_takes_freed_dedicated_slot_first():
    model = route(hybrid=True, cap=1, pools=HYBRID_POOLS)
    d = dispatch.Dispatcher(queue_size=5)
    d.set_table(_table(endpoint("d1", pool="dedicated-a"), model=model))
    busy = d.admit(KEY, 0, 10)
    assert isinstance(busy, dispatch.Lease)
    held = d.admit(KEY, 0, 10, token="w")
    assert isinstance(held, dispatch.Held)
    assert held.reason.value == "OverflowPending"
    released = d.release(busy)
    assert [(w.token, lease.backend.endpoint.pod) for w, lease in released] == [("w", "d1")]


def test_hybrid_held_for_overflow_goes_to_overflow_pod_when_it_appears():
    model = route(hybrid=True, cap=1, pools=HYBRID_POOLS)
    d = dispatch.Dispatcher(queue_size=5)
    dedicated = endpoint("d1", pool="dedicated-a")
    d.set_table(_table(dedicated, model=model))
    d.admit(KEY, 0, 10)
    d.admit(KEY, 0, 10, token="w")
    released = d.set_table(_table(dedicated, endpoint("o1", pool="shared"), model=model))
    assert [lease.backend.endpoint.pod for _, lease in released] == ["o1"]


def test_expire_and_cancel():
    d = dispatch.Dispatcher(queue_size=5)
    d.set_table(_table())
    a = d.admit(KEY, 0, deadline=5)
    b = d.admit(KEY, 0, deadline=50)
    assert isinstance(a, dispatch.Held)
    assert isinstance(b, dispatch.Held)
    assert d.next_deadline() == 5
    assert d.expire(5) == [a.waiter]
    assert d.cancel(b.waiter)
    assert d.total_held() == 0


def test_fleet_load_counts_the_tenants_and_seats_of_the_replicas_a_model_routes_to():
    """Two fleet replicas of 64 seats; tenant A (adapter ``a``) has three requests in flight and
    B one: for A, 3 of its own, 2 tenants, 128 seats (policy.fair_share: a share of 64 each)."""
    a = route("bot", namespace="t1", upstream="a", engine="fleet")
    b = route("sql", namespace="t2", upstream="b", engine="fleet")
    pods = tuple(
        endpoint(f"p{k}", deployment="", engine="fleet", adapters=("a", "b"), seats=64)
        for k in range(2)
    )
    d = dispatch.Dispatcher(queue_size=5)
    d.set_table(routing.RoutingTable.from_snapshot(snapshot((a, b), pods)))
    for _ in range(3):
        assert isinstance(d.admit(a.key, 0, 10), dispatch.Lease)
    assert isinstance(d.admit(b.key, 0, 10), dispatch.Lease)
    assert d.fleet_load(a.key, "a") == (3, 2, 128)
    assert d.fleet_load(b.key, "b") == (1, 2, 128)
