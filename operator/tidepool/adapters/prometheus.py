"""Read demand and traffic from Prometheus, turning every failure into a named ``NoData``.

Missing data is not zero (style rule R3). Each case is handled by name:

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

``prometheus-api-client`` is synchronous; callers run this from Kopf's executor threads, never on
the event loop.
"""

import math
from datetime import UTC, datetime, timedelta
from typing import Final

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests import RequestException
from urllib3.util.retry import Retry

from tidepool.api import names
from tidepool.policy import placement
from tidepool.policy.capacity import EngineThroughput
from tidepool.policy.signals import NoData, Sample, Signal, sample

GATEWAY_JOB: Final = "tidepool-gateway"
ENGINE_LABEL: Final = "inference_deployment"
TIMEOUT_SECONDS: Final = 3.0
#: Resolution of the subqueries over a window: one point per 15 s scrape.
_STEP_SECONDS: Final = 15
_IDLE: Final = placement.Load(0.0, 0.0, 0.0)


class _UnknownError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _owner(namespace: str, name: str) -> str:
    """Selector of one InferenceDeployment's engine series: its pods' ``inference-deployment``
    label, which is the name cut and hashed when over 63 characters (``names.label_value``)."""
    return f'namespace="{_escape(namespace)}",{ENGINE_LABEL}="{_escape(names.label_value(name))}"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class PrometheusMetrics:
    """Queries for one operator. ``url`` is e.g. ``http://127.0.0.1:9090``."""

    def __init__(self, url: str) -> None:
        self.url = url
        # No client-side retries: the next tick is the retry, and a backoff here would stall the
        # decision loop for seconds exactly when Prometheus is down.
        self._prom = PrometheusConnect(
            url=url, disable_ssl=True, timeout=int(TIMEOUT_SECONDS), retry=Retry(total=0)
        )

    def _scalar(self, promql: str) -> float | None:
        """The single value of ``promql``; None for an empty vector; _UnknownError otherwise."""
        try:
            result = self._prom.custom_query(query=promql)
        except (PrometheusApiClientException, RequestException, ValueError) as exc:
            raise _UnknownError(f"prometheus unreachable: {type(exc).__name__}") from exc
        if not result:
            return None
        if len(result) > 1:
            raise _UnknownError(f"{len(result)} series where one was expected")
        value = float(result[0]["value"][1])
        if not math.isfinite(value):
            raise _UnknownError("NaN")
        return value

    def _gateway_up(self) -> None:
        up = self._scalar(f'max(up{{job="{GATEWAY_JOB}"}})')
        if up is None or up < 1:
            raise _UnknownError("gateway not scraped")

    def demand(
        self, *, namespace: str, name: str, served_model: str, ready_replicas: int, now: datetime
    ) -> Signal:
        """Requests waiting plus running on the engines, plus held at the gateway."""
        sel = _owner(namespace, name)
        try:
            self._gateway_up()
            engines = self._scalar(
                f"sum(vllm:num_requests_waiting{{{sel}}}) + sum(vllm:num_requests_running{{{sel}}})"
            )
            if engines is None and ready_replicas > 0:
                raise _UnknownError("engine metrics missing")
            held = self._scalar(
                f'sum(tidepool_gateway_queue_depth{{namespace="{_escape(namespace)}",'
                f'model="{_escape(served_model)}"}})'
            )
        except _UnknownError as unknown:
            return NoData(unknown.reason)
        return Sample(value=(engines or 0.0) + (held or 0.0), at=now)

    def pool_inflight(self, *, namespace: str, name: str, pool: str, now: datetime) -> Signal:
        """Requests still running or waiting on one pool's engines (for draining)."""
        sel = f'{_owner(namespace, name)},pool="{_escape(pool)}"'
        try:
            value = self._scalar(
                f"sum(vllm:num_requests_waiting{{{sel}}}) + sum(vllm:num_requests_running{{{sel}}})"
            )
        except _UnknownError as unknown:
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
        sel = (
            f'namespace="{_escape(namespace)}",model="{_escape(served_model)}",'
            f'pool="{_escape(pool)}"'
        )
        try:
            self._gateway_up()
            value = self._scalar(f"sum(tidepool_gateway_inflight_requests{{{sel}}})")
        except _UnknownError as unknown:
            return NoData(unknown.reason)
        return Sample(value=value or 0.0, at=now)

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
        sel = _owner(namespace, name)
        if pool is not None:
            sel += f',pool="{_escape(pool)}"'
        over = f"[{window_seconds}s]"

        def per_replica(expr: str) -> str:
            return f"avg(sum by (pod) ({expr}))"

        try:
            prompt = self._scalar(per_replica(f"rate(vllm:prompt_tokens_total{{{sel}}}{over})"))
            generated = self._scalar(
                per_replica(f"rate(vllm:generation_tokens_total{{{sel}}}{over})")
            )
            running = self._scalar(
                per_replica(f"avg_over_time(vllm:num_requests_running{{{sel}}}{over})")
            )
        except _UnknownError as unknown:
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
        existed within it, so a new tenant's first minutes count as evidence.
        """
        gw = f'namespace="{_escape(namespace)}",model="{_escape(served_model)}"'
        win = f"[{window_seconds}s:{_STEP_SECONDS}s]"

        def rate(metric: str, extra: str = "", over: str = f"{window_seconds}s") -> str:
            return f"sum(rate({metric}{{{gw}{extra}}}[{over}]))"

        series = {
            "requests": ("tidepool_gateway_requests_total", ""),
            "input": ("tidepool_gateway_tokens_total", ',kind="prompt"'),
            "output": ("tidepool_gateway_tokens_total", ',kind="completion"'),
        }
        try:
            self._gateway_up()
            seen = self._scalar(
                f"count_over_time(sum(tidepool_gateway_requests_total{{{gw}}}){win})"
            )
            if not seen:
                return placement.Traffic(
                    mean=_IDLE, peak=_IDLE, span=timedelta(0), active_fraction=0.0, wakes=0.0
                )
            mean = {k: self._scalar(rate(m, x)) or 0.0 for k, (m, x) in series.items()}
            peak = {
                k: self._scalar(f"max_over_time(({rate(m, x, '1m')}){win})") or 0.0
                for k, (m, x) in series.items()
            }
            recent = {k: self._scalar(rate(m, x, "1m")) or 0.0 for k, (m, x) in series.items()}
            # Activity and wakes over the wake horizon, from arrivals: a tenant is active while
            # a request came within its idle window, and each idle -> active edge is a wake a
            # serverless placement would pay, whether or not it is scaled to zero now.
            horizon = max(window_seconds, int(placement.WAKE_HORIZON.total_seconds()))
            hwin = f"[{horizon}s:{_STEP_SECONDS}s]"
            over_horizon = {
                k: self._scalar(rate(m, x, f"{horizon}s")) or 0.0 for k, (m, x) in series.items()
            }
            busy = f"({rate('tidepool_gateway_requests_total', '', f'{idle_seconds}s')} > bool 0)"
            active = self._scalar(f"avg_over_time({busy}{hwin})")
            edges = self._scalar(f"changes({busy}{hwin})")
            wakes = None if edges is None else math.ceil(edges / 2)
        except _UnknownError as unknown:
            return NoData(unknown.reason)
        return placement.Traffic(
            mean=placement.Load(mean["requests"], mean["input"], mean["output"]),
            peak=placement.Load(peak["requests"], peak["input"], peak["output"]),
            span=timedelta(seconds=min(window_seconds, seen * _STEP_SECONDS)),
            active_fraction=min(1.0, max(0.0, active or 0.0)),
            wakes=float(max(0, wakes or 0)),
            horizon=timedelta(seconds=horizon),
            recent=placement.Load(recent["requests"], recent["input"], recent["output"]),
            horizon_mean=placement.Load(
                over_horizon["requests"], over_horizon["input"], over_horizon["output"]
            ),
        )


def utc_now() -> datetime:
    """The clock, for the shell only (the core takes ``now`` as an argument)."""
    return datetime.now(UTC)
