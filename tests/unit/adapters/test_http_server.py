"""The shared server shell, on 127.0.0.1: OpenAI error JSON, handler cancellation, and the
SIGTERM drain both ``tidepool gateway`` and ``tidepool engine-sim`` rely on."""

import asyncio
import json
import os
import signal

import aiohttp
import pytest
from aiohttp import web

from tidepool.adapters import http_server


@pytest.mark.parametrize(
    ("args", "status", "error"),
    [
        pytest.param(
            (404, "The model `x` does not exist.", "NotFoundError", 404),
            404,
            {"message": "The model `x` does not exist.", "type": "NotFoundError",
             "param": None, "code": 404},
            id="vllm-style-integer-code",
        ),
        pytest.param(
            (413, "too large", "invalid_request_error", "body_too_large", "messages"),
            413,
            {"message": "too large", "type": "invalid_request_error", "param": "messages",
             "code": "body_too_large"},
            id="openai-style-string-code-and-param",
        ),
    ],
)  # fmt: skip
async def test_error_response_is_openai_error_json(args, status, error):
    resp = http_server.error_response(*args)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert resp.text is not None
    assert json.loads(resp.text) == {"error": error}


class _Handler:
    """A handler that holds each request until released, recording how it ended."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.outcomes: list[str] = []

    async def handle(self, _request: web.Request) -> web.Response:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.outcomes.append("cancelled")
            raise
        self.outcomes.append("finished")
        return web.Response(text="done")


async def _listener(handler: _Handler) -> http_server.Listener:
    app = web.Application()
    app.router.add_get("/", handler.handle)
    return await http_server.start(app, "127.0.0.1", 0, shutdown_timeout=5.0)


async def test_sigterm_closes_the_listener_and_drains_inflight_requests():
    handler = _Handler()
    listener = await _listener(handler)
    url = f"http://127.0.0.1:{listener.port}/"
    serving = asyncio.create_task(http_server.serve_until_signalled(listener, "test"))
    async with aiohttp.ClientSession() as s:
        inflight = asyncio.create_task(s.get(url))
        await handler.entered.wait()
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop's handler, not the default
        while listener.runner.sites:  # the listener closes before the drain starts
            await asyncio.sleep(0.01)
        handler.release.set()
        async with await inflight as resp:
            assert (resp.status, await resp.text()) == (200, "done")
        await serving
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(url)
    assert handler.outcomes == ["finished"]


async def test_a_client_that_hangs_up_cancels_its_handler():
    """aiohttp's runner leaves handler cancellation off; the shell must turn it on."""
    handler = _Handler()
    listener = await _listener(handler)
    try:
        async with aiohttp.ClientSession() as s:
            request = asyncio.create_task(s.get(f"http://127.0.0.1:{listener.port}/"))
            await handler.entered.wait()
            request.cancel()  # closes the connection
        while not handler.outcomes:  # the server notices the closed connection
            await asyncio.sleep(0.01)
        assert handler.outcomes == ["cancelled"]
    finally:
        await listener.close()


async def test_a_port_in_use_fails_the_start():
    first = await _listener(_Handler())
    try:
        with pytest.raises(OSError, match="address already in use"):
            await http_server.start(web.Application(), "127.0.0.1", first.port, shutdown_timeout=1)
    finally:
        await first.close()


@pytest.mark.parametrize(
    ("finishes_after", "timeout", "left"),
    [
        pytest.param(0.05, 5.0, 0, id="finishes-inside-the-drain"),
        pytest.param(5.0, 0.05, 1, id="still-running-at-the-timeout"),
    ],
)
async def test_in_flight_drain_waits_for_requests_up_to_its_timeout(finishes_after, timeout, left):
    in_flight = http_server.InFlight()

    async def request() -> None:
        with in_flight.request():
            await asyncio.sleep(finishes_after)

    running = asyncio.create_task(request())
    await asyncio.sleep(0)
    assert (in_flight.count, in_flight.draining) == (1, False)

    assert await in_flight.drain(timeout) == left
    assert in_flight.draining
    running.cancel()  # a request past the drain: the runner's shutdown_timeout cancels it
    await asyncio.gather(running, return_exceptions=True)
    assert in_flight.count == 0


async def test_in_flight_counts_a_request_that_fails_until_it_ends():
    in_flight = http_server.InFlight()
    seen: list[int] = []

    def handler() -> None:
        with in_flight.request():
            seen.append(in_flight.count)
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        handler()

    assert (seen, in_flight.count) == ([1], 0)
    assert await in_flight.drain(0.01) == 0
