"""Summaries of simulation runs: the comparison table, the ratios and the targets they are held to.

Role: aggregate :class:`~tidepool.sim.engine.TenantRun` values per policy (summing tenants),
format them, and judge tidepool-auto against its targets (:func:`missed_targets`, what
``tidepool simulate`` prints and the benchmark exits on). Percentiles of queue wait are weighted
by request counts, with numpy.

Every policy is judged by one SLO rule, :func:`meets_slo`: a *tenant* meets it when its own p99
queue wait is at most ``slo_p99_s``, and a *policy* meets it only when every tenant does. A wait
pooled over tenants would let a busy tenant's fast requests hide a small tenant's slow ones.

This module must not run simulations or write files.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from tidepool.policy import cost
from tidepool.sim.engine import LateRequests, TenantRun

#: Tidepool auto may spend at most this much times the best static policy in hindsight.
MAX_VS_BEST_STATIC: Final = 1.10
#: Tidepool auto may spend at most this much times the per-minute lower bound.
MAX_VS_LOWER_BOUND: Final = 1.50
#: Shared engines with ``auto`` may spend at most this much times "every tenant on replicas of
#: its own" on a pool's long tail (the tenants outside its top 5 by tokens)...
MAX_TAIL_VS_OWN: Final = 0.25
#: ...and at most this much on the whole pool.
MAX_POOL_VS_OWN: Final = 1.0


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One row of the table: a policy summed over every tenant of a trace."""

    name: str
    gpu_hours: float
    spend: float  # GPU dollars, both pools
    spend_shared: float
    spend_dedicated: float
    chargeback: float  # billed to tenants for shared-pool tokens; not part of spend
    replica_starts: int
    worst_p99_wait_s: float  # the worst tenant's own p99
    worst_tenant: str
    tenants: int
    #: The tenants whose own p99 queue wait is over the SLO, worst first.
    missed: tuple[str, ...]
    requests: float
    slo_p99_s: float
    unserved: float = 0.0  # still queued when the drain stopped

    @property
    def tenants_meeting(self) -> int:
        return self.tenants - len(self.missed)

    @property
    def meets_slo(self) -> bool:
        """Every tenant's p99 queue wait is within the SLO."""
        return not self.missed


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


def tenant_p99_s(run: TenantRun) -> float:
    """One tenant's p99 queue wait in seconds (0 for a tenant with no requests).

    E.g. at ``dt = 5 s``, 990 requests admitted at once and 10 after 3 steps: p99 is 0 s; with
    11 after 3 steps it is 15 s.
    """
    return weighted_percentile(run.wait_weights, 99.0) * run.dt


def meets_slo(run: TenantRun, slo_p99_s: float) -> bool:
    """The one SLO rule, for one tenant: its own p99 queue wait is at most ``slo_p99_s``."""
    return tenant_p99_s(run) <= slo_p99_s


def missed_by_all(
    runs: Mapping[str, Sequence[TenantRun]], policies: Sequence[str], slo_p99_s: float
) -> tuple[str, ...]:
    """The tenants over the SLO under every one of ``policies`` (``runs[policy][k]`` is tenant
    ``k``'s run, in the same order for each): what no policy compared served in time. E.g.
    tenant ``a`` late under both policies and ``b`` only under one: ``("a",)``."""
    first = runs[policies[0]]
    return tuple(
        run.tenant
        for k, run in enumerate(first)
        if not any(meets_slo(runs[p][k], slo_p99_s) for p in policies)
    )


def summarize(name: str, runs: Sequence[TenantRun], slo_p99_s: float) -> PolicyResult:
    """One policy's row: its tenants' runs summed, each tenant judged by :func:`meets_slo`."""
    p99s = [tenant_p99_s(r) for r in runs]
    by_wait = sorted(range(len(runs)), key=lambda k: -p99s[k])  # worst first, ties in order
    worst = by_wait[0]
    return PolicyResult(
        name=name,
        gpu_hours=sum(r.gpu_hours for r in runs),
        spend=sum(r.spend for r in runs),
        spend_shared=sum(r.spend_shared for r in runs),
        spend_dedicated=sum(r.spend_dedicated for r in runs),
        chargeback=sum(r.chargeback for r in runs),
        replica_starts=sum(r.replica_starts for r in runs),
        worst_p99_wait_s=p99s[worst],
        worst_tenant=runs[worst].tenant,
        tenants=len(runs),
        missed=tuple(runs[k].tenant for k in by_wait if not meets_slo(runs[k], slo_p99_s)),
        requests=sum(r.requests for r in runs),
        slo_p99_s=slo_p99_s,
        unserved=sum(r.unserved for r in runs),
    )


def late_line(late: LateRequests, requests: float, slo_p99_s: float) -> str:
    """The share of ``requests`` over the SLO and its causes (:class:`LateRequests`).

    E.g. 1,500 of 100,000 late, 300 from zero and 1,200 while replicas loaded, SLO 10 s:
    ``"1.50% over 10s: 0.30% from zero, 1.20% while replicas loaded, 0.00% with none
    loading"``.
    """

    def pct(n: float) -> str:
        return f"{100.0 * n / requests:.2f}%" if requests > 0 else "-"

    return (
        f"{pct(late.total)} over {slo_p99_s:g}s: {pct(late.from_zero)} from zero,"
        f" {pct(late.while_loading)} while replicas loaded, {pct(late.none_loading)} with none"
        " loading"
    )


BOUND_NAME = "per-minute lower bound"


def table(results: Sequence[PolicyResult], lower_bound: float | None = None) -> str:
    """A fixed-width text table, one row per policy, spend and chargeback in separate columns.

    With ``lower_bound`` (the per-minute bound's spend), a last row shows it and a column gives
    each policy's spend divided by it.
    """
    head = (
        f"{'policy':<24} {'spend':>10} {'shared $':>10} {'dedic. $':>10} {'chargeback':>10}"
        f" {'GPU-h':>9} {'/bound':>7} {'SLO ok':>7} {'worst p99':>9} {'starts':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        bound = f"{cost.ratio(r.spend, lower_bound):.2f}" if lower_bound is not None else "-"
        slo = f"{r.tenants_meeting}/{r.tenants}"
        lines.append(
            f"{r.name:<24} {cost.money(r.spend):>10} {cost.money(r.spend_shared):>10}"
            f" {cost.money(r.spend_dedicated):>10} {cost.money(r.chargeback):>10}"
            f" {r.gpu_hours:>9.1f} {bound:>7} {slo:>7} {r.worst_p99_wait_s:>8.0f}s"
            f" {r.replica_starts:>7d}"
        )
    if lower_bound is not None:
        lines.append(f"{BOUND_NAME:<24} {cost.money(lower_bound):>10}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Ratios:
    """Tidepool auto's spend against each baseline (lower is better; targets: at most
    :data:`MAX_VS_BEST_STATIC` times the best static policy, at most :data:`MAX_VS_LOWER_BOUND`
    times the per-minute lower bound)."""

    vs_best_static: float
    vs_reactive: float
    vs_serverless: float
    vs_dedicated: float
    vs_lower_bound: float = math.nan

    def line(self) -> str:
        return (
            f"tidepool-auto spend / best static hybrid = {self.vs_best_static:.3f}"
            f" (target <= {MAX_VS_BEST_STATIC:.2f}); / per-minute lower bound ="
            f" {self.vs_lower_bound:.3f} (target <= {MAX_VS_LOWER_BOUND:.2f})\n"
            f"tidepool-auto spend / reactive = {self.vs_reactive:.3f};"
            f" / always-serverless = {self.vs_serverless:.3f};"
            f" / always-dedicated = {self.vs_dedicated:.3f}"
        )


def ratios(
    auto: PolicyResult,
    best_static: PolicyResult,
    reactive: PolicyResult,
    serverless: PolicyResult,
    dedicated: PolicyResult,
    *,
    lower_bound: float | None = None,
) -> Ratios:
    return Ratios(
        vs_best_static=cost.ratio(auto.spend, best_static.spend),
        vs_reactive=cost.ratio(auto.spend, reactive.spend),
        vs_serverless=cost.ratio(auto.spend, serverless.spend),
        vs_dedicated=cost.ratio(auto.spend, dedicated.spend),
        vs_lower_bound=math.nan if lower_bound is None else cost.ratio(auto.spend, lower_bound),
    )


def missed_targets(auto: PolicyResult, q: Ratios) -> list[str]:
    """The targets tidepool-auto misses on one comparison; empty when it meets them all.

    Three targets: spend at most :data:`MAX_VS_BEST_STATIC` times the best static policy, at most
    :data:`MAX_VS_LOWER_BOUND` times the per-minute lower bound (a ratio that is not a number
    counts as a miss), and every tenant within the SLO. A miss of the SLO names the tenants,
    worst first. E.g. ratios 1.23 and 1.40 with tenants ``a`` (p99 45 s, the worst) and ``b``
    over a 10 s SLO: ``["auto/static 1.230 > 1.1", "SLO: 2/16 tenants over 10s: a (worst, p99
    45s), b"]``.
    """
    out = []
    if not q.vs_best_static <= MAX_VS_BEST_STATIC:
        out.append(f"auto/static {q.vs_best_static:.3f} > {MAX_VS_BEST_STATIC:g}")
    if not q.vs_lower_bound <= MAX_VS_LOWER_BOUND:
        out.append(f"auto/bound {q.vs_lower_bound:.3f} > {MAX_VS_LOWER_BOUND:g}")
    if auto.missed:
        names = [f"{auto.missed[0]} (worst, p99 {auto.worst_p99_wait_s:.0f}s)", *auto.missed[1:]]
        out.append(
            f"SLO: {len(auto.missed)}/{auto.tenants} tenants over {auto.slo_p99_s:g}s:"
            f" {', '.join(names)}"
        )
    return out


@dataclass(frozen=True, slots=True)
class SharedRatios:
    """Shared engines with ``auto`` against the other ways to host one pool's LoRA tenants (lower
    is better; targets :data:`MAX_TAIL_VS_OWN`, :data:`MAX_POOL_VS_OWN` and
    :data:`MAX_VS_BEST_STATIC` against the best static split)."""

    tail_vs_own: float | None
    """None when the pool has no long tail (at most 5 tenants)."""
    pool_vs_own: float
    vs_best_split: float
    vs_lower_bound: float
    tail_floor_vs_own: float | None = None
    """The least ``tail_vs_own`` any fleet could reach with spend apportioned by tokens (the
    per-minute lower bound's share); above the target, the target is out of any policy's reach."""

    def line(self) -> str:
        floor = (
            ""
            if self.tail_floor_vs_own is None
            else f", floor {self.tail_floor_vs_own:.3f} at the per-minute lower bound"
        )
        tail = (
            "no long tail"
            if self.tail_vs_own is None
            else f"long tail {self.tail_vs_own:.3f} (target <= {MAX_TAIL_VS_OWN:.2f}{floor})"
        )
        return (
            f"shared + auto spend / own replicas: {tail}, whole pool {self.pool_vs_own:.3f}"
            f" (target <= {MAX_POOL_VS_OWN:.2f}); / best static split {self.vs_best_split:.3f}"
            f" (target <= {MAX_VS_BEST_STATIC:.2f}); / per-minute lower bound"
            f" {self.vs_lower_bound:.3f}"
        )


def missed_shared_targets(auto: PolicyResult, q: SharedRatios) -> list[str]:
    """The shared-engine targets ``shared + auto`` misses on one pool; empty when it meets all.

    E.g. a long tail at 0.31 of own replicas and tenant ``a`` over a 10 s SLO (p99 20 s):
    ``["tail/own 0.310 > 0.25", "SLO: 1/40 tenants over 10s: a (worst, p99 20s)"]``. A ratio
    that is not a number counts as a miss.
    """
    out = []
    for name, value, bound in (
        ("tail/own", math.nan if q.tail_vs_own is None else q.tail_vs_own, MAX_TAIL_VS_OWN),
        ("pool/own", q.pool_vs_own, MAX_POOL_VS_OWN),
        ("auto/split", q.vs_best_split, MAX_VS_BEST_STATIC),
    ):
        if name == "tail/own" and q.tail_vs_own is None:
            continue  # no long tail to judge
        if not value <= bound:
            floor = q.tail_floor_vs_own if name == "tail/own" else None
            out.append(
                f"{name} {value:.3f} > {bound:g}"
                + (f" (floor {floor:.3f})" if floor is not None and floor > bound else "")
            )
    if auto.missed:
        names = [f"{auto.missed[0]} (worst, p99 {auto.worst_p99_wait_s:.0f}s)", *auto.missed[1:4]]
        more = ", ..." if len(auto.missed) > 4 else ""
        out.append(
            f"SLO: {len(auto.missed)}/{auto.tenants} tenants over {auto.slo_p99_s:g}s:"
            f" {', '.join(names)}{more}"
        )
    return out
