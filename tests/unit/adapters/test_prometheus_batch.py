"""PrometheusMetrics sends each query once per tick for every tenant, over kept connections.

The operator's Prometheus load must not grow with the number of InferenceDeployments: 50 tenants
reading in one tick cost what one does, concurrent daemons share a request in flight, a new tick
asks again, and an outage costs one failed request per query per tick.
"""

import socket
import threading

import pytest
from fake_prometheus import (
    TICK_SECONDS,
    Answer,
    FakePrometheus,
    by_query,
    counted,
    metrics_on,
    series,
)

from fakes import T0, ManualClock
from tidepool.adapters.prometheus import (
    ENGINE_QUEUE,
    GATEWAY_HELD,
    GATEWAY_INFLIGHT,
    GATEWAY_UP,
    POOL_QUEUE,
    PrometheusMetrics,
)
from tidepool.adapters.prometheus_batch import BatchedReader, Query, connect
from tidepool.policy import placement
from tidepool.policy.signals import NoData, Sample

TENANTS = [(f"team-{i % 5}", f"model-{i}") for i in range(50)]
QUEUE_QUERIES = (GATEWAY_UP, ENGINE_QUEUE, GATEWAY_HELD)


def fleet() -> dict[Query, Answer]:
    """Tenant i runs i requests and the gateway holds one more for it."""
    return {
        GATEWAY_UP: [series(1)],
        ENGINE_QUEUE: [
            series(i, namespace=ns, inference_deployment=name)
            for i, (ns, name) in enumerate(TENANTS)
        ],
        GATEWAY_HELD: [series(1, namespace=ns, model=name) for ns, name in TENANTS],
    }


def demand(metrics: PrometheusMetrics, ns: str, name: str) -> object:
    return metrics.demand(namespace=ns, name=name, served_model=name, ready_replicas=1, now=T0)


def full_sync(metrics: PrometheusMetrics, ns: str, name: str) -> list[object]:
    """Every read an auto-mode InferenceDeployment's sync makes while migrating."""
    throughput = metrics.engine_throughput(
        namespace=ns, name=name, max_num_seqs=64, window_seconds=120, now=T0
    )
    return [
        demand(metrics, ns, name),
        metrics.traffic(
            namespace=ns,
            name=name,
            served_model=name,
            window_seconds=600,
            idle_seconds=300,
            now=T0,
        ),
        throughput.prompt_tokens_per_s,
        throughput.generation_tokens_per_s,
        throughput.busy_fraction,
        metrics.pool_inflight(namespace=ns, name=name, pool="a100", now=T0),
        metrics.gateway_inflight(namespace=ns, served_model=name, pool="a100", now=T0),
    ]


def test_fifty_tenants_in_one_tick_send_each_query_once(prometheus: FakePrometheus) -> None:
    prometheus.answer = by_query(fleet())
    with metrics_on(prometheus.url, ManualClock()) as (metrics, queries):
        got = [demand(metrics, ns, name) for ns, name in TENANTS]
    assert got == [Sample(i + 1.0, T0) for i in range(len(TENANTS))]
    assert sorted(prometheus.queries) == sorted(q.promql for q in QUEUE_QUERIES)
    assert [counted(queries, q.name) for q in QUEUE_QUERIES] == [1, 1, 1]


def every_series(promql: str) -> list[dict[str, object]]:
    """The gateway up, and for every other query a series for each tenant carrying every label
    a query may group by (each read takes the ones its query names)."""
    if promql == GATEWAY_UP.promql:
        return [series(1)]
    return [
        series(2, namespace=ns, inference_deployment=name, model=name, pool="a100")
        for ns, name in TENANTS
    ]


def test_a_full_sync_costs_the_same_for_fifty_tenants_as_for_one(
    prometheus: FakePrometheus,
) -> None:
    prometheus.answer = every_series
    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        full_sync(metrics, *TENANTS[0])
    for_one = len(prometheus.queries)
    prometheus.queries.clear()
    with metrics_on(prometheus.url, ManualClock()) as (metrics, queries):
        reads = [r for ns, name in TENANTS for r in full_sync(metrics, ns, name)]
    assert [r for r in reads if isinstance(r, NoData)] == []
    assert len(prometheus.queries) == for_one
    assert len(set(prometheus.queries)) == for_one  # and each of them once
    # The gateway's check, queue and held; traffic's count and 14 more (means, peaks, last
    # minute and hour per kind of load, activity, wakes); 3 throughput figures; the pool's
    # queue and the gateway's in flight.
    assert for_one == 3 + 15 + 3 + 2
    total = sum(s.value for m in queries.collect() for s in m.samples if s.name.endswith("_total"))
    assert total == for_one


def test_concurrent_daemons_share_the_request_in_flight(prometheus: FakePrometheus) -> None:
    prometheus.answer = by_query(fleet())
    prometheus.delay_seconds = 0.05  # every daemon asks while the first request is out
    start = threading.Barrier(len(TENANTS))
    got: dict[str, object] = {}

    def daemon(ns: str, name: str) -> None:
        start.wait()
        got[name] = demand(metrics, ns, name)

    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        threads = [threading.Thread(target=daemon, args=t) for t in TENANTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got == {name: Sample(i + 1.0, T0) for i, (_, name) in enumerate(TENANTS)}
    assert [prometheus.count(q) for q in QUEUE_QUERIES] == [1, 1, 1]
    # A request in flight per query at most: the connections are bounded by the queries.
    assert prometheus.connections <= len(QUEUE_QUERIES)


def test_a_new_tick_asks_again_and_within_a_tick_nothing_new(prometheus: FakePrometheus) -> None:
    answers = fleet()
    prometheus.answer = by_query(answers)
    clock = ManualClock()
    ns, name = TENANTS[7]
    with metrics_on(prometheus.url, clock) as (metrics, _):
        assert demand(metrics, ns, name) == Sample(8.0, T0)
        answers[GATEWAY_HELD] = [series(5, namespace=ns, model=name)]
        prometheus.answer = by_query(answers)
        clock.advance(TICK_SECONDS - 0.1)
        assert demand(metrics, ns, name) == Sample(8.0, T0)  # the tick's answer
        assert len(prometheus.queries) == 3
        clock.advance(0.1)
        assert demand(metrics, ns, name) == Sample(12.0, T0)  # 7 running + 5 held
        assert [prometheus.count(q) for q in QUEUE_QUERIES] == [2, 2, 2]


def test_an_outage_is_one_failed_request_per_tick_then_the_next_tick_retries(
    prometheus: FakePrometheus,
) -> None:
    down = True
    up = by_query(fleet())
    prometheus.answer = lambda q: 503 if down else up(q)
    clock = ManualClock()
    unreachable = NoData("prometheus unreachable: PrometheusApiClientException")
    with metrics_on(prometheus.url, clock) as (metrics, queries):
        assert {demand(metrics, ns, name) for ns, name in TENANTS} == {unreachable}
        down = False
        # Back within the tick: the tick's answer stands for every tenant.
        assert {demand(metrics, ns, name) for ns, name in TENANTS} == {unreachable}
        assert prometheus.queries == [GATEWAY_UP.promql]
        assert counted(queries, "gateway_up", "error") == 1
        clock.advance(TICK_SECONDS)
        assert demand(metrics, *TENANTS[3]) == Sample(4.0, T0)
        assert counted(queries, "gateway_up", "ok") == 1


def test_a_refused_connection_is_named(unused_port: int) -> None:
    with metrics_on(f"http://127.0.0.1:{unused_port}", ManualClock()) as (metrics, queries):
        got = demand(metrics, *TENANTS[0])
        traffic = metrics.traffic(
            namespace="a", name="b", served_model="b", window_seconds=600, idle_seconds=60, now=T0
        )
    assert got == NoData("prometheus unreachable: ConnectionError")
    assert traffic == got
    assert counted(queries, "gateway_up", "error") == 1  # both reads, one attempt


def test_ticks_reuse_one_connection(prometheus: FakePrometheus) -> None:
    prometheus.answer = by_query(fleet())
    clock = ManualClock()
    with metrics_on(prometheus.url, clock) as (metrics, _):
        for _ in range(10):
            for ns, name in TENANTS[:3]:
                demand(metrics, ns, name)
                metrics.pool_inflight(namespace=ns, name=name, pool="a100", now=T0)
                metrics.gateway_inflight(namespace=ns, served_model=name, pool="f", now=T0)
            clock.advance(TICK_SECONDS)
    assert len(prometheus.queries) == 10 * 5
    assert {prometheus.count(q) for q in (*QUEUE_QUERIES, POOL_QUEUE, GATEWAY_INFLIGHT)} == {10}
    assert prometheus.connections == 1


def test_tenants_with_one_window_share_traffic_queries_and_another_window_adds_its_own(
    prometheus: FakePrometheus,
) -> None:
    prometheus.answer = lambda q: (
        [series(1)]
        if q == GATEWAY_UP.promql
        else [series(4, namespace=ns, model=name) for ns, name in TENANTS]
    )

    def traffic(name: str, window: int) -> object:
        return metrics.traffic(
            namespace="team-0",
            name=name,
            served_model=name,
            window_seconds=window,
            idle_seconds=300,
            now=T0,
        )

    with metrics_on(prometheus.url, ManualClock()) as (metrics, _):
        assert isinstance(traffic("model-0", 600), placement.Traffic)
        one_window = len(prometheus.queries)
        for _, name in TENANTS:
            traffic(name, 600)
        assert len(prometheus.queries) == one_window
        traffic("model-0", 1200)
        # Its own window's count, means and peaks (7); the last minute's rates, the hour's
        # means, activity and wakes do not depend on the window and are shared.
        assert len(prometheus.queries) == one_window + 7


def test_freshness_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=r"freshness_seconds must be >= 0.*got -1"):
        BatchedReader(connect("http://127.0.0.1:9"), freshness_seconds=-1)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
