"""The simulator's Prometheus series, under vLLM's names, in a private registry.

Role: the names, label sets and buckets vLLM exports, so that anything scraping an engine (the
autoscaler's Prometheus queries, a LoRA-aware router) reads the simulator as it reads vLLM.

Must not: use the global Prometheus registry (tests run several simulators in one process), or
export a series vLLM does not (a name of our own would let a consumer depend on what no real
engine sends).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
_E2E_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class EngineMetrics:
    """vLLM's series names (``vllm:`` prefix, label ``model_name``) in a private registry."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, lbl = self.registry, ["model_name"]
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch.", lbl, registry=r
        ).labels(model)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting for a batch slot.", lbl, registry=r
        ).labels(model)
        self.cache = Gauge(
            "vllm:gpu_cache_usage_perc",
            "KV-cache usage, 0 to 1 (simulated as running / max_num_seqs).",
            lbl,
            registry=r,
        ).labels(model)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", lbl,
            buckets=_TTFT_BUCKETS, registry=r,
        ).labels(model)  # fmt: skip
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", lbl,
            buckets=_E2E_BUCKETS, registry=r,
        ).labels(model)  # fmt: skip
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", lbl, registry=r
        ).labels(model)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens processed.", lbl, registry=r
        ).labels(model)
        self.success = Counter(
            "vllm:request_success",
            "Finished requests, by finish reason.",
            ["model_name", "finished_reason"],
            registry=r,
        )
