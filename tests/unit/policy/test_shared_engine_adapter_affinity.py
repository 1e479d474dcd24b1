"""Adapter affinity on a SharedEngine fleet (policy.adapter_affinity): the order in which the
gateway and the fleet simulator try the replicas holding a request's adapter. Worked keys as a
table, and the rule's ranks as a property."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.policy.adapter_affinity import preference


@pytest.mark.parametrize(
    ("in_flight", "seats", "this_adapter", "adapters", "expected"),
    [
        pytest.param(50, 64, 20, 3, (0, -20, 50), id="running-it-with-a-free-seat-by-most-of-it"),
        pytest.param(40, 64, 0, 3, (1, 3, 40), id="not-running-it-by-fewest-adapters"),
        pytest.param(64, 64, 60, 1, (2, 64, 0.0), id="full-last-by-least-in-flight"),
        pytest.param(70, 64, 0, 5, (2, 70, 0.0), id="over-full-vllm-queues-it"),
        pytest.param(63.5, 64, 0.2, 2.7, (0, -0.2, 63.5), id="fluid-counts-of-the-simulator"),
    ],
)  # fmt: skip
def test_preference_worked_keys(in_flight, seats, this_adapter, adapters, expected):
    assert (
        preference(in_flight=in_flight, seats=seats, this_adapter=this_adapter, adapters=adapters)
        == expected
    )


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        # The module docstring's example: bot runs 20 of A's 50 and 3 of B's 10.
        pytest.param({"A": (50, 20, 3), "B": (10, 3, 2)}, "A", id="packed-where-it-runs-most"),
        # A heavy tenant's spill-over replica gets no more of it once its home has a seat.
        pytest.param({"home": (63, 60, 2), "spill": (5, 4, 1)}, "home", id="spill-drains"),
        pytest.param({"A": (64, 60, 1), "B": (30, 3, 2)}, "B", id="home-full-next-most"),
        pytest.param({"A": (40, 0, 3), "B": (10, 0, 4)}, "A", id="fewest-adapters-first"),
        pytest.param({"A": (10, 0, 4), "B": (40, 1, 4)}, "B", id="running-beats-idle-seats"),
        pytest.param({"A": (64, 64, 1), "B": (64, 0, 4)}, "A", id="all-full-tie-on-in-flight"),
    ],
)
def test_first_replica_by_preference(replicas, expected):
    """``replicas``: name -> (in flight, of this adapter, distinct adapters), 64 seats each."""
    best = min(
        replicas,
        key=lambda name: preference(
            in_flight=replicas[name][0],
            seats=64,
            this_adapter=replicas[name][1],
            adapters=replicas[name][2],
        ),
    )
    assert best == expected


_replica = st.tuples(
    st.integers(0, 80),  # in flight
    st.integers(0, 80),  # of this adapter
    st.integers(0, 6),  # other adapters running
)


@given(a=_replica, b=_replica, seats=st.integers(1, 64))
def test_preference_ranks(a, b, seats):
    """Whatever the counts: a replica with a free seat comes before a full one; with free seats,
    one running the adapter before one not running it; running it, more of it first; not
    running it, fewer adapters first; same rank and tie: fewer in flight first."""

    def key(r):
        busy, mine, others = r
        mine = min(mine, busy)
        return preference(
            in_flight=busy,
            seats=seats,
            this_adapter=mine,
            adapters=others + (1 if mine else 0),
        )

    def free(r):
        return r[0] < seats

    def mine(r):
        return min(r[1], r[0])

    ka, kb = key(a), key(b)
    if free(a) != free(b):
        assert (ka < kb) == free(a)
    elif free(a) and (mine(a) > 0) != (mine(b) > 0):
        assert (ka < kb) == (mine(a) > 0)
    elif free(a) and mine(a) > 0 and mine(a) != mine(b):
        assert (ka < kb) == (mine(a) > mine(b))
    elif free(a) and mine(a) == 0 and a[2] != b[2]:
        assert (ka < kb) == (a[2] < b[2])
    elif a[0] != b[0]:
        assert (ka < kb) == (a[0] < b[0])
    else:
        assert ka == kb
