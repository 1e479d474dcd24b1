"""Least outstanding requests and the hybrid spill rule, as a table."""

import pytest
from snapshots import HYBRID_POOLS, endpoint, route

from tidepool.gateway import picking, routing


def _target(model, pods):
    backends = [routing.classify(model, endpoint(name, pool=pool)) for name, pool in pods]
    return routing.ModelTarget(model, tuple(b for b in backends if b is not None))


HYB = route(hybrid=True, cap=2, pools=HYBRID_POOLS)
PLAIN = route()


@pytest.mark.parametrize(
    ("model", "pods", "inflight", "expected"),
    [
        pytest.param(PLAIN, [], {}, picking.HoldReason.NO_REPLICA, id="no-replica-holds"),
        pytest.param(
            PLAIN,
            [("a", "shared"), ("b", "shared")],
            {"default/a": 3, "default/b": 1},
            "b",
            id="least-outstanding",
        ),
        pytest.param(PLAIN, [("a", "shared")], {"default/a": 500}, "a", id="no-cap-outside-hybrid"),
        pytest.param(
            HYB,
            [("d1", "dedicated-a"), ("d2", "dedicated-a"), ("o1", "shared")],
            {"default/d1": 2, "default/d2": 1, "default/o1": 0},
            "d2",
            id="hybrid-primary-under-cap-first",
        ),
        pytest.param(
            HYB,
            [("d1", "dedicated-a"), ("d2", "dedicated-a"), ("o1", "shared")],
            {"default/d1": 2, "default/d2": 2, "default/o1": 5},
            "o1",
            id="hybrid-spills-to-overflow-when-primaries-full",
        ),
        pytest.param(
            HYB,
            [("d1", "dedicated-a")],
            {"default/d1": 2},
            picking.HoldReason.OVERFLOW_PENDING,
            id="hybrid-full-without-overflow-holds-for-overflow",
        ),
        pytest.param(
            HYB,
            [("o1", "shared"), ("o2", "shared")],
            {"default/o1": 4, "default/o2": 3},
            "o2",
            id="hybrid-overflow-only-least-outstanding",
        ),
    ],
)
def test_choose(model, pods, inflight, expected):
    decision = picking.choose(_target(model, pods), inflight)
    if isinstance(expected, picking.HoldReason):
        assert decision == picking.Hold(expected)
    else:
        assert isinstance(decision, picking.Pick)
        assert decision.backend.endpoint.pod == expected


def test_ties_rotate_so_idle_replicas_share_a_trickle():
    target = _target(PLAIN, [("a", "shared"), ("b", "shared")])
    picks = {picking.choose(target, {}, rotation=r).backend.endpoint.pod for r in range(2)}
    assert picks == {"a", "b"}


def test_excluded_backend_is_not_picked():
    target = _target(PLAIN, [("a", "shared"), ("b", "shared")])
    decision = picking.choose(target, {"default/b": 9}, exclude=frozenset({"default/a"}))
    assert isinstance(decision, picking.Pick)
    assert decision.backend.endpoint.pod == "b"


def test_unknown_target_holds():
    assert picking.choose(None, {}) == picking.Hold(picking.HoldReason.NO_REPLICA)
