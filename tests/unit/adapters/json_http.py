"""The answer every fake JSON API server in these tests sends (Kubernetes', Prometheus')."""

import json
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, code: int, body: Mapping[str, Any]) -> None:
    """Answer ``body`` as JSON with its length, so an HTTP/1.1 client keeps the connection."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
