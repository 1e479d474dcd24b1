"""PrometheusMetrics.traffic: the offered load the placement policy sizes from, per time scale."""

import re
from datetime import timedelta

from fake_prometheus import Answer, FakePrometheus, metrics_on, series

from fakes import T0, ManualClock
from tidepool.adapters.prometheus import GATEWAY_UP
from tidepool.policy import placement
from tidepool.policy.signals import NoData


def by_range(promql: str) -> Answer:
    """Answers each rate by its range (the window, the last minute and the hour differ), for
    team-a's llama and, 100 times busier, team-b's (which must never leak into team-a's)."""
    if promql == GATEWAY_UP.promql:
        return [series(1)]
    if promql.startswith("count_over_time"):
        value = 20.0
    elif promql.startswith("avg_over_time"):
        value = 0.5  # active half of the hour
    elif promql.startswith("changes"):
        value = 2.0  # one idle -> active edge and back: one wake
    else:
        rng = re.findall(r"\[(\w+)\]", promql)[-1]
        per_range = {"600s": 2.0, "1m": 3.0, "3600s": 1.0}
        value = per_range[rng] * (10.0 if "tokens" in promql else 1.0)
        if "max_over_time" in promql:
            value *= 2.0
    return [
        series(value, namespace="team-a", model="llama"),
        series(100 * value, namespace="team-b", model="llama"),
    ]


def traffic(prometheus: FakePrometheus) -> placement.Traffic | NoData:
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        return metrics.traffic(
            namespace="team-a",
            name="llama",
            served_model="llama",
            window_seconds=600,
            idle_seconds=300,
            now=T0,
        )


def test_traffic_reads_the_window_the_last_minute_and_the_hour(prometheus: FakePrometheus) -> None:
    prometheus.answer = by_range
    got = traffic(prometheus)
    assert isinstance(got, placement.Traffic)
    assert got.mean == placement.Load(2.0, 20.0, 20.0)
    assert got.peak == placement.Load(6.0, 60.0, 60.0)  # the window's max of 1m rates (2 x 1m)
    assert got.recent == placement.Load(3.0, 30.0, 30.0)
    # The hour's mean, which the wake floor divides by the active share.
    assert got.horizon_mean == placement.Load(1.0, 10.0, 10.0)
    assert got.horizon == timedelta(seconds=3600)
    assert got.span == timedelta(seconds=300)  # 20 points of 15 s
    assert (got.active_fraction, got.wakes) == (0.5, 1.0)
    assert sum("[3600s])" in q for q in prometheus.queries) == 3


def test_a_model_never_requested_is_idle_not_unknown(prometheus: FakePrometheus) -> None:
    """The gateway scraped and no counter for the model: a known zero, from one query."""
    prometheus.answer = lambda q: by_range(q) if q == GATEWAY_UP.promql else []
    got = traffic(prometheus)
    assert isinstance(got, placement.Traffic)
    assert (got.mean, got.span, got.wakes) == (placement.Load(0.0, 0.0, 0.0), timedelta(0), 0.0)
    assert len(prometheus.queries) == 2  # the gateway's up, and the count that found nothing


def test_an_unscraped_gateway_is_unknown(prometheus: FakePrometheus) -> None:
    assert traffic(prometheus) == NoData("gateway not scraped")
