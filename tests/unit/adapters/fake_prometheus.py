"""A real HTTP server on 127.0.0.1 speaking Prometheus' ``/api/v1/query``, answered by the test.

The adapter under test talks to it through its real client (prometheus-api-client over a
``requests`` session), so connection handling, status codes and JSON decoding are exercised as
in production; only the PromQL evaluation is the test's: ``answer`` maps a query's text to the
vector Prometheus would return, or to an HTTP status to fail with.
"""

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from json_http import send_json
from prometheus_client import CollectorRegistry, Counter

from fakes import ManualClock
from tidepool.adapters.prometheus import PrometheusMetrics
from tidepool.adapters.prometheus_batch import Query

#: A vector (``data.result`` of an instant query), or an HTTP status code to answer with.
Answer = list[dict[str, Any]] | int
TICK_SECONDS = 5.0  # the operator's default --tick
AT = 1_735_689_600.0  # 2025-01-01T00:00:00Z, the evaluation time every sample carries


def series(value: float | str, **labels: str) -> dict[str, Any]:
    """One sample of an instant vector, as Prometheus encodes it (the value is a string)."""
    return {"metric": labels, "value": [AT, str(value)]}


def by_query(answers: Mapping[Query, Answer]) -> Callable[[str], Answer]:
    """Answer each query by its exact text; any other query finds no series."""
    texts = {query.promql: answer for query, answer in answers.items()}
    return lambda promql: texts.get(promql, [])


class FakePrometheus:
    """The server; ``queries`` lists every query received, ``connections`` every TCP
    connection accepted (one handler per connection: HTTP/1.1 keep-alive)."""

    def __init__(self) -> None:
        self.answer: Callable[[str], Answer] = lambda _: []
        self.delay_seconds = 0.0
        self.queries: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Each write leaves at once: with Nagle's algorithm the body waits behind the
            # headers for the client's delayed ACK (40 ms a request).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake.connections += 1

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/api/v1/query":
                    send_json(self, 404, {"status": "error", "error": f"no route {url.path}"})
                    return
                promql = parse_qs(url.query)["query"][0]
                with fake._lock:
                    fake.queries.append(promql)
                time.sleep(fake.delay_seconds)
                answer = fake.answer(promql)
                if isinstance(answer, int):
                    send_json(self, answer, {"status": "error", "error": "unavailable"})
                else:
                    data = {"resultType": "vector", "result": answer}
                    send_json(self, 200, {"status": "success", "data": data})

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def count(self, query: Query) -> int:
        """How many times ``query`` was received."""
        with self._lock:
            return self.queries.count(query.promql)

    @contextmanager
    def serving(self) -> Iterator["FakePrometheus"]:
        # A short poll so that shutdown() at teardown returns at once, not after 0.5 s.
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def metrics_on(
    url: str, clock: ManualClock, *, freshness_seconds: float = TICK_SECONDS
) -> Iterator[tuple[PrometheusMetrics, Counter]]:
    """The adapter against ``url``, its ticks timed by ``clock``, with its own query counter;
    its session closed after."""
    queries = Counter("q", "queries", ["query", "result"], registry=CollectorRegistry())
    metrics = PrometheusMetrics(
        url,
        freshness_seconds=freshness_seconds,
        queries=queries,
        clock=lambda: clock().timestamp(),
    )
    try:
        yield metrics, queries
    finally:
        metrics.close()


def counted(queries: Counter, query: str, result: str = "ok") -> float:
    """The counter's value for one query name and result (0 when never counted)."""
    wanted = {"query": query, "result": result}
    return sum(
        s.value
        for metric in queries.collect()
        for s in metric.samples
        if s.name.endswith("_total") and s.labels == wanted
    )
