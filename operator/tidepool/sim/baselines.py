"""Controllers: Tidepool's own policies, and the baselines they are measured against.

Role: turn an :class:`~tidepool.sim.engine.Observation` into a
:class:`~tidepool.sim.engine.Command`.

* :class:`Tidepool` calls exactly :func:`tidepool.policy.autoscale.decide` and
  :func:`tidepool.policy.placement.decide`, carrying their durable state (``last_active_at``,
  ``history``, hysteresis timers, ``placement_since``) between ticks as the operator carries it in
  status, and migrating make-before-break (start the target pool, switch routing once it is
  Ready, then release the old pool). ``mode=serverless`` is the *always-serverless* baseline.
* :class:`FixedDedicated`: *always-dedicated*, replicas sized for the trace's peak, all the time.
* :class:`StaticHybrid`: a fixed dedicated floor plus Tidepool's autoscaler for the shared
  overflow; the benchmark sweeps the floor in hindsight.
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

from tidepool.api.v1alpha1 import DeploymentMode
from tidepool.policy import autoscale, placement, signals
from tidepool.sim import config
from tidepool.sim.engine import Command, Observation

_LONG_AGO: Final = timedelta(days=1)


class Tidepool:
    """Tidepool's autoscaler and placement policy, as the operator would run them."""

    push_wake = True

    def __init__(self, cfg: config.SimConfig, mode: DeploymentMode = DeploymentMode.AUTO) -> None:
        self.name = "tidepool-auto" if mode == DeploymentMode.AUTO else f"always-{mode}"
        self.cfg = cfg
        self.requested = mode
        self.policy = autoscale.AutoscalePolicy.from_spec(cfg.scaling)
        self.dedicated_policy = replace(self.policy, min_replicas=max(1, self.policy.min_replicas))
        self.overflow_policy = replace(
            self.policy, min_replicas=0, max_replicas=cfg.hybrid.max_overflow_replicas
        )
        self.placement_policy = placement.PlacementPolicy.from_spec(cfg.placement)
        self.mode: DeploymentMode = (
            DeploymentMode.SERVERLESS if mode == DeploymentMode.AUTO else mode
        )
        self.floor = max(1, self.policy.min_replicas) if self.mode == DeploymentMode.HYBRID else 0
        self.last_active: datetime | None = None
        self.history: tuple[autoscale.Recommendation, ...] = ()
        self.overflow_history: tuple[autoscale.Recommendation, ...] = ()
        self.overflow_active: datetime | None = None
        self.started: datetime | None = None
        self.placement_since: datetime | None = None
        self.above: datetime | None = None
        self.below: datetime | None = None
        self.next_placement: datetime | None = None
        self.target: DeploymentMode | None = None
        self.target_floor = 0
        self.decisions: list[tuple[datetime, str, str]] = []

    # -- helpers -------------------------------------------------------------------------------

    def _limit(self) -> int:
        return self.cfg.hybrid.overflow_concurrency_per_replica

    def _scale(
        self,
        *,
        policy: autoscale.AutoscalePolicy,
        current: int,
        ready: int,
        queue: float,
        wake: bool,
        now: datetime,
        overflow: bool = False,
    ) -> autoscale.ScaleDecision:
        assert self.started is not None
        d = autoscale.decide(
            autoscale.AutoscaleInputs(
                policy=policy,
                current_replicas=current,
                ready_replicas=ready,
                queue=signals.Sample(queue, now),
                wake_requested=wake,
                pinned_replicas=None,
                last_active_at=self.overflow_active if overflow else self.last_active,
                history=self.overflow_history if overflow else self.history,
                operator_started_at=self.started,
            ),
            now,
        )
        if overflow:
            self.overflow_active, self.overflow_history = d.last_active_at, d.history
        else:
            self.last_active, self.history = d.last_active_at, d.history
        return d

    def _need(self, mode: DeploymentMode, demand: float, floor: int) -> tuple[int, int]:
        """(shared, dedicated) replicas a migration target should have Ready before switching."""
        want = max(1, math.ceil(demand / self.policy.target_queue_depth))
        if mode == DeploymentMode.DEDICATED:
            return 0, self.dedicated_policy.clamp(want)
        if mode == DeploymentMode.HYBRID:
            spill = max(0.0, demand - floor * self._limit())
            return math.ceil(spill / self.policy.target_queue_depth), floor
        return self.policy.clamp(want), 0

    def _place(self, obs: Observation) -> None:
        now = obs.now
        cfg = self.cfg
        stats = obs.window(self.placement_policy.window.total_seconds())
        if stats is None:
            why = signals.NoData("placement window not yet full")
            traffic = placement.Traffic(why, why, why)
        else:
            mean, peak, tps = stats
            traffic = placement.Traffic(
                signals.Sample(mean, now), signals.Sample(peak, now), signals.Sample(tps, now)
            )
        d = placement.decide(
            placement.PlacementInputs(
                requested_mode=self.requested,
                current_mode=self.mode,
                policy=self.placement_policy,
                traffic=traffic,
                capacity_per_replica=cfg.engine.max_num_seqs,
                gpus_per_replica=cfg.engine.gpus_per_replica,
                min_replicas=self.policy.min_replicas,
                shared=cfg.prices.shared_pool(),
                dedicated=cfg.prices.dedicated_pool(),
                placement_since=self.placement_since,
                above_since=self.above,
                below_since=self.below,
                migration_in_progress=self.target is not None,
                overflow_concurrency_per_replica=self._limit(),
            ),
            now,
        )
        self.above, self.below = d.above_since, d.below_since
        if self.placement_since is None and d.reason == placement.PlacementReason.HOLDING:
            # The first full window confirmed the initial placement: from now on it is a
            # placement chosen on evidence, with the dwell and hold of any other.
            self.placement_since = now
        if d.move:
            self.target = d.mode
            self.target_floor = d.floor_replicas
            self.decisions.append((now, d.reason, d.message))

    # -- Controller ----------------------------------------------------------------------------

    def initial(self, concurrency: float, now: datetime) -> Command:
        self.started = now - _LONG_AGO
        self.last_active = now
        self.next_placement = now
        want = math.ceil(concurrency / self.policy.target_queue_depth)
        if self.mode == DeploymentMode.DEDICATED:
            return Command(0, self.dedicated_policy.clamp(want), 0.0, mode=self.mode)
        if self.mode == DeploymentMode.HYBRID:
            return Command(0, self.floor, 0.0, dedicated_limit=self._limit(), mode=self.mode)
        return Command(self.policy.clamp(want), 0, 0.0, mode=self.mode)

    def tick(self, obs: Observation) -> Command:
        now = obs.now
        if (
            self.requested == DeploymentMode.AUTO
            and self.next_placement is not None
            and now >= self.next_placement
        ):
            self._place(obs)
            self.next_placement = now + timedelta(seconds=self.cfg.placement_tick_s)

        # Serve in the current mode.
        shared = dedicated = 0
        requeue = autoscale.DEFAULT_REQUEUE
        if self.mode == DeploymentMode.SERVERLESS:
            d = self._scale(
                policy=self.policy,
                current=obs.shared,
                ready=obs.shared_ready,
                queue=obs.recent_demand,
                wake=obs.wake,
                now=now,
            )
            shared, requeue = d.replicas, d.requeue_after
        elif self.mode == DeploymentMode.DEDICATED:
            d = self._scale(
                policy=self.dedicated_policy,
                current=obs.dedicated,
                ready=obs.dedicated_ready,
                queue=obs.recent_demand,
                wake=obs.wake,
                now=now,
            )
            dedicated, requeue = d.replicas, d.requeue_after
        else:
            dedicated = self.floor
            spill = max(0.0, obs.recent_demand - obs.dedicated_ready * self._limit())
            d = self._scale(
                policy=self.overflow_policy,
                current=obs.shared,
                ready=obs.shared_ready,
                queue=spill,
                wake=obs.wake,
                now=now,
                overflow=True,
            )
            shared, requeue = d.replicas, d.requeue_after
        route_shared = self.mode != DeploymentMode.DEDICATED
        route_dedicated = self.mode != DeploymentMode.SERVERLESS
        limit = self._limit() if self.mode == DeploymentMode.HYBRID else 0

        # Make-before-break: bring the target up next to the current pools, switch once Ready.
        if self.target is not None:
            need_sh, need_de = self._need(self.target, obs.recent_demand, self.target_floor)
            if DeploymentMode.HYBRID in (self.target, self.mode):
                # Pools overlap: keep what serves now and add what the target needs.
                shared, dedicated = max(shared, need_sh), max(dedicated, need_de)
            elif self.target == DeploymentMode.DEDICATED:
                dedicated = max(dedicated, need_de)
            else:
                shared = max(shared, need_sh)
            ready = (
                obs.shared_ready >= need_sh
                if need_sh and self.target == DeploymentMode.SERVERLESS
                else True
            ) and obs.dedicated_ready >= need_de
            if ready:
                self.mode = self.target
                self.floor = self.target_floor if self.target == DeploymentMode.HYBRID else 0
                self.placement_since = now
                self.target = None
                self.history = self.overflow_history = ()
                # The old pool goes away now that the new one routes (its requests drain).
                route_shared = self.mode != DeploymentMode.DEDICATED
                route_dedicated = self.mode != DeploymentMode.SERVERLESS
                limit = self._limit() if self.mode == DeploymentMode.HYBRID else 0
                if self.mode == DeploymentMode.DEDICATED:
                    shared, dedicated = 0, need_de
                elif self.mode == DeploymentMode.SERVERLESS:
                    shared, dedicated = need_sh, 0
                else:
                    shared, dedicated = need_sh, self.floor
            requeue = min(requeue, timedelta(seconds=5))
        return Command(
            shared=shared,
            dedicated=dedicated,
            next_tick_s=requeue.total_seconds(),
            route_shared=route_shared,
            route_dedicated=route_dedicated,
            dedicated_limit=limit,
            mode=str(self.mode) + (f"->{self.target}" if self.target else ""),
        )


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


class StaticHybrid:
    """A fixed dedicated floor of ``floor`` replicas; the overflow autoscaled on the shared pool."""

    push_wake = True

    def __init__(self, cfg: config.SimConfig, floor: int) -> None:
        self.name = f"static-hybrid(floor={floor})"
        self.floor = floor
        self.inner = Tidepool(cfg, DeploymentMode.SERVERLESS)
        self.limit = cfg.hybrid.overflow_concurrency_per_replica

    def initial(self, concurrency: float, now: datetime) -> Command:
        sub = self.inner.initial(max(0.0, concurrency - self.floor * self.limit), now)
        return Command(sub.shared, self.floor, 0.0, dedicated_limit=self.limit, mode="hybrid")

    def tick(self, obs: Observation) -> Command:
        spill = max(0.0, obs.recent_demand - obs.dedicated_ready * self.limit)
        now_spill = max(0.0, obs.demand - obs.dedicated_ready * self.limit)
        sub = self.inner.tick(
            replace(obs, demand=now_spill, recent_demand=spill, queued=min(obs.queued, now_spill))
        )
        return Command(
            sub.shared, self.floor, sub.next_tick_s, dedicated_limit=self.limit, mode="hybrid"
        )


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
