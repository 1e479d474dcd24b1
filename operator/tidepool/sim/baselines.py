"""Controllers: Tidepool's own plan, and the baselines it is measured against.

Role: turn an :class:`~tidepool.sim.engine.Observation` into a
:class:`~tidepool.sim.engine.Command`.

* :class:`Tidepool` runs :func:`tidepool.policy.plan.plan`, the very function the operator's
  reconcile runs: it translates the simulated tenant into the plan's :class:`Observed` (its pools'
  engine Deployments, the queue, the offered load over the placement window, in-flight requests
  per pool) and the returned :class:`Plan` into a command (replicas per pool, where the gateway
  routes, the hybrid spill limit). The status the plan returns is carried to the next tick, as
  the operator writes it to the API server. ``mode=serverless`` is the *always-serverless*
  baseline, ``mode=dedicated`` a queue-autoscaled dedicated deployment.
* :class:`FixedDedicated`: *always-dedicated*, replicas sized for the trace's peak, all the time.
* :class:`StaticHybrid`: the operator's own hybrid mode at a fixed dedicated floor; the
  benchmark sweeps the floor in hindsight.
* :class:`Reactive`: an HPA/KEDA-like scaler on dedicated GPUs with the projects' default windows:
  KEDA polls every 30 s to activate 0 -> 1 and waits a 300 s cooldown before 1 -> 0; the HPA
  syncs every 15 s, scales up by max(+100%, +4 pods) and down to the highest recommendation of the
  last 300 s.

This module must not do I/O or read the wall clock: time comes from the observation.
"""

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import (
    DeploymentMode,
    InferenceDeploymentStatus,
)
from tidepool.policy import children, placement, plan, signals
from tidepool.sim import config
from tidepool.sim.engine import Command, Observation

_LONG_AGO: Final = timedelta(days=1)
#: Plans made at the trace's start to reach the steady state of a system already running.
_WARM_UP_PLANS: Final = 16


class Tidepool:
    """The operator's plan, run on the simulated tenant (module docstring)."""

    push_wake = True

    def __init__(self, cfg: config.SimConfig, mode: DeploymentMode = DeploymentMode.AUTO) -> None:
        self.name = "tidepool-auto" if mode == DeploymentMode.AUTO else f"always-{mode}"
        self.pools = cfg.pools()
        self.infd = cfg.tenant(mode)
        #: Offered load is only measured for ``auto``, as the operator's observe step does.
        self.window_s: float | None = (
            placement.PlacementPolicy.from_spec(cfg.placement).window.total_seconds()
            if mode == DeploymentMode.AUTO
            else None
        )
        self.cold_start = timedelta(seconds=cfg.engine.cold_start_s)
        self.history = plan.History()
        self.started: datetime | None = None
        self.decisions: list[tuple[datetime, str, str]] = []
        self.last: plan.Plan | None = None
        """The last plan: its pools are the engine Deployments that exist."""
        self._wakes = 0

    # -- translation -----------------------------------------------------------------------

    def _observed(
        self, obs: Observation, traffic: placement.Traffic | signals.NoData
    ) -> plan.Observed:
        assert self.started is not None
        live = {
            config.SHARED_POOL: (obs.shared, obs.shared_ready, obs.shared_running),
            config.DEDICATED_POOL: (obs.dedicated, obs.dedicated_ready, obs.dedicated_running),
        }
        exists = self.last.replicas() if self.last else {}
        deployments = {
            pool: children.ObservedDeployment(
                name=names.engine_deployment(self.infd.name, pool),
                pool=pool,
                replicas=live[pool][0],
                ready_replicas=live[pool][1],
                updated_replicas=live[pool][1],
                generation_observed=True,
            )
            for pool in exists
        }
        return plan.Observed(
            pools=self.pools,
            deployments=deployments,
            pod_problems=(),
            demand=signals.Sample(obs.recent_demand, obs.now),
            traffic=traffic,
            inflight={p: signals.Sample(v[2], obs.now) for p, v in live.items()},
            operator_started_at=self.started,
            cold_start=self.cold_start,
        )

    def _plan(self, observed: plan.Observed, now: datetime, wake: bool) -> plan.Plan:
        if wake:
            # The gateway's push: a new wake-requested-at value the status has not handled.
            self._wakes += 1
            self.infd.metadata["annotations"] = {labels.WAKE_REQUESTED_AT: f"wake-{self._wakes}"}
        result = plan.plan(self.infd, observed, self.history, now)
        self.history = result.history
        self.infd = self.infd.model_copy(update={"status": result.status})
        self.last = result
        for event in result.events:
            if event.reason in (
                placement.PlacementReason.PROMOTED,
                placement.PlacementReason.DEMOTED,
                placement.PlacementReason.HYBRID_CHOSEN,
            ):
                self.decisions.append((now, event.reason, event.message))
        return result

    def _command(self, result: plan.Plan) -> Command:
        replicas = result.replicas()
        status: InferenceDeploymentStatus = result.status
        mode = str(status.effective_mode or "")
        if status.migration is not None:
            mode += f"->{status.migration.to_mode}"
        return Command(
            shared=replicas.get(config.SHARED_POOL, 0),
            dedicated=replicas.get(config.DEDICATED_POOL, 0),
            next_tick_s=result.requeue_after.total_seconds(),
            route_shared=config.SHARED_POOL in status.routable_pools,
            route_dedicated=config.DEDICATED_POOL in status.routable_pools,
            dedicated_limit=result.overflow_limit,
            mode=mode,
        )

    # -- Controller ----------------------------------------------------------------------------

    def initial(self, concurrency: float, now: datetime) -> Command:
        """The steady state of a system that was running before the trace began."""
        self.started = now - _LONG_AGO
        unknown = signals.NoData("trace not started")
        result: plan.Plan | None = None
        for _ in range(_WARM_UP_PLANS):
            before = self.last.replicas() if self.last else {}
            shared = before.get(config.SHARED_POOL, 0)
            dedicated = before.get(config.DEDICATED_POOL, 0)
            warm = Observation(
                now=now,
                elapsed_s=0.0,
                demand=concurrency,
                recent_demand=concurrency,
                queued=0.0,
                shared=shared,
                shared_ready=shared,
                dedicated=dedicated,
                dedicated_ready=dedicated,
            )
            result = self._plan(self._observed(warm, unknown), now, wake=False)
            if result.replicas() == before:
                break
        assert result is not None
        self.decisions.clear()
        return self._command(result)

    def tick(self, obs: Observation) -> Command:
        traffic: placement.Traffic | signals.NoData = signals.NoData("fixed mode: not measured")
        if self.window_s is not None:
            traffic = obs.offered(self.window_s) or signals.NoData("no traffic observed yet")
        return self._command(self._plan(self._observed(obs, traffic), obs.now, wake=obs.wake))


class FixedDedicated:
    """Always-dedicated: ``replicas`` dedicated replicas for the whole trace (sized for peak)."""

    push_wake = False

    def __init__(self, replicas: int) -> None:
        self.name = "always-dedicated"
        self.replicas = max(1, replicas)

    def initial(self, concurrency: float, now: datetime) -> Command:
        return Command(0, self.replicas, 3600.0, route_shared=False, mode="dedicated")

    def tick(self, obs: Observation) -> Command:
        return self.initial(0.0, obs.now)


class StaticHybrid(Tidepool):
    """A fixed dedicated floor of ``floor`` replicas with the overflow autoscaled on the shared
    pool: the operator's own ``mode: hybrid`` with ``minReplicas: floor``, run through the same
    plan. The benchmark sweeps the floor in hindsight (floor 0 is ``mode: serverless``).
    """

    def __init__(self, cfg: config.SimConfig, floor: int) -> None:
        if floor < 1:
            raise ValueError(f"a hybrid floor is at least 1 replica, got {floor}")
        scaling = cfg.scaling.model_copy(
            update={"min_replicas": floor, "max_replicas": max(floor, cfg.scaling.max_replicas)}
        )
        super().__init__(replace(cfg, scaling=scaling), DeploymentMode.HYBRID)
        self.name = f"static-hybrid(floor={floor})"
        self.floor = floor


class Reactive:
    """HPA + KEDA with default windows, on dedicated GPUs (billed per GPU-hour)."""

    push_wake = False

    def __init__(self, cfg: config.SimConfig) -> None:
        self.name = "reactive-keda-hpa"
        self.r = cfg.reactive
        self.target = cfg.scaling.target_queue_depth
        self.max = cfg.scaling.max_replicas
        self.recs: list[tuple[float, int]] = []
        self.last_active = -math.inf
        self.next_poll = 0.0
        self.replicas = 0

    def initial(self, concurrency: float, now: datetime) -> Command:
        self.replicas = math.ceil(concurrency / self.target)
        self.last_active = 0.0
        return Command(0, self.replicas, self.r.hpa_sync_s, route_shared=False, mode="dedicated")

    def tick(self, obs: Observation) -> Command:
        t = obs.elapsed_s
        if t >= self.next_poll:  # KEDA's poll: activity and the 0 <-> 1 edge
            self.next_poll = t + self.r.keda_polling_s
            if obs.demand > 0:
                self.last_active = t
                if self.replicas == 0:
                    self.replicas = 1
            elif self.replicas > 0 and t - self.last_active >= self.r.keda_cooldown_s:
                self.replicas = 0
                self.recs.clear()
        if self.replicas > 0:  # the HPA: 1 <-> N
            want = min(self.max, max(1, math.ceil(obs.recent_demand / self.target)))
            self.recs = [
                (s, n) for s, n in self.recs if t - s < self.r.hpa_scale_down_stabilization_s
            ]
            self.recs.append((t, want))
            if want > self.replicas:
                step_up = max(
                    math.ceil(self.replicas * self.r.hpa_scale_up_percent / 100.0),
                    self.r.hpa_scale_up_pods,
                )
                self.replicas = min(want, self.replicas + step_up)
            else:
                self.replicas = max(1, min(self.replicas, max(n for _, n in self.recs)))
        return Command(0, self.replicas, self.r.hpa_sync_s, route_shared=False, mode="dedicated")
