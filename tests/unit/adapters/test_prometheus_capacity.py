"""PrometheusMetrics.engine_throughput: per-replica token rates and busy fraction, or NoData."""

from collections.abc import Callable

import pytest
from fake_prometheus import Answer, FakePrometheus, metrics_on, series

from fakes import T0, ManualClock
from tidepool.api import names
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.signals import NoData, Sample


def by_metric(answers: dict[str, float | str | int], **labels: str) -> Callable[[str], Answer]:
    """Answer a query by the vLLM metric it names: a value for team-a/llama (plus ``labels``),
    or an int HTTP status; queries naming no listed metric find no series."""

    def answer(promql: str) -> Answer:
        for metric, value in answers.items():
            if metric in promql:
                if isinstance(value, int):
                    return value
                tenant = {"namespace": "team-a", "inference_deployment": "llama", **labels}
                return [series(value, **tenant)]
        return []

    return answer


def throughput(prometheus: FakePrometheus, pool: str | None = None) -> EngineThroughput:
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        return metrics.engine_throughput(
            namespace="team-a", name="llama", max_num_seqs=64, window_seconds=600, now=T0, pool=pool
        )


BUSY_REPLICAS: dict[str, float | str | int] = {
    "vllm:prompt_tokens_total": 22000.0,
    "vllm:generation_tokens_total": 1100.0,
    "vllm:num_requests_running": 56.0,
}


def test_rates_and_busy_fraction_are_per_replica(prometheus: FakePrometheus) -> None:
    # Two pods at 20,000 and 24,000 prompt tokens/s average 22,000; 56 of 64 seats is 0.875.
    prometheus.answer = by_metric(BUSY_REPLICAS)
    got = throughput(prometheus)
    assert got == EngineThroughput(Sample(22_000, T0), Sample(1_100, T0), Sample(0.875, T0))
    by = "namespace, inference_deployment"
    assert prometheus.queries == [
        f"avg by ({by}) (sum by ({by}, pod) (rate(vllm:prompt_tokens_total[600s])))",
        f"avg by ({by}) (sum by ({by}, pod) (rate(vllm:generation_tokens_total[600s])))",
        f"avg by ({by}) (sum by ({by}, pod) (avg_over_time(vllm:num_requests_running[600s])))",
    ]


def test_pool_groups_by_pool_and_reads_that_pools_series(prometheus: FakePrometheus) -> None:
    prometheus.answer = by_metric(BUSY_REPLICAS, pool="shared-a100")
    assert throughput(prometheus, pool="shared-a100").prompt_tokens_per_s == Sample(22_000, T0)
    assert all(
        q.startswith("avg by (namespace, inference_deployment, pool) (") for q in prometheus.queries
    )
    missing = NoData("no engine samples in window")
    assert throughput(prometheus, pool="h100") == EngineThroughput(missing, missing, missing)


def test_no_engine_series_is_nodata_never_zero(prometheus: FakePrometheus) -> None:
    got = throughput(prometheus)
    missing = NoData("no engine samples in window")
    assert got == EngineThroughput(missing, missing, missing)


def test_one_missing_series_leaves_the_others_known(prometheus: FakePrometheus) -> None:
    answers = dict(BUSY_REPLICAS)
    del answers["vllm:num_requests_running"]
    prometheus.answer = by_metric(answers)
    got = throughput(prometheus)
    assert got.prompt_tokens_per_s == Sample(22_000, T0)
    assert got.busy_fraction == NoData("no engine samples in window")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(503, "prometheus unreachable: PrometheusApiClientException", id="down"),
        pytest.param("NaN", "NaN", id="nan"),
    ],
)
def test_unknowns_are_named(prometheus: FakePrometheus, answer: str | int, reason: str) -> None:
    prometheus.answer = by_metric({**BUSY_REPLICAS, "vllm:generation_tokens_total": answer})
    got = throughput(prometheus)
    assert got == EngineThroughput(NoData(reason), NoData(reason), NoData(reason))


def test_seats_must_be_positive(prometheus: FakePrometheus) -> None:
    with (
        metrics_on(prometheus.url, ManualClock()) as (metrics, _),
        pytest.raises(ValueError, match="max_num_seqs"),
    ):
        metrics.engine_throughput(
            namespace="a", name="b", max_num_seqs=0, window_seconds=600, now=T0
        )


def test_a_long_named_tenant_is_read_by_its_pods_label_value(prometheus: FakePrometheus) -> None:
    """Engine pods carry a name over 63 characters cut and hashed (names.label_value)."""
    long_name = "l" + "o" * 100 + "ng"
    prometheus.answer = lambda _: [
        series(7, namespace="team-a", inference_deployment=names.label_value(long_name))
    ]
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        got = metrics.engine_throughput(
            namespace="team-a", name=long_name, max_num_seqs=64, window_seconds=600, now=T0
        )
    assert got.prompt_tokens_per_s == Sample(7, T0)
