"""Summaries of simulation runs: the comparison table and the ratios the benchmark checks.

Role: aggregate :class:`~tidepool.sim.engine.TenantRun` values per policy (summing tenants) and
format them. Percentiles of queue wait are weighted by request counts, with numpy.

This module must not run simulations or write files.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tidepool.policy import cost
from tidepool.sim.engine import TenantRun


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One row of the table: a policy summed over every tenant of a trace."""

    name: str
    gpu_hours: float
    cost: float
    dedicated_cost: float
    token_cost: float
    replica_starts: int
    p50_wait_s: float
    p99_wait_s: float
    slo_misses: float
    requests: float
    slo_p99_s: float

    @property
    def meets_slo(self) -> bool:
        return self.p99_wait_s <= self.slo_p99_s


def weighted_percentile(weights: np.ndarray, q: float) -> int:
    """Index of the ``q``-th percentile of a histogram whose bin ``i`` holds ``weights[i]``.

    E.g. weights ``[98, 1, 1]`` (98 requests waited 0 steps, one 1 step, one 2 steps): p50 is 0,
    p99 is 1.
    """
    cum = np.cumsum(weights)
    total = float(cum[-1]) if len(cum) else 0.0
    if total <= 0:
        return 0
    return int(np.searchsorted(cum, q / 100.0 * total - 1e-9 * total))


def summarize(
    name: str, runs: Sequence[TenantRun], slo_wait_s: float, slo_p99_s: float
) -> PolicyResult:
    dt = runs[0].dt
    size = max(len(r.wait_weights) for r in runs)
    waits = np.zeros(size)
    for r in runs:
        waits[: len(r.wait_weights)] += r.wait_weights
    over = math.floor(slo_wait_s / dt) + 1
    return PolicyResult(
        name=name,
        gpu_hours=sum(r.gpu_hours for r in runs),
        cost=sum(r.cost for r in runs),
        dedicated_cost=sum(r.dedicated_cost for r in runs),
        token_cost=sum(r.token_cost for r in runs),
        replica_starts=sum(r.replica_starts for r in runs),
        p50_wait_s=weighted_percentile(waits, 50.0) * dt,
        p99_wait_s=weighted_percentile(waits, 99.0) * dt,
        slo_misses=float(waits[over:].sum()),
        requests=sum(r.requests for r in runs),
        slo_p99_s=slo_p99_s,
    )


def table(results: Sequence[PolicyResult]) -> str:
    """A fixed-width text table, one row per policy."""
    head = (
        f"{'policy':<26} {'GPU-h':>9} {'cost':>11} {'GPU $':>10} {'token $':>10}"
        f" {'starts':>7} {'p50 wait':>9} {'p99 wait':>9} {'SLO miss':>9} {'SLO':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:<26} {r.gpu_hours:>9.1f} {cost.money(r.cost):>11}"
            f" {cost.money(r.dedicated_cost):>10} {cost.money(r.token_cost):>10}"
            f" {r.replica_starts:>7d} {r.p50_wait_s:>8.0f}s {r.p99_wait_s:>8.0f}s"
            f" {r.slo_misses:>9.0f} {'ok' if r.meets_slo else 'MISS':>4}"
        )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Ratios:
    """Tidepool auto's cost against each baseline (lower is better; 1.10 is the target vs best
    static)."""

    vs_best_static: float
    vs_reactive: float
    vs_serverless: float
    vs_dedicated: float

    def line(self) -> str:
        return (
            f"tidepool-auto cost / best static hybrid = {self.vs_best_static:.3f}"
            f" (target <= 1.10); / reactive = {self.vs_reactive:.3f};"
            f" / always-serverless = {self.vs_serverless:.3f};"
            f" / always-dedicated = {self.vs_dedicated:.3f}"
        )


def ratios(
    auto: PolicyResult,
    best_static: PolicyResult,
    reactive: PolicyResult,
    serverless: PolicyResult,
    dedicated: PolicyResult,
) -> Ratios:
    return Ratios(
        vs_best_static=cost.ratio(auto.cost, best_static.cost),
        vs_reactive=cost.ratio(auto.cost, reactive.cost),
        vs_serverless=cost.ratio(auto.cost, serverless.cost),
        vs_dedicated=cost.ratio(auto.cost, dedicated.cost),
    )
