"""Benchmark: every shared trace, at demand x1, x10 and x100, under both price sets.

Why a sweep: the policy's defaults must hold on traffic they were not fitted to, so they are
judged on every shared trace and demand scale together, and the worst row is what counts. Each
row runs ``tidepool simulate``'s comparison (:func:`tidepool.sim.simulate.compare`) with the same
defaults and checks three targets:

* tidepool-auto spends at most ``report.MAX_VS_BEST_STATIC`` (1.10) times the best static
  policy in hindsight;
* tidepool-auto spends at most ``report.MAX_VS_LOWER_BOUND`` (1.50) times the per-minute lower
  bound;
* every tenant's p99 queue wait is within the SLO under tidepool-auto.

The table is printed worst row first (by auto / best static), and the exit code is 1 when any row
misses a target, 2 when a trace is missing.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tidepool.sim import config, report, simulate, traces

#: ``shared/`` sits beside the repository, as the unit tests find it.
TRACES: Final = Path(__file__).resolve().parents[3] / "shared" / "traces"
FILES: Final = (
    Path("azure_llm_2023") / "AzureLLMInferenceTrace_conv.csv",
    Path("azure_llm_2023") / "AzureLLMInferenceTrace_code.csv",
    Path("servegen_alibaba") / "servegen_mlarge_day0_subset.csv.gz",
    Path("servegen_alibaba") / "servegen_client_rate_windows.csv.gz",
)
SCALES: Final = (1.0, 10.0, 100.0)
MAX_VS_STATIC: Final = report.MAX_VS_BEST_STATIC
MAX_VS_BOUND: Final = report.MAX_VS_LOWER_BOUND


@dataclass(frozen=True, slots=True)
class Job:
    path: Path
    scale: float
    prices: str
    hours: float | None


@dataclass(frozen=True, slots=True)
class Row:
    """One trace x scale x price set, as the table prints it."""

    trace: str
    scale: float
    prices: str
    hours: float
    vs_static: float
    vs_bound: float
    tenants: int
    auto_ok: int
    static_ok: int
    worst_p99_s: float
    auto_spend: float
    static_spend: float
    bound: float
    seconds: float

    @property
    def misses(self) -> list[str]:
        out = []
        if not self.vs_static <= MAX_VS_STATIC:
            out.append(f"auto/static>{MAX_VS_STATIC:g}")
        if not self.vs_bound <= MAX_VS_BOUND:
            out.append(f"auto/bound>{MAX_VS_BOUND:g}")
        if self.auto_ok < self.tenants:
            out.append("SLO")
        return out


def run_job(job: Job) -> Row:
    """Load one trace at one scale and compare every policy on it (runs in a worker)."""
    began = time.monotonic()
    cfg = config.for_prices(job.prices)
    workload = traces.load(job.path, cfg.capacity(), hours=job.hours, scale=job.scale)
    cmp = simulate.compare(workload, cfg)
    auto, static = cmp.results["tidepool-auto"], cmp.results["best-static-hybrid"]
    q = cmp.ratios
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
        worst_p99_s=auto.worst_p99_wait_s,
        auto_spend=auto.spend,
        static_spend=static.spend,
        bound=cmp.lower_bound,
        seconds=time.monotonic() - began,
    )


def table(rows: list[Row]) -> str:
    """The summary, worst row first by auto / best static."""
    head = (
        f"{'trace':<34} {'scale':>5} {'prices':>6} {'hours':>5} {'auto/static':>11}"
        f" {'auto/bound':>10} {'auto SLO':>8} {'static SLO':>10} {'worst p99':>9}"
        f" {'auto spend':>11} {'secs':>5}  missed"
    )
    lines = [head, "-" * len(head)]
    order = sorted(rows, key=lambda r: (-_finite(r.vs_static), -_finite(r.vs_bound)))
    for r in order:
        lines.append(
            f"{r.trace[:34]:<34} {f'x{r.scale:g}':>5} {r.prices:>6} {r.hours:>5.1f}"
            f" {r.vs_static:>11.3f} {r.vs_bound:>10.3f} {f'{r.auto_ok}/{r.tenants}':>8}"
            f" {f'{r.static_ok}/{r.tenants}':>10} {r.worst_p99_s:>8.0f}s"
            f" {f'${r.auto_spend:,.0f}':>11} {r.seconds:>5.0f}  {', '.join(r.misses) or '-'}"
        )
    return "\n".join(lines)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e300


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
    args = parser.parse_args(argv)
    scales = SCALES[:2] if args.quick else SCALES
    price_sets = ("h100",) if args.quick else tuple(sorted(config.PRICE_SETS, reverse=True))
    sg_hours = args.servegen_hours or (2.0 if args.quick else 6.0)
    jobs: list[Job] = []
    for rel in FILES:
        path = args.traces / rel
        if not path.exists():
            print(f"bench_simulate: {path}: missing", file=sys.stderr)
            return 2
        hours = sg_hours if path.name.startswith("servegen") else None
        jobs += [Job(path, s, p, hours) for s in scales for p in price_sets]
    print(
        f"{len(jobs)} rows: {len(FILES)} traces x scales {', '.join(f'x{s:g}' for s in scales)}"
        f" x prices {', '.join(price_sets)}; ServeGen: first {sg_hours:g} h of the day, default"
        f" tenants (8 busiest + 8 sampled); {args.jobs} at a time",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    rows: list[Row] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for done in as_completed(futures):
            row = done.result()
            rows.append(row)
            print(
                f"[{len(rows)}/{len(jobs)}] {row.trace} x{row.scale:g} {row.prices}:"
                f" auto/static {row.vs_static:.3f}, auto/bound {row.vs_bound:.3f},"
                f" SLO {row.auto_ok}/{row.tenants} ({row.seconds:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - began
    print(
        f"ServeGen rows simulate the first {sg_hours:g} h of the day with the default tenants;"
        " Azure rows the whole trace."
    )
    print(table(rows))
    missed = [r for r in rows if r.misses]
    print(
        f"{len(rows) - len(missed)}/{len(rows)} rows meet every target (auto <= {MAX_VS_STATIC:g}x"
        f" best static, <= {MAX_VS_BOUND:g}x the per-minute lower bound, every tenant within the"
        f" SLO); {elapsed:.0f}s wall clock with {args.jobs} jobs"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
