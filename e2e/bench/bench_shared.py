"""Benchmark: shared LoRA engines on every ServeGen model pool.

Why: a platform hosting many fine-tunes saves money only when they share engines. Each row takes
one model pool of ServeGen's per-client rates, makes every client a LoRA tenant of the pool's
base model, and runs :func:`tidepool.sim.shared_compare.compare_pool` (what ``tidepool simulate
--shared-engines`` prints): every tenant on replicas of its own, every tenant on one SharedEngine,
the SharedEngine with ``auto`` promotions, the best static split and the per-minute lower bound.
It checks the targets of :func:`tidepool.sim.report.missed_shared_targets`:

* the long tail (tenants outside the pool's top 5 by tokens) spends at most
  ``report.MAX_TAIL_VS_OWN`` (0.25) times what it spends on replicas of its own;
* the whole pool spends at most ``report.MAX_POOL_VS_OWN`` (1.0) times that, and at most
  ``report.MAX_VS_BEST_STATIC`` (1.10) times the best static split;
* every tenant's p99 queue wait is within the SLO.

Beside a missed SLO, "why held" splits the request-steps the missing tenants waited on the fleet
(shared + auto) by :data:`tidepool.sim.shared.HOLD_CAUSES`: no replica serving the adapter yet,
every serving replica's seats busy, or free seats in batches already running ``maxLoras`` adapters.

Exit code: 3 when a row failed to run (the others are still printed), else 1 when a row misses a
target, 2 when the trace is missing, 0 when every row meets every target.

Cost: the pools are simulated ``--jobs`` at a time (default 2, the development machines' cores),
over the first ``--hours`` of the 14-day file (default 6, as ``bench_simulate`` cuts ServeGen);
the output says so. ``make bench`` runs it; CI does not.

Run: ``.venv/bin/python e2e/bench/bench_shared.py [--hours 6] [--jobs 2] [--pools m-small,...]``.
"""

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tidepool.sim import config, report, shared, shared_compare, simulate, traces

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rows import NO_TRACE, exit_code, finite, money, num

#: ``shared/`` sits beside the repository, as the unit tests find it.
TRACE: Final = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "traces"
    / "servegen_alibaba"
    / "servegen_client_rate_windows.csv.gz"
)


@dataclass(frozen=True, slots=True)
class Row:
    """One model pool, as the table prints it; ``error`` when it failed to run."""

    pool: str
    tenants: int = 0
    tail: int = 0
    own: float = math.nan
    shared_spend: float = math.nan
    auto: float = math.nan
    split: float = math.nan
    split_k: int = -1
    bound: float = math.nan
    tail_own: float = math.nan
    tail_auto: float = math.nan
    tail_shared: float = math.nan
    tail_vs_own: float | None = math.nan
    tail_floor: float | None = math.nan
    pool_vs_own: float = math.nan
    vs_split: float = math.nan
    vs_bound: float = math.nan
    slo_ok: int = 0
    own_slo_ok: int = 0
    shared_slo_ok: int = 0
    missed_by_all: int = 0
    worst_p99_s: float = math.nan
    promoted: int = 0
    held_missed: tuple[float, ...] = ()
    """Share of the SLO-missing tenants' held request-steps by ``shared.HOLD_CAUSES``."""
    seconds: float = 0.0
    misses: tuple[str, ...] = ()
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return f"ERROR: {self.error}"
        return "; ".join(self.misses) or "-"

    @property
    def why_held(self) -> str:
        """E.g. ``seats 94%, maxLoras 6%``: what held the tenants that missed the SLO."""
        parts = [
            f"{cause} {share:.0%}"
            for cause, share in zip(shared.HOLD_CAUSES, self.held_missed, strict=False)
            if share >= 0.005
        ]
        return ", ".join(parts) or "-"


def run_pool(path: Path, pool: str, hours: float) -> Row:
    """Load ``path``'s first ``hours`` and compare every alternative on ``pool`` (in a worker)."""
    began = time.monotonic()
    cfg = config.for_prices("h100")
    workload = traces.load(
        path, cfg.capacity(), hours=hours, top=simulate.ALL_CLIENTS, sample=0, seed=0
    )
    loads = shared_compare.by_pool(workload)[pool]
    cmp = shared_compare.compare_pool(
        pool, loads, cfg, shared.FleetSettings(), dt=workload.dt, start=workload.start
    )
    q = cmp.ratios
    auto = cmp.result(shared_compare.AUTO)
    own = cmp.result(shared_compare.OWN)
    missed = [cmp.tenants.index(name) for name in auto.missed]
    return Row(
        pool=pool,
        tenants=len(cmp.tenants),
        tail=len(cmp.tail),
        own=cmp.spend(shared_compare.OWN),
        shared_spend=cmp.spend(shared_compare.SHARED),
        auto=cmp.spend(shared_compare.AUTO),
        split=cmp.spend(shared_compare.SPLIT),
        split_k=cmp.split,
        bound=cmp.bound,
        tail_own=cmp.spend(shared_compare.OWN, cmp.tail),
        tail_auto=cmp.spend(shared_compare.AUTO, cmp.tail),
        tail_shared=cmp.spend(shared_compare.SHARED, cmp.tail),
        tail_vs_own=q.tail_vs_own,
        tail_floor=q.tail_floor_vs_own,
        pool_vs_own=q.pool_vs_own,
        vs_split=q.vs_best_split,
        vs_bound=q.vs_lower_bound,
        slo_ok=auto.tenants_meeting,
        own_slo_ok=own.tenants_meeting,
        shared_slo_ok=cmp.result(shared_compare.SHARED).tenants_meeting,
        missed_by_all=len(cmp.missed_by_every_alternative),
        worst_p99_s=auto.worst_p99_wait_s,
        promoted=sum(1 for p in cmp.fleets[shared_compare.AUTO].promoted_at if p),
        held_missed=tuple(float(x) for x in cmp.fleets[shared_compare.AUTO].held_shares(missed)),
        seconds=time.monotonic() - began,
        misses=tuple(report.missed_shared_targets(auto, q)),
    )


def pools_of(path: Path, hours: float) -> list[str]:
    """The model pools with traffic in the first ``hours`` of a ServeGen rate file."""
    cfg = config.for_prices("h100")
    workload = traces.load(path, cfg.capacity(), hours=hours, top=simulate.ALL_CLIENTS, sample=0)
    return list(shared_compare.by_pool(workload))


def table(rows: list[Row]) -> str:
    """One line per pool, worst first (failed rows, then by whole pool / own replicas). Beside
    shared + auto, the columns "shared $", "tail shr$" and "SLO shr" give every tenant on the
    SharedEngine without promotions, and "SLO own" every tenant on replicas of its own; "miss
    all" counts the tenants over the SLO under every alternative (none of them reaches). "floor"
    is the least tail/own any fleet could reach (:func:`shared_compare.tail_spend_floor`): above
    the target, no policy meets it."""
    head = (
        f"{'pool':<12} {'tenants':>7} {'tail/own':>8} {'floor':>6} {'pool/own':>8} {'/split':>6}"
        f" {'/bound':>6} {'own $':>8} {'shared $':>8} {'auto $':>8} {'split $':>8} {'k':>2}"
        f" {'bound $':>8} {'tail own$':>9} {'tail auto$':>10} {'tail shr$':>9}"
        f" {'SLO auto':>8} {'SLO own':>7} {'SLO shr':>7} {'miss all':>8}"
        f" {'worst p99':>9} {'promoted':>8} {'secs':>5} {'why held':<26} missed"
    )
    lines = [head, "-" * len(head)]
    order = sorted(rows, key=lambda r: (r.error is None, -finite(r.pool_vs_own)))
    for r in order:
        ran = r.error is None
        lines.append(
            f"{r.pool:<12} {r.tenants:>7} {num(r.tail_vs_own, '.3f'):>8}"
            f" {num(r.tail_floor, '.3f'):>6} {num(r.pool_vs_own, '.3f'):>8}"
            f" {num(r.vs_split, '.3f'):>6}"
            f" {num(r.vs_bound, '.2f'):>6} {money(r.own):>8} {money(r.shared_spend):>8}"
            f" {money(r.auto):>8} {money(r.split):>8} {r.split_k if ran else '-':>2}"
            f" {money(r.bound):>8} {money(r.tail_own):>9} {money(r.tail_auto):>10}"
            f" {money(r.tail_shared):>9} {f'{r.slo_ok}/{r.tenants}' if ran else '-':>8}"
            f" {f'{r.own_slo_ok}/{r.tenants}' if ran else '-':>7}"
            f" {f'{r.shared_slo_ok}/{r.tenants}' if ran else '-':>7}"
            f" {r.missed_by_all if ran else '-':>8}"
            f" {num(r.worst_p99_s, '.0f') + 's':>9} {r.promoted:>8} {r.seconds:>5.0f}"
            f" {r.why_held:<26} {r.status}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE, help="ServeGen's per-client rates")
    parser.add_argument("--hours", type=float, default=6.0, help="hours of the file (default 6)")
    parser.add_argument("--jobs", type=int, default=2, help="pools simulated at once (default 2)")
    parser.add_argument("--pools", default=None, help="only these pools, comma-separated")
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"bench_shared: {args.trace}: missing", file=sys.stderr)
        return NO_TRACE
    pools = pools_of(args.trace, args.hours)
    if args.pools:
        pools = [p for p in args.pools.split(",") if p in pools]
    print(
        f"{len(pools)} pools of {args.trace.name}: every client a LoRA tenant of its pool's base"
        f" model; first {args.hours:g} h; h100 prices; {args.jobs} at a time",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    rows: list[Row] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as executor:
        futures = {executor.submit(run_pool, args.trace, p, args.hours): p for p in pools}
        for done in as_completed(futures):
            try:
                row = done.result()
            except Exception as exc:  # one failed pool must not lose the others
                message = " ".join(f"{type(exc).__name__}: {exc}".split())
                row = Row(pool=futures[done], error=message)
            rows.append(row)
            print(
                f"[{len(rows)}/{len(pools)}] {row.pool}: tail/own {num(row.tail_vs_own, '.3f')},"
                f" pool/own {num(row.pool_vs_own, '.3f')}, /split {num(row.vs_split, '.3f')},"
                f" SLO {row.slo_ok}/{row.tenants} ({row.seconds:.0f}s) {row.status}",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"ServeGen {args.trace.name}, first {args.hours:g} h of the 14 days, every client of a"
        " pool a LoRA tenant of one base model; SharedEngine defaults of tidepool simulate"
        f" --shared-engines ({shared.FleetSettings()}); h100 prices; targets: tail/own <="
        f" {report.MAX_TAIL_VS_OWN:g}, pool/own <= {report.MAX_POOL_VS_OWN:g}, auto/split <="
        f" {report.MAX_VS_BEST_STATIC:g}, every tenant's p99 queue wait within the SLO"
    )
    print(table(rows))
    good = sum(1 for r in rows if r.error is None and not r.misses)
    print(f"{good}/{len(rows)} pools meet every target; {time.monotonic() - began:.0f}s wall clock")
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())
