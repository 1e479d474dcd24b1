"""Least outstanding requests, the hybrid spill rule and LoRA adapter affinity, as a table."""

import pytest
from snapshots import HYBRID_POOLS, endpoint, route

from tidepool.gateway import picking, routing


def _pod(name, pool, held=(), engine=""):
    return endpoint(name, pool=pool, adapters=held, engine=engine)


def _target(model, pods):
    """``pods``: (name, pool) or (name, pool, adapters the replica holds); pods of a fleet
    route are that SharedEngine's replicas."""
    backends = [routing.classify(model, _pod(*p, engine=model.engine or "")) for p in pods]
    return routing.ModelTarget(model, tuple(b for b in backends if b is not None))


HYB = route(hybrid=True, cap=2, pools=HYBRID_POOLS)
PLAIN = route()
#: A LoRA tenant served by the fleet of SharedEngine "llama-8b" as adapter "bot".
LORA = route("bot", served="bot-chat", upstream="bot", engine="llama-8b")
#: The same tenant on replicas of its own (promoted): they load "bot" at start.
OWN_LORA = route("bot", served="bot-chat", upstream="bot")
BOT = ("bot",)


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
        pytest.param(
            LORA, [("a", "shared"), ("b", "shared", BOT)], {"default/b": 3}, "b",
            id="adapter-holder-wins-over-idle-replica",
        ),
        pytest.param(
            LORA, [("a", "shared", BOT), ("b", "shared", BOT), ("c", "shared")],
            {"default/a": 2, "default/b": 1}, "b", id="least-outstanding-among-adapter-holders",
        ),
        pytest.param(
            LORA, [("a", "shared", ("sql",)), ("b", "shared")], {"default/b": 1},
            picking.HoldReason.NO_REPLICA, id="no-fleet-replica-holds-the-adapter-holds",
        ),
        pytest.param(
            OWN_LORA, [("a", "shared"), ("b", "shared")], {"default/a": 1}, "b",
            id="own-replicas-of-a-lora-tenant-all-serve-it",
        ),
        pytest.param(
            PLAIN, [("a", "shared"), ("b", "shared", BOT)], {"default/b": 1}, "a",
            id="no-adapter-no-preference",
        ),
        pytest.param(LORA, [], {}, picking.HoldReason.NO_REPLICA, id="fleet-at-zero-holds"),
    ],
)  # fmt: skip
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


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param([("a", "shared", BOT), ("b", "shared", BOT)], "a", id="another-holder"),
        pytest.param(
            [("a", "shared"), ("b", "shared", BOT)], None, id="no-other-holder-holds-the-request"
        ),
    ],
)
def test_an_excluded_adapter_holder(pods, expected):
    decision = picking.choose(_target(LORA, pods), {}, exclude=frozenset({"default/b"}))
    if expected is None:
        assert decision == picking.Hold(picking.HoldReason.NO_REPLICA)
    else:
        assert isinstance(decision, picking.Pick)
        assert decision.backend.endpoint.pod == expected


def test_excluded_backend_is_not_picked():
    target = _target(PLAIN, [("a", "shared"), ("b", "shared")])
    decision = picking.choose(target, {"default/b": 9}, exclude=frozenset({"default/a"}))
    assert isinstance(decision, picking.Pick)
    assert decision.backend.endpoint.pod == "b"


def test_unknown_target_holds():
    assert picking.choose(None, {}) == picking.Hold(picking.HoldReason.NO_REPLICA)
