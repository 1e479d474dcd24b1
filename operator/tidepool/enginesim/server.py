"""The engine simulator's HTTP face: an OpenAI-compatible fake vLLM for tests and the demo.

Role: serve ``POST /v1/completions`` and ``POST /v1/chat/completions`` (plain JSON or SSE
streams ending in ``data: [DONE]``, with ``usage``), ``GET /v1/models``, ``/health`` (503 until
the model-load delay has passed, and again while draining) and ``/metrics`` with vLLM's metric
names (:mod:`tidepool.enginesim.metrics`), using the timing model of
:mod:`tidepool.enginesim.engine`. On shutdown it finishes every in-flight request (long streams
included, up to the drain timeout): what lets a migration drain a pool without dropping a
request.

With LoRA enabled (:class:`~tidepool.enginesim.engine.LoraConfig`) a request whose ``model``
is a loaded adapter is served as that adapter, ``/v1/models`` lists each adapter with its
``parent`` and ``root``, and, only when vLLM's ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` is on,
``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` change the set at run time with
vLLM's answers (plain-text success; 400 for a name already loaded or a rank over
``max_lora_rank``, 404 for unloading an unknown name). Without that setting the routes do not
exist (404), as in vLLM.

A request's ``priority`` (an integer, default 0) orders the waiting queue under vLLM's
``--scheduling-policy priority``; under ``fcfs`` a priority other than 0 gets vLLM's 400.

Streams carry ``usage`` in their last chunk always (vLLM does so only with
``stream_options.include_usage``), so the gateway can meter tokens of every request.

Must not: import ``kubernetes`` or ``kopf``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidepool.adapters.http_server import InFlight, error_response
from tidepool.enginesim import engine
from tidepool.enginesim.metrics import EngineMetrics

log = logging.getLogger(__name__)


def adapter_rank(path: str, default: int) -> int:
    """The rank ``r`` in ``<path>/adapter_config.json`` (PEFT's file, which vLLM reads), or
    ``default`` when the path is not a local adapter directory (a simulated adapter)."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return default
    rank = config.get("r") if isinstance(config, dict) else None
    if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0:
        return rank
    return default


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request body as a JSON object, or the 400 answer to send instead."""
    try:
        payload = json.loads(await request.read())
    except ValueError:
        return error_response(400, "request body is not valid JSON", "BadRequestError", 400)
    if not isinstance(payload, dict):
        return error_response(400, "request body must be a JSON object", "BadRequestError", 400)
    return payload


class EngineSim:
    def __init__(
        self, config: engine.EngineConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.engine = engine.Engine(config, clock)
        self.metrics = EngineMetrics(
            config.model,
            config.lora.max_loras if config.lora else None,
            (lambda: self.engine.admissions) if config.lora else None,
        )
        self.clock = clock
        self.started = clock()
        self.in_flight = InFlight()

    # ---- lifecycle ---------------------------------------------------------------------
    async def on_startup(self, _app: web.Application) -> None:
        self.started = self.clock()

    async def on_shutdown(self, _app: web.Application) -> None:
        if left := await self.in_flight.drain(self.config.drain_timeout):
            log.warning("engine-sim: drain timeout with %d requests in flight", left)

    @property
    def loaded(self) -> bool:
        return self.clock() - self.started >= self.config.load_delay

    def _sync_gauges(self) -> None:
        eng = self.engine
        self.metrics.set_batch(eng.running, eng.waiting, eng.running / self.config.max_num_seqs)

    # ---- small endpoints ---------------------------------------------------------------
    async def health(self, _request: web.Request) -> web.Response:
        if self.in_flight.draining:
            return web.Response(status=503, text="draining")
        if not self.loaded:
            return web.Response(status=503, text="loading model")
        return web.Response(status=200)

    async def models(self, _request: web.Request) -> web.Response:
        base = self.config.model
        cards = [_model_card(base, root=base, parent=None, max_model_len=8192)]
        cards += [
            _model_card(a.name, root=a.path, parent=base, max_model_len=None)
            for a in self.engine.adapters.values()
        ]
        return web.json_response({"object": "list", "data": cards})

    async def metrics_handler(self, _request: web.Request) -> web.Response:
        self._sync_gauges()
        self.metrics.set_lora(self.engine.running_adapters, self.engine.waiting_adapters)
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- LoRA adapters at run time -----------------------------------------------------
    async def load_lora_adapter(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        if isinstance(payload, web.Response):
            return payload
        name, path = payload.get("lora_name"), payload.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            return error_response(
                400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400
            )
        lora = self.config.lora
        assert lora is not None  # the route exists only with LoRA enabled
        rank = adapter_rank(path, lora.default_rank)
        try:
            self.engine.check_load(name, rank)
            await asyncio.sleep(lora.load_seconds(rank))
            self.engine.register(engine.Adapter(name, path, rank))  # checks again: a race
        except engine.LoraError as exc:
            return error_response(exc.status, str(exc), exc.type, exc.status)
        log.info("engine-sim: loaded LoRA adapter %r (rank %d) from %r", name, rank, path)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora_adapter(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        if isinstance(payload, web.Response):
            return payload
        name = payload.get("lora_name")
        if not isinstance(name, str) or not name:
            return error_response(400, "'lora_name' must be provided.", "InvalidUserInput", 400)
        try:
            self.engine.unregister(name)
        except engine.LoraError as exc:
            return error_response(exc.status, str(exc), exc.type, exc.status)
        log.info("engine-sim: unloaded LoRA adapter %r", name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    # ---- generation --------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        with self.in_flight.request():
            return await self._generate_inner(request, chat)

    async def _generate_inner(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if not self.loaded:
            return error_response(503, "the model is still loading", "service_unavailable_error")
        payload = await _json_object(request)
        if isinstance(payload, web.Response):
            return payload
        model = payload.get("model", self.config.model)
        adapter = self.engine.adapters.get(model) if isinstance(model, str) else None
        if model != self.config.model and adapter is None:
            return error_response(404, f"The model `{model}` does not exist.", "NotFoundError", 404)
        priority = payload.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            return error_response(
                400, f"priority must be an integer, got {priority!r}", "BadRequestError", 400,
                param="priority",
            )  # fmt: skip
        try:
            engine.check_priority(priority, self.config.scheduling_policy)
        except ValueError as exc:
            return error_response(400, str(exc), "BadRequestError", 400)
        if chat:
            messages = payload.get("messages")
            if not isinstance(messages, list) or not messages:
                return error_response(400, "messages must be a non-empty list", "BadRequestError")
            prompt_tokens = engine.count_chat_tokens(messages)
            max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
        else:
            if "prompt" not in payload:
                return error_response(400, "prompt is required", "BadRequestError")
            prompt_tokens = engine.count_prompt_tokens(payload["prompt"])
            max_tokens = payload.get("max_tokens")
        rng = self.engine.rng_for_next_request()
        n_out = self.engine.output_length(max_tokens, rng)
        stream = bool(payload.get("stream"))
        gen = _Generation(
            sim=self, chat=chat, model=str(model), adapter=adapter, priority=priority,
            prompt_tokens=prompt_tokens, n_out=n_out, rng=rng,
        )  # fmt: skip
        return await (gen.stream(request) if stream else gen.whole())


class _Generation:
    """One request's life: wait for a slot, prefill, decode token by token."""

    def __init__(
        self,
        *,
        sim: EngineSim,
        chat: bool,
        model: str,
        adapter: engine.Adapter | None,
        priority: int,
        prompt_tokens: int,
        n_out: int,
        rng: Any,
    ) -> None:
        self.sim, self.chat, self.model, self.adapter = sim, chat, model, adapter
        self.priority = priority
        self.prompt_tokens, self.n_out, self.rng = prompt_tokens, n_out, rng
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.UUID(int=rng.getrandbits(128)).hex
        self.created = int(time.time())
        self.arrived = sim.clock()

    async def tokens(self) -> Any:
        """Async generator of tokens, holding a batch slot for its whole life."""
        sim, eng = self.sim, self.sim.engine
        acquire = asyncio.ensure_future(eng.acquire(self.adapter, self.priority))
        sim._sync_gauges()
        try:
            swap_in = await acquire
        except asyncio.CancelledError:
            # Cancelled just after the slot was granted: give it back, or it leaks for good.
            if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                eng.release(self.adapter)
                sim._sync_gauges()
            raise
        sim._sync_gauges()
        try:
            await asyncio.sleep(swap_in + engine.prefill_seconds(self.prompt_tokens, sim.config))
            sim.metrics.prompt_tokens.inc(self.prompt_tokens)
            for i in range(self.n_out):
                if i == 0:
                    sim.metrics.ttft.observe(sim.clock() - self.arrived)
                else:
                    await asyncio.sleep(engine.decode_step_seconds(eng.running, sim.config))
                sim.metrics.generation_tokens.inc()
                yield eng.token(self.rng)
            sim.metrics.e2e.observe(sim.clock() - self.arrived)
            sim.metrics.success.inc()
        finally:
            eng.release(self.adapter)
            sim._sync_gauges()

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.n_out,
            "total_tokens": self.prompt_tokens + self.n_out,
        }

    async def whole(self) -> web.Response:
        text = "".join([t async for t in self.tokens()])
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            obj = "text_completion"
        body = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(),
        }
        return web.json_response(body)

    def _chunk(self, piece: str | None, finish: str | None, first: bool = False) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {} if piece is None else {"content": piece}
            if first:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {
                "index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
            }  # fmt: skip
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        body: dict[str, Any] = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if finish is not None:
            body["usage"] = self.usage()
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        first = True
        try:
            # aclosing: a client that goes away mid-stream must free its batch slot now, not
            # whenever the suspended generator is garbage-collected (a leaked slot reads as a
            # request running forever, and the autoscaler would never scale to zero).
            async with contextlib.aclosing(self.tokens()) as pieces:
                async for piece in pieces:
                    await resp.write(self._chunk(piece, None, first))
                    first = False
            await resp.write(self._chunk(None, "length"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            log.info("engine-sim: client went away mid-stream")
        return resp


def _model_card(
    id_: str, *, root: str, parent: str | None, max_model_len: int | None
) -> dict[str, Any]:
    """vLLM's ``ModelCard``: an adapter's ``root`` is its path and its ``parent`` the base."""
    return {
        "id": id_, "object": "model", "created": 0, "owned_by": "vllm", "root": root,
        "parent": parent, "max_model_len": max_model_len,
    }  # fmt: skip


SIM_KEY: Final = web.AppKey("engine_sim", EngineSim)


def create_app(
    config: engine.EngineConfig, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The simulator as an aiohttp app (tests run it in-process)."""
    sim = EngineSim(config, clock)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIM_KEY] = sim
    app.on_startup.append(sim.on_startup)
    app.on_shutdown.append(sim.on_shutdown)
    app.router.add_get("/health", sim.health)
    app.router.add_get("/v1/models", sim.models)
    app.router.add_get("/metrics", sim.metrics_handler)
    app.router.add_post("/v1/completions", sim.completions)
    app.router.add_post("/v1/chat/completions", sim.chat_completions)
    if config.lora is not None and config.lora.runtime_updating:
        app.router.add_post("/v1/load_lora_adapter", sim.load_lora_adapter)
        app.router.add_post("/v1/unload_lora_adapter", sim.unload_lora_adapter)
    return app
