"""Benchmark: every shared trace, at demand x1, x10 and x100, under both price sets.

Why a sweep: the policy's defaults must hold on traffic they were not fitted to, so they are
judged on every shared trace and demand scale together, and the worst row is what counts. Each
row runs ``tidepool simulate``'s comparison (:func:`tidepool.sim.simulate.compare`) with the same
defaults and checks the three targets of :func:`tidepool.sim.report.missed_targets`:

* tidepool-auto spends at most ``report.MAX_VS_BEST_STATIC`` (1.10) times the best static
  policy in hindsight;
* tidepool-auto spends at most ``report.MAX_VS_LOWER_BOUND`` (1.50) times the per-minute lower
  bound;
* every tenant's p99 queue wait is within the SLO under tidepool-auto.

The table is printed worst row first (rows that failed to run, then by auto / best static), with
both denominators (the best static spend and the lower bound) and the tenants that miss the SLO,
worst first. Exit code: 3 when a row failed to run (the other rows are still printed), else 1
when any row misses a target, 2 when a trace is missing, 0 when every row meets every target.

Cost: on two cores the 24 rows are run two at a time (``--jobs``). ServeGen rows keep the
loader's default tenants (the 8 busiest clients plus 8 sampled) but simulate only the first
``--servegen-hours`` of the day (default 6 of 24) so the sweep finishes in minutes; the output
says so. ``--quick`` runs a subset: scales x1 and x10, the h100 prices, ServeGen cut to 2 h.

Run: ``.venv/bin/python e2e/bench/bench_simulate.py [--quick] [--jobs 2] [--servegen-hours 6]``.
"""

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from tidepool.api.v1alpha1 import ScalingSpec
from tidepool.sim import config, engine, report, simulate, traces

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rows import NO_TRACE, exit_code, finite, money, num

#: ``shared/`` sits beside the repository, as the unit tests find it.
TRACES: Final = Path(__file__).resolve().parents[3] / "shared" / "traces"
FILES: Final = (
    Path("azure_llm_2023") / "AzureLLMInferenceTrace_conv.csv",
    Path("azure_llm_2023") / "AzureLLMInferenceTrace_code.csv",
    Path("servegen_alibaba") / "servegen_mlarge_day0_subset.csv.gz",
    Path("servegen_alibaba") / "servegen_client_rate_windows.csv.gz",
)
SCALES: Final = (1.0, 10.0, 100.0)


@dataclass(frozen=True, slots=True)
class Job:
    path: Path
    scale: float
    prices: str
    hours: float | None
    #: ``spec.scaling`` fields set for every policy (``--scaling``), by their CRD names.
    scaling: tuple[tuple[str, str], ...] = ()
    #: The engine's model load in seconds (``--cold-start``); None keeps the default.
    cold_start_s: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One trace x scale x price set, as the table prints it; ``error`` when it failed to run."""

    trace: str
    scale: float
    prices: str
    hours: float = math.nan
    vs_static: float = math.nan
    vs_bound: float = math.nan
    tenants: int = 0
    auto_ok: int = 0
    static_ok: int = 0
    #: Tenants over the SLO under every policy compared (none of them reaches).
    missed_by_all: int = 0
    worst_p99_s: float = math.nan
    auto_spend: float = math.nan
    static_spend: float = math.nan
    bound: float = math.nan
    seconds: float = 0.0
    #: The targets missed (:func:`tidepool.sim.report.missed_targets`).
    misses: tuple[str, ...] = ()
    #: The late requests of the auto tenants over the SLO, by cause, and all their requests.
    late: engine.LateRequests = field(default_factory=engine.LateRequests)
    late_of: float = 0.0
    #: Those tenants counted by the cause of most of their late requests (from zero, while
    #: loading, none loading): the request sums above weigh the busiest tenant most.
    late_tenants: tuple[int, int, int] = (0, 0, 0)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return f"ERROR: {self.error}"
        return "; ".join(self.misses) or "-"

    @property
    def static_vs_bound(self) -> float:
        """Best static in hindsight over the per-minute lower bound: where it is above
        ``report.MAX_VS_LOWER_BOUND`` too, the bound is out of reach of every static choice."""
        return self.static_spend / self.bound if self.bound > 0 else math.nan


def trace_name(path: Path) -> str:
    """The name a workload of ``path`` gets: ``servegen_x.csv.gz`` -> ``servegen_x``."""
    return path.name.removesuffix(".gz").removesuffix(".csv")


def failed_row(job: Job, exc: BaseException) -> Row:
    """The row of a job that raised: named by its trace, with the error on one line."""
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return Row(trace=trace_name(job.path), scale=job.scale, prices=job.prices, error=message)


def with_scaling(cfg: config.SimConfig, fields: tuple[tuple[str, str], ...]) -> config.SimConfig:
    """``cfg`` with ``spec.scaling`` fields overridden, validated as the API server would."""
    if not fields:
        return cfg
    spec = {**cfg.scaling.model_dump(by_alias=True), **dict(fields)}
    return replace(cfg, scaling=ScalingSpec.model_validate(spec))


def scaling_field(text: str) -> tuple[str, str]:
    """``maxScaleUpRate=10`` -> ``("maxScaleUpRate", "10")`` (argparse type)."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(
            f"expected FIELD=VALUE, e.g. maxScaleUpRate=10, got {text!r}"
        )
    return key, value


def job_config(job: Job) -> config.SimConfig:
    """The config one row runs: the job's price set and model load, its ``--scaling``."""
    return with_scaling(config.for_prices(job.prices, cold_start_s=job.cold_start_s), job.scaling)


def run_job(job: Job) -> Row:
    """Load one trace at one scale and compare every policy on it (runs in a worker)."""
    began = time.monotonic()
    cfg = job_config(job)
    workload = traces.load(job.path, cfg.capacity(), hours=job.hours, scale=job.scale)
    cmp = simulate.compare(workload, cfg)
    auto, static = cmp.results["tidepool-auto"], cmp.results["best-static-hybrid"]
    q = cmp.ratios
    over = [r for r in cmp.runs["tidepool-auto"] if r.tenant in auto.missed]
    return Row(
        trace=workload.name,
        scale=job.scale,
        prices=job.prices,
        hours=workload.hours,
        vs_static=q.vs_best_static,
        vs_bound=q.vs_lower_bound,
        tenants=auto.tenants,
        auto_ok=auto.tenants_meeting,
        static_ok=static.tenants_meeting,
        missed_by_all=len(cmp.missed_by_every_policy),
        worst_p99_s=auto.worst_p99_wait_s,
        auto_spend=auto.spend,
        static_spend=static.spend,
        bound=cmp.lower_bound,
        seconds=time.monotonic() - began,
        misses=tuple(report.missed_targets(auto, q)),
        late=sum((r.late for r in over), engine.LateRequests()),
        late_of=sum(r.requests for r in over),
        late_tenants=by_main_cause([r.late for r in over]),
    )


def by_main_cause(lates: list[engine.LateRequests]) -> tuple[int, int, int]:
    """How many of ``lates`` have most of their requests from zero, while replicas loaded, and
    with none loading (a tie goes to the earlier cause; one with none late counts nowhere)."""
    counts = [0, 0, 0]
    for late in lates:
        parts = (late.from_zero, late.while_loading, late.none_loading)
        if late.total > 0:
            counts[parts.index(max(parts))] += 1
    return counts[0], counts[1], counts[2]


def table(rows: list[Row]) -> str:
    """The summary, worst row first: failed rows, then by auto / best static, auto / bound."""
    head = (
        f"{'trace':<30} {'scale':>5} {'prices':>6} {'hours':>5} {'auto/static':>11}"
        f" {'auto/bound':>10} {'static/bound':>12} {'auto $':>9} {'static $':>9} {'bound $':>9}"
        f" {'auto SLO':>8}"
        f" {'static SLO':>10} {'none meet':>9} {'worst p99':>9} {'secs':>5}  missed"
    )
    lines = [head, "-" * len(head)]
    order = sorted(rows, key=lambda r: (r.error is None, -finite(r.vs_static), -finite(r.vs_bound)))
    for r in order:
        ran = r.error is None
        lines.append(
            f"{r.trace[:30]:<30} {f'x{r.scale:g}':>5} {r.prices:>6} {num(r.hours, '.1f'):>5}"
            f" {num(r.vs_static, '.3f'):>11} {num(r.vs_bound, '.3f'):>10}"
            f" {num(r.static_vs_bound, '.3f'):>12}"
            f" {money(r.auto_spend):>9} {money(r.static_spend):>9} {money(r.bound):>9}"
            f" {f'{r.auto_ok}/{r.tenants}' if ran else '-':>8}"
            f" {f'{r.static_ok}/{r.tenants}' if ran else '-':>10}"
            f" {r.missed_by_all if ran else '-':>9}"
            f" {num(r.worst_p99_s, '.0f', 's'):>9} {r.seconds:>5.0f}  {r.status}"
        )
    return "\n".join(lines)


def bound_summary(rows: list[Row]) -> str:
    """The rows where auto spends over ``report.MAX_VS_LOWER_BOUND`` times the per-minute lower
    bound, and on how many of them best static in hindsight does too: the bound has no cold
    starts and no headroom, so on bursty traffic no policy that serves the bursts comes near it.
    E.g. ``auto over 1.5x the per-minute lower bound on 2 rows; best static in hindsight on 1 of
    them (1.70x to 1.70x)``."""
    limit = report.MAX_VS_LOWER_BOUND
    over = [r for r in rows if r.error is None and r.vs_bound > limit]
    if not over:
        return f"auto within {limit:g}x the per-minute lower bound on every row"
    static = sorted(r.static_vs_bound for r in over if r.static_vs_bound > limit)
    spread = f" ({static[0]:.2f}x to {static[-1]:.2f}x)" if static else ""
    return (
        f"auto over {limit:g}x the per-minute lower bound on {len(over)} rows; best static in"
        f" hindsight on {len(static)} of them{spread}"
    )


def late_summary(rows: list[Row]) -> str:
    """Why the tenants over the SLO were over it, summed over every row: their late requests by
    cause (:class:`tidepool.sim.engine.LateRequests`) as a share of all their requests."""
    ran = [r for r in rows if r.error is None]
    late = sum((r.late for r in ran), engine.LateRequests())
    over = sum(r.auto_ok < r.tenants for r in ran)
    if not late.total:
        return "no tenant over the SLO was late"
    slo = config.SimConfig().slo_p99_s
    tenants = [sum(r.late_tenants[k] for r in ran) for k in range(3)]
    return (
        f"tenants over the SLO ({over} rows): "
        + report.late_line(late, sum(r.late_of for r in ran), slo)
        + f"; by the cause of most of a tenant's late requests: {tenants[0]} from zero,"
        f" {tenants[1]} while replicas loaded, {tenants[2]} with none loading;"
        f" {sum(r.missed_by_all for r in ran)} over it under every policy compared (best static"
        " in hindsight and always-dedicated at the peak included)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES, help="the shared traces directory")
    parser.add_argument("--quick", action="store_true", help="x1 and x10, h100, ServeGen 2 h")
    parser.add_argument("--jobs", type=int, default=2, help="rows simulated at once (default 2)")
    parser.add_argument(
        "--servegen-hours",
        type=float,
        default=None,
        help="hours of each ServeGen day to simulate (default 6; --quick 2; 24 for all)",
    )
    parser.add_argument(
        "--scaling",
        type=scaling_field,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a spec.scaling default for every policy, e.g. maxScaleUpRate=10 (repeatable):"
        " how a candidate default is swept",
    )
    parser.add_argument(
        "--cold-start",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the engine's model load (default 60): e.g. 10 asks what a model load no longer"
        " than the SLO would leave of the misses",
    )
    args = parser.parse_args(argv)
    scaling = tuple(args.scaling)
    try:
        with_scaling(config.for_prices("h100"), scaling)
    except ValueError as exc:
        print(f"bench_simulate: --scaling: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    scales = SCALES[:2] if args.quick else SCALES
    price_sets = ("h100",) if args.quick else tuple(sorted(config.PRICE_SETS, reverse=True))
    sg_hours = args.servegen_hours or (2.0 if args.quick else 6.0)
    jobs: list[Job] = []
    for rel in FILES:
        path = args.traces / rel
        if not path.exists():
            print(f"bench_simulate: {path}: missing", file=sys.stderr)
            return NO_TRACE
        hours = sg_hours if path.name.startswith("servegen") else None
        jobs += [
            Job(path, s, p, hours, scaling, args.cold_start) for s in scales for p in price_sets
        ]
    print(
        f"{len(jobs)} rows: {len(FILES)} traces x scales {', '.join(f'x{s:g}' for s in scales)}"
        f" x prices {', '.join(price_sets)}; ServeGen: first {sg_hours:g} h of the day, default"
        f" tenants (8 busiest + 8 sampled); {args.jobs} at a time"
        + "".join(f"; {k}={v}" for k, v in scaling)
        + (f"; cold start {args.cold_start:g}s" if args.cold_start is not None else ""),
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    rows: list[Row] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for done in as_completed(futures):
            try:
                row = done.result()
            except Exception as exc:  # one failed row must not lose the others
                row = failed_row(futures[done], exc)
            rows.append(row)
            print(
                f"[{len(rows)}/{len(jobs)}] {row.trace} x{row.scale:g} {row.prices}:"
                f" auto/static {row.vs_static:.3f}, auto/bound {row.vs_bound:.3f},"
                f" SLO {row.auto_ok}/{row.tenants} ({row.seconds:.0f}s) {row.status}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - began
    print(
        f"ServeGen rows simulate the first {sg_hours:g} h of the day with the default tenants;"
        " Azure rows the whole trace."
    )
    print(table(rows))
    print(late_summary(rows))
    print(bound_summary(rows))
    good = [r for r in rows if r.error is None and not r.misses]
    failed = sum(r.error is not None for r in rows)
    print(
        f"{len(good)}/{len(rows)} rows meet every target (auto <= {report.MAX_VS_BEST_STATIC:g}x"
        f" best static, <= {report.MAX_VS_LOWER_BOUND:g}x the per-minute lower bound, every"
        f" tenant within the SLO)"
        + (f"; {failed} failed to run" if failed else "")
        + f"; {elapsed:.0f}s wall clock with {args.jobs} jobs"
    )
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())
