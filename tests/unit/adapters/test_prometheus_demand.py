"""PrometheusMetrics.demand, pool_inflight and gateway_inflight: each tenant's value from the
shared vectors, and every way of knowing nothing named (missing data is not zero)."""

from collections.abc import Mapping

import pytest
from fake_prometheus import Answer, FakePrometheus, by_query, metrics_on, series

from fakes import T0, ManualClock
from tidepool.adapters.prometheus import (
    ENGINE_QUEUE,
    GATEWAY_HELD,
    GATEWAY_INFLIGHT,
    GATEWAY_UP,
    POOL_QUEUE,
    fresh,
)
from tidepool.adapters.prometheus_batch import Query
from tidepool.policy.signals import NoData, Sample, Signal

UP = {GATEWAY_UP: [series(1)]}
UNREACHABLE = NoData("prometheus unreachable: PrometheusApiClientException")


def ours(value: float | str, **extra: str) -> list[dict[str, object]]:
    """team-a/llama's series (engines label the InferenceDeployment, the gateway the model)."""
    return [series(value, namespace="team-a", inference_deployment="llama", **extra)]


def held(value: float | str, **extra: str) -> list[dict[str, object]]:
    return [series(value, namespace="team-a", model="llama-chat", **extra)]


def theirs(value: float | str) -> list[dict[str, object]]:
    """Another tenant's series in the same vector: never ours."""
    return [series(value, namespace="team-b", inference_deployment="llama")]


@pytest.mark.parametrize(
    ("answers", "ready_replicas", "expected"),
    [
        pytest.param({}, 0, NoData("gateway not scraped"), id="gateway-never-scraped"),
        pytest.param(
            {GATEWAY_UP: [series(0)]}, 0, NoData("gateway not scraped"), id="gateway-down"
        ),
        pytest.param(UP, 0, Sample(0.0, T0), id="at-zero-nothing-held-is-a-known-zero"),
        pytest.param({**UP, GATEWAY_HELD: held(2)}, 0, Sample(2.0, T0), id="held-wakes"),
        pytest.param(
            {**UP, GATEWAY_HELD: held(2)},
            1,
            NoData("engine metrics missing"),
            id="ready-replicas-without-engine-series",
        ),
        pytest.param(
            {**UP, ENGINE_QUEUE: theirs(3)},
            1,
            NoData("engine metrics missing"),
            id="only-another-tenants-series",
        ),
        pytest.param(
            {**UP, ENGINE_QUEUE: ours(3), GATEWAY_HELD: held(2)},
            2,
            Sample(5.0, T0),
            id="engines-plus-held",
        ),
        pytest.param({**UP, ENGINE_QUEUE: ours("NaN")}, 1, NoData("NaN"), id="nan"),
        pytest.param(
            {**UP, ENGINE_QUEUE: ours(1), GATEWAY_HELD: held("+Inf")}, 1, NoData("NaN"), id="inf"
        ),
        pytest.param(
            {**UP, ENGINE_QUEUE: [*ours(3), *theirs("NaN")]},
            1,
            Sample(3.0, T0),
            id="another-tenants-nan-is-theirs",
        ),
        pytest.param({GATEWAY_UP: 503}, 0, UNREACHABLE, id="prometheus-503"),
        pytest.param({**UP, ENGINE_QUEUE: 500}, 1, UNREACHABLE, id="engine-query-500"),
        pytest.param(
            {**UP, ENGINE_QUEUE: [*ours(3), *ours(4)]},
            1,
            NoData("2 series where one was expected"),
            id="two-series-for-one-tenant",
        ),
        pytest.param(
            {**UP, ENGINE_QUEUE: [{"metric": {}}]},
            1,
            NoData("prometheus answered no vector: KeyError"),
            id="sample-without-value",
        ),
    ],
)
def test_demand(
    prometheus: FakePrometheus,
    answers: Mapping[Query, Answer],
    ready_replicas: int,
    expected: Signal,
) -> None:
    prometheus.answer = by_query(answers)
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        got = metrics.demand(
            namespace="team-a",
            name="llama",
            served_model="llama-chat",
            ready_replicas=ready_replicas,
            now=T0,
        )
    assert got == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param({}, Sample(0.0, T0), id="drained"),
        pytest.param({POOL_QUEUE: ours(4, pool="a100")}, Sample(4.0, T0), id="running"),
        pytest.param({POOL_QUEUE: ours(4, pool="h100")}, Sample(0.0, T0), id="other-pool"),
        pytest.param({POOL_QUEUE: ours("NaN", pool="a100")}, NoData("NaN"), id="nan"),
        pytest.param({POOL_QUEUE: 503}, UNREACHABLE, id="prometheus-503"),
    ],
)
def test_pool_inflight(
    prometheus: FakePrometheus, answers: Mapping[Query, Answer], expected: Signal
) -> None:
    prometheus.answer = by_query(answers)
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        got = metrics.pool_inflight(namespace="team-a", name="llama", pool="a100", now=T0)
    assert got == expected


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param({}, NoData("gateway not scraped"), id="gateway-never-scraped"),
        pytest.param(UP, Sample(0.0, T0), id="drained"),
        pytest.param(
            {**UP, GATEWAY_INFLIGHT: held(3, pool="fleet")}, Sample(3.0, T0), id="running"
        ),
        pytest.param(
            {**UP, GATEWAY_INFLIGHT: held(3, pool="other")}, Sample(0.0, T0), id="other-pool"
        ),
        pytest.param({**UP, GATEWAY_INFLIGHT: 503}, UNREACHABLE, id="prometheus-503"),
    ],
)
def test_gateway_inflight(
    prometheus: FakePrometheus, answers: Mapping[Query, Answer], expected: Signal
) -> None:
    prometheus.answer = by_query(answers)
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        got = metrics.gateway_inflight(
            namespace="team-a", served_model="llama-chat", pool="fleet", now=T0
        )
    assert got == expected


def test_each_query_groups_by_the_labels_a_tenant_is_read_by() -> None:
    """The batched forms: one series per tenant (and per pool where a read names one)."""
    engine = "namespace, inference_deployment"
    waiting, running = fresh("vllm:num_requests_waiting"), fresh("vllm:num_requests_running")
    assert ENGINE_QUEUE.promql == f"sum by ({engine}) ({waiting}) + sum by ({engine}) ({running})"
    assert POOL_QUEUE.promql == (
        f"sum by ({engine}, pool) ({waiting}) + sum by ({engine}, pool) ({running})"
    )
    assert GATEWAY_HELD.promql == (
        f"sum by (namespace, model) ({fresh('tidepool_gateway_queue_depth')})"
    )
    assert GATEWAY_INFLIGHT.promql == (
        f"sum by (namespace, model, pool) ({fresh('tidepool_gateway_inflight_requests')})"
    )
    assert GATEWAY_UP.promql == "max(" + fresh('up{job="tidepool-gateway"}') + ")"
