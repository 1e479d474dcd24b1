"""Read demand and traffic from Prometheus, turning every failure into a named ``NoData``.

Missing data is not zero: a scale-down on a zero that was really an outage would drop live
replicas. Each case is handled by name:

- transport error or non-2xx answer -> ``NoData("prometheus unreachable: ...")``;
- NaN or infinite value -> ``NoData("NaN")``;
- the gateway target not scraped (``up`` absent or 0) -> ``NoData("gateway not scraped")``:
  at zero replicas the gateway's held-request gauge is the only evidence of demand, so without it
  nothing is known;
- ready engine replicas but no engine series -> ``NoData("engine metrics missing")``.

A model at zero replicas with the gateway scraped and nothing held is a *known* zero.

Metric names are vLLM's own (``vllm:num_requests_waiting``, ``vllm:num_requests_running``) plus
the gateway's. Labels attached by the scrape config (``e2e/prometheus.py``, the chart's
PodMonitor): ``namespace``, ``pod``, ``pool``, ``inference_deployment``.

Every query is sent once per tick for all tenants and each tenant's read is a lookup in the
shared answer (:mod:`tidepool.adapters.prometheus_batch`), so the rules above are applied per
tenant to its own series: a tenant absent from a vector is "no series", which is a known zero or
a named ``NoData`` exactly as an empty per-tenant answer was. A NaN in one tenant's series is that
tenant's ``NoData("NaN")``; a failed request is every tenant's ``NoData`` for that tick.

``prometheus-api-client`` is synchronous; callers run this from Kopf's executor threads, never on
the event loop.
"""

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from prometheus_client import Counter

from tidepool.adapters.prometheus_batch import BatchedReader, Query, UnknownError, connect, sum_by
from tidepool.api import names
from tidepool.policy import lora_promotion, placement
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.signals import NoData, Sample, Signal, sample

GATEWAY_JOB: Final = "tidepool-gateway"
ENGINE_LABEL: Final = "inference_deployment"
#: Resolution of the subqueries over a window: one point per 15 s scrape.
_STEP_SECONDS: Final = 15
_IDLE: Final = placement.Load(0.0, 0.0, 0.0)

#: The labels naming a tenant's series: its engines' (``names.label_value`` of its name, the
#: pods' ``inference-deployment`` label) and the gateway's (its served model).
_ENGINE: Final = ("namespace", ENGINE_LABEL)
_ENGINE_POOL: Final = ("namespace", ENGINE_LABEL, "pool")
_GATEWAY: Final = ("namespace", "model")
_GATEWAY_POOL: Final = ("namespace", "model", "pool")
_GATEWAY_REQUESTS: Final = "tidepool_gateway_requests_total"
#: The gateway's arrival-to-first-byte histogram (``tidepool.gateway.metrics``).
_GATEWAY_TTFB: Final = "tidepool_gateway_time_to_first_byte_seconds"
#: The gateway's offered load, as (counter, extra matchers) per kind of load.
_LOAD: Final = {
    "requests": (_GATEWAY_REQUESTS, ""),
    "input": ("tidepool_gateway_tokens_total", '{kind="prompt"}'),
    "output": ("tidepool_gateway_tokens_total", '{kind="completion"}'),
}


#: The oldest sample of a gauge that still counts: six of the chart's 15 s scrapes, and one
#: scrape plus half of Prometheus' default 1 m interval. See :func:`fresh`.
SAMPLE_MAX_AGE_SECONDS: Final = 90


def fresh(selector: str) -> str:
    """``selector`` without the series whose last sample is older than
    :data:`SAMPLE_MAX_AGE_SECONDS`.

    Why: an instant query answers with each series' last sample up to the lookback delta (5
    minutes, Prometheus' docs on staleness) unless the scrape loop wrote a staleness marker
    when the target went. A pod deleted while Prometheus was down never gets one, so after the
    outage its last gauge values (say 2 requests running) would count for up to 5 minutes,
    keeping a deployment active that is idle. E.g. last sample at 12:00:00, outage to
    12:01:30: counted until 12:05:00 without this filter, not at all with it.
    """
    return f"({selector} and timestamp({selector}) > time() - {SAMPLE_MAX_AGE_SECONDS})"


def _engine_queue(by: tuple[str, ...]) -> str:
    """Requests waiting plus running on the engines, per ``by``."""
    waiting, running = fresh("vllm:num_requests_waiting"), fresh("vllm:num_requests_running")
    return f"{sum_by(by, waiting)} + {sum_by(by, running)}"


_GATEWAY_SCRAPED: Final = f'up{{job="{GATEWAY_JOB}"}}'
GATEWAY_UP: Final = Query("gateway_up", f"max({fresh(_GATEWAY_SCRAPED)})", ())
ENGINE_QUEUE: Final = Query("engine_queue", _engine_queue(_ENGINE), _ENGINE)
POOL_QUEUE: Final = Query("pool_queue", _engine_queue(_ENGINE_POOL), _ENGINE_POOL)
GATEWAY_HELD: Final = Query(
    "gateway_held", sum_by(_GATEWAY, fresh("tidepool_gateway_queue_depth")), _GATEWAY
)
GATEWAY_INFLIGHT: Final = Query(
    "gateway_inflight",
    sum_by(_GATEWAY_POOL, fresh("tidepool_gateway_inflight_requests")),
    _GATEWAY_POOL,
)


def _per_replica(name: str, expr: str, by: tuple[str, ...]) -> Query:
    """Each pod's ``expr`` summed over its series (vLLM labels by model and engine), averaged
    over the pods of each ``by`` group: one replica's figure."""
    return Query(name, f"avg by ({', '.join(by)}) ({sum_by((*by, 'pod'), expr)})", by)


def _gateway_rate(kind: str, over: str) -> str:
    metric, extra = _LOAD[kind]
    return sum_by(_GATEWAY, f"rate({metric}{extra}[{over}])")


def time_to_first_byte_p99(window_seconds: int) -> Query:
    """Every tenant's p99 time to first byte at the gateway over ``window_seconds``: one query.

    ``histogram_quantile`` over the buckets' rates summed per tenant, so every gateway replica's
    requests count. The gateway's buckets have an edge at 10 s, the default SLO, so the p99 is
    above it exactly when more than 1% of the window's requests took longer. A tenant with no
    request in the window has all-zero rates, whose quantile is NaN: unknown, never zero; one
    with fewer than ``lora_promotion.MIN_REQUESTS_FOR_P99`` requests (``increase`` of the count)
    has no series, unknown too (that module says why).
    """
    by = (*_GATEWAY, "le")
    rates = sum_by(by, f"rate({_GATEWAY_TTFB}_bucket[{window_seconds}s])")
    requests = sum_by(_GATEWAY, f"increase({_GATEWAY_TTFB}_count[{window_seconds}s])")
    enough = f"{requests} >= {lora_promotion.MIN_REQUESTS_FOR_P99}"
    return Query(
        "time_to_first_byte_p99",
        f"histogram_quantile(0.99, {rates}) and on ({', '.join(_GATEWAY)}) ({enough})",
        _GATEWAY,
    )


def _owner(namespace: str, name: str) -> tuple[str, str]:
    """One InferenceDeployment's engine series: its pods' ``inference-deployment`` label, which
    is the name cut and hashed when over 63 characters (``names.label_value``)."""
    return (namespace, names.label_value(name))


class PrometheusMetrics:
    """Queries for one operator. ``url`` is e.g. ``http://127.0.0.1:9090``; ``freshness_seconds``
    is the tick within which every tenant's read shares one answer per query (the operator's
    ``--tick``, see :mod:`tidepool.adapters.prometheus_batch`); ``queries`` counts the requests
    sent, by query and result."""

    def __init__(
        self,
        url: str,
        *,
        freshness_seconds: float,
        queries: Counter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._prom = connect(url)
        self._batch = BatchedReader(
            self._prom, freshness_seconds=freshness_seconds, queries=queries, clock=clock
        )

    def close(self) -> None:
        """Close the connections kept to Prometheus."""
        self._prom.close()

    def _gateway_up(self) -> None:
        up = self._batch.value(GATEWAY_UP, ())
        if up is None or up < 1:
            raise UnknownError("gateway not scraped")

    def demand(
        self, *, namespace: str, name: str, served_model: str, ready_replicas: int, now: datetime
    ) -> Signal:
        """Requests waiting plus running on the engines, plus held at the gateway."""
        try:
            self._gateway_up()
            engines = self._batch.value(ENGINE_QUEUE, _owner(namespace, name))
            if engines is None and ready_replicas > 0:
                raise UnknownError("engine metrics missing")
            held = self._batch.value(GATEWAY_HELD, (namespace, served_model))
        except UnknownError as unknown:
            return NoData(unknown.reason)
        return Sample(value=(engines or 0.0) + (held or 0.0), at=now)

    def pool_inflight(self, *, namespace: str, name: str, pool: str, now: datetime) -> Signal:
        """Requests still running or waiting on one pool's engines (for draining)."""
        try:
            value = self._batch.value(POOL_QUEUE, (*_owner(namespace, name), pool))
        except UnknownError as unknown:
            return NoData(unknown.reason)
        return Sample(value=value or 0.0, at=now)

    def gateway_inflight(
        self, *, namespace: str, served_model: str, pool: str, now: datetime
    ) -> Signal:
        """Requests the gateway has forwarded for a model to one pool's pods and not finished.

        For a LoRA tenant leaving a SharedEngine: its requests still running on the fleet (the
        fleet's pods carry the engine's GPUPool as their pool), which the engines' own metrics
        cannot attribute to the tenant.
        """
        try:
            self._gateway_up()
            value = self._batch.value(GATEWAY_INFLIGHT, (namespace, served_model, pool))
        except UnknownError as unknown:
            return NoData(unknown.reason)
        return Sample(value=value or 0.0, at=now)

    def time_to_first_byte_p99(
        self, *, namespace: str, served_model: str, window_seconds: int
    ) -> float | None:
        """The tenant's p99 time to first byte at the gateway over the window, in seconds, or
        ``None`` when it is not known: no request in the window (NaN or no series), the gateway
        not scraped, or Prometheus unreachable. Never 0 for unknown: a 0 would read as an SLO
        met.
        """
        try:
            self._gateway_up()
            return self._batch.value(
                time_to_first_byte_p99(window_seconds), (namespace, served_model)
            )
        except UnknownError:
            return None

    def engine_throughput(
        self,
        *,
        namespace: str,
        name: str,
        max_num_seqs: int,
        window_seconds: int,
        now: datetime,
        pool: str | None = None,
    ) -> EngineThroughput:
        """Per-replica prompt and generation token rates and busy fraction over a window.

        Each pod's rates are summed over its series (vLLM labels by model and engine), then
        averaged over pods, so the figures are one replica's; ``pool`` narrows to one pool's
        replicas, whose GPUs may differ from the other pool's. E.g. two pods at 20,000 and 24,000
        prompt tokens/s, each running 56 of 64 seats on average: 22,000 tokens/s, busy 0.875.
        No engine series in the window is ``NoData``, never 0: a replica with no samples has shown
        nothing about its capacity.
        """
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        by: tuple[str, ...] = _ENGINE
        labels: tuple[str, ...] = _owner(namespace, name)
        if pool is not None:
            by, labels = _ENGINE_POOL, (*labels, pool)
        over = f"[{window_seconds}s]"
        try:
            prompt, generated, running = (
                self._batch.value(_per_replica(query, expr, by), labels)
                for query, expr in (
                    ("throughput_prompt", f"rate(vllm:prompt_tokens_total{over})"),
                    ("throughput_generation", f"rate(vllm:generation_tokens_total{over})"),
                    ("throughput_running", f"avg_over_time(vllm:num_requests_running{over})"),
                )
            )
        except UnknownError as unknown:
            missing = NoData(unknown.reason)
            return EngineThroughput(missing, missing, missing)

        def sig(value: float | None) -> Signal:
            if value is None:
                return NoData("no engine samples in window")
            return sample(value, now)

        busy = None if running is None else running / max_num_seqs
        return EngineThroughput(sig(prompt), sig(generated), sig(busy))

    def traffic(
        self,
        *,
        namespace: str,
        name: str,
        served_model: str,
        window_seconds: int,
        idle_seconds: int,
        now: datetime,
    ) -> placement.Traffic | NoData:
        """Offered load over the placement window, from the gateway's counters.

        Offered load is what clients sent (requests and metered tokens), not what the engines
        hold: a queue that builds while replicas load is not demand. The busiest minute is the
        highest one-minute rate in the window; ``span`` is how long the tenant's counters have
        existed within it, so a new tenant's first minutes count as evidence. Tenants with the
        same window and idle time share every query; each distinct one adds its own.
        """
        win = f"[{window_seconds}s:{_STEP_SECONDS}s]"
        # Activity and wakes over the wake horizon, from arrivals: a tenant is active while a
        # request came within its idle window, and each idle -> active edge is a wake a
        # serverless placement would pay, whether or not it is scaled to zero now.
        horizon = max(window_seconds, int(placement.WAKE_HORIZON.total_seconds()))
        hwin = f"[{horizon}s:{_STEP_SECONDS}s]"
        busy = f"({_gateway_rate('requests', f'{idle_seconds}s')} > bool 0)"
        tenant = (namespace, served_model)

        def read(query: str, promql: str) -> float:
            return self._batch.value(Query(query, promql, _GATEWAY), tenant) or 0.0

        def per_kind(query: str, promql_of: Callable[[str], str]) -> placement.Load:
            return placement.Load(*(read(f"{query}_{k}", promql_of(k)) for k in _LOAD))

        try:
            self._gateway_up()
            seen = read(
                "traffic_seen",
                f"count_over_time(({sum_by(_GATEWAY, _GATEWAY_REQUESTS)}){win})",
            )
            if not seen:
                return placement.Traffic(
                    mean=_IDLE, peak=_IDLE, span=timedelta(0), active_fraction=0.0, wakes=0.0
                )
            mean = per_kind("traffic_mean", lambda k: _gateway_rate(k, f"{window_seconds}s"))
            peak = per_kind(
                "traffic_peak", lambda k: f"max_over_time(({_gateway_rate(k, '1m')}){win})"
            )
            recent = per_kind("traffic_recent", lambda k: _gateway_rate(k, "1m"))
            horizon_mean = per_kind("traffic_horizon", lambda k: _gateway_rate(k, f"{horizon}s"))
            active = read("traffic_active", f"avg_over_time({busy}{hwin})")
            edges = read("traffic_edges", f"changes({busy}{hwin})")
        except UnknownError as unknown:
            return NoData(unknown.reason)
        return placement.Traffic(
            mean=mean,
            peak=peak,
            span=timedelta(seconds=min(window_seconds, seen * _STEP_SECONDS)),
            active_fraction=min(1.0, max(0.0, active)),
            wakes=float(max(0, math.ceil(edges / 2))),
            horizon=timedelta(seconds=horizon),
            recent=recent,
            horizon_mean=horizon_mean,
        )


def utc_now() -> datetime:
    """The clock, for the shell only (the core takes ``now`` as an argument)."""
    return datetime.now(UTC)
