"""``load_client(pool_maxsize=...)``: as many kept connections as threads calling at once.

urllib3 keeps at most ``maxsize`` connections per host and discards every other one that is
returned, warning "Connection pool is full, discarding connection" (urllib3's docs on
``PoolManager(maxsize=...)``): what a 50-object storm printed 120 times when the operator's
executor threads shared a client sized for the CPU count. Here the client comes from a real
kubeconfig, its threads call a loopback API server at once, and urllib3's own log is read.
"""

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from json_http import send_json
from kubernetes import client

from tidepool.adapters.kube import load_client

THREADS = 12


class AllAtOnce(BaseHTTPRequestHandler):
    """``GET /api/v1/namespaces``, answered once ``THREADS`` requests are open together, so that
    every thread holds its own connection when they are returned to the pool."""

    protocol_version = "HTTP/1.1"
    together = threading.Barrier(THREADS, timeout=10)

    def do_GET(self) -> None:
        self.together.wait()
        send_json(self, 200, {"kind": "NamespaceList", "apiVersion": "v1", "items": []})

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0),
        type("AllAtOnceHere", (AllAtOnce,), {"together": threading.Barrier(THREADS, timeout=10)}),
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path / "kubeconfig"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    yield path
    server.shutdown()
    server.server_close()


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def discarded(api: client.ApiClient) -> int:
    """Connections urllib3 threw away while ``THREADS`` threads listed namespaces at once, read
    from urllib3's own logger (whatever another test made of the root logger)."""
    core = client.CoreV1Api(api)
    log, recorder = logging.getLogger("urllib3.connectionpool"), Recorder()
    level, disabled = log.level, log.disabled
    log.addHandler(recorder)
    log.setLevel(logging.WARNING)
    log.disabled = False
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda _: core.list_namespace(), range(THREADS)))
    finally:
        log.removeHandler(recorder)
        log.setLevel(level)
        log.disabled = disabled
    return sum("Connection pool is full" in m for m in recorder.messages)


@pytest.mark.parametrize(
    ("pool_maxsize", "too_few"),
    [
        pytest.param(THREADS, False, id="as-many-as-threads-discards-none"),
        pytest.param(2, True, id="fewer-than-threads-discards-the-rest"),
    ],
)
def test_pool_maxsize(kubeconfig: Path, pool_maxsize: int, too_few: bool) -> None:
    api = load_client(str(kubeconfig), pool_maxsize=pool_maxsize)
    try:
        assert api.configuration.connection_pool_maxsize == pool_maxsize
        lost = discarded(api)
    finally:
        api.close()
    assert lost == (THREADS - pool_maxsize if too_few else 0)
