"""``tidepool run``: start the operator.

One active operator at a time: the chart runs a single replica with the ``Recreate`` strategy,
so Kopf runs ``standalone`` (no peering objects to clean up after a crash). ``--peering`` is
there for clusters that prefer Kopf's peering.
"""

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import kopf

from tidepool.adapters.kube import Kube, load_client
from tidepool.adapters.prometheus import PrometheusMetrics, utc_now
from tidepool.adapters.wake import WakeForwarder
from tidepool.handlers import startup
from tidepool.handlers.deps import EXECUTOR_THREADS, MEMO_KEY, Deps, Telemetry


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
    parser.add_argument("--peering", default=None, help="Kopf peering name (default: standalone)")
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from tidepool.handlers import (  # noqa: F401 - registers the handlers
        gpupool,
        inference,
        shared_engine,
        wake,
    )

    configure_logging(verbose=args.verbose)
    # One client for every daemon thread, its urllib3 pool as large as the executor: each
    # thread holds at most one connection at a time, so none is discarded ("Connection pool is
    # full") and reopened when many objects reconcile at once.
    api = load_client(args.kubeconfig, pool_maxsize=EXECUTOR_THREADS)
    # Kopf logs in with the same credentials: its default login reads the kubeconfig location
    # the kubernetes package fixed when it was imported, so --kubeconfig would not reach it.
    kopf.on.login()(kopf_login(api.configuration))
    deps = Deps(
        kube=Kube(api),
        metrics=PrometheusMetrics(args.prometheus_url),
        started_at=utc_now(),
        tick_seconds=args.tick,
        max_concurrent_migrations=args.max_concurrent_migrations,
        telemetry=Telemetry(),
    )
    if args.metrics_port:
        startup.serve_metrics(deps, args.health_host, args.metrics_port)
    namespaces = args.namespace or []
    asyncio.run(
        kopf.operator(
            standalone=args.peering is None,
            peering_name=args.peering,
            namespaces=namespaces,
            clusterwide=not namespaces,
            memo=kopf.Memo(**{MEMO_KEY: deps, wake.MEMO_KEY: WakeForwarder(api)}),
            liveness_endpoint=liveness_endpoint(args.health_host, args.health_port),
        )
    )
    return 0


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
