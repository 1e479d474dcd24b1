"""PrometheusMetrics.traffic: the offered load the placement policy sizes from, per time scale."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tidepool.adapters.prometheus import PrometheusMetrics
from tidepool.policy import placement

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class RangeProm:
    """Answers each rate by its range: the window, the last minute and the hour differ."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def custom_query(self, query: str) -> list[Any]:
        self.queries.append(query)
        if query.startswith("max(up"):
            value = 1.0
        elif query.startswith("count_over_time"):
            value = 20.0
        elif query.startswith("avg_over_time"):
            value = 0.5  # active half of the hour
        elif query.startswith("changes"):
            value = 2.0  # one idle -> active edge and back: one wake
        else:
            rng = re.findall(r"\[(\w+)\]", query)[-1]
            per_range = {"600s": 2.0, "1m": 3.0, "3600s": 1.0}
            value = per_range[rng] * (10.0 if "tokens" in query else 1.0)
            if "max_over_time" in query:
                value *= 2.0
        return [{"metric": {}, "value": [NOW.timestamp(), str(value)]}]


def test_traffic_reads_the_window_the_last_minute_and_the_hour() -> None:
    metrics = PrometheusMetrics("http://prometheus.invalid:9090")
    fake = RangeProm()
    metrics._prom = fake  # type: ignore[assignment]
    got = metrics.traffic(
        namespace="team-a",
        name="llama",
        served_model="llama",
        window_seconds=600,
        idle_seconds=300,
        now=NOW,
    )
    assert isinstance(got, placement.Traffic)
    assert got.mean == placement.Load(2.0, 20.0, 20.0)
    assert got.peak == placement.Load(6.0, 60.0, 60.0)  # the window's max of 1m rates (2 x 1m)
    assert got.recent == placement.Load(3.0, 30.0, 30.0)
    # The hour's mean, which the wake floor divides by the active share.
    assert got.horizon_mean == placement.Load(1.0, 10.0, 10.0)
    assert got.horizon == timedelta(seconds=3600)
    assert (got.active_fraction, got.wakes) == (0.5, 1.0)
    assert sum("[3600s])" in q for q in fake.queries) == 3
