"""What a LoRA tenant spends on a SharedEngine, and whether the engine meets its SLO.

Role: the price of the *shared-engine* option that :func:`tidepool.policy.placement.decide`
weighs against replicas of the tenant's own. For a LoRA tenant of a base model that has a
SharedEngine, "serverless" means that engine; :func:`engine_spend` prices it and the placement
policy does the rest with its usual rules: a promotion to replicas of its own (dedicated, or
hybrid) when its share on the engine exceeds their spend by the margin or the engine misses its
SLO, a demotion back when the reverse holds, both behind the evidence hold and the minimum
dwell. So the operator's plan and ``tidepool simulate`` call one rule: ``placement.decide`` with
``PlacementInputs.engine`` set to an :class:`EngineShare`.

**Spend is the fleet's GPU-hours apportioned by tokens.** The fleet runs the replicas its
tenants' offered load needs (:func:`fleet_replicas`: at its target utilization, within its
minimum, at least one while anyone sends). A tenant's *spend* is the fleet's monthly GPU spend
times its share of the fleet's tokens (gateway counters, input plus output): what it is shown.

**The decision cost is what the fleet would shed.** Promoting a tenant saves the platform only
the capacity the fleet adds for it (:func:`forced_capacity`); the replicas the others need stay,
and their cost falls on them. So placement weighs the tenant's own replicas against that forced
capacity alone, never against its apportioned share: a share of the others' fleet is no saving,
and counting it promoted busy tenants onto own replicas that cost the platform more than they
freed (the others then paid the fleet they had shared). That capacity is counted in replicas of
work at the target, not in whole replicas: whether a tenant tips the fleet over a replica
boundary depends on where the others' load happens to sit, and a tenant with 6% of the tokens
charged a whole replica for it would be promoted on a rounding accident. Worked example (test
``engine-share-forced-replica``), H100s at $7.79/GPU-hour, 1 GPU per replica, target 0.875:

* the others keep 1.5 replicas busy (2 replicas), the tenant 1.0 more: 2.5 / 0.875 -> 3
  replicas; it forces ``1.0 / 0.875 = 1.14`` replicas of capacity;
* it sends 40% of the tokens: spend ``3 x 7.79 x 730 x 0.4 = $6,824``/month;
* its decision cost: ``1.14 x 7.79 x 730 = $6,499``; its own 1-GPU replicas, sized for its
  peak at the same target (at least ``ceil(1.0 / 0.875) = 2``, $11,373), cost more, so it stays.

At equal GPU prices, dedicated replicas sized for the tenant's peak never spend less than the
capacity the fleet sheds (``mean / target`` at most), and a hybrid floor filled to its whole
batch at most a share ``1 - target`` less (12.5% at 0.875), within the default 15% margin; so a
tenant is promoted on spend where its own replicas are cheaper per GPU (a dedicated pool at a
reserved price), else on the SLO below. A tenant alone on a fleet that would otherwise sleep
forces at least one whole replica.

Its *chargeback* (the pool's per-token price times its tokens) is reported beside spend, never
mixed into it.

**The SLO on the engine.** The engine misses the tenant's SLO when the fleet has no adapter slot
for it (``AdapterLoaded=False``, ``NoAdapterSlot``); when its requests are *observed* waiting:
their p99 time to first byte at the gateway over the placement window is above the tenant's
``placement.sloP99TimeToFirstByte`` (10 s by default); or when they are *predicted* to wait: the
busiest minute of the tenant on top of the others' load needs more than ``maxReplicas`` at the
target. The prediction alone misses what the fleet's own dynamics cause (replicas still loading
after a burst, batches out of ``maxLoras`` slots, other tenants' bursts); the observation sees
them, for this tenant alone.

Why time to first byte and not a queue-wait metric: vLLM's queue time
(``vllm:request_queue_time_seconds``) is per engine, labelled by the base model, not by adapter,
so it cannot tell one tenant's wait from the fleet's; the gateway's own queue-wait histogram
covers only the requests it holds, not those waiting inside vLLM behind ``maxLoras``. Time to
first byte, per tenant at the gateway, covers both, plus one prompt's prefill: it overstates the
wait by at most a prefill, about ``1,155 / 32,517 = 0.036`` s for the Azure conversation trace's
mean prompt on an H100 8B replica (:func:`tidepool.policy.capacity.calibrated`), negligible at a
10 s SLO. Unknown (no requests in the window, no gateway data) is ``None``, never zero, and never
counts as a miss. So is a window of fewer than :data:`MIN_REQUESTS_FOR_P99` requests: the p99 of
fewer than 100 requests is their slowest one, so a single request that met the fleet while it
added a replica would read as a missed SLO for a whole window. On ServeGen's mm-image pool,
where every tenant met the SLO over the 6 hours on the fleet, counting such windows promoted 14
of 24 tenants to replicas of their own and spent 1.17x the best static split for nothing. The
observation describes the engine only while the tenant is *on* it: on replicas of its own its
time to first byte is theirs, so the plan then passes ``None``
(:func:`tidepool.policy.plan.engine_share`), and a promoted tenant is demoted on spend and the
prediction as before.

This module must not read the clock, do I/O, or import ``kopf``/``kubernetes``; it must not
import :mod:`tidepool.policy.placement` (which imports it).
"""

import math
from dataclasses import dataclass
from typing import Final

from tidepool.policy import cost
from tidepool.policy.capacity import EngineCapacity

#: The fewest requests in a window whose p99 counts as an observation: at 100, the nearest-rank
#: p99 is the 99th slowest, so at least two requests must have been late, not one.
MIN_REQUESTS_FOR_P99: Final = 100


@dataclass(frozen=True, slots=True)
class EngineShare:
    """One SharedEngine as one of its (current or prospective) tenants sees it."""

    engine: str
    """The SharedEngine's name."""
    others_input_tokens_per_second: float
    others_output_tokens_per_second: float
    """Offered load of every *other* tenant of the fleet (their gateway counters)."""
    capacity: EngineCapacity
    """One fleet replica's throughput (the fleet's engine on its GPUPool)."""
    gpus_per_replica: int
    price_per_gpu_hour: float
    """The fleet's GPUPool price; a shared pool is paid per GPU, not per node."""
    min_replicas: int
    max_replicas: int
    target_utilization: float
    """Busy share of a fleet replica its autoscaler aims for (targetQueueDepth / maxNumSeqs)."""
    slo_p99_ttfb_s: float
    """The tenant's SLO (``placement.sloP99TimeToFirstByte``), in seconds."""
    price_per_million_tokens: float | None = None
    """The pool's chargeback price, if it has one."""
    has_slot: bool = True
    """False while the fleet holds the tenant's adapter nowhere for want of a slot."""
    observed_p99_ttfb_s: float | None = None
    """The tenant's p99 time to first byte at the gateway over the placement window while the
    fleet serves it; ``None`` when unknown, when the window held fewer than
    :data:`MIN_REQUESTS_FOR_P99` requests, or when the tenant is not on the fleet."""


@dataclass(frozen=True, slots=True)
class EngineSpend:
    """The shared-engine option priced for one tenant (module docstring)."""

    engine: str
    fleet_replicas: int
    """Replicas the fleet needs with the tenant."""
    forced_replicas: float
    """The capacity only the tenant needs, in replicas (:func:`forced_capacity`)."""
    token_share: float
    """The tenant's share of the fleet's tokens (0..1)."""
    spend_monthly: float
    """The fleet's monthly GPU spend times ``token_share``: what the tenant costs the platform."""
    decision_monthly: float
    """The monthly price of its forced replicas, what the fleet would shed without it: what
    placement compares with replicas of its own."""
    chargeback_monthly: float | None
    meets_slo: bool
    slo_note: str
    """Why the SLO is missed ("" when met)."""


def fleet_replicas(work: float, share: EngineShare) -> int:
    """Replicas the fleet runs for ``work`` replicas of work: ``ceil(work / target)``, within its
    minimum, and at least one while anyone sends.

    E.g. 2.5 replicas of work at 0.875: 3; no work and minReplicas 0: 0.
    """
    if work <= 0:
        return share.min_replicas
    return max(share.min_replicas, 1, math.ceil(work / share.target_utilization - 1e-9))


def forced_capacity(others: float, mine: float, share: EngineShare) -> float:
    """Replicas of capacity the fleet adds for ``mine`` replicas of work beside ``others``.

    The fleet's size as a continuous function of its work (``work / target``, at least one
    replica while anyone sends, at least its minimum), taken with and without the tenant. E.g.
    others 1.5 and mine 1.0 at 0.875: ``2.5/0.875 - 1.5/0.875 = 1.14``; alone, 0.1 of work:
    ``max(1, 0.11) - 0 = 1``; alone on a fleet kept warm at 2: ``2 - 2 = 0``.
    """

    def size(work: float) -> float:
        if work <= 0:
            return float(share.min_replicas)
        return max(float(share.min_replicas), 1.0, work / share.target_utilization)

    return max(0.0, size(others + mine) - size(others))


def engine_spend(
    share: EngineShare,
    *,
    input_tokens_per_second: float,
    output_tokens_per_second: float,
    peak_input_tokens_per_second: float,
    peak_output_tokens_per_second: float,
) -> EngineSpend:
    """The tenant's spend on the fleet, its decision cost, chargeback and SLO (module docstring).

    The tenant's load is its mean over the placement window; the SLO is missed for want of a
    slot, on its observed p99 time to first byte, or on its busiest minute (module docstring).
    """
    cap = share.capacity
    others = cap.seconds_per_request(
        share.others_input_tokens_per_second, share.others_output_tokens_per_second
    )
    mine = cap.seconds_per_request(input_tokens_per_second, output_tokens_per_second)
    peak = max(
        mine, cap.seconds_per_request(peak_input_tokens_per_second, peak_output_tokens_per_second)
    )
    with_tenant = fleet_replicas(others + mine, share)
    tokens = input_tokens_per_second + output_tokens_per_second
    total = tokens + share.others_input_tokens_per_second + share.others_output_tokens_per_second
    token_share = tokens / total if total > 0 else 0.0

    def monthly(replicas: float) -> float:
        return cost.dedicated_monthly(replicas * share.gpus_per_replica, share.price_per_gpu_hour)

    forced = forced_capacity(others, mine, share)
    chargeback = (
        cost.serverless_monthly(tokens, share.price_per_million_tokens)
        if share.price_per_million_tokens is not None
        else None
    )
    at_peak = math.ceil((others + peak) / share.target_utilization - 1e-9)
    note = ""
    observed = share.observed_p99_ttfb_s
    if not share.has_slot:
        note = f"SharedEngine {share.engine} has no adapter slot for it"
    elif observed is not None and observed > share.slo_p99_ttfb_s:
        note = (
            f"its p99 time to first byte on SharedEngine {share.engine} was {observed:.1f} s"
            f" over the placement window, above its {share.slo_p99_ttfb_s:g} s SLO"
        )
    elif at_peak > share.max_replicas:
        note = (
            f"its busiest minute needs {at_peak} replicas of SharedEngine {share.engine},"
            f" which stops at maxReplicas {share.max_replicas}"
        )
    return EngineSpend(
        engine=share.engine,
        fleet_replicas=with_tenant,
        forced_replicas=forced,
        token_share=token_share,
        spend_monthly=monthly(with_tenant) * token_share,
        decision_monthly=monthly(forced),
        chargeback_monthly=chargeback,
        meets_slo=not note,
        slo_note=note,
    )


def engine_text(spend: EngineSpend) -> str:
    """The shared-engine option for status and events.

    E.g. ``SharedEngine base-8b $6,824 (40% of the tokens on 3 replica(s); $6,499 for the 1.14
    replica(s) of capacity it adds)``.
    """
    forced = (
        f"; {cost.money(spend.decision_monthly)} for the {spend.forced_replicas:.2f} replica(s)"
        " of capacity it adds"
        if spend.forced_replicas > 0
        else ""
    )
    slo = f" (misses SLO: {spend.slo_note})" if spend.slo_note else ""
    return (
        f"SharedEngine {spend.engine} {cost.money(spend.spend_monthly)}"
        f" ({spend.token_share:.0%} of the tokens on {spend.fleet_replicas} replica(s){forced})"
        f"{slo}"
    )
