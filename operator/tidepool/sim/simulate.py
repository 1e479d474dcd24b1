"""``tidepool simulate TRACE``: replay a traffic trace through Tidepool's policies and baselines.

Role: the program. It loads a trace (:mod:`tidepool.sim.traces`), runs every tenant under
Tidepool auto and the four baselines (:mod:`tidepool.sim.baselines`) in the simulator
(:mod:`tidepool.sim.engine`), prints the table and the spend ratios, and writes PNG plots.

Like for like: every policy pays GPU-hours on both pools (spend), is judged by the same SLO rule
(each tenant's own p99 queue wait, see :mod:`tidepool.sim.report`), and serves what is still in
flight when the trace ends. The per-token chargeback is reported beside spend, never in it.

The "best static hybrid in hindsight" is found per tenant by simulation (no analytic shortcut):
every dedicated floor from 0 (all serverless: the shared-pool autoscaler) up to the floor whose
replicas carry the trace's peak, plus always-dedicated sized for the peak as the placement policy
sizes its dedicated option (:func:`always_dedicated_replicas`), and the cheapest that meets the
SLO wins (the cheapest overall if none does). See :func:`best_static`.

With ``--shared-engines`` it compares, per model pool, hosting every client of the pool as a
LoRA tenant of one base model: on replicas of their own, on one SharedEngine fleet, on the fleet
with ``auto`` promotions, and the best static split (:mod:`tidepool.sim.shared_compare`).

This module must not implement policy: every scaling and placement choice comes from
``tidepool.policy`` or from a baseline controller.
"""

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np

from tidepool.api.v1alpha1 import MAX_REPLICAS, DeploymentMode
from tidepool.policy import cost, placement, pools
from tidepool.sim import (
    baselines,
    config,
    engine,
    flags,
    plots,
    report,
    shared,
    shared_compare,
    traces,
)

#: ``--top`` when every client is wanted (``--shared-engines`` on ServeGen).
ALL_CLIENTS: Final = 1_000_000

POLICIES = (
    "tidepool-auto",
    "always-serverless",
    "always-dedicated",
    "best-static-hybrid",
    "reactive-keda-hpa",
)
#: Simulate every candidate floor when there are at most this many (floors 0..F plus
#: always-dedicated); above it, :func:`best_static` refines a coarse grid.
EXHAUSTIVE_CANDIDATES: Final = 24
#: Floors simulated per round of the grid refinement.
GRID_POINTS: Final = 9
#: ``best_static``'s floor for the always-dedicated candidate.
ALWAYS_DEDICATED: Final = -1


@dataclass(frozen=True, slots=True)
class StaticChoice:
    """The best static policy of one tenant, and how it was found."""

    run: engine.TenantRun
    floor: int  # ALWAYS_DEDICATED, or the hybrid floor (0: all serverless)
    max_floor: int
    simulated: int  # candidates simulated (the others were pruned or skipped by the grid)
    exhaustive: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every run of a trace, and the per-policy summaries."""

    workload: traces.Workload
    runs: dict[str, list[engine.TenantRun]]
    results: dict[str, report.PolicyResult]
    static: dict[str, StaticChoice]  # tenant -> best static choice
    decisions: dict[str, list[str]]  # tenant -> tidepool-auto placement moves
    lower_bounds: dict[str, float]  # tenant -> per-minute lower bound on spend
    seconds: float

    @property
    def lower_bound(self) -> float:
        return sum(self.lower_bounds.values())

    @property
    def missed_by_every_policy(self) -> tuple[str, ...]:
        """The tenants over the SLO under every policy compared, ``always-dedicated`` sized for
        the peak and the best static choice in hindsight included: what no policy here served
        in time (e.g. a burst within one step that outruns even the peak's replicas' seats)."""
        return report.missed_by_all(self.runs, POLICIES, self.results["tidepool-auto"].slo_p99_s)

    @property
    def ratios(self) -> report.Ratios:
        r = self.results
        return report.ratios(
            r["tidepool-auto"],
            r["best-static-hybrid"],
            r["reactive-keda-hpa"],
            r["always-serverless"],
            r["always-dedicated"],
            lower_bound=self.lower_bound,
        )


def _static_key(run: engine.TenantRun, cfg: config.SimConfig) -> tuple[bool, float]:
    """Order static candidates: those meeting the SLO first, then by spend."""
    return (not report.meets_slo(run, cfg.slo_p99_s), run.spend)


def best_static(
    sim: Callable[[engine.Controller], engine.TenantRun],
    cfg: config.SimConfig,
    peak: float,
    serverless: engine.TenantRun,
    dedicated: engine.TenantRun,
    *,
    progress: Callable[[str], None] | None = None,
) -> StaticChoice:
    """The cheapest static policy meeting the SLO, by simulation.

    Candidates: hybrid floors ``0..F`` (floor 0 is the ``serverless`` run already made) where
    ``F = ceil(peak / overflowConcurrencyPerReplica)`` carries the peak on the floor alone, plus
    the ``dedicated`` run (always-dedicated sized for the peak). Ordered by (misses the SLO,
    spend).

    Method: with at most :data:`EXHAUSTIVE_CANDIDATES` candidates (``F <= 22``), every floor is
    considered, so the answer is exact. Above that, a grid of :data:`GRID_POINTS` floors spanning
    the bracket (first ``0..F``) is evaluated, the bracket shrinks to the best grid floor's two
    neighbours, and this repeats until the bracket has at most :data:`GRID_POINTS` floors, which
    are all evaluated. Each round shrinks the bracket 4x, so ``F = 1000`` takes about five
    rounds (~40 evaluations, not 1,001). The grid's answer is exact when spend, among the floors
    that meet the SLO, falls then rises with the floor (each floor replica adds a fixed
    GPU-hour price while the overflow it removes shrinks), which is the shape these runs have;
    otherwise it is a local optimum within one grid step. Every simulation is memoized.

    Exact pruning: a floor of ``f`` replicas is paid for the whole trace whatever the overflow
    does, so its spend is at least ``f``'s dedicated GPUs x price x trace hours. A floor whose
    bound already reaches the spend of a candidate that meets the SLO cannot win and is not
    simulated. E.g. 24 h at $7.79/GPU-hour: once a floor meets the SLO for $700, floors of 4 and
    more (``4 x 7.79 x 24 = $747.84``) are skipped.

    Worked example: peak 150 in flight, overflow 56 per replica: ``F = ceil(150/56) = 3``, so five
    candidates (floors 0-3 and always-dedicated), all considered.
    """
    limit = cfg.hybrid.overflow_concurrency_per_replica
    # Only floors a spec can state: minReplicas is at most MAX_REPLICAS.
    top = min(MAX_REPLICAS, max(1, math.ceil(peak / limit - 1e-9)))
    hours = serverless.trace_steps * serverless.dt / 3600.0
    gpr = cfg.engine.gpus_per_replica
    _, pool = engine.pool_prices(cfg)
    tried: dict[int, engine.TenantRun] = {0: serverless, ALWAYS_DEDICATED: dedicated}

    def floor_spend(floor: int) -> float:
        return cost.dedicated_cost(pool.gpus_held(floor, gpr), pool.price_per_gpu_hour, hours)

    def best_feasible() -> float:
        ok = [r.spend for r in tried.values() if report.meets_slo(r, cfg.slo_p99_s)]
        return min(ok, default=math.inf)

    def key(floor: int) -> tuple[bool, float]:
        if floor not in tried:
            bound = floor_spend(floor)
            if bound >= best_feasible():
                return (False, bound)  # no better than a run that meets the SLO: skip it
            tried[floor] = sim(baselines.StaticHybrid(cfg, floor))
        return _static_key(tried[floor], cfg)

    exhaustive = top + 2 <= EXHAUSTIVE_CANDIDATES
    if exhaustive:
        for f in range(1, top + 1):
            key(f)
    else:
        lo, hi = 0, top
        while hi - lo + 1 > GRID_POINTS:
            grid = sorted({round(x) for x in np.linspace(lo, hi, GRID_POINTS)})
            at = min(range(len(grid)), key=lambda j: key(grid[j]))
            lo, hi = grid[max(0, at - 1)], grid[min(len(grid) - 1, at + 1)]
            if progress is not None:
                progress(f"  floors 0..{top}: grid best {grid[at]}, refining {lo}..{hi}")
        for f in range(lo, hi + 1):
            key(f)
    best = min(tried, key=lambda f: _static_key(tried[f], cfg))
    return StaticChoice(
        run=replace(tried[best], controller="best-static-hybrid"),
        floor=best,
        max_floor=top,
        simulated=len(tried),
        exhaustive=exhaustive,
    )


def always_dedicated_replicas(cfg: config.SimConfig, peak: float) -> int:
    """Replicas of the always-dedicated baseline for ``peak`` requests in flight.

    The size of the placement policy's dedicated option for the simulated ``auto`` tenant
    (:func:`tidepool.policy.placement.dedicated_replicas` at
    :func:`tidepool.policy.pools.target_utilization`): the peak in replicas of work is the
    in-flight peak over the engine's seats (a request holds a seat for ``seats x
    seconds_per_request``). E.g. 150 in flight on 64 seats is 2.34 replicas of work;
    at the default 56 of 64 seats, ``ceil(2.34 / 0.875) = 3`` replicas.

    At most :data:`~tidepool.api.v1alpha1.MAX_REPLICAS`, like every floor best static tries: a
    baseline is a spec a user could apply, and the API refuses more replicas than that.
    """
    tenant = cfg.tenant(DeploymentMode.AUTO)
    peak_work = peak / cfg.capacity().max_num_seqs
    sized = placement.dedicated_replicas(
        peak_work, pools.target_utilization(tenant), tenant.spec.scaling.min_replicas
    )
    return min(MAX_REPLICAS, sized)


def compare(
    workload: traces.Workload,
    cfg: config.SimConfig,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run every policy on every tenant of ``workload``."""
    began = time.monotonic()
    dt, start = workload.dt, workload.start
    runs: dict[str, list[engine.TenantRun]] = {p: [] for p in POLICIES}
    static: dict[str, StaticChoice] = {}
    decisions: dict[str, list[str]] = {}
    bounds: dict[str, float] = {}
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
        dedicated = sim(baselines.FixedDedicated(always_dedicated_replicas(cfg, peak)))
        runs["always-dedicated"].append(dedicated)
        runs["reactive-keda-hpa"].append(sim(baselines.Reactive(cfg)))
        choice = best_static(sim, cfg, peak, serverless, dedicated, progress=progress)
        runs["best-static-hybrid"].append(choice.run)
        static[load.name] = choice
        bounds[load.name] = engine.lower_bound_spend(load, cfg, dt)
        if progress is not None:
            floor = "always-dedicated" if choice.floor < 0 else f"floor {choice.floor}"
            progress(
                f"[{k}/{len(workload.tenants)}] {load.name}: {load.requests:,.0f} requests,"
                f" auto spend {cost.money(runs['tidepool-auto'][-1].spend)}, best static"
                f" {floor} of 0..{choice.max_floor} ({choice.simulated} simulated,"
                f" {'all' if choice.exhaustive else 'grid'}) ({time.monotonic() - t0:.1f}s)"
            )
    results = {name: report.summarize(name, group, cfg.slo_p99_s) for name, group in runs.items()}
    return Comparison(
        workload=workload,
        runs=runs,
        results=results,
        static=static,
        decisions=decisions,
        lower_bounds=bounds,
        seconds=time.monotonic() - began,
    )


def prices_line(prices: config.Prices) -> str:
    node = prices.gpus_per_node
    return (
        f"prices {prices.name}: spend = GPU-hours, shared pool"
        f" {cost.money(prices.shared_per_gpu_hour)}/GPU-h, dedicated"
        f" {cost.money(prices.dedicated_per_gpu_hour)}/GPU-h in whole nodes of {node}"
        f" GPU{'s' if node > 1 else ''}; chargeback (billed to tenants, not part of spend)"
        f" ${prices.chargeback_per_million_tokens:g}/1M shared-pool tokens"
    )


def render(cmp: Comparison, cfg: config.SimConfig) -> str:
    """The text printed by ``tidepool simulate``."""
    w = cmp.workload
    auto = cmp.results["tidepool-auto"]
    missed = report.missed_targets(auto, cmp.ratios)
    drains = [r.drain_s for group in cmp.runs.values() for r in group]
    unserved = sum(r.unserved for r in cmp.results.values())
    lines = [
        f"trace {w.name}: {w.note}",
        prices_line(cfg.prices),
        f"engine: cold start {cfg.engine.cold_start_s:g}s, batch {cfg.engine.max_num_seqs},"
        f" {cfg.engine.gpus_per_replica} GPU/replica. SLO: every tenant's own p99 queue wait"
        f" <= {cfg.slo_p99_s:g}s",
        f"after the trace: in-flight requests are served and paid for (drain up to"
        f" {engine.DRAIN_CAP_S / 3600:g} h; longest {max(drains, default=0.0):.0f}s"
        + (f"; {unserved:,.0f} still queued at the cap" if unserved else "")
        + ")",
        "",
        report.table([cmp.results[p] for p in POLICIES], cmp.lower_bound),
        "",
        cmp.ratios.line(),
        f"tidepool-auto: {auto.tenants_meeting}/{auto.tenants} tenants within the SLO"
        f" (worst {auto.worst_tenant}: p99 {auto.worst_p99_wait_s:.0f}s)",
        "targets: " + ("; ".join(missed) if missed else "all met"),
    ]
    runs = {r.tenant: r for r in cmp.runs["tidepool-auto"]}
    for tenant in auto.missed[:10]:
        run = runs[tenant]
        lines.append(f"  {tenant}: {report.late_line(run.late, run.requests, cfg.slo_p99_s)}")
    lines.append("best static per tenant (floor of 0..max; -1 = always-dedicated):")
    items = [f"{t} {c.floor}/{c.max_floor}" for t, c in cmp.static.items()]
    for j in range(0, len(items), 6):
        lines.append("  " + ", ".join(items[j : j + 6]))
    moved = {t: d for t, d in cmp.decisions.items() if d}
    if moved:
        lines.append("")
        lines.append("tidepool-auto placement moves:")
        for tenant, entries in list(moved.items())[:10]:
            for item in entries[:4]:
                lines.append(f"  {tenant} {item}")
    lines.append(f"({cmp.seconds:.1f}s)")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    """The flags of ``tidepool simulate``, in the order ``--help`` lists them."""
    parser.add_argument("trace", type=Path, help="a request-log CSV or a ServeGen rate file")
    parser.add_argument("--out", type=Path, default=None, help="directory for PNG plots")
    _price_flags(parser)
    _trace_flags(parser)
    _shared_engine_flags(parser)


def _price_flags(parser: argparse.ArgumentParser) -> None:
    """What GPUs and tokens cost: the price set, its overrides and the dedicated node size."""
    parser.add_argument(
        "--prices",
        choices=sorted(config.PRICE_SETS),
        default="h100",
        help="price set: h100 ($7.79/GPU-hour) or a100 ($4.00/GPU-hour), both with a $0.20/1M"
        " token chargeback (default h100)",
    )
    parser.add_argument(
        "--pool-prices",
        type=flags.pool_prices,
        default=None,
        metavar="[SHARED,]DED,TOKENS",
        help="override the set: $/GPU-hour of the shared pool (default: DED), of the dedicated"
        " pool, and the chargeback $/1M tokens, e.g. 4.00,0.20",
    )
    parser.add_argument(
        "--gpus-per-node",
        type=flags.positive_int,
        default=None,
        help="GPUs per dedicated node, paid whole (default 1: single-GPU instance types)",
    )


def _trace_flags(parser: argparse.ArgumentParser) -> None:
    """Which part of the trace is replayed and how: its window, step, demand scale, the
    ServeGen clients chosen, and the engine's model load."""
    parser.add_argument("--hours", type=flags.positive_float, help="simulate only the first hours")
    parser.add_argument("--dt", type=flags.positive_float, help="step seconds (1 logs, 5 ServeGen)")
    parser.add_argument(
        "--scale",
        type=flags.positive_float,
        default=1.0,
        help="multiply the trace's demand (arrival rates) by this (default 1)",
    )
    parser.add_argument(
        "--top",
        type=flags.nonnegative_int,
        default=8,
        help="ServeGen: busiest clients to include",
    )
    parser.add_argument(
        "--sample",
        type=flags.nonnegative_int,
        default=8,
        help="ServeGen: other clients sampled",
    )
    parser.add_argument("--seed", type=int, default=0, help="ServeGen: arrival sampling seed")
    parser.add_argument("--cold-start", type=flags.positive_float, help="model load seconds")


def _shared_engine_flags(parser: argparse.ArgumentParser) -> None:
    """``--shared-engines`` and the SharedEngine's settings (:class:`shared.FleetSettings`), in
    a group of their own because they only apply to that comparison."""
    lora = parser.add_argument_group(
        "shared engines",
        "--shared-engines: every client of each model pool (a ServeGen file: all of them,"
        " --top and --sample do not apply) becomes a LoRA tenant of the pool's base model, and"
        " each pool is compared on own replicas, one SharedEngine, the SharedEngine with auto"
        " promotions, the best static split and the per-minute lower bound",
    )
    lora.add_argument(
        "--shared-engines", action="store_true", help="compare shared LoRA engines per pool"
    )
    lora.add_argument(
        "--pools",
        default=None,
        metavar="POOL[,POOL...]",
        help="only these model pools (default: every pool of the trace)",
    )
    defaults = shared.FleetSettings()
    lora.add_argument(
        "--max-loras",
        type=flags.positive_int,
        default=defaults.max_loras,
        help=f"adapters in one batch, vLLM's --max-loras (default {defaults.max_loras})",
    )
    lora.add_argument(
        "--max-cpu-loras",
        type=flags.positive_int,
        default=None,
        help="adapters a replica holds, vLLM's --max-cpu-loras (default: every tenant's)",
    )
    lora.add_argument(
        "--fleet-min-replicas",
        type=flags.nonnegative_int,
        default=defaults.min_replicas,
        help="warm replicas the SharedEngine keeps, its scaling.minReplicas"
        f" (default {defaults.min_replicas}; the CRD's default is 0)",
    )
    lora.add_argument(
        "--adapter-rank",
        type=flags.positive_int,
        default=defaults.adapter_rank,
        help=f"the tenants' LoRA rank (default {defaults.adapter_rank})",
    )


def build_config(args: argparse.Namespace) -> config.SimConfig:
    """The config the flags ask for (:func:`tidepool.sim.config.for_prices`)."""
    shared, dedicated, tokens = args.pool_prices or (None, None, None)
    return config.for_prices(
        args.prices,
        shared_per_gpu_hour=shared,
        dedicated_per_gpu_hour=dedicated,
        chargeback_per_million_tokens=tokens,
        gpus_per_node=args.gpus_per_node,
        cold_start_s=args.cold_start,
    )


def check_out_dir(out: Path) -> None:
    """Fail before simulating if ``--out`` cannot receive the plots: create it, write a probe.

    Raises ``ValueError`` naming the flag, the path and why.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".tidepool-probe-"):
            pass
    except OSError as exc:
        raise ValueError(
            f"--out: {str(out)!r} must be a writable directory ({exc.strerror or exc})"
        ) from None


def select_pools(
    groups: dict[str, list[traces.TenantLoad]], wanted: str | None
) -> dict[str, list[traces.TenantLoad]]:
    """The pools ``--pools`` names (all when None), in the trace's order.

    Raises ``ValueError`` naming the flag, the unknown pool and the pools there are, e.g.
    ``--pools: no pool 'm-huge' in the trace; pools: m-large, m-mid``.
    """
    if wanted is None:
        return groups
    names = [p.strip() for p in wanted.split(",") if p.strip()]
    for name in names:
        if name not in groups:
            raise ValueError(
                f"--pools: no pool {name!r} in the trace; pools: {', '.join(groups) or 'none'}"
            )
    if not names:
        raise ValueError(f"--pools: expected POOL[,POOL...], got {wanted!r}")
    return {name: groups[name] for name in names}


def run_shared(
    args: argparse.Namespace,
    cfg: config.SimConfig,
    workload: traces.Workload,
    say: Callable[[str], None],
) -> int:
    """``--shared-engines``: every pool of ``workload`` compared (:mod:`shared_compare`)."""
    try:
        fleet = shared.FleetSettings(
            max_loras=args.max_loras,
            max_cpu_loras=args.max_cpu_loras,
            adapter_rank=args.adapter_rank,
            min_replicas=args.fleet_min_replicas,
        )
        groups = select_pools(shared_compare.by_pool(workload), args.pools)
    except ValueError as exc:
        say(f"tidepool simulate: {exc}")
        return 2
    if not groups:
        say(f"tidepool simulate: {args.trace}: no tenant sent a request")
        return 2
    print(f"trace {workload.name}: {workload.note}")
    print(prices_line(cfg.prices))
    print(
        f"engine: cold start {cfg.engine.cold_start_s:g}s, batch {cfg.engine.max_num_seqs},"
        f" {cfg.engine.gpus_per_replica} GPU/replica. SLO: every tenant's own p99 queue wait"
        f" <= {cfg.slo_p99_s:g}s. Spend on a SharedEngine: its GPU-hours apportioned by tokens"
    )
    for k, (pool, loads) in enumerate(groups.items(), start=1):
        say(f"[{k}/{len(groups)}] pool {pool}: {len(loads)} LoRA tenants")
        cmp = shared_compare.compare_pool(
            pool, loads, cfg, fleet, dt=workload.dt, start=workload.start, progress=say
        )
        print()
        print(shared_compare.render(cmp, fleet), flush=True)
        if args.out is not None:
            for path in plots.draw_shared(cmp, args.out, workload.name):
                say(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    sharing = bool(getattr(args, "shared_engines", False))
    try:
        cfg = build_config(args)
        if args.out is not None:
            check_out_dir(args.out)
        workload = traces.load(
            args.trace,
            cfg.capacity(),
            dt=args.dt,
            hours=args.hours,
            top=ALL_CLIENTS if sharing else args.top,
            sample=0 if sharing else args.sample,
            seed=args.seed,
            scale=args.scale,
        )
    except (OSError, ValueError) as exc:  # TraceError is a ValueError
        say(f"tidepool simulate: {exc}")
        return 2
    if not workload.tenants:
        say(f"tidepool simulate: {args.trace}: no tenants to simulate")
        return 2
    if sharing:
        return run_shared(args, cfg, workload, say)
    say(f"simulating {workload.name}: {len(workload.tenants)} tenants, {workload.steps:,} steps")
    cmp = compare(workload, cfg, progress=say)
    print(render(cmp, cfg))
    if args.out is not None:
        for path in plots.draw(cmp.runs, args.out, workload.name):
            say(f"wrote {path}")
    return 0
