"""``tidepool engine-sim`` as a program: its flags, and serving until SIGTERM.

Must not: contain request handling (:mod:`tidepool.enginesim.server`) or timing
(:mod:`tidepool.enginesim.engine`).
"""

from __future__ import annotations

import argparse

from aiohttp import web

from tidepool.adapters import http_server
from tidepool.api import durations
from tidepool.enginesim import engine, server


def _seconds(text: str) -> float:
    try:
        return durations.parse(text).total_seconds()
    except durations.InvalidDurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--load-delay", type=_seconds, default=5.0, help="e.g. 5s, 2m")
    parser.add_argument("--prefill-ms-per-1k-tokens", type=float, default=40.0)
    parser.add_argument("--decode-ms-per-token", type=float, default=20.0)
    parser.add_argument("--batch-slowdown", type=float, default=0.01)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--drain-timeout", type=_seconds, default=3600.0)
    parser.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> engine.EngineConfig:
    return engine.EngineConfig(
        model=args.model,
        load_delay=args.load_delay,
        prefill_ms_per_1k_tokens=args.prefill_ms_per_1k_tokens,
        decode_ms_per_token=args.decode_ms_per_token,
        max_num_seqs=args.max_num_seqs,
        seed=args.seed,
        batch_slowdown=args.batch_slowdown,
        drain_timeout=args.drain_timeout,
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
