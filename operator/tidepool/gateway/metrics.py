"""The gateway's Prometheus metrics, in their own registry.

Role: name and label the series the operator's autoscaler and dashboards read. In particular
``tidepool_gateway_queue_depth`` counts requests *held at the gateway* for a model with no
fitting replica, which exists even at zero replicas (unlike an engine's own queue metric, the
gap behind llm-d#2492).

Must not: use the process-global registry (tests build many gateways in one process) or
label by anything unbounded (an unknown model is labelled ``_unknown``, never the raw name).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN: Final = "_unknown"

_LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
)  # fmt: skip


def _latency(name: str, documentation: str, registry: CollectorRegistry) -> Histogram:
    """A per-model latency histogram. All three share labels and buckets, so a dashboard can
    subtract one from another (queue wait from time to first byte) bucket by bucket."""
    return Histogram(
        name, documentation, ["model", "namespace"], buckets=_LATENCY_BUCKETS, registry=registry
    )


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge(
            "tidepool_gateway_queue_depth",
            "Requests held at the gateway waiting for a ready replica.",
            ["model", "namespace"],
            registry=r,
        )
        self.inflight = Gauge(
            "tidepool_gateway_inflight_requests",
            "Requests forwarded to an engine and not yet finished.",
            ["model", "namespace", "pool"],
            registry=r,
        )
        self.requests = Counter(
            "tidepool_gateway_requests",
            "Requests answered, by status code.",
            ["model", "namespace", "tenant", "code"],
            registry=r,
        )
        self.ttft = _latency(
            "tidepool_gateway_time_to_first_byte_seconds",
            "Arrival to first response byte sent to the client (includes time held).",
            r,
        )
        self.duration = _latency(
            "tidepool_gateway_request_duration_seconds", "Arrival to last response byte.", r
        )
        self.held_seconds = _latency(
            "tidepool_gateway_queue_wait_seconds",
            "Time a request spent held before a replica took it (or it expired).",
            r,
        )
        self.tokens = Counter(
            "tidepool_gateway_tokens",
            "Tokens metered from responses' usage, by kind (prompt or completion).",
            ["model", "namespace", "tenant", "kind"],
            registry=r,
        )
        self.wakes = Counter(
            "tidepool_gateway_wakes",
            "Wake pushes sent to the operator, by result (ok or error).",
            ["model", "namespace", "result"],
            registry=r,
        )
