"""The token bucket both the gateway's tenant limits and the operator's Event budget use."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidepool.policy.token_bucket import TokenBucket


@pytest.mark.parametrize(
    ("per_minute", "takes"),
    [
        # 60 a minute: 60 at once, the 61st waits 1 s; half a token is not one; then one is back.
        (60, [(0.0, None)] * 60 + [(0.0, 1.0), (0.5, 0.5), (1.0, None), (1.0, 1.0)]),
        # Below one a minute, the burst is still one token (else nothing would ever pass).
        (0.5, [(0.0, None), (0.0, 120.0), (120.0, None)]),
        # 300 a minute (the operator's Events): the 301st waits 0.2 s.
        (300, [(0.0, None)] * 300 + [(0.0, 0.2), (0.2, None)]),
    ],
)
def test_worked_examples(per_minute, takes):
    bucket = TokenBucket()
    for now, wait in takes:
        got = bucket.take(per_minute, now)
        assert got == (None if wait is None else pytest.approx(wait)), (now, got)


def test_a_smaller_size_cuts_what_is_held_a_larger_one_grants_nothing_at_once():
    bucket = TokenBucket()
    assert bucket.take(600, 0.0) is None  # 599 held
    assert bucket.take(100, 0.0) is None  # cut to the new burst of 100: 99 left
    assert sum(bucket.take(100, 0.0) is None for _ in range(200)) == 99
    assert bucket.take(1000, 0.0) is not None  # a larger size refills faster, no more at once


@settings(max_examples=100, deadline=None)
@given(
    per_minute=st.floats(1.0, 10_000.0),
    gaps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=300),
)
def test_never_more_than_the_burst_plus_the_rate_over_the_time(per_minute, gaps):
    bucket = TokenBucket()
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        granted += bucket.take(per_minute, now) is None
    assert granted <= per_minute + now * per_minute / 60.0 + 1e-9
