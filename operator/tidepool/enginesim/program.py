"""``tidepool engine-sim`` as a program: its flags, and serving until SIGTERM.

Must not: contain request handling (:mod:`tidepool.enginesim.server`) or timing
(:mod:`tidepool.enginesim.engine`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from tidepool.adapters import http_server
from tidepool.api.durations import seconds_flag
from tidepool.enginesim import engine, server
from tidepool.policy import lora_timing

#: vLLM serves /v1/load_lora_adapter and /v1/unload_lora_adapter only with this set.
RUNTIME_LORA_ENV: Final = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def _lora_module(text: str) -> tuple[str, str]:
    """``name=path``, the form of vLLM's ``--lora-modules``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--load-delay", type=seconds_flag, default=5.0, help="e.g. 5s, 2m")
    parser.add_argument("--prefill-ms-per-1k-tokens", type=float, default=40.0)
    parser.add_argument("--decode-ms-per-token", type=float, default=20.0)
    parser.add_argument("--batch-slowdown", type=float, default=0.01)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--scheduling-policy", choices=engine.SCHEDULING_POLICIES, default=engine.FCFS,
        help="vLLM's: fcfs (arrival order) or priority (by the request's priority, lower first)",
    )  # fmt: skip
    parser.add_argument("--drain-timeout", type=seconds_flag, default=3600.0)
    parser.add_argument("--log-level", default="INFO")
    lora = parser.add_argument_group("LoRA (vLLM's flags, with vLLM's defaults)")
    lora.add_argument("--enable-lora", action="store_true")
    lora.add_argument("--max-loras", type=int, default=1, help="distinct adapters per batch")
    lora.add_argument("--max-cpu-loras", type=int, default=None, help="default: --max-loras")
    lora.add_argument("--max-lora-rank", type=int, default=16)
    lora.add_argument(
        "--lora-modules", type=_lora_module, nargs="+", action="extend", default=[],
        metavar="NAME=PATH", help="adapters loaded at start (repeatable)",
    )  # fmt: skip
    sim = parser.add_argument_group("LoRA timing (the simulator's own)")
    sim.add_argument(
        "--default-lora-rank", type=int, default=8,
        help="rank of an adapter whose path has no adapter_config.json",
    )  # fmt: skip
    sim.add_argument(
        "--lora-load-seconds-per-rank", type=float, default=lora_timing.LOAD_SECONDS_PER_RANK
    )
    sim.add_argument("--lora-swap-in-seconds", type=float, default=lora_timing.SWAP_IN_SECONDS)


def lora_from_args(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> engine.LoraConfig | None:
    """The LoRA settings; adapter ranks are read from the ``--lora-modules`` paths."""
    if not args.enable_lora:
        if args.lora_modules:
            raise ValueError("--lora-modules needs --enable-lora")
        return None
    modules = tuple(
        engine.Adapter(name, path, server.adapter_rank(path, args.default_lora_rank))
        for name, path in args.lora_modules
    )
    return engine.LoraConfig(
        max_loras=args.max_loras,
        max_cpu_loras=args.max_cpu_loras,
        max_lora_rank=args.max_lora_rank,
        modules=modules,
        # vLLM reads the variable as true when it is "1" or "true", in any case.
        runtime_updating=environ.get(RUNTIME_LORA_ENV, "0").strip().lower() in ("1", "true"),
        default_rank=args.default_lora_rank,
        load_seconds_per_rank=args.lora_load_seconds_per_rank,
        swap_in_seconds=args.lora_swap_in_seconds,
    )


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> engine.EngineConfig:
    return engine.EngineConfig(
        model=args.model,
        load_delay=args.load_delay,
        prefill_ms_per_1k_tokens=args.prefill_ms_per_1k_tokens,
        decode_ms_per_token=args.decode_ms_per_token,
        max_num_seqs=args.max_num_seqs,
        seed=args.seed,
        batch_slowdown=args.batch_slowdown,
        drain_timeout=args.drain_timeout,
        scheduling_policy=args.scheduling_policy,
        lora=lora_from_args(args, environ),
    )


async def serve(app: web.Application, host: str, port: int, drain_timeout: float) -> None:
    """Serve until SIGTERM/SIGINT; then close the listener and finish in-flight requests."""
    listener = await http_server.start(app, host, port, shutdown_timeout=drain_timeout)
    # The first line on stdout: what a parent process waits for before sending traffic.
    print(f"engine-sim listening on {host}:{listener.port}", flush=True)
    await http_server.serve_until_signalled(listener, "engine-sim")


def run(args: argparse.Namespace) -> int:
    return http_server.run_program(
        "engine-sim",
        args.log_level,
        lambda: config_from_args(args),
        lambda config: serve(server.create_app(config), args.host, args.port, config.drain_timeout),
    )
