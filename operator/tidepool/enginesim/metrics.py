"""The simulator's Prometheus series, under vLLM's names, in a private registry.

Role: the names, label sets and buckets vLLM exports, so that anything scraping an engine (the
autoscaler's Prometheus queries, a LoRA-aware router) reads the simulator as it reads vLLM.

Must not: use the global Prometheus registry (tests run several simulators in one process), or
export a series vLLM does not under a ``vllm:`` name (a consumer could come to depend on what no
real engine sends). The one series of the simulator's own, ``enginesim_lora_admissions_total``
(where each request's adapter was when it got its batch slot), is what tests and benchmarks
measure adapter affinity with; its prefix says no vLLM sends it, so nothing routes on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
_E2E_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class EngineMetrics:
    """vLLM's series names (``vllm:`` prefix, label ``model_name``) in a private registry.

    Every series is labelled with the base model, adapter requests included, as vLLM labels
    them with its served model name. ``max_loras`` is None without ``--enable-lora``; vLLM
    then exports no ``vllm:lora_requests_info``.
    """

    def __init__(
        self,
        model: str,
        max_loras: int | None = None,
        admissions: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if admissions is not None:
            self.registry.register(_Admissions(model, admissions))
        r, lbl = self.registry, ["model_name"]

        def gauge(name: str, documentation: str) -> Any:
            return Gauge(name, documentation, lbl, registry=r).labels(model)

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = gauge(
            "vllm:num_requests_waiting",
            "Requests waiting for a batch slot (or for their LoRA adapter to fit the batch).",
        )
        # vLLM renamed its KV-cache gauge to kv_cache_usage_perc; routers still read either
        # name (the Gateway API Inference Extension's default is the new one), so both go out.
        self.kv_cache = [
            gauge(name, "KV-cache usage, 0 to 1 (simulated as running / max_num_seqs).")
            for name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
        ]
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
        ).labels(model, "length")
        self._max_lora = str(max_loras)
        self.lora_info = (
            None
            if max_loras is None
            else Gauge(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
                registry=r,
            )
        )

    def set_batch(self, running: int, waiting: int, kv_cache_usage: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        for g in self.kv_cache:
            g.set(kv_cache_usage)

    def set_lora(self, running: list[str], waiting: list[str]) -> None:
        """Stamp the current adapter sets with the wall-clock time, as vLLM does: its value is
        a timestamp, and each distinct label set stays a series of its own, so a reader takes
        the series with the largest value (what the Inference Extension's endpoint picker
        does)."""
        if self.lora_info is None:
            return
        self.lora_info.labels(
            max_lora=self._max_lora,
            waiting_lora_adapters=",".join(waiting),
            running_lora_adapters=",".join(running),
        ).set_to_current_time()


class _Admissions(Collector):
    """``enginesim_lora_admissions_total{model_name,lora_name,resident}``, read from the engine's
    own count at each scrape (so the engine knows no metrics library)."""

    def __init__(self, model: str, counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._model, self._counts = model, counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())  # unchecked: the series appear once adapters serve requests

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "enginesim_lora_admissions",
            "Requests of each LoRA adapter by where the adapter was when the request got its"
            " batch slot: gpu (in a GPU slot), cpu (swapped in from CPU memory), disk (loaded).",
            labels=["model_name", "lora_name", "resident"],
        )
        for (name, where), n in sorted(self._counts().items()):
            family.add_metric([self._model, name, str(where)], n)
        yield family
