"""``tidepool simulate --shared-engines``: one base model's LoRA tenants, five ways to host them.

Role: for one group of tenants (on ServeGen, every client of one model pool, as LoRA tenants of
that pool's base model), run and compare:

* **own replicas**: every tenant on replicas of its own, as today: each one the per-tenant
  simulation of :mod:`tidepool.sim.engine` under Tidepool ``auto`` (the operator's plan);
* **shared engine**: every tenant on one SharedEngine fleet (:func:`tidepool.sim.shared
  .simulate_fleet`);
* **shared + auto**: the fleet, with ``auto`` tenants promoted to replicas of their own (and
  demoted back) by the placement policy with the SharedEngine as their serverless option, as the
  operator's plan does (:mod:`tidepool.sim.shared`). The steps a tenant spends on its own
  replicas are simulated with the per-tenant simulation in the mode placement chose (dedicated,
  or hybrid at its floor) from the step those replicas are Ready, started warm as the
  make-before-break move starts them, and pay the model load of that start (their first
  replicas for ``cold_start_s``);
* **best static split** in hindsight: the ``k`` tenants with the most tokens on replicas of
  their own (their own-replica runs) and the rest on the fleet, for ``k = 0..split_max``; the
  cheapest that keeps every tenant within the SLO wins (the cheapest overall if none does). Only
  that family is searched: the other ``2^n`` splits are not;
* **the per-minute lower bound**: :func:`tidepool.sim.engine.lower_bound_spend` of all the
  tenants' load as one, the cheapest pool for each minute's offered work with no cold start,
  no adapter limit and no headroom.

Each is judged as :mod:`tidepool.sim.report` judges the per-tenant comparison: spend (GPU-hours;
the fleet's apportioned to tenants by tokens), chargeback beside it, and every tenant's own p99
queue wait against the SLO. The *long tail* is every tenant outside the :data:`TOP` with the most
tokens.

This module must not read files or implement policy.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Final

import numpy as np

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.policy import cost
from tidepool.sim import baselines, config, engine, report, shared, traces

#: Tenants counted as the head of a pool; the others are its long tail.
TOP: Final = 5
#: The largest static split searched: the ``k`` tenants with the most tokens on their own.
SPLIT_MAX: Final = 5
OWN: Final = "own replicas"
SHARED: Final = "shared engine"
AUTO: Final = "shared + auto"
SPLIT: Final = "best static split"
POLICIES: Final = (OWN, SHARED, AUTO, SPLIT)


@dataclass(frozen=True, slots=True)
class PoolComparison:
    """Every alternative for one group of LoRA tenants (module docstring)."""

    pool: str
    tenants: tuple[str, ...]
    tokens: np.ndarray
    """Tokens each tenant sent over the trace (what ``top`` ranks)."""
    top: tuple[int, ...]
    runs: dict[str, list[engine.TenantRun]]
    """Per alternative, per tenant (in ``tenants`` order)."""
    fleets: dict[str, shared.FleetRun]
    """The fleet of each alternative that runs one."""
    split: int
    """The best static split's ``k``."""
    bound: float
    tail_floor: float | None
    """The least spend any fleet could apportion to the long tail (:func:`tail_spend_floor`);
    None without a long tail."""
    seconds: float
    slo_p99_s: float

    @property
    def tail(self) -> tuple[int, ...]:
        return tuple(k for k in range(len(self.tenants)) if k not in self.top)

    def result(self, name: str) -> report.PolicyResult:
        """One alternative summed over the tenants, fleet replica starts included."""
        row = report.summarize(name, self.runs[name], self.slo_p99_s)
        fleet = self.fleets.get(name)
        starts = row.replica_starts + (fleet.replica_starts if fleet is not None else 0)
        return replace(row, replica_starts=starts)

    @property
    def missed_by_every_alternative(self) -> tuple[str, ...]:
        """The tenants over the SLO whichever way the pool is hosted (:data:`POLICIES`): what
        no policy compared here could have served in time, e.g. a burst beyond any fleet's seats
        and beyond its own replicas' too."""
        return report.missed_by_all(self.runs, POLICIES, self.slo_p99_s)

    def spend(self, name: str, tenants: Sequence[int] | None = None) -> float:
        group = self.runs[name]
        keys = range(len(group)) if tenants is None else tenants
        return sum(group[k].spend for k in keys)

    @property
    def ratios(self) -> report.SharedRatios:
        return report.SharedRatios(
            tail_vs_own=cost.ratio(self.spend(AUTO, self.tail), self.spend(OWN, self.tail))
            if self.tail
            else None,
            pool_vs_own=cost.ratio(self.spend(AUTO), self.spend(OWN)),
            vs_best_split=cost.ratio(self.spend(AUTO), self.spend(SPLIT)),
            vs_lower_bound=cost.ratio(self.spend(AUTO), self.bound),
            tail_floor_vs_own=cost.ratio(self.tail_floor, self.spend(OWN, self.tail))
            if self.tail and self.tail_floor is not None
            else None,
        )


def by_pool(workload: traces.Workload) -> dict[str, list[traces.TenantLoad]]:
    """Tenants grouped by the part of their name before ``/`` (ServeGen's ``pool/client``);
    tenants that sent no request are left out. A request log's one tenant is its own group."""
    groups: dict[str, list[traces.TenantLoad]] = {}
    for load in workload.tenants:
        if load.requests <= 0:
            continue
        groups.setdefault(load.name.split("/", 1)[0], []).append(load)
    return groups


def merge(runs: Sequence[engine.TenantRun], tenant: str, controller: str) -> engine.TenantRun:
    """One tenant's parts (on the fleet, on its own replicas) as one run: spend, chargeback,
    tokens, requests and starts added, wait histograms added bin by bin. E.g. waits ``[3, 1]``
    and ``[2]`` merge to ``[5, 1]``."""
    size = max(len(r.wait_weights) for r in runs)
    waits = np.zeros(size)
    for r in runs:
        waits[: len(r.wait_weights)] += r.wait_weights
    empty = np.zeros(0, dtype=np.float32)
    return engine.TenantRun(
        tenant=tenant,
        controller=controller,
        dt=runs[0].dt,
        gpu_hours_shared=sum(r.gpu_hours_shared for r in runs),
        gpu_hours_dedicated=sum(r.gpu_hours_dedicated for r in runs),
        spend_shared=sum(r.spend_shared for r in runs),
        spend_dedicated=sum(r.spend_dedicated for r in runs),
        chargeback=sum(r.chargeback for r in runs),
        tokens_shared=sum(r.tokens_shared for r in runs),
        requests=sum(r.requests for r in runs),
        replica_starts=sum(r.replica_starts for r in runs),
        wait_weights=waits,
        shared_timeline=empty,
        dedicated_timeline=empty,
        demand_timeline=np.zeros(0),
        spend_timeline=np.zeros(0),
        modes=tuple(m for r in runs for m in r.modes),
        trace_steps=runs[0].trace_steps,
        unserved=sum(r.unserved for r in runs),
    )


def own_part(
    load: traces.TenantLoad,
    seg: shared.OwnSegment,
    cfg: config.SimConfig,
    *,
    dt: float,
    start: datetime,
) -> engine.TenantRun:
    """Steps ``[seg.lo, seg.hi)`` of ``load`` on replicas of its own, started by a move.

    The per-tenant simulation of that slice under the operator's plan in the mode placement chose
    (dedicated, or hybrid at its floor), started warm (the replicas the move started are Ready
    when routing shifts), plus what those first replicas held while they loaded the model:
    ``cold_start_s`` of their GPUs. E.g. 2 replicas on the shared pool at $7.79/GPU-hour and a
    60 s load add ``2 x 7.79 / 60 = $0.26``.
    """
    lo, hi = seg.lo, seg.hi
    part = traces.TenantLoad(
        load.name,
        load.arrivals[lo:hi],
        load.input_tokens[lo:hi],
        load.output_tokens[lo:hi],
        load.service_s[lo:hi],
    )
    controller: engine.Controller
    if seg.mode == DeploymentMode.HYBRID and seg.floor >= 1:
        controller = baselines.StaticHybrid(cfg, seg.floor)
    else:
        # Dedicated keeps at least one replica warm, as the operator runs max(1, minReplicas).
        warm = cfg.scaling.model_copy(update={"min_replicas": max(1, cfg.scaling.min_replicas)})
        controller = baselines.Tidepool(replace(cfg, scaling=warm), DeploymentMode.DEDICATED)
    run = engine.simulate(
        part,
        controller,
        cfg,
        dt=dt,
        start=start + timedelta(seconds=lo * dt),
    )
    shared_pool, dedicated_pool = engine.pool_prices(cfg)
    gpr = cfg.engine.gpus_per_replica
    hours = cfg.engine.cold_start_s / 3600.0
    first_shared = float(run.shared_timeline[0]) if len(run.shared_timeline) else 0.0
    first_dedicated = float(run.dedicated_timeline[0]) if len(run.dedicated_timeline) else 0.0
    gpus_shared = shared_pool.gpus_held(first_shared, gpr)
    gpus_dedicated = dedicated_pool.gpus_held(first_dedicated, gpr)
    return replace(
        run,
        gpu_hours_shared=run.gpu_hours_shared + gpus_shared * hours,
        gpu_hours_dedicated=run.gpu_hours_dedicated + gpus_dedicated * hours,
        spend_shared=run.spend_shared
        + cost.dedicated_cost(gpus_shared, shared_pool.price_per_gpu_hour, hours),
        spend_dedicated=run.spend_dedicated
        + cost.dedicated_cost(gpus_dedicated, dedicated_pool.price_per_gpu_hour, hours),
    )


def tail_spend_floor(
    loads: Sequence[traces.TenantLoad],
    ranked: Sequence[int],
    cfg: config.SimConfig,
    dt: float,
    *,
    splits: int = SPLIT_MAX,
) -> float | None:
    """The least the long tail can be apportioned by any fleet, over the splits compared.

    Why: a fleet's spend is at least the per-minute lower bound of the load it serves
    (:func:`tidepool.sim.engine.lower_bound_spend`), and the tail's part of it is its share of
    the fleet's tokens. With the top ``k`` by tokens (``ranked``) on their own replicas, for
    ``k = 0..splits``, the tail's spend is at least ``tail tokens / fleet tokens * bound(fleet)``;
    the least of those is what no policy of this family goes below, however it scales. Against
    the tail's own-replica spend it says whether a tail target is reachable at all. E.g. a tail
    with 40% of the tokens of a fleet whose bound is $100 (top 5 promoted: the tail alone, bound
    $45): at least $40. None when the top ``TOP`` are every tenant (no long tail).
    """
    tail = [t for t in range(len(loads)) if t not in ranked[:TOP]]
    if not tail:
        return None
    tail_tokens = sum(float(loads[t].tokens.sum()) for t in tail)
    floors = []
    for k in range(min(splits, TOP) + 1):
        fleet = [loads[t] for t in range(len(loads)) if t not in ranked[:k]]
        fleet_tokens = sum(float(ld.tokens.sum()) for ld in fleet)
        if fleet_tokens > 0:
            bound = engine.lower_bound_spend(shared.aggregate(fleet, "fleet"), cfg, dt)
            floors.append(bound * tail_tokens / fleet_tokens)
    return min(floors, default=0.0)


def compare_pool(
    pool: str,
    loads: Sequence[traces.TenantLoad],
    cfg: config.SimConfig,
    fleet: shared.FleetSettings,
    *,
    dt: float,
    start: datetime,
    split_max: int = SPLIT_MAX,
    progress: Callable[[str], None] | None = None,
) -> PoolComparison:
    """Run every alternative of the module docstring on ``loads``."""
    began = time.monotonic()

    def say(msg: str) -> None:
        if progress is not None:
            progress(f"{pool}: {msg} ({time.monotonic() - began:.0f}s)")

    names = tuple(ld.name for ld in loads)
    tokens = np.array([float(ld.tokens.sum()) for ld in loads])
    ranked = sorted(range(len(loads)), key=lambda k: (-tokens[k], names[k]))
    top = tuple(ranked[:TOP])

    own: list[engine.TenantRun] = []
    for k, load in enumerate(loads, start=1):
        auto = baselines.Tidepool(cfg, DeploymentMode.AUTO)
        own.append(engine.simulate(load, auto, cfg, dt=dt, start=start))
        if k % 25 == 0 or k == len(loads):
            say(f"own replicas: {k}/{len(loads)} tenants simulated")

    simulate_fleet = partial(shared.simulate_fleet, loads, cfg, fleet, dt=dt, start=start)

    def fleet_run(label: str, own_set: frozenset[int], promote: bool = False) -> shared.FleetRun:
        """One fleet run, its hourly progress named by the alternative it is for."""
        return simulate_fleet(own=own_set, promote=promote, progress=lambda m: say(f"{label}: {m}"))

    everything = fleet_run(SHARED, frozenset())
    shared_runs = [everything.tenant_run(k, SHARED) for k in range(len(loads))]
    say(f"shared engine: {cost.money(everything.spend)}")

    auto_fleet = fleet_run(AUTO, frozenset(), promote=True)
    auto_runs: list[engine.TenantRun] = []
    for k, load in enumerate(loads):
        parts = [auto_fleet.tenant_run(k, AUTO)]
        for seg in auto_fleet.own_segments(k):
            parts.append(own_part(load, seg, cfg, dt=dt, start=start))
        auto_runs.append(merge(parts, load.name, AUTO) if len(parts) > 1 else parts[0])
    promoted = sum(1 for p in auto_fleet.promoted_at if p)
    say(f"shared + auto: {cost.money(sum(r.spend for r in auto_runs))}, {promoted} promoted")

    candidates: dict[int, tuple[list[engine.TenantRun], shared.FleetRun]] = {
        0: (shared_runs, everything)
    }
    for k in range(1, min(split_max, len(loads)) + 1):
        own_set = frozenset(ranked[:k])
        rest = fleet_run(f"static split k = {k}", own_set)
        runs = [own[t] if t in own_set else rest.tenant_run(t, SPLIT) for t in range(len(loads))]
        candidates[k] = (runs, rest)
    say(f"static splits k = 0..{max(candidates)} simulated")

    def key(k: int) -> tuple[bool, float]:
        runs = candidates[k][0]
        ok = all(report.meets_slo(r, cfg.slo_p99_s) for r in runs)
        return (not ok, sum(r.spend for r in runs))

    best = min(candidates, key=key)
    split_runs = [replace(r, controller=SPLIT) for r in candidates[best][0]]
    return PoolComparison(
        pool=pool,
        tenants=names,
        tokens=tokens,
        top=top,
        runs={OWN: own, SHARED: shared_runs, AUTO: auto_runs, SPLIT: split_runs},
        fleets={SHARED: everything, AUTO: auto_fleet, SPLIT: candidates[best][1]},
        split=best,
        bound=engine.lower_bound_spend(shared.aggregate(loads, pool), cfg, dt),
        tail_floor=tail_spend_floor(loads, ranked, cfg, dt, splits=split_max),
        seconds=time.monotonic() - began,
        slo_p99_s=cfg.slo_p99_s,
    )


def render(cmp: PoolComparison, fleet: shared.FleetSettings) -> str:
    """The text ``tidepool simulate --shared-engines`` prints for one pool."""
    results = [cmp.result(p) for p in POLICIES]
    auto_fleet = cmp.fleets[AUTO]
    promoted = [cmp.tenants[k] for k, steps in enumerate(auto_fleet.promoted_at) if steps]
    named = ", ".join(promoted[:8]) + (", ..." if len(promoted) > 8 else "")
    lines = [
        f"pool {cmp.pool}: {len(cmp.tenants)} LoRA tenants of one base model; SharedEngine"
        f" minReplicas {fleet.min_replicas}, maxLoras {fleet.max_loras}, adapters of rank"
        f" {fleet.adapter_rank}; long tail ="
        f" the {len(cmp.tail)} tenants outside the top {len(cmp.top)} by tokens",
        report.table(results, cmp.bound),
        f"{'long tail (' + str(len(cmp.tail)) + ' tenants)':<24} "
        + ", ".join(f"{p} {cost.money(cmp.spend(p, cmp.tail))}" for p in POLICIES),
        cmp.ratios.line(),
        f"best static split: the top {cmp.split} by tokens on their own replicas"
        f" (searched k = 0..{min(SPLIT_MAX, len(cmp.tenants))})",
        f"shared + auto: {len(promoted)} tenants promoted at some point"
        + (f" ({named})" if promoted else "")
        + f"; fleet {auto_fleet.replica_starts} replica starts,"
        f" {auto_fleet.adapter_loads:,} adapter loads, {auto_fleet.adapter_swaps:,} GPU-slot"
        f" swaps, at most {auto_fleet.max_batch_adapters:.1f} adapters in one batch",
    ]
    missed = report.missed_shared_targets(cmp.result(AUTO), cmp.ratios)
    lines.append("targets: " + ("; ".join(missed) if missed else "all met"))
    for item in auto_fleet.decisions[:6]:
        lines.append(f"  {item}")
    if len(auto_fleet.decisions) > 6:
        lines.append(f"  ... {len(auto_fleet.decisions) - 6} more moves")
    lines.append(f"({cmp.seconds:.1f}s)")
    return "\n".join(lines)
