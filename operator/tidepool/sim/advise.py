"""``tidepool advise [LOG.csv]``: which mode a request log belongs in, and what each option spends.

Role: the program. From a per-request log (``timestamp,input_tokens,output_tokens``, or Azure's
``TIMESTAMP,ContextTokens,GeneratedTokens``) it measures the offered load the way the gateway's
counters give it to the operator (requests, input and output tokens per second, over the log and
in its busiest minute), asks the *same* :func:`tidepool.policy.placement.decide` what an ``auto``
tenant would run, with replicas sized by the calibrated capacity model
(:func:`tidepool.policy.capacity.calibrated`, through ``SimConfig.capacity``), and prints the
projected monthly GPU spend of every option. The chargeback (what the shared pool's per-token
price would bill the tenant) is printed on its own line, never added to spend.

It also keeps the buyer's view: a team comparing a provider's serverless price with renting a
GPU. From flags alone it reproduces three published worked examples:

* ``--hourly-rate 4.00 --hours 720 --price-per-request 0.002``: the break-even of the article
  "When to Use Serverless vs Dedicated GPU", 1,440,000 requests/month;
* ``--requests-per-day 10000 --tokens-per-request 110 --price-per-1k-tokens 0.0002
  --hourly-rate 1.21 --hours-per-day 16``: Predibase's serverless fine-tune example, $0.22/day
  against an A10G's $19.36/day, 88x;
* ``--hourly-rate 7.79 --price-per-million-tokens 0.20``: the crossover in Fireworks' post "GPUs
  on-demand: Not serverless, not reserved, but some third thing", 649,166 tokens/min.

This module must not implement policy or cost formulas itself; it calls ``tidepool.policy``.
"""

import argparse
import math
import sys
from datetime import timedelta
from pathlib import Path

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.policy import cost, placement, plan
from tidepool.sim import config, engine, flags, traces


def seed_lines(args: argparse.Namespace) -> list[str]:
    """The buyer's-view worked examples the flags ask for (module docstring)."""
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
    """Recommend a mode for the request log at ``path``, with each option's monthly spend.

    The whole log is the evidence: its span is treated as a sustained placement window, so the
    recommendation is what ``auto`` would settle on if this traffic went on.
    """
    log = traces.read_request_log(path)
    dt = 1.0
    cap = cfg.capacity()
    load = traces.bin_log(log, cap, dt, path.stem)
    steps = len(load.arrivals)
    seconds = max(dt, steps * dt)
    offered = engine.OfferedLoad(load, dt, cap, cfg.scaling.scale_to_zero_after.seconds)
    offered.last = steps - 1
    traffic = offered(seconds)
    at = log.start + timedelta(seconds=seconds)
    requests = float(load.arrivals.sum())
    tps = float(load.tokens.sum()) / seconds
    lines = [
        f"log {path.name}: {requests:,.0f} requests over {seconds / 3600:.2f} h;"
        f" {tps:,.0f} tokens/s ({tps * 60:,.0f}/min)"
    ]
    if traffic is None:
        return [*lines, "recommended mode: serverless (no traffic to measure)"]
    # The tenant as the operator would see it: new (placed on no evidence yet), so the whole log
    # is its first evidence and decides without a hold.
    shared, dedicated = cfg.pools()
    inputs = plan.placement_inputs(
        cfg.tenant(DeploymentMode.AUTO),
        traffic,
        DeploymentMode.SERVERLESS,
        shared=shared,
        dedicated=dedicated,
        cap=cap,
        cold_start=timedelta(seconds=cfg.engine.cold_start_s),
    )
    d = placement.decide(inputs, at)
    peak = traffic.peak
    lines += [
        f"offered load: mean {traffic.mean.requests_per_second:.2f} requests/s, busiest minute"
        f" {peak.requests_per_second:.2f} requests/s ({peak.tokens_per_second:,.0f} tokens/s);"
        f" active {traffic.active_fraction:.0%} of the time; one {cfg.prices.gpu_type} replica"
        f" ({cfg.engine.gpus_per_replica} GPU) does {cap.prefill_tokens_per_s:,.0f} prompt +"
        f" {cap.decode_tokens_per_s:,.0f} output tokens/s",
        f"recommended mode: {d.mode} ({d.reason}): {d.message}",
    ]
    if d.cost is None:
        return lines
    return lines + _spend_lines(cfg, inputs, d.cost, tps)


def _spend_lines(
    cfg: config.SimConfig,
    inputs: placement.PlacementInputs,
    proj: placement.CostProjection,
    tps: float,
) -> list[str]:
    """The recommendation's numbers: each mode's projected monthly spend, the chargeback, and
    the buyer's view (the token rate at which the dedicated replicas cost what the shared pool
    bills), so a reader can check the choice against their own prices."""
    p = cfg.prices
    node = p.gpus_per_node
    lines = [
        f"projected monthly GPU spend at this traffic (prices {p.name}:"
        f" {cost.money(p.shared_per_gpu_hour)}/GPU-h shared,"
        f" {cost.money(p.dedicated_per_gpu_hour)}/GPU-h dedicated in nodes of {node}):",
        f"  serverless  {cost.money(proj.serverless_monthly):>12}  (its own replicas on the shared"
        f" pool while active; cold starts {proj.cold_start_share:.1%} of active time)",
        f"  dedicated   {cost.money(proj.dedicated_monthly):>12}  ({proj.dedicated_replicas} x"
        f" {cfg.engine.gpus_per_replica} GPU, whole nodes, all month)",
        f"  hybrid      {cost.money(proj.hybrid_monthly):>12}  (floor"
        f" {proj.hybrid_floor_replicas} dedicated + shared overflow)",
    ]
    if proj.chargeback_monthly is not None:
        lines.append(
            f"chargeback: {cost.money(proj.chargeback_monthly)}/month at"
            f" ${p.chargeback_per_million_tokens:g}/1M tokens, what the shared pool bills the"
            " tenant (not part of spend)"
        )
    pool = inputs.dedicated
    assert pool is not None  # SimConfig.pools always has one
    gpu_hourly = cost.dedicated_cost(
        pool.gpus_held(proj.dedicated_replicas, cfg.engine.gpus_per_replica),
        pool.price_per_gpu_hour,
        1.0,
    )
    tpm = cost.crossover_tokens_per_minute(gpu_hourly, p.chargeback_per_million_tokens)
    lines.append(
        f"buyer's view: {proj.dedicated_replicas} dedicated replicas at"
        f" {cost.money(gpu_hourly)}/h cost what ${p.chargeback_per_million_tokens:g}/1M tokens"
        f" does at {math.floor(tpm):,} tokens/min; you run {tps * 60:,.0f} tokens/min"
    )
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", type=Path, nargs="?", help="request log CSV")
    parser.add_argument(
        "--prices",
        choices=sorted(config.PRICE_SETS),
        default="h100",
        help="GPU and chargeback prices for a log: h100 or a100 (default h100)",
    )
    parser.add_argument(
        "--gpus-per-node",
        type=flags.positive_int,
        default=None,
        help="GPUs per dedicated node, paid whole (default 1)",
    )
    parser.add_argument(
        "--hourly-rate", type=flags.positive_float, help="GPU $/hour, both pools (e.g. 4.00)"
    )
    parser.add_argument(
        "--hours", type=flags.positive_float, help="hours the GPU runs (default 730)"
    )
    parser.add_argument("--hours-per-day", type=hours_per_day, help="hours per day the GPU runs")
    parser.add_argument(
        "--price-per-request", type=flags.positive_float, help="serverless $/request"
    )
    parser.add_argument(
        "--price-per-1k-tokens", type=flags.positive_float, help="serverless $/1k tokens"
    )
    parser.add_argument(
        "--price-per-million-tokens",
        type=flags.positive_float,
        help="serverless $/1M tokens (for a log: the chargeback)",
    )
    parser.add_argument("--requests-per-day", type=flags.nonnegative_float, help="requests per day")
    parser.add_argument(
        "--tokens-per-request", type=flags.nonnegative_float, help="input+output tokens/request"
    )


def hours_per_day(text: str) -> float:
    """An argparse type: hours in a day, more than 0 and at most 24. E.g. ``"16"`` gives 16.0."""
    value = flags.positive_float(text)
    if value > 24:
        raise argparse.ArgumentTypeError(f"must be a number > 0 and <= 24, got {text!r}")
    return value


def build_config(args: argparse.Namespace) -> config.SimConfig:
    """The prices a log is advised at (:func:`tidepool.sim.config.for_prices`): the ``--prices``
    set, with ``--hourly-rate`` for both pools' GPUs and ``--price-per-million-tokens`` for the
    chargeback."""
    return config.for_prices(
        args.prices,
        shared_per_gpu_hour=args.hourly_rate,
        dedicated_per_gpu_hour=args.hourly_rate,
        chargeback_per_million_tokens=args.price_per_million_tokens,
        gpus_per_node=args.gpus_per_node,
    )


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    lines = seed_lines(args)
    if args.log is not None:
        try:
            lines += advise_log(args.log, cfg)
        except (OSError, ValueError) as exc:  # TraceError is a ValueError
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
