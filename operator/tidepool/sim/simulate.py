"""``tidepool simulate TRACE``: replay a traffic trace through Tidepool's policies and baselines.

Role: the program. It loads a trace (:mod:`tidepool.sim.traces`), runs every tenant under
Tidepool auto and the four baselines (:mod:`tidepool.sim.baselines`) in the simulator
(:mod:`tidepool.sim.engine`), prints the table and the cost ratios, and writes PNG plots.

The "best static hybrid in hindsight" is found per tenant: every dedicated floor from 0 (all
serverless) to the peak is priced analytically on the trace's offered load (floor GPU-hours plus
the tokens above the floor), and the two cheapest floors are then simulated for real; the cheaper
one that meets the SLO wins (the cheaper one if neither does).

This module must not implement policy: every scaling and placement choice comes from
``tidepool.policy`` or from a baseline controller.
"""

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.policy import cost
from tidepool.sim import baselines, config, engine, plots, report, traces

POLICIES = (
    "tidepool-auto",
    "always-serverless",
    "always-dedicated",
    "best-static-hybrid",
    "reactive-keda-hpa",
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every run of a trace, and the per-policy summaries."""

    workload: traces.Workload
    runs: dict[str, list[engine.TenantRun]]
    results: dict[str, report.PolicyResult]
    floors: dict[str, int]  # tenant -> best static floor (-1: always-dedicated)
    decisions: dict[str, list[str]]  # tenant -> tidepool-auto placement moves
    seconds: float

    @property
    def ratios(self) -> report.Ratios:
        r = self.results
        return report.ratios(
            r["tidepool-auto"],
            r["best-static-hybrid"],
            r["reactive-keda-hpa"],
            r["always-serverless"],
            r["always-dedicated"],
        )


def hybrid_floor_costs(
    load: traces.TenantLoad, cfg: config.SimConfig, dt: float, max_floor: int
) -> np.ndarray:
    """Analytic cost of each static floor 0..max_floor on the offered load (no queueing).

    A floor of ``f`` replicas carries up to ``f x overflowConcurrencyPerReplica`` in flight; the
    share of each step's tokens above that is billed per token.
    """
    offered = np.maximum(engine.offered_concurrency(load, dt, smooth_s=dt), 1e-12)
    floors = np.arange(max_floor + 1)
    limit = cfg.hybrid.overflow_concurrency_per_replica
    spill = np.clip(offered[None, :] - floors[:, None] * limit, 0.0, None) / offered[None, :]
    tokens = (np.minimum(spill, 1.0) * load.tokens[None, :]).sum(axis=1)
    hours = len(load.arrivals) * dt / 3600.0
    gpu = floors * cfg.engine.gpus_per_replica * cfg.prices.dedicated_per_gpu_hour * hours
    return np.asarray(gpu + tokens / 1e6 * cfg.prices.shared_per_million_tokens)


def _static_key(run: engine.TenantRun, cfg: config.SimConfig) -> tuple[bool, float]:
    one = report.summarize("x", [run], cfg.slo_queue_wait_s, cfg.slo_p99_s)
    return (not one.meets_slo, one.cost)


def compare(
    workload: traces.Workload,
    cfg: config.SimConfig,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run every policy on every tenant of ``workload``."""
    began = time.monotonic()
    dt, start = workload.dt, workload.start
    runs: dict[str, list[engine.TenantRun]] = {p: [] for p in POLICIES}
    floors: dict[str, int] = {}
    decisions: dict[str, list[str]] = {}
    for k, load in enumerate(workload.tenants, start=1):
        t0 = time.monotonic()

        def sim(ctrl: engine.Controller, load: traces.TenantLoad = load) -> engine.TenantRun:
            return engine.simulate(load, ctrl, cfg, dt=dt, start=start)

        auto = baselines.Tidepool(cfg, DeploymentMode.AUTO)
        runs["tidepool-auto"].append(sim(auto))
        decisions[load.name] = [f"{when:%H:%M} {why}: {msg}" for when, why, msg in auto.decisions]
        serverless = sim(baselines.Tidepool(cfg, DeploymentMode.SERVERLESS))
        runs["always-serverless"].append(serverless)
        peak = float(engine.offered_concurrency(load, dt).max(initial=0.0))
        runs["always-dedicated"].append(sim(baselines.FixedDedicated(cfg.replicas_for(peak))))
        runs["reactive-keda-hpa"].append(sim(baselines.Reactive(cfg)))

        limit = cfg.hybrid.overflow_concurrency_per_replica
        est = hybrid_floor_costs(load, cfg, dt, max(1, int(np.ceil(peak / limit))))
        candidates = [int(f) for f in np.argsort(est, kind="stable")[:2]]
        # Floors 0 (all serverless) and the peak (all dedicated) are static choices too.
        tried = [(serverless, 0), (runs["always-dedicated"][-1], -1)]
        tried += [(sim(baselines.StaticHybrid(cfg, f)), f) for f in candidates if f > 0]
        best_run, best_floor = min(tried, key=lambda item: _static_key(item[0], cfg))
        runs["best-static-hybrid"].append(replace(best_run, controller="best-static-hybrid"))
        floors[load.name] = best_floor
        if progress is not None:
            progress(
                f"[{k}/{len(workload.tenants)}] {load.name}: {load.requests:,.0f} requests,"
                f" auto {cost.money(runs['tidepool-auto'][-1].cost)}, best floor {best_floor}"
                f" ({time.monotonic() - t0:.1f}s)"
            )
    results = {
        name: report.summarize(name, group, cfg.slo_queue_wait_s, cfg.slo_p99_s)
        for name, group in runs.items()
    }
    return Comparison(
        workload=workload,
        runs=runs,
        results=results,
        floors=floors,
        decisions=decisions,
        seconds=time.monotonic() - began,
    )


def render(cmp: Comparison, cfg: config.SimConfig) -> str:
    """The text printed by ``tidepool simulate``."""
    w = cmp.workload
    lines = [
        f"trace {w.name}: {w.note}",
        f"prices: dedicated {cost.money(cfg.prices.dedicated_per_gpu_hour)}/GPU-h, serverless"
        f" {cost.money(cfg.prices.shared_per_million_tokens)}/1M tokens; cold start"
        f" {cfg.engine.cold_start_s:g}s; batch {cfg.engine.max_num_seqs}; SLO p99 queue wait"
        f" <= {cfg.slo_p99_s:g}s (miss: wait > {cfg.slo_queue_wait_s:g}s)",
        "",
        report.table([cmp.results[p] for p in POLICIES]),
        "",
        cmp.ratios.line(),
    ]
    moved = {t: d for t, d in cmp.decisions.items() if d}
    if moved:
        lines.append("")
        lines.append("tidepool-auto placement moves:")
        for tenant, items in list(moved.items())[:10]:
            for item in items[:4]:
                lines.append(f"  {tenant} {item}")
    lines.append(f"({cmp.seconds:.1f}s)")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", type=Path, help="a request-log CSV or a ServeGen rate file")
    parser.add_argument("--out", type=Path, default=None, help="directory for PNG plots")
    parser.add_argument(
        "--pool-prices",
        default=None,
        metavar="DED,TOKENS",
        help="dedicated $/GPU-hour and shared $/1M tokens, e.g. 4.00,0.20 (seeds 004 and 002)",
    )
    parser.add_argument("--hours", type=float, default=None, help="simulate only the first hours")
    parser.add_argument("--dt", type=float, default=None, help="step seconds (1 logs, 5 ServeGen)")
    parser.add_argument("--top", type=int, default=8, help="ServeGen: busiest clients to include")
    parser.add_argument("--sample", type=int, default=8, help="ServeGen: other clients sampled")
    parser.add_argument("--seed", type=int, default=0, help="ServeGen: arrival sampling seed")
    parser.add_argument("--cold-start", type=float, default=None, help="model load seconds")


def build_config(args: argparse.Namespace) -> config.SimConfig:
    cfg = config.SimConfig()
    if args.pool_prices:
        try:
            ded, tok = (float(v) for v in args.pool_prices.split(","))
        except ValueError:
            raise SystemExit(
                f"--pool-prices: expected DED,TOKENS such as 4.00,0.20, got {args.pool_prices!r}"
            ) from None
        cfg = replace(
            cfg,
            prices=replace(
                cfg.prices,
                dedicated_per_gpu_hour=ded,
                shared_per_gpu_hour=ded,
                shared_per_million_tokens=tok,
            ),
        )
    if args.cold_start is not None:
        cfg = replace(cfg, engine=replace(cfg.engine, cold_start_s=args.cold_start))
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        workload = traces.load(
            args.trace,
            cfg.engine,
            dt=args.dt,
            hours=args.hours,
            top=args.top,
            sample=args.sample,
            seed=args.seed,
        )
    except (OSError, traces.TraceError) as exc:
        say(f"tidepool simulate: {exc}")
        return 2
    say(f"simulating {workload.name}: {len(workload.tenants)} tenants, {workload.steps:,} steps")
    cmp = compare(workload, cfg, progress=say)
    print(render(cmp, cfg))
    if args.out is not None:
        for path in plots.draw(cmp.runs, args.out, workload.name):
            say(f"wrote {path}")
    return 0
