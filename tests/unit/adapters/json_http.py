"""The answer every fake JSON API server in these tests sends (Kubernetes', Prometheus')."""

import json
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client


def send_json(handler: BaseHTTPRequestHandler, code: int, body: Mapping[str, Any]) -> None:
    """Answer ``body`` as JSON with its length, so an HTTP/1.1 client keeps the connection."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def kube_api(
    handler: type[BaseHTTPRequestHandler], discovery_cache: Path
) -> Iterator[client.ApiClient]:
    """A kubernetes ``ApiClient`` whose API server is ``handler``, served on 127.0.0.1 while
    the block runs, so the client's own requests and (de)serialisation are what is tested.

    The dynamic client caches discovery in the temp directory, keyed by the server's URL: it
    goes to ``discovery_cache`` meanwhile, so no test sees another's.
    """
    saved, tempfile.tempdir = tempfile.tempdir, str(discovery_cache)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = client.ApiClient(cfg)
    try:
        yield api
    finally:
        api.close()
        server.shutdown()
        server.server_close()
        tempfile.tempdir = saved
