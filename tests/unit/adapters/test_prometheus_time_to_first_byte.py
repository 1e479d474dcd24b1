"""PrometheusMetrics.time_to_first_byte_p99: a LoRA tenant's p99 time to first byte at the
gateway, the observation the placement policy promotes on, read from one batched query; every
way of knowing nothing is ``None``, never 0 (a 0 would read as an SLO met)."""

import pytest
from fake_prometheus import Answer, FakePrometheus, by_query, metrics_on, series

from fakes import ManualClock
from tidepool.adapters.prometheus import GATEWAY_UP, time_to_first_byte_p99
from tidepool.adapters.prometheus_batch import Query

WINDOW = 600
P99 = time_to_first_byte_p99(WINDOW)
UP = {GATEWAY_UP: [series(1)]}


def ours(value: float | str) -> Answer:
    """team-a's llama-chat and, beside it, team-b's model of the same name (never ours)."""
    return [
        series(value, namespace="team-a", model="llama-chat"),
        series(99.0, namespace="team-b", model="llama-chat"),
    ]


def test_one_query_for_every_tenant_grouped_by_the_gateways_tenant_labels() -> None:
    """The quantile of the buckets' rates summed per tenant and bucket edge: every gateway
    replica's requests count, and each tenant's series is one lookup in the shared answer. A
    tenant with fewer than 100 requests in the window has no series (too few for a p99)."""
    assert P99.promql == (
        "histogram_quantile(0.99, sum by (namespace, model, le)"
        " (rate(tidepool_gateway_time_to_first_byte_seconds_bucket[600s])))"
        " and on (namespace, model) (sum by (namespace, model)"
        " (increase(tidepool_gateway_time_to_first_byte_seconds_count[600s])) >= 100)"
    )
    assert P99.by == ("namespace", "model")
    assert time_to_first_byte_p99(60).name == P99.name, "windows share the counter's label"


def read(prometheus: FakePrometheus, answers: dict[Query, Answer], *tenants: str) -> list[object]:
    prometheus.answer = by_query(answers)
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        return [
            metrics.time_to_first_byte_p99(
                namespace=ns, served_model="llama-chat", window_seconds=WINDOW
            )
            for ns in tenants
        ]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param({**UP, P99: ours(14.2)}, 14.2, id="a-known-p99"),
        pytest.param({**UP, P99: ours("NaN")}, None, id="no-request-in-the-window-is-nan"),
        pytest.param(UP, None, id="no-series"),
        pytest.param({P99: ours(14.2)}, None, id="gateway-not-scraped"),
        pytest.param({**UP, P99: 503}, None, id="prometheus-failing"),
    ],
)
def test_unknown_is_none_never_zero(
    prometheus: FakePrometheus, answers: dict[Query, Answer], expected: float | None
) -> None:
    assert read(prometheus, answers, "team-a") == [expected]


def test_many_tenants_in_one_tick_send_it_once(prometheus: FakePrometheus) -> None:
    got = read(prometheus, {**UP, P99: ours(14.2)}, "team-a", "team-b", "team-c")
    assert got == [14.2, 99.0, None]
    assert prometheus.count(P99) == 1
