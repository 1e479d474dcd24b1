"""``tidepool gateway``: the OpenAI-compatible front door for every model (program module).

Role: parse flags, build the discovery source (a Kubernetes watch, or ``--static-routes`` for
runs without a cluster), the wake port, and the aiohttp app from :mod:`tidepool.gateway.proxy`;
serve the API on ``--port`` and ``/metrics`` on ``--metrics-port`` (its labels name every
tenant, so it stays off the port clients reach) until SIGTERM or SIGINT, then drain: the
listener closes at once, ``/readyz`` turns 503, and in-flight and held requests get up to
``--drain-timeout`` to finish. ``--api-keys`` is reread as it changes (a mounted Secret), and
``--replica-service`` names the gateway's own Service, whose ready endpoints each replica
divides every tenant's rate limit by (:mod:`tidepool.gateway.auth`).

The one module of the gateway that wires in the Kubernetes adapters (the watch, the wake
Event, the client); the rest of the gateway may not import them or ``kubernetes``
(import-linter), so it runs and is tested without a cluster.

Must not: contain request logic (that is :mod:`tidepool.gateway.proxy`) or import ``kopf``.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Final

from aiohttp import web

from tidepool.adapters import discovery, http_server, kube, wake
from tidepool.api import sizes
from tidepool.api.durations import seconds_flag
from tidepool.gateway import auth, proxy, snapshot, static
from tidepool.gateway import wake as wakes

log = logging.getLogger(__name__)

#: The operator runs SharedEngine fleets in its own namespace, which the chart passes to both
#: programs as POD_NAMESPACE (``tidepool.handlers.shared_engine``); "default" without it, as there.
POD_NAMESPACE_ENV: Final = "POD_NAMESPACE"
DEFAULT_FLEET_NAMESPACE: Final = "default"


def _bytes(text: str) -> int:
    try:
        return sizes.parse(text)
    except sizes.InvalidSizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="the OpenAI-compatible API")
    parser.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics (keep it private)"
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="default: in-cluster, then ~/.kube/config"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", default=None, help="watch only this namespace")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--shared-engine-namespace",
        default=os.environ.get(POD_NAMESPACE_ENV) or DEFAULT_FLEET_NAMESPACE,
        help="where the operator runs SharedEngine fleets, watched beside --namespace"
        " (default: $POD_NAMESPACE, else default)",
    )
    parser.add_argument(
        "--endpoints-from",
        choices=[str(s) for s in discovery.EndpointSource],
        default=str(discovery.EndpointSource.ENDPOINT_SLICES),
        help="where engine replicas are learnt: the engine Services' EndpointSlices, or pods"
        " (for pod IPs a slice may not hold, e.g. loopback ones; needs list/watch on pods)",
    )
    parser.add_argument("--queue-size", type=int, default=100, help="held requests per model")
    parser.add_argument("--queue-timeout", type=seconds_flag, default=120.0, help="e.g. 120s, 5m")
    parser.add_argument("--drain-timeout", type=seconds_flag, default=900.0, help="on SIGTERM")
    parser.add_argument(
        "--max-body-size", type=_bytes, default="8Mi", help="larger request bodies get 413"
    )
    parser.add_argument(
        "--max-prompt-chars", type=int, default=0, help="longer prompts get 413 (0: no limit)"
    )
    parser.add_argument(
        "--header-timeout", type=seconds_flag, default=30.0,
        help="to send a request head, and idle keep-alive",
    )  # fmt: skip
    parser.add_argument(
        "--body-timeout", type=seconds_flag, default=60.0, help="to send a request body (then 408)"
    )
    parser.add_argument(
        "--api-keys", default=None,
        help="YAML: keys (or sha256:<hex> of them) -> {tenant, requestsPerMinute}; reread as"
        " it changes",
    )  # fmt: skip
    parser.add_argument(
        "--replicas", type=int, default=1,
        help="gateway replicas sharing each tenant's rate limit, until --replica-service"
        " counts them",
    )  # fmt: skip
    parser.add_argument(
        "--replica-service", default=None,
        help="this gateway's own Service (in $POD_NAMESPACE): its ready endpoints are the"
        " replica count",
    )  # fmt: skip
    parser.add_argument(
        "--static-routes", default=None, help="YAML routes instead of watching Kubernetes (dev)"
    )
    parser.add_argument("--log-level", default="INFO")


def build(args: argparse.Namespace) -> web.Application:
    """The app for ``args``; raises ValueError (naming the flag) on bad configuration."""
    if args.queue_size < 0:
        raise ValueError(f"--queue-size must be >= 0, got {args.queue_size}")
    if args.port == args.metrics_port and args.port != 0:
        raise ValueError(f"--metrics-port must differ from --port, both are {args.port}")
    if args.max_body_size < 1:
        raise ValueError(f"--max-body-size must be at least 1 byte, got {args.max_body_size}")
    if args.max_prompt_chars < 0:
        raise ValueError(f"--max-prompt-chars must be >= 0, got {args.max_prompt_chars}")
    if args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    if args.static_routes and args.replica_service:
        raise ValueError(
            "--replica-service needs the Kubernetes API, which --static-routes runs without;"
            " give --replicas instead"
        )
    key_file = auth.KeyFile(args.api_keys) if args.api_keys else None
    config = proxy.GatewayConfig(
        queue_size=args.queue_size,
        queue_timeout=args.queue_timeout,
        replicas=args.replicas,
        drain_timeout=args.drain_timeout,
        max_body=args.max_body_size,
        max_prompt_chars=args.max_prompt_chars or None,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    source: proxy.DiscoverySource
    waker: wakes.Waker | None
    replicas: proxy.ReplicaSource | None = None
    if args.static_routes:
        source, waker = static.StaticDiscovery.from_file(args.static_routes), None
    else:
        api = kube.load_client(args.kubeconfig)
        namespace = None if args.all_namespaces else args.namespace
        source = discovery.KubeDiscovery(
            api,
            snapshot.build_snapshot,
            namespace,
            args.shared_engine_namespace,
            discovery.EndpointSource(args.endpoints_from),
        )
        waker = wake.KubeWaker(api)
        if args.replica_service:
            own_namespace = os.environ.get(POD_NAMESPACE_ENV) or DEFAULT_FLEET_NAMESPACE
            replicas = discovery.GatewayReplicas(api, own_namespace, args.replica_service)
    return proxy.create_app(config, source, waker, key_file=key_file, replica_source=replicas)


async def serve(app: web.Application, host: str, port: int, metrics_port: int) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (see the module docstring)."""
    listeners = await proxy.start(app, host, port, metrics_port)
    log.info(
        "listening on %s:%d (metrics on port %d)", host, listeners.port, listeners.metrics_port
    )
    await http_server.serve_until_signalled(listeners, "gateway")


def run(args: argparse.Namespace) -> int:
    return http_server.run_program(
        "gateway",
        args.log_level,
        lambda: build(args),
        lambda app: serve(app, args.host, args.port, args.metrics_port),
    )
