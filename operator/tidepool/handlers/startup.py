"""Kopf settings, Kopf's probe handlers and the operator's own /metrics.

Settings are explicit, each with its reason:

- progress and diff-base annotations use the ``kopf.tidepool.dev`` prefix, so status stays
  schema-strict and nothing under ``kopf.zalando.org`` appears on user objects;
- the watch has a server-side timeout so a silently dead connection (API server restart behind
  a load balancer) is replaced within a minute, and reconnects back off briefly;
- the executor is sized for many objects: each InferenceDeployment's daemon is a thread;
- a handler that fails with an unexpected error is retried after ``ERROR_BACKOFF_SECONDS``,
  not Kopf's default minute: the daemon is what keeps serving and scaling that model;
- with peering on, the replica's priority and keep-alive lifetime (:func:`join_peering`).

Health is Kopf's own: ``kopf.operator(liveness_endpoint=...)`` serves ``/healthz`` once the
startup handlers have finished, answering with what the ``@kopf.on.probe`` handlers below
return (Kopf's docs on health checks).
"""

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Final

import kopf
from prometheus_client import start_http_server

from tidepool.adapters.peering import Peer, parse_peers, standby_priority
from tidepool.adapters.prometheus import utc_now
from tidepool.api.labels import PREFIX
from tidepool.handlers.deps import EXECUTOR_THREADS, MEMO_KEY, Deps, Peering
from tidepool.handlers.watched import narrow_watches

KOPF_PREFIX = f"kopf.{PREFIX}"
ERROR_BACKOFF_SECONDS: Final = 10.0


@kopf.on.startup()
def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    deps: Deps = memo[MEMO_KEY]
    # Kopf drops annotations under its storage prefix from the object's essence (so its own
    # writes do not retrigger it). Its prefix must therefore differ from the one the gateway's
    # wake annotation uses, or a wake would be invisible to change detection.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.execution.max_workers = EXECUTOR_THREADS
    narrow_watches(settings)
    deps.executor = settings.execution.executor
    settings.execution.default_backoff = ERROR_BACKOFF_SECONDS
    settings.networking.request_timeout = 30
    deps.consistency_timeout = settings.persistence.consistency_timeout
    deps.kube.list_pools()  # fail fast (and visibly) if the CRDs or RBAC are missing
    if deps.peering is not None:
        join_peering(settings, deps.peering, logger, started_at=deps.started_at)


def join_peering(
    settings: kopf.OperatorSettings, peering: Peering, logger: kopf.Logger, *, started_at: datetime
) -> None:
    """Rank this replica among the running ones and announce it before Kopf watches anything.

    Kopf pauses a replica while a live peer has a higher priority (and starts it paused until it
    has read the peering object), so the replica ranked highest is the active one and the
    others are standbys with no daemon, timer or event handler running. The rank comes from
    :func:`~tidepool.adapters.peering.standby_priority`: below every live peer.

    Kopf's keep-alive and its first read of the peering object race each other; two replicas
    started together could both read it before either has written, and both run until the next
    keep-alive. So the record is written here, before Kopf starts, and the startup waits
    ``settle_seconds``: a replica whose write landed after ours then lands before our read, and
    one that read before our write ranks itself by its own earlier start. Either way one pauses.

    A crashed replica's record outlives it by at most ``lifetime`` seconds (Kopf's keep-alive
    comes every ``lifetime - 5..10`` seconds, at least every second), so that is the bound on
    failover; a replica that exits cleanly removes its record at once.
    """
    settings.peering.lifetime = peering.lifetime
    now = utc_now()
    peers = [peer for store in peering.stores for peer in parse_peers(store.ensure().get("status"))]
    priority = peering.priority
    if priority is None:
        priority = standby_priority(
            peers, identity=peering.identity, started_at=started_at, now=now
        )
    settings.peering.priority = priority
    me = Peer(peering.identity, priority, timedelta(seconds=peering.lifetime), now)
    for store in peering.stores:
        store.announce(me)
    live = sorted(
        (p for p in peers if p.identity != peering.identity and p.alive(now)),
        key=lambda p: -p.priority,
    )
    role = "standby behind " + ", ".join(p.identity for p in live) if live else "active"
    logger.info(
        f"peering as {peering.identity!r}, priority {priority}, lifetime {peering.lifetime}s:"
        f" {role}"
    )
    time.sleep(peering.settle_seconds)


# The probe handlers report and never raise. Kopf answers a failed probe with a 500, and the
# chart's liveness probe would then restart an operator that an API outage leaves idle, which
# a restart cannot fix; liveness is for a stuck operator (Kopf's docs on health checks), and a
# stuck event loop stops answering /healthz at all. They are async, so they answer even when
# every executor thread is busy.


def seconds_since(then: datetime | None, now: datetime) -> float | None:
    """Whole seconds from ``then`` to ``now``, or None if there was no ``then``."""
    return None if then is None else round((now - then).total_seconds())


@kopf.on.probe(id="lastReconcileAgeSeconds")
async def last_reconcile_age(memo: kopf.Memo, **_: Any) -> float | None:
    """Seconds since some InferenceDeployment last reconciled cleanly (null before the first)."""
    deps: Deps = memo[MEMO_KEY]
    return seconds_since(deps.last_reconciled, utc_now())


@kopf.on.probe(id="clusterClient")
async def cluster_client(memo: kopf.Memo, **_: Any) -> str:
    """``ok``, or the last reconcile error (cleared by the next clean reconcile).

    Startup already listed the GPUPools through the same client, so ``ok`` before the first
    reconcile means the client reached the API server.
    """
    deps: Deps = memo[MEMO_KEY]
    return deps.last_error or "ok"


def serve_metrics(deps: Deps, host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=deps.telemetry.registry)
