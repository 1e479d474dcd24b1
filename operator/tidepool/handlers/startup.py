"""Kopf settings, health endpoints and the operator's own /metrics.

Settings are explicit, each with its reason:

- progress and diff-base annotations use the ``kopf.tidepool.dev`` prefix, so status stays
  schema-strict and nothing under ``kopf.zalando.org`` appears on user objects;
- the watch has a server-side timeout so a silently dead connection (API server restart behind
  a load balancer) is replaced within a minute, and reconnects back off briefly;
- the executor is sized for many objects: each InferenceDeployment's daemon is a thread.
"""

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf
from prometheus_client import start_http_server

from tidepool.api.labels import PREFIX
from tidepool.handlers.deps import MEMO_KEY, Deps

KOPF_PREFIX = f"kopf.{PREFIX}"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    settings.execution.max_workers = 400
    settings.networking.request_timeout = 30
    deps.kube.list_pools()  # fail fast (and visibly) if the CRDs or RBAC are missing
    deps.ready = True


def serve_health(deps: Deps, host: str, port: int) -> ThreadingHTTPServer:
    """``/healthz`` (process alive) and ``/readyz`` (started and talked to the API server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                code, text = 200, "ok"
            elif self.path == "/readyz":
                code, text = (200, "ready") if deps.ready else (503, "starting")
            else:
                code, text = 404, "not found"
            payload = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def serve_metrics(deps: Deps, host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=deps.telemetry.registry)
