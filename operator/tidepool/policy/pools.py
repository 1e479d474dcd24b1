"""Where a tenant runs and what a replica there is worth: the pool choice, prices, capacity, and
the replicas per pool role.

Role: the pieces of :func:`tidepool.policy.plan.plan` that look at GPUPools and a tenant's spec
alone. :func:`pick_pool` chooses the GPUPool of a tenancy (the spec's preference, else the pool
annotated as the default, else the first by name) and :func:`check_fits` refuses one whose nodes
cannot hold a replica; both raise :class:`InvalidPlacementError`, which the plan turns into a
status condition, never a crash loop. :func:`pool_price` is the placement policy's view of a
pool's prices, and :func:`engine_capacity` the throughput it sizes with (the spec's override, else
what status learned, refined by the replicas' counters). :func:`hybrid_floor` and :func:`split`
divide a replica count between a hybrid tenant's dedicated floor and its overflow.

The simulator prices and sizes with the same functions (:mod:`tidepool.sim.engine`,
:mod:`tidepool.sim.simulate`), so what it reports is what the operator would run.

This module must not read the clock, do I/O, or import ``kopf``/``kubernetes``/
``prometheus_api_client``.
"""

from datetime import datetime

from tidepool.api import labels
from tidepool.api.conditions import Reason
from tidepool.api.v1alpha1 import (
    CapacityStatus,
    DeploymentMode,
    GPUPool,
    InferenceDeployment,
    PoolRole,
    Tenancy,
)
from tidepool.policy import capacity, placement
from tidepool.policy.capacity import EngineCapacity, EngineThroughput
from tidepool.policy.signals import Sample


class InvalidPlacementError(ValueError):
    """The spec passed the schema but cannot be placed (no pool, wrong tenancy, too few GPUs)."""

    reason: Reason = Reason.INVALID_SPEC


class PoolNotFoundError(InvalidPlacementError):
    """A preferred GPUPool is missing or has the wrong tenancy."""

    reason = Reason.POOL_NOT_FOUND


def pick_pool(
    pools: tuple[GPUPool, ...], tenancy: Tenancy, preferred: str | None
) -> GPUPool | None:
    """The pool of ``tenancy`` to use: the preferred one, else the default, else the first."""
    if preferred:
        match = next((p for p in pools if p.name == preferred), None)
        if match is None:
            raise PoolNotFoundError(
                f"placement.pools.{tenancy}: GPUPool {preferred!r} does not exist"
                f" (have: {', '.join(p.name for p in pools) or 'none'})"
            )
        if match.spec.tenancy != tenancy:
            raise PoolNotFoundError(
                f"placement.pools.{tenancy}: GPUPool {preferred!r} has tenancy"
                f" {match.spec.tenancy}, not {tenancy}"
            )
        return match
    candidates = sorted((p for p in pools if p.spec.tenancy == tenancy), key=lambda p: p.name)
    default = [
        p
        for p in candidates
        if str(p.metadata.get("annotations", {}).get(labels.DEFAULT_POOL, "")).lower() == "true"
    ]
    if default:
        return default[0]
    return candidates[0] if candidates else None


def check_fits(infd: InferenceDeployment, pool: GPUPool) -> None:
    """Refuse a pool whose nodes have fewer GPUs than one replica needs: its pods would never
    schedule, and the message names the field and what is allowed."""
    need = infd.spec.engine.gpus_per_replica
    if need > pool.spec.gpus_per_node:
        raise InvalidPlacementError(
            f"engine.gpusPerReplica: {need} GPUs per replica cannot fit GPUPool {pool.name!r},"
            f" whose nodes have {pool.spec.gpus_per_node}; allowed: 1..{pool.spec.gpus_per_node}"
        )


def pool_price(pool: GPUPool | None) -> placement.PoolPrice | None:
    """The placement policy's view of a GPUPool's prices."""
    if pool is None:
        return None
    return placement.PoolPrice(
        name=pool.name,
        tenancy=pool.spec.tenancy,
        gpu_type=pool.spec.gpu_type,
        price_per_gpu_hour=pool.spec.price_per_gpu_hour,
        price_per_million_tokens=pool.spec.price_per_million_tokens,
        gpus_per_node=pool.spec.gpus_per_node,
    )


def engine_capacity(
    infd: InferenceDeployment, pool: GPUPool | None, throughput: EngineThroughput | None
) -> EngineCapacity:
    """The throughput placement sizes with.

    The spec's override wins; else what status learned so far, refined by the replicas' counters
    when they were busy (:func:`capacity.refine`); else the calibration table for the pool's GPU.
    """
    spec = infd.spec.engine
    base = capacity.for_spec(spec, infd.spec.model.name, pool.spec.gpu_type if pool else "")
    learned = infd.status.capacity
    if spec.capacity is not None:
        return base
    prior = base
    if learned is not None:
        prior = EngineCapacity(
            prefill_tokens_per_s=learned.prefill_tokens_per_second,
            decode_tokens_per_s=learned.decode_tokens_per_second,
            max_num_seqs=spec.max_num_seqs,
            source=learned.source,
        )
    if throughput is None:
        return prior
    prompt, generated, busy = (
        throughput.prompt_tokens_per_s,
        throughput.generation_tokens_per_s,
        throughput.busy_fraction,
    )
    if not (
        isinstance(prompt, Sample) and isinstance(generated, Sample) and isinstance(busy, Sample)
    ):
        return prior
    return capacity.refine(prior, prompt.value, generated.value, busy.value)


def capacity_status(
    cap: EngineCapacity, before: CapacityStatus | None, now: datetime
) -> CapacityStatus:
    """``status.capacity`` for ``cap``: the one written before while unchanged, so its
    ``updated`` time says when the figures last changed, not when the tenant last reconciled."""
    if (
        before is not None
        and before.prefill_tokens_per_second == cap.prefill_tokens_per_s
        and before.decode_tokens_per_second == cap.decode_tokens_per_s
        and before.source == cap.source
    ):
        return before
    return CapacityStatus(
        prefill_tokens_per_second=cap.prefill_tokens_per_s,
        decode_tokens_per_second=cap.decode_tokens_per_s,
        source=cap.source,
        updated=now,
    )


# ----------------------------------------------------------------------------------- replicas


def hybrid_floor(infd: InferenceDeployment, chosen: int | None) -> int:
    """Dedicated replicas a hybrid tenant keeps warm.

    ``spec.mode: hybrid`` keeps ``max(1, minReplicas)``; ``auto`` keeps the floor its placement
    decision ``chosen`` (``status.hybridFloor``), so the operator runs what the policy priced,
    but never more than ``maxReplicas``: the floor is part of the total the spec caps (a floor
    of 3,044 chosen before placement knew the limit once ran 3,044 replicas under
    ``maxReplicas: 1000``). E.g. minReplicas 0, maxReplicas 4: chosen 3 keeps 3, chosen 9 keeps 4.
    """
    scaling = infd.spec.scaling
    base = max(1, scaling.min_replicas)
    if infd.spec.mode == DeploymentMode.AUTO and chosen:
        return max(base, min(chosen, scaling.max_replicas))
    return base


def target_utilization(infd: InferenceDeployment) -> float:
    """Busy share of a replica the autoscaler aims for: ``targetQueueDepth / maxNumSeqs``.

    E.g. the defaults, 56 of 64 seats: 0.875.
    """
    return min(1.0, infd.spec.scaling.target_queue_depth / infd.spec.engine.max_num_seqs)


def split(mode: DeploymentMode, total: int, floor: int, max_overflow: int) -> dict[PoolRole, int]:
    """Replicas per role for ``total``: hybrid keeps its dedicated floor, overflow takes the rest.

    E.g. hybrid, floor 2, max overflow 4: total 5 -> primary 2, overflow 3; total 0 -> primary 2.
    """
    if mode != DeploymentMode.HYBRID:
        return {PoolRole.PRIMARY: total, PoolRole.OVERFLOW: 0}
    primary = min(total, floor) if total else floor
    return {
        PoolRole.PRIMARY: primary,
        PoolRole.OVERFLOW: min(max(0, total - primary), max_overflow),
    }
