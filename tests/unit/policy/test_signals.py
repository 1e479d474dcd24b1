"""Missing data is not zero: NaN, Inf, negatives and stale samples become NoData."""

from datetime import UTC, datetime, timedelta

import pytest

from tidepool.policy import signals

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(3.0, signals.Sample(3.0, T0), id="finite"),
        pytest.param(0.0, signals.Sample(0.0, T0), id="zero-is-a-real-zero"),
        pytest.param(float("nan"), signals.NoData("NaN"), id="nan"),
        pytest.param(float("inf"), signals.NoData("+Inf"), id="plus-inf"),
        pytest.param(float("-inf"), signals.NoData("-Inf"), id="minus-inf"),
        pytest.param(-1.0, signals.NoData("negative value -1"), id="negative"),
    ],
)
def test_sample(value: float, expected: signals.Signal) -> None:
    assert signals.sample(value, T0) == expected


def test_stale_sample_95s_old_becomes_nodata() -> None:
    got = signals.fresh(signals.Sample(5.0, T0), T0 + timedelta(seconds=95), timedelta(seconds=60))
    assert got == signals.NoData("stale (last sample 95s old)")


def test_fresh_sample_passes_and_nodata_stays() -> None:
    s = signals.Sample(5.0, T0)
    assert signals.fresh(s, T0 + timedelta(seconds=30), timedelta(seconds=60)) == s
    nd = signals.NoData("no series")
    assert signals.fresh(nd, T0, timedelta(seconds=60)) == nd


def test_describe_and_value() -> None:
    assert signals.describe(signals.Sample(37.0, T0)) == "37"
    assert signals.describe(signals.NoData("prometheus unreachable")) == (
        "unknown (prometheus unreachable)"
    )
    assert signals.value_or_none(signals.NoData("x")) is None
    assert signals.value_or_none(signals.Sample(2.0, T0)) == 2.0
