"""``tidepool advise [LOG.csv]``: which mode a request log belongs in, and what each option costs.

Role: the program. From a per-request log (``timestamp,input_tokens,output_tokens``, or Azure's
``TIMESTAMP,ContextTokens,GeneratedTokens``) it measures traffic the way the operator does
(mean and peak in-flight requests via the engine model, tokens/s), asks the *same*
:func:`tidepool.policy.placement.decide` what an ``auto`` tenant would run, and prints the
projected monthly cost of every option and the crossover point.

It also reproduces the seeds' worked examples from flags, with no log needed:

* ``--hourly-rate 4.00 --hours 720 --price-per-request 0.002`` prints the seed 004 break-even,
  1,440,000 requests/month;
* ``--requests-per-day 10000 --tokens-per-request 110 --price-per-1k-tokens 0.0002
  --hourly-rate 1.21 --hours-per-day 16`` prints seed 003's $0.22/day vs $19.36/day, 88x;
* ``--hourly-rate 7.79 --price-per-million-tokens 0.20`` prints seed 002's crossover,
  649,166 tokens/min.

This module must not implement policy or cost formulas itself; it calls ``tidepool.policy``.
"""

import argparse
import math
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.policy import cost, placement, signals
from tidepool.sim import config, engine, traces


def seed_lines(args: argparse.Namespace) -> list[str]:
    """The worked examples the flags ask for (seeds 002, 003, 004)."""
    out: list[str] = []
    if args.hourly_rate is not None and args.price_per_request is not None:
        hours = args.hours if args.hours is not None else cost.HOURS_PER_MONTH
        n = cost.break_even_requests(args.hourly_rate, hours, args.price_per_request)
        out.append(
            f"break-even: {cost.money(args.hourly_rate)}/h x {hours:g} h ="
            f" {cost.money(args.hourly_rate * hours)} / ${args.price_per_request:g} per request"
            f" = {n:,.0f} requests; below it serverless is cheaper, above it dedicated"
        )
    if args.requests_per_day is not None and args.tokens_per_request is not None:
        price_1k = args.price_per_1k_tokens
        if price_1k is None and args.price_per_million_tokens is not None:
            price_1k = args.price_per_million_tokens / 1000.0
        if price_1k is not None and args.hourly_rate is not None:
            tokens = args.requests_per_day * args.tokens_per_request
            serverless = cost.serverless_cost(tokens, price_1k * 1000.0)
            hours_day = args.hours_per_day if args.hours_per_day is not None else 24.0
            dedicated = cost.dedicated_cost(1, args.hourly_rate, hours_day)
            out.append(
                f"per day: serverless {args.requests_per_day:,.0f} requests x"
                f" {args.tokens_per_request:g} tokens x ${price_1k:g}/1k tokens ="
                f" {cost.money(serverless)}/day; dedicated {cost.money(args.hourly_rate)}/h x"
                f" {hours_day:g} h = {cost.money(dedicated)}/day;"
                f" {cost.ratio(dedicated, serverless):.0f}x"
            )
    if (
        args.hourly_rate is not None
        and args.price_per_million_tokens is not None
        and args.requests_per_day is None
    ):
        tpm = cost.crossover_tokens_per_minute(args.hourly_rate, args.price_per_million_tokens)
        out.append(
            f"crossover: {cost.money(args.hourly_rate)}/h GPU vs"
            f" ${args.price_per_million_tokens:g}/1M tokens serverless ="
            f" {math.floor(tpm):,} tokens/min ({tpm * 60:,.0f} tokens/h)"
        )
    return out


def advise_log(path: Path, cfg: config.SimConfig) -> list[str]:
    """Recommend a mode for the request log at ``path``."""
    log = traces.read_request_log(path)
    dt = 1.0
    load = traces.bin_log(log, cfg.engine, dt, path.stem)
    seconds = max(dt, len(load.arrivals) * dt)
    offered = engine.offered_concurrency(load, dt)
    mean = float(load.arrivals @ load.service_s) / seconds
    peak = float(np.percentile(offered, cfg.peak_percentile)) if len(offered) else 0.0
    tps = float(load.tokens.sum()) / seconds
    at = log.start + timedelta(seconds=seconds)
    pol = placement.PlacementPolicy.from_spec(cfg.placement)
    inputs = placement.PlacementInputs(
        requested_mode=DeploymentMode.AUTO,
        current_mode=DeploymentMode.SERVERLESS,
        policy=pol,
        traffic=placement.Traffic(
            signals.Sample(mean, at), signals.Sample(max(peak, mean), at), signals.Sample(tps, at)
        ),
        capacity_per_replica=cfg.engine.max_num_seqs,
        gpus_per_replica=cfg.engine.gpus_per_replica,
        min_replicas=cfg.scaling.min_replicas,
        shared=cfg.prices.shared_pool(),
        dedicated=cfg.prices.dedicated_pool(),
        placement_since=None,
        # The log is the whole evidence: treat its span as the sustained window.
        above_since=at - max(pol.window, timedelta(seconds=seconds)),
        below_since=None,
        migration_in_progress=False,
        overflow_concurrency_per_replica=cfg.hybrid.overflow_concurrency_per_replica,
    )
    d = placement.decide(inputs, at)
    proj = d.cost
    requests = float(load.arrivals.sum())
    lines = [
        f"log {path.name}: {requests:,.0f} requests over {seconds / 3600:.2f} h;"
        f" {tps:,.0f} tokens/s ({tps * 60:,.0f}/min); in flight mean {mean:.1f}, p95 {peak:.1f}",
        f"recommended mode: {d.mode} ({d.reason}): {d.message}",
    ]
    if proj is not None:
        lines += [
            "projected monthly cost at this traffic:",
            f"  serverless  {cost.money(proj.serverless_monthly):>12}",
            f"  dedicated   {cost.money(proj.dedicated_monthly):>12}"
            f"  ({proj.dedicated_replicas} x {cfg.engine.gpus_per_replica} GPU at"
            f" {cost.money(cfg.prices.dedicated_per_gpu_hour)}/h)",
            f"  hybrid      {cost.money(proj.hybrid_monthly):>12}"
            f"  (floor {proj.hybrid_floor_replicas} dedicated + shared overflow)",
        ]
        tpm = cost.crossover_tokens_per_minute(
            proj.dedicated_replicas
            * cfg.engine.gpus_per_replica
            * cfg.prices.dedicated_per_gpu_hour,
            cfg.prices.shared_per_million_tokens,
        )
        lines.append(
            f"crossover: {math.floor(tpm):,} tokens/min ({tpm * 60 * cost.HOURS_PER_MONTH:,.0f}"
            f" tokens/month) for {proj.dedicated_replicas} dedicated replicas; you run"
            f" {tps * 60:,.0f} tokens/min"
        )
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", type=Path, nargs="?", help="request log CSV")
    parser.add_argument("--hourly-rate", type=float, help="dedicated $/hour (e.g. 4.00)")
    parser.add_argument("--hours", type=float, help="hours the GPU runs (default 730)")
    parser.add_argument("--hours-per-day", type=float, help="hours per day the GPU runs")
    parser.add_argument("--price-per-request", type=float, help="serverless $/request")
    parser.add_argument("--price-per-1k-tokens", type=float, help="serverless $/1k tokens")
    parser.add_argument("--price-per-million-tokens", type=float, help="serverless $/1M tokens")
    parser.add_argument("--requests-per-day", type=float, help="requests per day")
    parser.add_argument("--tokens-per-request", type=float, help="input+output tokens/request")


def run(args: argparse.Namespace) -> int:
    cfg = config.SimConfig()
    if args.hourly_rate is not None or args.price_per_million_tokens is not None:
        prices = cfg.prices
        if args.hourly_rate is not None:
            prices = replace(prices, dedicated_per_gpu_hour=args.hourly_rate)
        if args.price_per_million_tokens is not None:
            prices = replace(prices, shared_per_million_tokens=args.price_per_million_tokens)
        cfg = replace(cfg, prices=prices)
    lines = seed_lines(args)
    if args.log is not None:
        try:
            lines += advise_log(args.log, cfg)
        except (OSError, traces.TraceError) as exc:
            print(f"tidepool advise: {exc}", file=sys.stderr)
            return 2
    if not lines:
        print(
            "tidepool advise: give a request log, or --hourly-rate with --price-per-request,"
            " --price-per-million-tokens, or --requests-per-day/--tokens-per-request",
            file=sys.stderr,
        )
        return 2
    print("\n".join(lines))
    return 0
