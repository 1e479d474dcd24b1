"""PrometheusMetrics.engine_throughput: per-replica token rates and busy fraction, or NoData."""

from datetime import UTC, datetime
from typing import Any

import pytest
from requests import ConnectionError as RequestsConnectionError

from tidepool.adapters.prometheus import PrometheusMetrics
from tidepool.api import names
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.signals import NoData, Sample

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class FakeProm:
    """Answers ``custom_query`` by the vLLM metric a query names; records every query."""

    def __init__(self, answers: dict[str, list[Any] | Exception]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    def custom_query(self, query: str) -> list[Any]:
        self.queries.append(query)
        for metric, answer in self.answers.items():
            if metric in query:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return []


def vector(value: str) -> list[Any]:
    return [{"metric": {}, "value": [NOW.timestamp(), value]}]


def metrics_with(answers: dict[str, list[Any] | Exception]) -> tuple[PrometheusMetrics, FakeProm]:
    metrics = PrometheusMetrics("http://prometheus.invalid:9090")
    fake = FakeProm(answers)
    metrics._prom = fake  # type: ignore[assignment]
    return metrics, fake


def throughput(metrics: PrometheusMetrics, pool: str | None = None) -> EngineThroughput:
    return metrics.engine_throughput(
        namespace="team-a", name="llama", max_num_seqs=64, window_seconds=600, now=NOW, pool=pool
    )


BUSY_REPLICAS = {
    "vllm:prompt_tokens_total": vector("22000"),
    "vllm:generation_tokens_total": vector("1100"),
    "vllm:num_requests_running": vector("56"),
}


def test_rates_and_busy_fraction_are_per_replica() -> None:
    # Two pods at 20,000 and 24,000 prompt tokens/s average 22,000; 56 of 64 seats is 0.875.
    metrics, fake = metrics_with(BUSY_REPLICAS)
    got = throughput(metrics)
    assert got == EngineThroughput(Sample(22_000, NOW), Sample(1_100, NOW), Sample(0.875, NOW))
    sel = 'namespace="team-a",inference_deployment="llama"'
    assert fake.queries == [
        f"avg(sum by (pod) (rate(vllm:prompt_tokens_total{{{sel}}}[600s])))",
        f"avg(sum by (pod) (rate(vllm:generation_tokens_total{{{sel}}}[600s])))",
        f"avg(sum by (pod) (avg_over_time(vllm:num_requests_running{{{sel}}}[600s])))",
    ]


def test_pool_narrows_the_selector() -> None:
    metrics, fake = metrics_with(BUSY_REPLICAS)
    throughput(metrics, pool="shared-a100")
    assert all('pool="shared-a100"' in q for q in fake.queries)


def test_no_engine_series_is_nodata_never_zero() -> None:
    metrics, _ = metrics_with({})
    got = throughput(metrics)
    missing = NoData("no engine samples in window")
    assert got == EngineThroughput(missing, missing, missing)


def test_one_missing_series_leaves_the_others_known() -> None:
    metrics, _ = metrics_with({**BUSY_REPLICAS, "vllm:num_requests_running": []})
    got = throughput(metrics)
    assert got.prompt_tokens_per_s == Sample(22_000, NOW)
    assert got.busy_fraction == NoData("no engine samples in window")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(RequestsConnectionError("refused"), "prometheus unreachable", id="down"),
        pytest.param(vector("NaN"), "NaN", id="nan"),
    ],
)
def test_unknowns_are_named(answer: list[Any] | Exception, reason: str) -> None:
    metrics, _ = metrics_with({**BUSY_REPLICAS, "vllm:generation_tokens_total": answer})
    got = throughput(metrics)
    for signal in (got.prompt_tokens_per_s, got.generation_tokens_per_s, got.busy_fraction):
        assert isinstance(signal, NoData)
        assert signal.reason.startswith(reason)


def test_seats_must_be_positive() -> None:
    metrics, _ = metrics_with(BUSY_REPLICAS)
    with pytest.raises(ValueError, match="max_num_seqs"):
        metrics.engine_throughput(
            namespace="a", name="b", max_num_seqs=0, window_seconds=600, now=NOW
        )


def test_a_long_named_tenant_is_selected_by_its_pods_label_value() -> None:
    """Engine pods carry a name over 63 characters cut and hashed (names.label_value)."""
    long_name = "l" + "o" * 100 + "ng"
    metrics, fake = metrics_with({})

    metrics.engine_throughput(
        namespace="team-a", name=long_name, max_num_seqs=64, window_seconds=600, now=NOW
    )

    assert fake.queries
    assert all(f'inference_deployment="{names.label_value(long_name)}"' in q for q in fake.queries)
