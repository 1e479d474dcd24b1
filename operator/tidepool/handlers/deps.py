"""Operator-wide dependencies, built once at startup and shared through Kopf's memo."""

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tidepool.adapters.kube import Kube
from tidepool.adapters.peering import PeeringStore
from tidepool.adapters.prometheus import PrometheusMetrics
from tidepool.api.v1alpha1 import ColdStartStatus
from tidepool.policy.cold_start import Breakdown
from tidepool.policy.token_bucket import TokenBucket

MEMO_KEY: Final = "tidepool_deps"
#: The ``phase`` label of a cold start's total in ``tidepool_cold_start_seconds``.
TOTAL_PHASE: Final = "total"
#: From a cached image's seconds to a large model's download (15 minutes).
COLD_START_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
#: The operator's Event budget (:class:`EventBudget`): a minute's worth at once, then five a
#: second, ten times a steady 1,000-tenant platform's decisions.
EVENTS_PER_MINUTE: Final = 300
#: A reconcile's wait and duration: from an index read to a backlog of a minute.
RECONCILE_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Kopf's executor (``settings.execution.max_workers``) runs the sync handlers and each daemon's
#: reconciles (the daemons themselves are async and hold no thread while they sleep): this
#: bounds how many objects reconcile at once, not how many there are.
EXECUTOR_THREADS: Final = 64
#: The urgent lane's threads (:mod:`tidepool.handlers.daemon`): poked reconciles (a spec change,
#: a held request) run here rather than behind every object's tick. A few suffice: a poked
#: reconcile reads indices and writes once, and pokes come one object at a time.
URGENT_THREADS: Final = 8


@dataclass
class Telemetry:
    """The operator's own /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "tidepool_operator_reconcile_total",
            "Reconciles of InferenceDeployments, by result.",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "tidepool_operator_reconcile_duration_seconds",
            "Time to reconcile one InferenceDeployment or SharedEngine, by lane (urgent: poked"
            " by a spec change or a held request; timed: its requeue ran out).",
            ["lane"],
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.reconcile_wait_seconds = Histogram(
            "tidepool_operator_reconcile_wait_seconds",
            "Time a due reconcile (poked, or its requeue ran out) waited for an executor thread,"
            " by lane: beside the duration, it says whether a slow status is queueing or work.",
            ["lane"],
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.migrations = Gauge(
            "tidepool_operator_migrations_in_progress",
            "Make-before-break pool migrations running now (the chart's PrometheusRule alerts"
            " when one never ends).",
            registry=self.registry,
        )
        self.overtaken_ticks = Counter(
            "tidepool_operator_ticks_overtaken_total",
            "Timed reconciles still queued for a thread when a poke (a spec change, a held"
            " request) came, and withdrawn so that the poked reconcile ran at once instead: a"
            " rate that grows says the ticks alone keep the executor busy.",
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "tidepool_operator_events_dropped_total",
            "Decision Events not posted because the operator's Event budget was spent (the"
            " decision itself is in the object's status and in decisions_total), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "tidepool_operator_decisions_total",
            "Scaling and placement decisions that changed something, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.prometheus_queries = Counter(
            "tidepool_operator_prometheus_queries_total",
            "PromQL queries sent to Prometheus, by query and result (ok, error): each is sent"
            " once per tick for every InferenceDeployment, so the rate does not grow with them.",
            ["query", "result"],
            registry=self.registry,
        )
        self.cold_start_seconds = Histogram(
            "tidepool_cold_start_seconds",
            "Scales from zero, by phase (held, scheduled, imagePulled, started, ready, routed;"
            " '+' joins phases whose mark between was not reported) and their total: observed"
            " once per cold start, when status.coldStart completes.",
            ["phase"],
            registry=self.registry,
            buckets=COLD_START_BUCKETS,
        )

        self.replica_start_seconds = Histogram(
            "tidepool_replica_start_seconds",
            "Every new engine replica, scale-outs included, from its pod's creation to Ready, by"
            " phase (scheduled, imagePulled, started, ready; '+' joins phases whose mark between"
            " was not reported) and their total: observed once per pod, when it becomes Ready.",
            ["phase"],
            registry=self.registry,
            buckets=COLD_START_BUCKETS,
        )

    def observe_cold_start(self, cold: ColdStartStatus) -> None:
        """Each phase of a completed cold start, and its total (phase ``total``)."""
        phases = [(phase.name, phase.seconds) for phase in cold.phases]
        _observe_phases(self.cold_start_seconds, phases, cold.total_seconds)

    def observe_replica_start(self, start: Breakdown) -> None:
        """Each phase of a new replica's start, and its total (phase ``total``)."""
        _observe_phases(self.replica_start_seconds, start.phases, start.total_seconds)


def _observe_phases(
    histogram: Histogram, phases: Iterable[tuple[str, float]], total: float | None
) -> None:
    for name, seconds in phases:
        histogram.labels(phase=name).observe(seconds)
    if total is not None:
        histogram.labels(phase=TOTAL_PHASE).observe(total)


@dataclass(frozen=True)
class Peering:
    """How this replica takes part in Kopf's peering (see :mod:`tidepool.handlers.main`)."""

    identity: str
    """This replica's key in the peering objects (Kopf's ``identity``)."""
    stores: list[PeeringStore]
    """The ClusterKopfPeering, or one KopfPeering per watched namespace."""
    lifetime: int
    """Seconds a record stays alive without a keep-alive: the bound on failover after a crash."""
    priority: int | None
    """A fixed priority, or None to rank below the replicas already running."""
    settle_seconds: float = 1.0
    """How long to wait after announcing, so a replica started at the same moment is seen."""


class EventBudget:
    """One token bucket for every Event the operator posts (:mod:`tidepool.handlers.posting`
    says why); safe from any thread. The same bucket as the gateway's per-tenant limits.

    E.g. 300 a minute: 300 Events at once pass, the 301st waits 0.2 s for its token.
    """

    def __init__(
        self, per_minute: int = EVENTS_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._bucket = TokenBucket()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Whether one more Event may be posted now (it then counts against the budget)."""
        with self._lock:
            return self._bucket.take(self._per_minute, self._clock()) is None


@dataclass
class Deps:
    kube: Kube
    metrics: PrometheusMetrics
    started_at: datetime
    tick_seconds: float
    max_concurrent_migrations: int
    telemetry: Telemetry
    migrating: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_reconciled: datetime | None = None
    """When some InferenceDeployment last reconciled without an error (for the probes)."""
    last_error: str | None = None
    """The last reconcile error, cleared by the next clean reconcile (for the probes)."""
    peering: Peering | None = None
    """None: standalone, the only operator."""
    consistency_timeout: float = 5.0
    """How long a daemon trusts its own status write over Kopf's live view: Kopf's own
    ``settings.persistence.consistency_timeout``, copied at startup."""
    executor: Executor | None = None
    """Kopf's executor (``settings.execution.executor``, set at startup), where the daemons run
    their reconciles; None: the event loop's default."""
    urgent_executor: Executor = field(
        default_factory=lambda: ThreadPoolExecutor(URGENT_THREADS, thread_name_prefix="urgent")
    )
    """Where poked reconciles run, ahead of the ticks queued on ``executor``."""
    event_budget: EventBudget = field(default_factory=EventBudget)
    """Shared by every object's decision Events."""

    def may_start_migration(self, key: str) -> bool:
        with self.lock:
            return len(self.migrating - {key}) < self.max_concurrent_migrations

    def note_migration(self, key: str, active: bool) -> None:
        with self.lock:
            (self.migrating.add if active else self.migrating.discard)(key)
            self.telemetry.migrations.set(len(self.migrating))
