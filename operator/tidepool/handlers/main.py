"""``tidepool run``: start the operator.

High availability is Kopf's peering (Kopf's docs, "Peering"): with ``--peering NAME`` every
replica keeps a record in the ``ClusterKopfPeering`` (or, with ``--namespace``, a ``KopfPeering``
in each namespace) called NAME, and Kopf pauses every replica but the one with the highest
priority: its watches stop, its daemons and timers are stopped, its event handlers (the wake
forwarder included) receive nothing. A standby therefore neither reconciles nor writes, and
takes over when the active replica's record expires (``--peering-lifetime`` after its last
keep-alive, a crash) or is removed (a clean exit). Everything a reconcile needs to resume, the
plan's timers included, lives in the objects' status, so the standby starts from there.

Why Kopf's peering rather than a coordination.k8s.io Lease: it pauses exactly the machinery that
must not run twice (every handler, daemon and timer Kopf runs), with no second mechanism to keep
in step with Kopf's own lifecycle. Its two gaps are closed in
:func:`tidepool.handlers.startup.join_peering`: equal priorities would pause every replica (the
replicas of one Deployment share their arguments), so each ranks itself below the live ones;
and Kopf's first read of the peering object could race a peer started at the same moment, so
the record is written before Kopf starts. What peering does not give, and a Lease would not
either without fencing tokens in every write: a replica cut off from the API server for longer
than the lifetime keeps running and would write again once it reconnects.

Without ``--peering`` the operator runs ``standalone``: the only one (``tidepool run`` on a
laptop, the tests).

Each replica's Kubernetes client sends a User-Agent naming its identity, so the API server's
``managedFields`` record which replica wrote each status (the default field manager of a patch
is the User-Agent up to its first ``/``).
"""

import argparse
import asyncio
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import Any, cast

import kopf

from tidepool.adapters.kube import Kube, load_client
from tidepool.adapters.peering import PeeringStore
from tidepool.adapters.prometheus import PrometheusMetrics, utc_now
from tidepool.adapters.wake import WakeForwarder
from tidepool.handlers import startup
from tidepool.handlers.deps import (
    EXECUTOR_THREADS,
    MEMO_KEY,
    URGENT_THREADS,
    Deps,
    Peering,
    Telemetry,
)

#: Default seconds a crashed replica's peering record outlives it (Kopf's default is 60).
PEERING_LIFETIME = 10


def configure(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig (default: in-cluster or $KUBECONFIG)"
    )
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get("TIDEPOOL_PROMETHEUS_URL", "http://127.0.0.1:9090"),
        help="Prometheus that scrapes the gateway and the engines",
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=5.0,
        help="seconds between autoscaling decisions per InferenceDeployment",
    )
    parser.add_argument(
        "--max-concurrent-migrations",
        type=int,
        default=2,
        help="operator-wide budget of pool migrations running at once",
    )
    parser.add_argument("--health-host", default="0.0.0.0")
    parser.add_argument(
        "--health-port", type=int, default=8080, help="Kopf's /healthz (probe results); 0 disables"
    )
    parser.add_argument("--metrics-port", type=int, default=9090, help="/metrics; 0 disables")
    parser.add_argument(
        "--peering",
        default=os.environ.get("TIDEPOOL_PEERING") or None,
        help="Kopf peering name: run as one of several replicas, one active (default:"
        " standalone, the only operator)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="fixed Kopf peering priority, highest runs (default: below the replicas running)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=positive_int,
        default=PEERING_LIFETIME,
        help="seconds a crashed replica's peering record stays alive: the failover bound",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from tidepool.handlers import (  # noqa: F401 - registers the handlers
        gpupool,
        inference,
        replica_start,
        shared_engine,
        wake,
        watched,
    )

    configure_logging(verbose=args.verbose)
    # One client for every reconcile, its urllib3 pool as large as both lanes' threads: each of its
    # threads holds at most one connection at a time, so none is discarded ("Connection pool is
    # full") and reopened when many objects reconcile at once.
    api = load_client(args.kubeconfig, pool_maxsize=EXECUTOR_THREADS + URGENT_THREADS)
    identity = replica_identity()
    api.user_agent = user_agent(identity)
    namespaces = args.namespace or []
    # Kopf logs in with the same credentials: its default login reads the kubeconfig location
    # the kubernetes package fixed when it was imported, so --kubeconfig would not reach it.
    kopf.on.login()(kopf_login(api.configuration))
    telemetry = Telemetry()
    deps = Deps(
        kube=Kube(api),
        # One answer per query per tick, shared by every daemon (adapters.prometheus_batch).
        metrics=PrometheusMetrics(
            args.prometheus_url,
            freshness_seconds=args.tick,
            queries=telemetry.prometheus_queries,
        ),
        started_at=utc_now(),
        tick_seconds=args.tick,
        max_concurrent_migrations=args.max_concurrent_migrations,
        telemetry=telemetry,
        peering=None
        if args.peering is None
        else Peering(
            # Kopf's Identity is a NewType of str, not exported; the same key as ours.
            identity=cast(Any, identity),
            stores=[PeeringStore(api, args.peering, ns) for ns in namespaces or [None]],
            lifetime=args.peering_lifetime,
            priority=args.priority,
        ),
    )
    if args.metrics_port:
        startup.serve_metrics(deps, args.health_host, args.metrics_port)
    asyncio.run(
        kopf.operator(
            standalone=args.peering is None,
            peering_name=args.peering,
            # Kopf's Identity is a NewType of str, not exported; the same key as ours.
            identity=cast(Any, identity),
            namespaces=namespaces,
            clusterwide=not namespaces,
            memo=kopf.Memo(**{MEMO_KEY: deps, wake.FORWARDER_KEY: WakeForwarder(api)}),
            liveness_endpoint=liveness_endpoint(args.health_host, args.health_port),
        )
    )
    return 0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def replica_identity() -> str:
    """This replica's name among its peers: Kopf's ``POD_ID`` convention if set, else the
    chart's ``POD_NAME`` (downward API), else the machine's hostname and the process id, e.g.
    ``laptop-4211``.

    Letters, digits, ``.``, ``_`` and ``-`` only: it is a key in the peering object's status
    and goes in the User-Agent before the ``/``.
    """
    raw = (
        os.environ.get("POD_ID")
        or os.environ.get("POD_NAME")
        or f"{socket.gethostname()}-{os.getpid()}"
    )
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)[:100]


def user_agent(identity: str) -> str:
    """``tidepool-operator@<identity>/python``: the API server names a patch's default field
    manager after the User-Agent up to its first ``/``, so ``managedFields`` tell which
    replica wrote what."""
    return f"tidepool-operator@{identity}/python"


def kopf_login(cfg: Any) -> Callable[..., kopf.ConnectionInfo]:
    """A Kopf login handler that connects as the kubernetes client ``cfg`` does.

    Mirrors Kopf's own ``login_via_client``, but from an explicit client configuration (an
    explicit kubeconfig, the in-cluster service account, or the default kubeconfig, as
    :func:`tidepool.adapters.kube.load_client` chose). The token is read on each login, so a
    refreshed service-account token is picked up when Kopf logs in again after a 401.
    """

    def login(**_: Any) -> kopf.ConnectionInfo:
        header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
            "authorization"
        )
        scheme, _space, token = str(header or "").rpartition(" ")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            username=cfg.username or None,
            password=cfg.password or None,
            scheme=scheme or None,
            token=token or None,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )

    return login


def liveness_endpoint(host: str, port: int) -> str | None:
    """Where Kopf serves its probe results, or None (no endpoint) for port 0."""
    if not port:
        return None
    bracketed = f"[{host}]" if ":" in host else host
    return f"http://{bracketed}:{port}/healthz"


def configure_logging(*, verbose: bool) -> None:
    """Kopf's own log setup, with its object prefix.

    Kopf's formatter starts each line logged through a handler's ``logger`` with
    ``[namespace/name]`` (Kopf's docs on logging); ``logging.basicConfig`` would install a
    plain formatter and drop it.
    """
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)
    for noisy in ("kubernetes", "urllib3", "urllib3.connectionpool", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
