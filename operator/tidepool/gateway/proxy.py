"""The gateway's async shell: HTTP in, checks, hold or lease, stream through, meter, release.

Role: everything that touches aiohttp, futures and the clock, around the pure core
(:mod:`~tidepool.gateway.routing`, :mod:`~tidepool.gateway.picking`,
:mod:`~tidepool.gateway.queue`, :mod:`~tidepool.gateway.dispatch`,
:mod:`~tidepool.gateway.auth`). Per request, in order: 404 from the router for a path that is
not one of the forwarded OpenAI endpoints (:data:`~tidepool.gateway.inbound.FORWARDED_PATHS`,
one route each); 503 while draining or before the first routing snapshot; 401 for a missing
or unknown key; 413 for a body over ``max_body`` or a prompt over ``max_prompt_chars``, 408
for a body that takes longer than ``body_timeout``; 400 for a body that is not JSON or names
no ``model``; 404 for an unknown model and, with the same answer, for another tenant's (a key
holder must not learn which names exist); 429 over this replica's share of the tenant's rate
(the limit over the live replica count, see :mod:`~tidepool.gateway.auth`); then a backend is
leased, or the request is held (bounded queue, deadline) while the operator is woken. The
response is streamed to the client chunk by chunk as it arrives, never buffered. A LoRA
tenant's request goes to its engine under the adapter's name and its answer comes back under
the tenant's served name (:mod:`tidepool.gateway.model`); a stream is then passed on line by
line. Keys, limits, metering and metrics know only the tenant and its served name. Every error,
the router's own included, is OpenAI's error JSON, and every request is counted under the
status its client saw (499 when the client went away).

A client that goes away cancels its handler (``handler_cancellation``, set by :func:`start`):
a held request gives its queue slot back and is never forwarded, and a forwarded one closes
its upstream connection, which is how an engine learns to abort it. ``/metrics`` is served on
its own port by ``prometheus_client``'s server (:func:`start`), because its labels name every
tenant, namespace and model.

Discovery and the replica count call back from their own threads; the callbacks only hop
onto the loop (``call_soon_threadsafe``). The key file is read again every few seconds in a
thread, and an accepted ring replaces the old one in one assignment on the loop. Wake pushes
are blocking Kubernetes calls and run in a small thread pool, never on the loop.

Must not: import ``kubernetes`` or ``kopf``, decide routing itself, or drop a request it has
accepted: held requests outlive routing-table changes and shutdown waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from wsgiref.simple_server import WSGIServer

import aiohttp
from aiohttp import web
from prometheus_client import start_http_server
from yarl import URL

from tidepool.adapters import http_server
from tidepool.adapters.http_server import error_response
from tidepool.gateway import auth, dispatch, inbound, metrics, routing, usage
from tidepool.gateway import wake as wakes
from tidepool.gateway.model import ResponseRewriter, rewrite_request
from tidepool.gateway.snapshot import ModelRoute, RoutingSnapshot
from tidepool.policy import fair_share

log = logging.getLogger(__name__)

#: Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those aiohttp sets.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "date",
        "server",
    }
)
#: Never forwarded upstream: the tenant's key is for the gateway, not for the engine.
_REQUEST_DROP: Final = _HOP_BY_HOP | {"authorization"}
BACKEND_HEADER: Final = "X-Tidepool-Backend"


class DiscoverySource(Protocol):
    """Where routing snapshots come from (KubeDiscovery, StaticDiscovery, a test fake)."""

    def start(self, on_change: Callable[[RoutingSnapshot], None]) -> None: ...
    def stop(self) -> None: ...


class ReplicaSource(Protocol):
    """How many gateway replicas share the traffic (GatewayReplicas, a test fake); calls
    ``on_change`` from its own thread whenever the count changes."""

    def start(self, on_change: Callable[[int], None]) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    queue_size: int = 100
    """Held requests per model before 503."""
    queue_timeout: float = 120.0
    """Seconds a request may be held waiting for a replica before 503."""
    keys: auth.KeyRing | None = None
    """The keys to start with; None: authentication and rate limits are off. With a key file
    (:func:`create_app`'s ``key_file``) each ring accepted from it replaces this one."""
    key_reload_interval: float = 5.0
    """Seconds between looks at the key file. The kubelet takes a minute or so to bring a
    changed Secret into the pod anyway; a look is one small read."""
    replicas: int = 1
    """Gateway replicas that share each tenant's rate limit until a :class:`ReplicaSource`
    reports its count, and whenever that count is 0 (see :mod:`tidepool.gateway.auth`)."""
    connect_attempts: int = 3
    """Backends tried when a connection fails before any response byte."""
    drain_timeout: float = 900.0
    """On shutdown, how long in-flight and held requests may take to finish."""
    wake_interval: float = 1.0
    """At most one wake push per model per this many seconds."""
    max_body: int = 8 * 1024 * 1024
    """Largest request body in bytes; a larger one gets 413, unread when its length is declared.
    8 MiB holds a long-context prompt with room to spare; a 31 MB prompt is no request."""
    max_prompt_chars: int | None = None
    """Largest prompt in characters (:func:`~tidepool.gateway.inbound.prompt_chars`), 413
    above it; None: only the body limit applies."""
    header_timeout: float = 30.0
    """Seconds a connection may take, from opening or from its last response, to send a
    complete request head; then it is closed (a slow-header client holds no socket for long)."""
    body_timeout: float = 60.0
    """Seconds a request may take to send its whole body before it gets 408."""


def _model_not_found(model: str) -> web.Response:
    """The one answer for a model the caller may not use, whether or not it exists."""
    return error_response(
        404, f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error", "model_not_found", "model",
    )  # fmt: skip


def _too_large(what: str, limit: int, unit: str, code: str) -> web.Response:
    return error_response(
        413, f"The {what} is larger than this gateway accepts ({limit} {unit}).",
        "invalid_request_error", code,
    )  # fmt: skip


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method) as OpenAI JSON."""
    if exc.status == 404:
        resp = error_response(
            404, f"Invalid URL ({request.method} {request.path}).", "invalid_request_error",
            "unknown_url",
        )  # fmt: skip
    elif exc.status == 405:
        resp = error_response(
            405, f"Method {request.method} is not allowed for {request.path}.",
            "invalid_request_error", "method_not_allowed",
        )  # fmt: skip
    else:
        type_ = "invalid_request_error" if exc.status < 500 else "api_error"
        resp = error_response(exc.status, exc.reason, type_, None)
    if "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


class _ConnectFailedError(Exception):
    """The backend could not be reached and sent nothing: safe to try another."""


@dataclass(slots=True)
class _Labels:
    model: str = metrics.UNKNOWN
    namespace: str = ""
    tenant: str = ""


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        source: DiscoverySource,
        waker: wakes.Waker | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        key_file: auth.KeyFile | None = None,
        replica_source: ReplicaSource | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.waker = waker
        self.wall_clock = wall_clock
        self.key_file = key_file
        self.keys = key_file.ring if key_file is not None else config.keys
        """The ring in force; replaced whole (one assignment on the loop) by a reload."""
        self.replica_source = replica_source
        self.replicas = config.replicas
        """Replicas sharing each tenant's rate limit (see :mod:`tidepool.gateway.auth`)."""
        self._key_watch: asyncio.Task[None] | None = None
        self.metrics = metrics.GatewayMetrics()
        self.dispatcher = dispatch.Dispatcher(config.queue_size)
        self.limiter = auth.RateLimiter()
        self.wake_limiter = wakes.WakeLimiter(config.wake_interval)
        self.synced = False
        self.in_flight = http_server.InFlight()
        """Requests between arrival and their last byte (held ones included)."""
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at: float | None = None
        self._wake_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tidepool-wake")
        self._awaiting_response: dict[routing.ModelKey, datetime] = {}
        """Model -> the first wake pushed for it since its last response was routed."""

    # ---- lifecycle ---------------------------------------------------------------------
    async def on_startup(self, _app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
            auto_decompress=False,
        )
        loop = self._loop

        def on_change(snapshot: RoutingSnapshot) -> None:
            loop.call_soon_threadsafe(self.apply_snapshot, snapshot)

        def on_replicas(count: int) -> None:
            loop.call_soon_threadsafe(self.set_replicas, count)

        self.source.start(on_change)
        if self.replica_source is not None:
            self.replica_source.start(on_replicas)
        if self.key_file is not None:
            self._key_watch = asyncio.create_task(self._watch_keys(self.key_file))

    async def on_shutdown(self, _app: web.Application) -> None:
        """Stop taking requests; wait (bounded) for in-flight and held ones to finish."""
        if left := await self.in_flight.drain(self.config.drain_timeout):
            log.warning("gateway: drain timeout with %d requests still active", left)

    async def on_cleanup(self, _app: web.Application) -> None:
        self.source.stop()
        if self.replica_source is not None:
            self.replica_source.stop()
        if self._key_watch is not None:
            self._key_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._key_watch
        if self._expiry is not None:
            self._expiry.cancel()
        if self._session is not None:
            await self._session.close()
        self._wake_pool.shutdown(wait=False, cancel_futures=True)

    # ---- routing table -----------------------------------------------------------------
    def apply_snapshot(self, snapshot: RoutingSnapshot) -> None:
        """On the loop: swap the table and release held requests that now fit."""
        table = routing.RoutingTable.from_snapshot(snapshot)
        self._resolve(self.dispatcher.set_table(table))
        self.synced = True
        for model in list(self.dispatcher.held_models()):
            self._gauge_depth(model)

    def _resolve(self, released: list[dispatch.Release]) -> None:
        pending = list(released)
        while pending:
            waiter, lease = pending.pop(0)  # FIFO: the oldest held request resumes first
            fut: asyncio.Future[dispatch.Lease | None] = waiter.token  # type: ignore[assignment]
            if fut.done():  # its handler is gone; give the slot to the next one
                pending.extend(self.dispatcher.release(lease))
            else:
                fut.set_result(lease)
            self._gauge_depth(lease.model)

    def _gauge_depth(self, model: routing.ModelKey) -> None:
        target = self.dispatcher.table.target(model)
        served = target.route.served_model if target else model[1]
        self.metrics.queue_depth.labels(served, model[0]).set(self.dispatcher.depth(model))

    def _schedule_expiry(self) -> None:
        assert self._loop is not None
        when = self.dispatcher.next_deadline()
        if when is None or (self._expiry_at is not None and self._expiry_at <= when):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = when
        self._expiry = self._loop.call_at(when, self._on_expiry)

    def _on_expiry(self) -> None:
        assert self._loop is not None
        self._expiry, self._expiry_at = None, None
        for waiter in self.dispatcher.expire(self._loop.time()):
            fut: asyncio.Future[dispatch.Lease | None] = waiter.token  # type: ignore[assignment]
            if not fut.done():
                fut.set_result(None)
            self._gauge_depth(waiter.model)
        self._schedule_expiry()

    # ---- keys and replicas -------------------------------------------------------------
    async def _watch_keys(self, key_file: auth.KeyFile) -> None:
        """Look at the key file every ``key_reload_interval``; a ring it accepts replaces
        ours, anything else keeps it (see :func:`tidepool.gateway.auth.reload_decision`)."""
        while True:
            await asyncio.sleep(self.config.key_reload_interval)
            try:
                decision = await asyncio.to_thread(key_file.reload)
            except OSError as exc:  # unreadable for now (permissions, I/O): try again later
                log.error("gateway: cannot read the key file %s: %s", key_file.path, exc)
                continue
            if decision.ring is not None:
                self.keys = decision.ring
                log.info("gateway: key file %s: %s", key_file.path, decision.reason)
            elif decision.outcome is not auth.Reload.UNCHANGED:
                log.error("gateway: key file %s: %s", key_file.path, decision.reason)

    def set_replicas(self, count: int) -> None:
        """On the loop: the live replica count; 0 (none ready yet, or a lagging count) keeps
        the configured hint, since this replica is serving whatever the count says."""
        replicas = count if count >= 1 else self.config.replicas
        if replicas != self.replicas:
            log.info("gateway: %d replicas share each tenant's rate limit", replicas)
        self.replicas = replicas

    # ---- wake --------------------------------------------------------------------------
    def _maybe_wake(self, route: ModelRoute) -> None:
        assert self._loop is not None
        if self.waker is None or not self.wake_limiter.should_wake(route.key, self._loop.time()):
            return
        waker, now = self.waker, self.wall_clock()
        self._awaiting_response.setdefault(route.key, now)
        done = self._loop.run_in_executor(
            self._wake_pool, waker.request_wake, route.namespace, route.name, now
        )
        done.add_done_callback(lambda f: self._wake_done(route, f))

    def _report_first_response(self, route: ModelRoute) -> None:
        """After a wake, the first response routed for ``route``'s model is reported (once)."""
        assert self._loop is not None
        wake_at = self._awaiting_response.pop(route.key, None)
        if wake_at is None or self.waker is None:
            return
        done = self._loop.run_in_executor(
            self._wake_pool,
            self.waker.report_first_response,
            route.namespace,
            route.name,
            wake_at,
            self.wall_clock(),
        )
        done.add_done_callback(
            lambda f: _log_failure(f, f"first-response report of {route.namespace}/{route.name}")
        )

    def _wake_done(self, route: ModelRoute, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        result = "ok" if err is None else "error"
        if err is not None:
            log.warning("gateway: wake of %s/%s failed: %s", route.namespace, route.name, err)
        self.metrics.wakes.labels(route.served_model, route.namespace, result).inc()

    # ---- acquiring a backend -----------------------------------------------------------
    async def _acquire(
        self, route: ModelRoute, arrived: float, exclude: frozenset[str]
    ) -> dispatch.Lease | str:
        """A lease, or the 503 error code (``queue_full`` or ``queue_timeout``)."""
        assert self._loop is not None
        fut: asyncio.Future[dispatch.Lease | None] = self._loop.create_future()
        deadline = arrived + self.config.queue_timeout
        admission = self.dispatcher.admit(route.key, self._loop.time(), deadline, fut, exclude)
        if isinstance(admission, dispatch.Lease):
            return admission
        if isinstance(admission, dispatch.QueueFull):
            self._maybe_wake(route)
            return "queue_full"
        self._gauge_depth(route.key)
        self._maybe_wake(route)
        self._schedule_expiry()
        try:
            lease = await fut
        except asyncio.CancelledError:
            if not self.dispatcher.cancel(admission.waiter) and fut.done() and not fut.cancelled():
                got = fut.result()
                if got is not None:
                    self._resolve(self.dispatcher.release(got))
            self._gauge_depth(route.key)
            raise
        finally:
            self.metrics.held_seconds.labels(route.served_model, route.namespace).observe(
                self._loop.time() - admission.waiter.enqueued_at
            )
        return lease if lease is not None else "queue_timeout"

    def _release(self, lease: dispatch.Lease) -> None:
        self._resolve(self.dispatcher.release(lease))

    # ---- HTTP handlers -----------------------------------------------------------------
    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        if self.in_flight.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not self.synced:
            return web.json_response({"status": "waiting for discovery"}, status=503)
        return web.json_response({"status": "ready"})

    @web.middleware
    async def errors_as_json(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Whatever goes wrong answers in OpenAI's error shape, never aiohttp's plain text."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = _http_error(request, exc)
            if request.match_info.http_exception is exc:  # the router refused; count it here
                self.metrics.requests.labels(metrics.UNKNOWN, "", "", str(resp.status)).inc()
            return resp
        except Exception:
            log.exception("gateway: unexpected error on %s %s", request.method, request.path)
            return error_response(
                500, "The gateway failed to handle the request.", "api_error", "internal_error"
            )

    async def models(self, request: web.Request) -> web.Response:
        tenant: str | None = None
        if self.keys is not None:
            key = self.keys.lookup(auth.bearer_token(request.headers.get("Authorization")))
            if key is None:
                return _unauthorized()
            tenant = key.tenant
        data = [
            {
                "id": t.route.served_model,
                "object": "model",
                "created": 0,
                "owned_by": t.route.tenant,
            }
            for t in self.dispatcher.table.targets()
            if tenant is None or t.route.tenant == tenant
        ]
        return web.json_response({"object": "list", "data": data})

    async def inference(self, request: web.Request) -> web.StreamResponse:
        assert self._loop is not None
        arrived = self._loop.time()
        labels = _Labels()
        status = 500
        try:
            with self.in_flight.request():
                resp = await self._inference(request, arrived, labels)
            status = resp.status
            return resp
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code for it)
            raise
        finally:
            self.metrics.requests.labels(
                labels.model, labels.namespace, labels.tenant, str(status)
            ).inc()
            if labels.namespace:
                self.metrics.duration.labels(labels.model, labels.namespace).observe(
                    self._loop.time() - arrived
                )

    async def _inference(
        self, request: web.Request, arrived: float, labels: _Labels
    ) -> web.StreamResponse:
        """An inference request from its arrival to its answer: refused while the gateway cannot
        route, authenticated, read and checked, routed to the tenant's model, rate limited, then
        forwarded to a replica (:meth:`_send`)."""
        assert self._loop is not None
        refused = self._unavailable()
        if refused is not None:
            return refused
        key: auth.TenantKey | None = None
        if self.keys is not None:
            key = self.keys.lookup(auth.bearer_token(request.headers.get("Authorization")))
            if key is None:
                return _unauthorized()
            labels.tenant = key.tenant
        body = await self._read_body(request)
        if not isinstance(body, bytes):
            return body
        parsed = self._parse(body)
        if isinstance(parsed, web.Response):
            return parsed
        payload, model = parsed
        target = self.dispatcher.table.lookup(model, key.tenant if key else None)
        if target is None or (key is not None and target.route.tenant != key.tenant):
            return _model_not_found(model)
        route = target.route
        labels.model, labels.namespace = route.served_model, route.namespace
        labels.tenant = labels.tenant or route.tenant
        if key is not None:
            limited = self._rate_limited(key, arrived)
            if limited is not None:
                return limited
        return await self._send(request, body, route, model, arrived, payload=payload)

    def _fleet_body(
        self, payload: dict[str, Any], route: ModelRoute, lease: dispatch.Lease
    ) -> bytes:
        """The request as a SharedEngine replica gets it: under the tenant's adapter name (see
        :mod:`tidepool.gateway.model`), with the tenant's priority when the replica schedules by
        it: whether its requests in flight on the fleet through this gateway (this one counted)
        are within its fair share of the seats (:mod:`tidepool.policy.fair_share`), so one
        tenant's burst queues behind the others' requests rather than in front of them."""
        upstream = route.upstream_model
        assert upstream is not None
        priority = None
        if lease.backend.endpoint.priority_scheduling:
            mine, tenants, seats = self.dispatcher.fleet_load(route.key, lease.adapter or upstream)
            share = fair_share.fair_share(seats, tenants, self.replicas)
            priority = fair_share.priority(mine, share)
        return rewrite_request(payload, upstream, priority)

    def _unavailable(self) -> web.Response | None:
        """The 503 while the gateway cannot route: shutting down, or before its first routing
        table (a request then would be refused as an unknown model)."""
        if self.in_flight.draining:
            return error_response(
                503, "the gateway is shutting down", "service_unavailable_error", "draining"
            )
        if not self.synced:
            return error_response(
                503, "the gateway has not loaded its routing table yet",
                "service_unavailable_error", "not_ready",
            )  # fmt: skip
        return None

    def _parse(self, body: bytes) -> tuple[dict[str, Any], str] | web.Response:
        """The JSON payload and its ``model``, or the 400/413 answering a body that is not
        JSON, names no model, or holds a prompt over ``max_prompt_chars``."""
        try:
            payload = json.loads(body)
        except RecursionError:
            return error_response(
                400, "request body is nested too deeply", "invalid_request_error", None
            )
        except ValueError:
            return error_response(
                400, "request body is not valid JSON", "invalid_request_error", None
            )
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str) or not model:
            return error_response(
                400, "you must provide a model parameter", "invalid_request_error", None, "model"
            )
        limit = self.config.max_prompt_chars
        if limit is not None and inbound.prompt_chars(payload) > limit:
            return _too_large("prompt", limit, "characters", "prompt_too_long")
        return payload, model

    def _rate_limited(self, key: auth.TenantKey, arrived: float) -> web.Response | None:
        """The 429 when the tenant's key is over its requests per minute (this replica's
        share), else None."""
        retry = self.limiter.check(key.tenant, key.requests_per_minute, arrived, self.replicas)
        if retry is None:
            return None
        resp = error_response(
            429, f"Rate limit reached for tenant {key.tenant}: "
            f"{key.requests_per_minute} requests per minute.",
            "rate_limit_error", "rate_limit_exceeded",
        )  # fmt: skip
        resp.headers["Retry-After"] = auth.retry_after_header(retry)
        # The retry comes on a new connection, which the Service may send to another
        # replica: a tenant skewed onto one replica's share spreads out again.
        resp.force_close()
        return resp

    async def _send(
        self,
        request: web.Request,
        body: bytes,
        route: ModelRoute,
        model: str,
        arrived: float,
        *,
        payload: dict[str, Any],
    ) -> web.StreamResponse:
        """Forward to a replica leased from the queue, trying another (up to
        ``connect_attempts``) when one cannot be connected to; 503 when no lease comes, 502
        when the replica fails or none can be reached. A SharedEngine replica gets the body
        :meth:`_fleet_body` makes for it, every other replica the body as sent."""
        tried: set[str] = set()
        for _ in range(self.config.connect_attempts):
            got = await self._acquire(route, arrived, frozenset(tried))
            if isinstance(got, str):
                what = (
                    f"the queue for model `{model}` is full"
                    if got == "queue_full"
                    else f"no replica of model `{model}` became ready within"
                    f" {self.config.queue_timeout:g}s"
                )
                return error_response(503, what, "service_unavailable_error", got)
            sent = body if route.upstream_model is None else self._fleet_body(payload, route, got)
            try:
                return await self._forward(request, sent, got, route, arrived)
            except _ConnectFailedError as exc:
                tried.add(got.backend.endpoint.key)
                log.info(
                    "gateway: %s unreachable (%s); trying another", got.backend.endpoint.key, exc
                )
            except aiohttp.ClientError as exc:
                log.warning("gateway: upstream %s failed: %s", got.backend.endpoint.key, exc)
                return error_response(
                    502, f"the replica serving model `{model}` failed to answer", "api_error",
                    "upstream_error",
                )  # fmt: skip
            finally:
                self._release(got)
        return error_response(
            502,
            f"no replica of model `{model}` could be reached",
            "api_error",
            "upstream_unreachable",
        )

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The whole body, or the error that answers the request instead."""
        limit = self.config.max_body
        if request.content_length is not None and request.content_length > limit:
            return _too_large("request body", limit, "bytes", "request_too_large")
        try:
            async with asyncio.timeout(self.config.body_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:  # no declared length: found while reading
            return _too_large("request body", limit, "bytes", "request_too_large")
        except TimeoutError:
            # The connection closes after this answer, the rest of the body unread (the API
            # runner's lingering_time is 0, see start).
            return error_response(
                408, f"The request body did not arrive within {self.config.body_timeout:g}s.",
                "invalid_request_error", "request_timeout",
            )  # fmt: skip
        except web.RequestPayloadError:
            return error_response(
                400, "the request body could not be read (bad chunked encoding or cut short)",
                "invalid_request_error", None,
            )  # fmt: skip
        except ConnectionError:
            # The client is gone; nobody reads this, but the request is counted as 499.
            return web.Response(status=499)

    async def _forward(
        self,
        request: web.Request,
        body: bytes,
        lease: dispatch.Lease,
        route: ModelRoute,
        arrived: float,
    ) -> web.StreamResponse:
        assert self._session is not None
        assert self._loop is not None
        endpoint = lease.backend.endpoint
        # The router matched request.path to an allowlisted route exactly; the query goes on
        # as the client sent it (decoding and re-encoding it could change its meaning).
        url = URL.build(
            scheme="http", host=endpoint.host, port=endpoint.port, path=request.path,
            query_string=request.rel_url.raw_query_string, encoded=True,
        )  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP}
        inflight = self.metrics.inflight.labels(route.served_model, route.namespace, endpoint.pool)
        inflight.inc()
        try:
            try:
                upstream = await self._session.post(url, data=body, headers=headers)
            except (
                aiohttp.ClientConnectorError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
            ) as exc:
                # Nothing came back, so the engine did not take it (refused, or an idle
                # keep-alive it closed while draining): another replica may.
                raise _ConnectFailedError(str(exc)) from exc
            # Leaving this block early (the client went away: CancelledError) closes the
            # connection with the response unread, which is how the engine learns to abort it.
            async with upstream:
                return await self._stream(request, upstream, lease, route, arrived)
        finally:
            inflight.dec()

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        lease: dispatch.Lease,
        route: ModelRoute,
        arrived: float,
    ) -> web.StreamResponse:
        assert self._loop is not None
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        out_headers[BACKEND_HEADER] = lease.backend.endpoint.key
        resp = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        content_type = upstream.headers.get("Content-Type", "")
        rewriter = (
            None
            if route.upstream_model is None
            else ResponseRewriter(
                content_type,
                upstream.headers.get("Content-Encoding", ""),
                route.upstream_model,
                route.served_model,
            )
        )
        if upstream.content_length is not None and (rewriter is None or not rewriter.rewrites):
            resp.content_length = upstream.content_length
        meter = usage.UsageMeter(content_type)
        first = True
        try:
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                if first:
                    first = False
                    self.metrics.ttft.labels(route.served_model, route.namespace).observe(
                        self._loop.time() - arrived
                    )
                    self._report_first_response(route)
                meter.feed(chunk)
                out = chunk if rewriter is None else rewriter.feed(chunk)
                if out:
                    await resp.write(out)
            if rewriter is not None and (rest := rewriter.finish()):
                await resp.write(rest)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            log.info(
                "gateway: client went away during a response from %s", lease.backend.endpoint.key
            )
        except aiohttp.ClientError as exc:
            # The engine failed mid-response; headers are gone, so all we can do is cut the
            # stream and let the client see it as an error, never as a clean end.
            log.warning(
                "gateway: upstream %s failed mid-response: %s", lease.backend.endpoint.key, exc
            )
            resp.force_close()
            with contextlib.suppress(Exception):
                if request.transport is not None:
                    request.transport.close()
        self._meter(meter.finish(), route)
        return resp

    def _meter(self, found: usage.Usage | None, route: ModelRoute) -> None:
        if found is None:
            return
        m, ns, t = route.served_model, route.namespace, route.tenant
        self.metrics.tokens.labels(m, ns, t, "prompt").inc(found.prompt_tokens)
        self.metrics.tokens.labels(m, ns, t, "completion").inc(found.completion_tokens)


GATEWAY_KEY: Final = web.AppKey("gateway", Gateway)


def _log_failure(fut: asyncio.Future[None], what: str) -> None:
    """A background Kubernetes call's failure goes to the log; the request it was for is
    answered either way."""
    if not fut.cancelled() and (err := fut.exception()) is not None:
        log.warning("gateway: %s failed: %s", what, err)


def _unauthorized() -> web.Response:
    return error_response(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
        "invalid_request_error",
        "invalid_api_key",
    )


def create_app(
    config: GatewayConfig,
    source: DiscoverySource,
    waker: wakes.Waker | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    *,
    key_file: auth.KeyFile | None = None,
    replica_source: ReplicaSource | None = None,
) -> web.Application:
    """The gateway as an aiohttp application (tests run it in-process on 127.0.0.1).

    ``key_file``: the keys, reloaded as the file changes (then ``config.keys`` is not used).
    ``replica_source``: the live replica count that splits each tenant's rate limit.
    """
    gw = Gateway(
        config, source, waker, wall_clock or (lambda: datetime.now(UTC)),
        key_file=key_file, replica_source=replica_source,
    )  # fmt: skip
    app = web.Application(client_max_size=config.max_body, middlewares=[gw.errors_as_json])
    app[GATEWAY_KEY] = gw
    app.on_startup.append(gw.on_startup)
    app.on_shutdown.append(gw.on_shutdown)
    app.on_cleanup.append(gw.on_cleanup)
    app.router.add_get("/healthz", gw.healthz)
    app.router.add_get("/readyz", gw.readyz)
    app.router.add_get("/v1/models", gw.models)
    for path in sorted(inbound.FORWARDED_PATHS):
        app.router.add_post(path, gw.inference)
    return app


@dataclass(frozen=True, slots=True)
class Listeners:
    """The running gateway: the API's runner and the metrics server."""

    api: web.AppRunner
    scrape: WSGIServer

    @property
    def port(self) -> int:
        """The API's bound port (the one asked for, or a free one when that was 0)."""
        return int(self.api.addresses[0][1])

    @property
    def metrics_port(self) -> int:
        """The metrics server's bound port."""
        return int(self.scrape.server_port)

    @property
    def gateway(self) -> Gateway:
        return self.api.app[GATEWAY_KEY]

    async def close(self) -> None:
        """Drain the API first (see :meth:`Gateway.on_shutdown`); metrics stay up meanwhile, so
        the queue of a draining gateway is still visible."""
        try:
            await self.api.cleanup()
        finally:
            await asyncio.to_thread(_stop_metrics, self.scrape)


def _stop_metrics(server: WSGIServer) -> None:
    """Stop the metrics server and free its port."""
    # Shutting the listening socket wakes the server's select loop now; shutdown() alone
    # returns only after the loop's next 0.5 s poll (a cost every test's teardown would pay).
    with contextlib.suppress(OSError):
        server.socket.shutdown(socket.SHUT_RDWR)
    server.shutdown()
    server.server_close()


async def start(app: web.Application, host: str, port: int, metrics_port: int) -> Listeners:
    """Serve ``app`` on ``host:port`` and its metrics on ``host:metrics_port`` (port 0 asks for
    a free one), the metrics with ``prometheus_client``'s own server in a thread, as the
    operator serves its metrics.

    The program and the tests both start the gateway here, so the tests run the listener
    settings production runs: the shared runner (handler cancellation on) with the header
    timeout as the keep-alive timeout, which aiohttp also applies from the moment a connection
    opens until a complete request head arrives.
    """
    gw = app[GATEWAY_KEY]
    cfg = gw.config
    api = await http_server.start_runner(
        app,
        host,
        port,
        shutdown_timeout=cfg.drain_timeout,
        keepalive_timeout=cfg.header_timeout,
        # A request answered before its body has all arrived (408, a declared-too-large 413,
        # any early refusal) ends its connection; aiohttp's default reads on for 10 s more.
        lingering_time=0,
    )
    try:
        scrape, _ = start_http_server(metrics_port, addr=host, registry=gw.metrics.registry)
    except BaseException:
        await api.cleanup()
        raise
    return Listeners(api, scrape)
