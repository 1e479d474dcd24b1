"""Each PromQL query once per tick for every tenant, answered from one shared vector.

One InferenceDeployment's sync used to send its own queries (about 15 in auto mode), so the
query rate grew with the number of tenants. Here every query groups by the labels that name a
tenant (``sum by (namespace, inference_deployment)``, ``sum by (namespace, model)``, ...), is sent
once per *tick*, and each tenant's read is a lookup in the indexed answer. The daemons of many
tenants that ask in the same tick share one request: the first starts it, the others wait for
that same answer (single flight), so N tenants cause a constant number of queries per tick.

**Why the tick is the operator's own ``--tick``.** Each daemon reconciles at least once per tick,
so a freshness window of one tick is the longest that never hands a daemon a value older than
its own period plus Prometheus' scrape lag; any shorter and the query rate grows back towards one
per daemon wake-up. Prometheus' values change only once per scrape (15 s by default), so a value
up to one tick old tells the autoscaler nothing a fresher one would. Wakes from zero do not wait
for it: they arrive as the gateway's Event (:mod:`tidepool.adapters.wake`), not as a metric.

A failed request is the answer of its tick for every tenant (the next tick retries): in an outage
the operator sends one doomed request per query per tick instead of one per tenant, each waiting
out the timeout.
"""

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_client import Counter
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TIMEOUT_SECONDS: Final = 3.0
#: Connections kept open to Prometheus. A single flight per query bounds the requests in flight
#: by the number of distinct queries (a few dozen), not by the executor's threads; beyond the
#: pool urllib3 would open and then discard a connection per request.
POOL_CONNECTIONS: Final = 32


class UnknownError(Exception):
    """Nothing is known; ``reason`` says why (it becomes the ``NoData``'s reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL query for every tenant at once.

    ``by``: the labels ``promql`` groups by, in the order a read names them; ``name``: the
    ``query`` label of the operator's query counter (distinct windows of one kind share it).
    """

    name: str
    promql: str
    by: tuple[str, ...]


#: A vector indexed by its ``by`` labels. A list, so that two series under one key (a query
#: that does not group by what it claims) are refused instead of one silently winning.
_Index = dict[tuple[str, ...], list[float]]


@dataclass(frozen=True, slots=True)
class _Flight:
    started: float
    answer: "Future[_Index | UnknownError]"


def connect(url: str) -> PrometheusConnect:
    """A client over one ``requests`` session with a connection pool sized for the operator.

    ``PrometheusConnect`` keeps the session it is given for every request; its own adapter
    (mounted on ``url``, urllib3's default 10 connections) is replaced by one of
    ``POOL_CONNECTIONS``. No client-side retries: the next tick is the retry, and a backoff here
    would stall the decision loop for seconds exactly when Prometheus is down.
    """
    session = requests.Session()
    session.verify = False  # disable_ssl, as before: an in-cluster plain-HTTP Prometheus
    prom = PrometheusConnect(url=url, session=session, timeout=int(TIMEOUT_SECONDS))
    session.mount(url, HTTPAdapter(max_retries=Retry(total=0), pool_maxsize=POOL_CONNECTIONS))
    return prom


class BatchedReader:
    """Answers ``value(query, labels)`` from at most one request per query per tick."""

    def __init__(
        self,
        prom: PrometheusConnect,
        *,
        freshness_seconds: float,
        queries: Counter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not freshness_seconds >= 0:
            raise ValueError(
                f"freshness_seconds must be >= 0 (0: share only requests in flight),"
                f" got {freshness_seconds}"
            )
        self._prom = prom
        self._freshness = freshness_seconds
        self._queries = queries
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def value(self, query: Query, labels: tuple[str, ...]) -> float | None:
        """The value of the series whose ``query.by`` labels are ``labels``; None when the vector
        has no such series; :class:`UnknownError` when the request failed or the value is NaN."""
        if len(labels) != len(query.by):
            raise ValueError(f"{query.name} groups by {query.by}, got labels {labels}")
        answer = self._answer(query)
        if isinstance(answer, UnknownError):
            raise UnknownError(answer.reason)
        found = answer.get(labels)
        if not found:
            return None
        if len(found) > 1:
            raise UnknownError(f"{len(found)} series where one was expected")
        if not math.isfinite(found[0]):
            raise UnknownError("NaN")
        return found[0]

    def _answer(self, query: Query) -> "_Index | UnknownError":
        now = self._clock()
        with self._lock:
            flight = self._flights.get(query.promql)
            shared = flight is not None and (
                not flight.answer.done() or now - flight.started < self._freshness
            )
            if flight is None or not shared:
                self._forget_stale(now)
                flight = _Flight(started=now, answer=Future())
                self._flights[query.promql] = flight
        if not shared:
            try:
                flight.answer.set_result(self._fetch(query))
            except BaseException as exc:  # a bug, not an outage: no waiter may hang on it
                flight.answer.set_exception(exc)
                raise
        return flight.answer.result()

    def _forget_stale(self, now: float) -> None:
        """Drop answers past their tick (say, of a window no tenant uses any more)."""
        for promql, flight in list(self._flights.items()):
            if flight.answer.done() and now - flight.started >= self._freshness:
                del self._flights[promql]

    def _fetch(self, query: Query) -> "_Index | UnknownError":
        try:
            vector = self._prom.custom_query(query=query.promql)
        except (PrometheusApiClientException, requests.RequestException, ValueError) as exc:
            self._count(query, "error")
            return UnknownError(f"prometheus unreachable: {type(exc).__name__}")
        index: _Index = {}
        try:
            for series in vector:
                key = tuple(series["metric"].get(label, "") for label in query.by)
                index.setdefault(key, []).append(float(series["value"][1]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            self._count(query, "error")
            return UnknownError(f"prometheus answered no vector: {type(exc).__name__}")
        self._count(query, "ok")
        return index

    def _count(self, query: Query, result: str) -> None:
        if self._queries is not None:
            self._queries.labels(query=query.name, result=result).inc()


def sum_by(by: tuple[str, ...], selector: str) -> str:
    """``sum by (a, b) (selector)``: one series per tenant."""
    return f"sum by ({', '.join(by)}) ({selector})"
