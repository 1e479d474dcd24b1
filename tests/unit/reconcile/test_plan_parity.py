"""One plan, two callers: the operator's ``sync`` and the simulator's Tidepool controller.

The same scripted tenant goes through both paths, each against its own fakes: ``sync`` against
``FakeKube``/``FakeMetrics`` (Deployments applied, made ready, deleted), and
``sim.baselines.Tidepool`` against simulator ``Observation`` values. At every step both see the
same queue, offered load, readiness and in-flight requests, and both must run the same replicas
on the same pools. The script walks every kind of decision the product makes: scale from zero,
scale out, a promotion from the shared pool to dedicated GPUs, a move to a hybrid floor, a
demotion back to serverless, and scale to zero.
"""

from dataclasses import dataclass, replace
from datetime import timedelta

from reconcile_harness import Harness

from fakes import ManualClock
from tidepool.api import labels
from tidepool.api.v1alpha1 import DeploymentMode, PlacementSpec
from tidepool.policy import placement
from tidepool.policy.signals import Sample
from tidepool.sim import baselines, config
from tidepool.sim.engine import Observation

# Shared GPUs dearer than dedicated ones, so that spend, not only the SLO, can favour a move;
# single-GPU dedicated nodes. A 10-minute window and dwell keep the script short.
CFG = replace(
    config.SimConfig(),
    prices=replace(config.SimConfig().prices, shared_per_gpu_hour=12.0, dedicated_per_gpu_hour=4.0),
    placement=PlacementSpec(window="10m", min_dwell="10m"),
)
SHARED, DEDICATED = config.SHARED_POOL, config.DEDICATED_POOL


def _load(tokens_per_s: float) -> placement.Load:
    return placement.Load(tokens_per_s / 1000, tokens_per_s * 0.9, tokens_per_s * 0.1)


def traffic(mean_tps: float, peak_tps: float, active: float = 1.0) -> placement.Traffic:
    return placement.Traffic(
        mean=_load(mean_tps),
        peak=_load(peak_tps),
        span=timedelta(minutes=10),
        active_fraction=active,
        wakes=0.0,
    )


QUIET = traffic(0.0, 0.0, active=0.0)
STEADY = traffic(60_000.0, 60_000.0)  # a few replicas of work, every minute
SPIKY = traffic(20_000.0, 150_000.0)  # a steady base under large bursts
SPARSE = traffic(400.0, 4_000.0, active=0.1)


@dataclass(frozen=True)
class Step:
    """One reconcile: wait ``advance`` s, with this queue and offered load, then compare."""

    advance: float
    queue: float
    offered: placement.Traffic
    ready: bool = True
    """Every replica asked for so far has loaded before this step."""
    wake: bool = False
    inflight: float = 0.0


def script() -> list[Step]:
    steps = [Step(0, 0.0, QUIET, ready=False)]
    steps.append(Step(5, 3.0, QUIET, ready=False, wake=True))  # scale from zero
    steps += [Step(15, 200.0, STEADY) for _ in range(4)]  # scale out
    steps += [Step(60, 200.0, STEADY) for _ in range(12)]  # promotion, make-before-break
    steps += [Step(60, 120.0, SPIKY) for _ in range(40)]  # dedicated -> hybrid floor
    steps += [Step(60, 2.0, SPARSE) for _ in range(50)]  # demotion to serverless
    steps += [Step(60, 0.0, QUIET) for _ in range(30)]  # idle: scale to zero
    return steps


class OperatorPath:
    """``reconcile.sync`` on the fake cluster and fake Prometheus."""

    def __init__(self, started_offset: timedelta) -> None:
        spec = CFG.tenant(DeploymentMode.AUTO).spec
        self.h = Harness(
            spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            operator_started_at_offset=started_offset,
        )
        self.h.kube.pools = list(CFG.pools())
        self.wakes = 0

    def step(self, s: Step) -> dict[str, int]:
        h = self.h
        if s.ready:
            h.kube.make_ready()
        if s.wake:
            self.wakes += 1
            h.annotations[labels.WAKE_REQUESTED_AT] = f"wake-{self.wakes}"
        now = h.clock.now + timedelta(seconds=s.advance)
        h.metrics.queue = Sample(s.queue, now)
        h.metrics.default_inflight = Sample(s.inflight, now)
        h.metrics.window = s.offered
        h.sync(advance=s.advance)
        return h.replicas()

    @property
    def mode(self) -> str:
        return str(self.h.status.effective_mode)


class SimulatorPath:
    """The simulator's controller, fed the same facts as simulator observations."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.ctrl = baselines.Tidepool(CFG, DeploymentMode.AUTO)
        self.ctrl.started = clock.now - timedelta(hours=1)
        self.replicas: dict[str, int] = {}
        self.ready: dict[str, int] = {}

    def step(self, s: Step) -> dict[str, int]:
        now = self.clock.advance(s.advance)
        if s.ready:
            self.ready = dict(self.replicas)
        ready_any = any(self.ready.get(p, 0) for p in (SHARED, DEDICATED))
        obs = Observation(
            now=now,
            elapsed_s=0.0,
            demand=s.queue,
            recent_demand=s.queue,
            queued=s.queue if s.wake and not ready_any else 0.0,
            shared=self.replicas.get(SHARED, 0),
            shared_ready=min(self.ready.get(SHARED, 0), self.replicas.get(SHARED, 0)),
            dedicated=self.replicas.get(DEDICATED, 0),
            dedicated_ready=min(self.ready.get(DEDICATED, 0), self.replicas.get(DEDICATED, 0)),
            shared_running=s.inflight,
            dedicated_running=s.inflight,
            offered=lambda _s, t=s.offered: t,
        )
        self.ctrl.tick(obs)
        self.replicas = self.ctrl.last.replicas() if self.ctrl.last else {}
        return dict(self.replicas)

    @property
    def mode(self) -> str:
        return str(self.ctrl.infd.status.effective_mode)


def test_operator_and_simulator_run_the_same_replicas_at_every_step() -> None:
    operator = OperatorPath(started_offset=timedelta(hours=-1))
    simulator = SimulatorPath(ManualClock(operator.h.clock.now))
    modes: list[str] = []
    for i, s in enumerate(script()):
        want = operator.step(s)
        got = simulator.step(s)
        assert got == want, f"step {i} ({s}): simulator {got} != operator {want}"
        assert simulator.mode == operator.mode, f"step {i}"
        if not modes or modes[-1] != operator.mode:
            modes.append(operator.mode)
    # The script covered every move it is meant to.
    assert modes == ["serverless", "dedicated", "hybrid", "serverless"], modes
    assert operator.h.replicas() == {SHARED: 0}, "idle serverless scales to zero"
