"""Bounded hold queue: FIFO, refuses when full, expires by deadline."""

import pytest

from tidepool.gateway import queue


def _w(deadline: float) -> queue.Waiter:
    return queue.Waiter(model=("ns", "m"), enqueued_at=0.0, deadline=deadline)


@pytest.mark.parametrize(
    ("capacity", "pushes", "accepted"),
    [
        pytest.param(2, 3, [True, True, False], id="third-refused-at-capacity-2"),
        pytest.param(0, 1, [False], id="capacity-0-refuses-everything"),
        pytest.param(3, 2, [True, True], id="under-capacity-accepts"),
    ],
)
def test_push_is_bounded(capacity, pushes, accepted):
    q = queue.HoldQueue(capacity)
    assert [q.push(_w(10)) for _ in range(pushes)] == accepted


@pytest.mark.parametrize(
    ("deadlines", "now", "expired", "left"),
    [
        pytest.param([1.0, 2.0, 3.0], 2.0, [1.0, 2.0], [3.0], id="deadline-equal-to-now-expires"),
        pytest.param([5.0, 1.0], 1.5, [1.0], [5.0], id="out-of-order-deadlines"),
        pytest.param([5.0], 1.0, [], [5.0], id="nothing-due"),
    ],
)
def test_expire(deadlines, now, expired, left):
    q = queue.HoldQueue(10)
    for d in deadlines:
        q.push(_w(d))
    assert [w.deadline for w in q.expire(now)] == expired
    assert [w.deadline for w in q] == left
    assert q.next_deadline() == (min(left) if left else None)


def test_fifo_and_remove():
    q = queue.HoldQueue(5)
    a, b, c = _w(1), _w(1), _w(1)
    for w in (a, b, c):
        q.push(w)
    assert q.remove(b)
    assert not q.remove(b)
    assert q.pop() is a
    assert q.head() is c


def test_negative_capacity_is_refused_with_the_value():
    with pytest.raises(ValueError, match="-1"):
        queue.HoldQueue(-1)
