"""An auto tenant on GPUs keeps warm what its wakes need, through a window of silence.

The plan (``policy.plan.plan``) holds a dedicated or hybrid auto tenant at
``placement.wake_floor`` replicas while it holds its placement, so that a tenant which naps
between busy spells does not meet its next spell with one replica and a rate-limited ramp of
model loads. Driven through the simulator's controller, which calls the very same plan.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tidepool.api.v1alpha1 import PlacementSpec
from tidepool.policy import placement
from tidepool.sim import baselines, config
from tidepool.sim.engine import Observation

START = datetime(2025, 1, 1, tzinfo=UTC)
# Dedicated GPUs a third of the price of shared ones, so a busy tenant is promoted on spend.
CFG = replace(
    config.SimConfig(),
    prices=replace(config.SimConfig().prices, shared_per_gpu_hour=12.0, dedicated_per_gpu_hour=4.0),
    placement=PlacementSpec(window="10m", min_dwell="10m"),
)
CAP = CFG.capacity()


def load(replicas_of_work: float) -> placement.Load:
    """A prompt-only load of exactly ``replicas_of_work`` on the calibrated replica."""
    tps = replicas_of_work * CAP.prefill_tokens_per_s
    return placement.Load(tps / 1000.0, tps, 0.0)


BUSY = placement.Traffic(
    mean=load(4.0), peak=load(4.0), span=timedelta(minutes=10), active_fraction=1.0, wakes=0.0
)


def napping(horizon_mean: placement.Load | None) -> placement.Traffic:
    """Silent for the last window; over the hour, one wake and 4 replicas of work while active
    (2 on average over a half-active hour)."""
    return placement.Traffic(
        mean=load(0.0),
        peak=load(0.0),
        span=timedelta(minutes=10),
        active_fraction=0.5,
        wakes=1.0,
        horizon=timedelta(hours=1),
        horizon_mean=horizon_mean,
    )


def dedicated_after_a_nap(nap: placement.Traffic) -> int:
    ctrl = baselines.Tidepool(CFG)
    ctrl.initial(0.0, START)
    now, replicas = START, {config.SHARED_POOL: 0, config.DEDICATED_POOL: 0}
    for minute in range(90):
        busy = minute < 60
        traffic = BUSY if busy else nap
        queue = 4.0 * CAP.max_num_seqs * 0.875 if busy else 0.0
        now = START + timedelta(minutes=minute)
        ctrl.tick(
            Observation(
                now=now,
                elapsed_s=minute * 60.0,
                demand=queue,
                recent_demand=queue,
                queued=0.0,
                shared=replicas[config.SHARED_POOL],
                shared_ready=replicas[config.SHARED_POOL],
                dedicated=replicas[config.DEDICATED_POOL],
                dedicated_ready=replicas[config.DEDICATED_POOL],
                offered=lambda _s, t=traffic: t,
            )
        )
        assert ctrl.last is not None
        replicas = {config.SHARED_POOL: 0, config.DEDICATED_POOL: 0} | ctrl.last.replicas()
    assert ctrl.infd.status.effective_mode == "dedicated", "the busy hour promotes the tenant"
    return replicas[config.DEDICATED_POOL]


@pytest.mark.parametrize(
    ("nap", "kept"),
    [
        # 4 replicas of work while active over the 0.875 target: ceil(4.57) = 5 warm.
        pytest.param(napping(load(2.0)), 5, id="wakes-keep-5-warm"),
        pytest.param(napping(None), 1, id="horizon-unknown-falls-to-one"),
        pytest.param(replace(napping(load(2.0)), wakes=0.0), 1, id="no-wakes-falls-to-one"),
    ],
)
def test_a_dedicated_tenant_keeps_its_wake_floor_through_a_nap(
    nap: placement.Traffic, kept: int
) -> None:
    assert dedicated_after_a_nap(nap) == kept
