"""The HTTP server shell the gateway and the engine simulator share.

Role: start an aiohttp app on a TCP listener with the settings both programs need, wait for
SIGTERM or SIGINT, then close the listener and drain in-flight requests, so that a Kubernetes
rollout (SIGTERM, then the grace period) never drops an accepted request; and answer errors in
OpenAI's JSON shape (:mod:`tidepool.api.openai_errors`).

Why handler cancellation is on: aiohttp's runner leaves it off (its TestServer turns it on), and
without it a client that hangs up leaves its handler running: a held request would keep its
queue slot, and a simulated generation its batch slot.

Must not: import ``kopf`` or ``kubernetes``, or know any route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from aiohttp import web

from tidepool.api import openai_errors

log = logging.getLogger(__name__)

_Built = TypeVar("_Built")

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

# aiohttp's own defaults, named: a keep-alive connection idles 75 s; after an early answer
# (before the request body has all arrived) the server reads on for up to 10 s.
DEFAULT_KEEPALIVE_TIMEOUT: Final = 75.0
DEFAULT_LINGERING_TIME: Final = 10.0


def error_response(
    status: int, message: str, type_: str, code: str | int | None = None, param: str | None = None
) -> web.Response:
    """OpenAI's error shape, so clients' SDKs show the message instead of a parse error."""
    return web.json_response(openai_errors.error_body(message, type_, code, param), status=status)


class InFlight:
    """The requests a server is answering, and its drain: on shutdown it stops taking new ones
    (``draining`` turns readiness to 503) and waits, bounded, for these to finish.

    aiohttp's own ``shutdown_timeout`` waits for handlers only after the shutdown hooks ran;
    this is the wait inside the hook, so a held request or a streaming generation ends with its
    last byte instead of being cancelled. E.g. 3 requests in flight, the last done 2 s into a
    900 s drain: :meth:`drain` returns 0 after 2 s.
    """

    def __init__(self) -> None:
        self.count = 0
        """Requests between their arrival and their last byte."""
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count one request for as long as the ``with`` block runs, however it ends."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Stop taking requests; wait up to ``timeout`` seconds for those in flight to finish.
        Returns how many are still in flight (0: all finished)."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self.count


class Closable(Protocol):
    """Something serving that drains and stops when closed."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Listener:
    """A started app: its runner, which owns the listening socket."""

    runner: web.AppRunner

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or a free one when that was 0)."""
        return int(self.runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening, run the app's shutdown hooks, and give in-flight handlers up to the
        runner's ``shutdown_timeout`` to finish."""
        await self.runner.cleanup()


async def start_runner(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    lingering_time: float = DEFAULT_LINGERING_TIME,
) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (0: a free port); signals are left to
    :func:`serve_until_signalled`. A listener that fails to bind leaves nothing running."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
        lingering_time=lingering_time,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def start(app: web.Application, host: str, port: int, *, shutdown_timeout: float) -> Listener:
    """:func:`start_runner` with aiohttp's connection defaults, as a :class:`Listener`."""
    return Listener(await start_runner(app, host, port, shutdown_timeout=shutdown_timeout))


async def serve_until_signalled(serving: Closable, name: str) -> None:
    """Wait for SIGTERM or SIGINT, then close ``serving`` (which drains); a second signal
    during the drain changes nothing."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("%s: shutting down: draining in-flight requests", name)
        await serving.close()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run_program(
    name: str,
    log_level: str,
    build: Callable[[], _Built],
    serve: Callable[[_Built], Coroutine[Any, Any, None]],
) -> int:
    """A server program's ``run``: build from the flags, then serve until signalled; exit 0.

    Whatever ``build`` raises (a bad flag, an unreadable file) ends the program with one line
    on stderr and exit code 2, as the ``tidepool`` command promises, never a traceback.
    """
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        built = build()
    except Exception as exc:
        print(f"tidepool {name}: {exc}", file=sys.stderr, flush=True)
        return 2
    asyncio.run(serve(built))
    return 0
