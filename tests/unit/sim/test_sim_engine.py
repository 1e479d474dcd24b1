"""The simulator's physics on hand-made loads whose answers are known."""

from datetime import UTC, datetime

import numpy as np
import pytest

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.sim import baselines, config, engine, report, traces

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CFG = config.SimConfig()


def steady(
    rate: float, service_s: float, seconds: int, tokens: float = 1000.0, idle_s: int = 0
) -> traces.TenantLoad:
    arrivals = np.full(seconds, rate)
    arrivals[:idle_s] = 0.0
    return traces.TenantLoad(
        name="t",
        arrivals=arrivals,
        tokens=arrivals * tokens,
        service_s=np.where(arrivals > 0, service_s, 0.0),
    )


def run(load: traces.TenantLoad, ctrl: engine.Controller) -> engine.TenantRun:
    return engine.simulate(load, ctrl, CFG, dt=1.0, start=T0)


def test_one_dedicated_replica_for_an_hour_costs_4_dollars_and_nobody_waits() -> None:
    r = run(steady(10, 2.0, 3600), baselines.FixedDedicated(1))
    assert r.gpu_hours_dedicated == pytest.approx(1.0)
    assert r.cost == pytest.approx(4.0)
    assert r.wait_weights[1:].sum() == 0
    # Little's law: 10 requests/s x 2 s = 20 in flight.
    assert r.demand_timeline[100:].mean() == pytest.approx(20.0, rel=0.01)


def test_sub_step_service_occupies_a_fraction_of_a_slot() -> None:
    load = steady(100, 0.2, 600)  # 100/s x 0.2 s = 20 in flight, below one replica's 64
    r = run(load, baselines.FixedDedicated(1))
    assert r.wait_weights[1:].sum() == 0
    assert r.demand_timeline[10:].mean() == pytest.approx(20.0, rel=0.01)


def test_overload_builds_a_queue() -> None:
    r = run(steady(50, 2.0, 600), baselines.FixedDedicated(1))  # 100 in flight wanted, 64 seats
    s = report.summarize("x", [r], 10.0, 10.0)
    assert s.p99_wait_s > 10
    assert not s.meets_slo


def test_serverless_bills_tokens_not_gpu_hours() -> None:
    load = steady(1, 2.0, 600, tokens=1000)
    r = run(load, baselines.Tidepool(CFG, DeploymentMode.SERVERLESS))
    assert r.dedicated_cost == 0.0
    assert r.token_cost == pytest.approx(600 * 1000 / 1e6 * 0.20)


def test_wake_from_zero_waits_one_cold_start() -> None:
    load = steady(1, 2.0, 600, idle_s=400)  # idle long enough to scale to zero, then traffic
    r = run(load, baselines.Tidepool(CFG, DeploymentMode.SERVERLESS))
    assert r.shared_timeline[390] == 0  # scaled to zero after 5 idle minutes
    worst = int(np.nonzero(r.wait_weights)[0].max())
    assert worst == pytest.approx(CFG.engine.cold_start_s, abs=2)
    assert r.replica_starts == 1


def test_reactive_keda_polls_so_waits_longer_than_a_cold_start() -> None:
    load = steady(1, 2.0, 900, idle_s=400)
    r = run(load, baselines.Reactive(CFG))
    worst = int(np.nonzero(r.wait_weights)[0].max())
    assert worst >= CFG.engine.cold_start_s


def test_auto_promotes_a_busy_tenant_to_dedicated() -> None:
    # 30/s x 2 s = 60 in flight, 36,000 tokens/s: far past the 5,556 tokens/s crossover.
    ctrl = baselines.Tidepool(CFG, DeploymentMode.AUTO)
    r = run(steady(30, 2.0, 1800, tokens=1200), ctrl)
    assert any(mode == "dedicated" for _, mode in r.modes)
    assert ctrl.decisions
    assert ctrl.decisions[0][1] == "Promoted"
    assert r.dedicated_timeline[-1] >= 1
    assert r.shared_timeline[-1] == 0


def test_weighted_percentile() -> None:
    assert report.weighted_percentile(np.array([98.0, 1.0, 1.0]), 50) == 0
    assert report.weighted_percentile(np.array([98.0, 1.0, 1.0]), 99) == 1
    assert report.weighted_percentile(np.array([]), 99) == 0
