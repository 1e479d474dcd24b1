"""Make-before-break moves between pool layouts, as a pure step function.

A *layout* says which pools a mode uses and in which role:

=============  ==========================================
serverless     shared: primary
dedicated      dedicated: primary
hybrid         dedicated: primary, shared: overflow
=============  ==========================================

For a LoRA tenant of a SharedEngine, serverless is the engine's pseudo-pool
(``sharedengine/<name>``, :func:`engine_pool`): it is Ready once the fleet holds the tenant's
adapter, routed while ``status.engine`` names the engine, and "removed" by the SharedEngine
unloading the adapter once the tenant is no longer its member.

A migration goes from the current layout to the target layout in three phases, each durable in
``status.migration`` so a restarted operator resumes where it stopped:

1. ``StartingTarget``: pools new to the target layout get replicas; traffic still goes to the old
   pools only. Waits until every new pool has at least one Ready replica.
2. ``ShiftingTraffic``: the gateway's routable pools become the target layout's pools. Old-only
   pools become ``draining``: no new requests, in-flight ones (long streams too) finish.
3. ``Draining``: waits until draining pools report zero in flight (or ``drain_timeout``, with at
   least ``min_drain`` for the gateway's watch to see the shift), then the old pools are removed.

A spec that asks for another mode or other pools while a migration runs redirects it
(:func:`redirect`), so the stale move is not finished first and undone after: before the shift
the target only started, so the move is aborted (or restarted toward the new mode) from the
source; after the shift the target serves, so a new move starts from it, toward the new mode,
and the draining pools it still needs become its target (already Ready, they take traffic back
at once). A move runs on the pools it recorded in ``status.migration`` (:func:`recorded`).

Nothing here talks to Kubernetes; :mod:`tidepool.reconcile` renders what this returns.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from tidepool.api.v1alpha1 import DeploymentMode, MigrationPhase, MigrationStatus, PoolRole
from tidepool.policy.signals import NoData, Sample, Signal

MIN_DRAIN: Final = timedelta(seconds=5)
"""Time for the gateway's watch to see the routing shift before in-flight counts are trusted."""
DRAIN_TIMEOUT: Final = timedelta(minutes=15)
"""Longest wait for draining pools; longer than any sane stream (vLLM's own default is 10m)."""
START_TIMEOUT: Final = timedelta(minutes=30)
"""Give up starting the target after this long (no GPU free, image pull stuck): roll back."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Pool name -> role (``primary`` or ``overflow``) for one mode."""

    roles: tuple[tuple[str, PoolRole], ...]

    @property
    def pools(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.roles)

    def role(self, pool: str) -> PoolRole | None:
        return dict(self.roles).get(pool)


def layout_for(
    mode: DeploymentMode, *, shared: str | None, dedicated: str | None, engine: str | None = None
) -> Layout:
    """The pools ``mode`` runs on. Raises ValueError naming the missing pool tenancy.

    ``engine``: for a LoRA tenant of a SharedEngine, the fleet's pseudo-pool
    (:func:`engine_pool`), which is then its serverless layout: a migration to or from it starts,
    shifts and drains like any other, but renders no Deployment of the tenant's.
    """
    if mode == DeploymentMode.SERVERLESS and engine:
        return Layout(((engine, PoolRole.PRIMARY),))
    if mode == DeploymentMode.SERVERLESS:
        if not shared:
            raise ValueError("mode serverless needs a GPUPool with tenancy shared")
        return Layout(((shared, PoolRole.PRIMARY),))
    if mode == DeploymentMode.DEDICATED:
        if not dedicated:
            raise ValueError("mode dedicated needs a GPUPool with tenancy dedicated")
        return Layout(((dedicated, PoolRole.PRIMARY),))
    if mode == DeploymentMode.HYBRID:
        if not (shared and dedicated):
            raise ValueError("mode hybrid needs one shared and one dedicated GPUPool")
        return Layout(((dedicated, PoolRole.PRIMARY), (shared, PoolRole.OVERFLOW)))
    raise ValueError(f"mode {mode} has no fixed layout; resolve auto to a concrete mode first")


#: Prefix of a SharedEngine's pseudo-pool in layouts and ``status.migration``. A GPUPool's name
#: is a DNS label, so it never holds the ``/``.
ENGINE_POOL_PREFIX: Final = "sharedengine/"


def engine_pool(engine: str) -> str:
    """The pseudo-pool standing for SharedEngine ``engine`` in a layout: ``sharedengine/base``."""
    return f"{ENGINE_POOL_PREFIX}{engine}"


def is_engine_pool(pool: str) -> bool:
    return pool.startswith(ENGINE_POOL_PREFIX)


@dataclass(frozen=True, slots=True)
class PoolObservation:
    """What the cluster shows for one pool of this InferenceDeployment."""

    ready_replicas: int
    inflight: Signal
    """Requests in flight on this pool's replicas (gateway plus engine); NoData if unknown."""


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """Where a migration stands after one step, and what to render."""

    status: MigrationStatus | None
    """The new durable state; None once complete."""
    roles: tuple[tuple[str, PoolRole], ...]
    """Every pool that must exist now, with its role (``target`` and ``draining`` included)."""
    routable: tuple[str, ...]
    """Pools the gateway may send new requests to."""
    completed: bool
    rolled_back: bool
    message: str


def start(
    *,
    from_mode: DeploymentMode,
    to_mode: DeploymentMode,
    source: Layout,
    target: Layout,
    reason: str,
    now: datetime,
) -> MigrationStatus:
    """A new migration in its first phase."""
    return MigrationStatus(
        phase=MigrationPhase.STARTING_TARGET,
        from_pool=",".join(source.pools),
        to_pool=",".join(target.pools),
        to_mode=to_mode,
        started_at=now,
        phase_since=now,
        reason=f"{from_mode} -> {to_mode}: {reason}",
    )


@dataclass(frozen=True, slots=True)
class Redirect:
    """A migration turned toward the mode the spec asks for now."""

    serving_mode: DeploymentMode
    """The mode whose layout takes the traffic now: the source's before the shift, the
    target's after it. The tenant's effective mode from here on."""
    serving: Layout
    """That layout: the pools in ``serving_mode``'s roles."""
    status: MigrationStatus | None
    """The new migration from ``serving_mode``, or None: aborted, the serving layout stays."""
    message: str


def recorded(mode: DeploymentMode, pools: str, fallback: Layout) -> Layout:
    """The layout ``status.migration`` recorded for ``mode`` (``from_pool`` or ``to_pool``, the
    pools :func:`layout_for` gave in that order), or ``fallback`` when the pools do not fit the
    mode's roles. The pools in play are these, whatever the spec names since."""
    names = tuple(p for p in pools.split(",") if p)
    roles = (
        (PoolRole.PRIMARY, PoolRole.OVERFLOW)
        if mode == DeploymentMode.HYBRID
        else (PoolRole.PRIMARY,)
    )
    return Layout(tuple(zip(names, roles, strict=True))) if len(names) == len(roles) else fallback


def redirect(
    status: MigrationStatus,
    *,
    current_mode: DeploymentMode,
    source: Layout,
    target: Layout,
    wanted_mode: DeploymentMode,
    wanted: Layout,
    now: datetime,
) -> Redirect | None:
    """Turn ``status`` (a move from ``current_mode`` on ``source`` to ``target``) toward
    ``wanted_mode`` on ``wanted``, the spec's mode and pools now; None when it already goes
    there or cannot turn yet.

    Make-before-break holds throughout: traffic stays on the pools that serve it, and the new
    move shifts it only once its target is Ready. It cannot turn yet while a pool drains that
    ``wanted`` does not use (its requests finish first; then the next move starts). E.g.
    serverless on ``shared`` -> dedicated on ``ded``, Draining, and the spec says serverless
    again: a new move dedicated -> serverless starts with ``shared``, still Ready, as target.
    """
    if (wanted_mode, wanted.roles) == (status.to_mode, target.roles):
        return None
    if status.phase == MigrationPhase.STARTING_TARGET:
        serving_mode, serving = current_mode, source
    else:
        serving_mode, serving = status.to_mode, target
        draining = [p for p in source.pools if p not in target.pools]
        if any(p not in wanted.pools for p in draining):
            return None
    was = (
        f"spec.mode changed to {wanted_mode} during the move to {status.to_mode}"
        if wanted_mode != status.to_mode
        else f"spec pools changed to {', '.join(wanted.pools)} during the move to"
        f" {', '.join(target.pools)}"
    )
    if (wanted_mode, wanted.roles) == (serving_mode, serving.roles):
        return Redirect(
            serving_mode,
            serving,
            None,
            f"{was}: move aborted before the shift; serving on {', '.join(serving.pools)}",
        )
    moved = start(
        from_mode=serving_mode,
        to_mode=wanted_mode,
        source=serving,
        target=wanted,
        reason=was,
        now=now,
    )
    return Redirect(
        serving_mode,
        serving,
        moved,
        f"{was}: moving from {', '.join(serving.pools)} to {', '.join(wanted.pools)} instead",
    )


def _roles_during(
    phase: MigrationPhase, source: Layout, target: Layout
) -> tuple[tuple[str, PoolRole], ...]:
    roles: dict[str, PoolRole] = {}
    for pool, role in source.roles:
        roles[pool] = role
    for pool, role in target.roles:
        if pool not in roles:
            roles[pool] = PoolRole.TARGET if phase == MigrationPhase.STARTING_TARGET else role
        elif phase != MigrationPhase.STARTING_TARGET:
            roles[pool] = role
    if phase != MigrationPhase.STARTING_TARGET:
        for pool in source.pools:
            if pool not in target.pools:
                roles[pool] = PoolRole.DRAINING
    return tuple(roles.items())


@dataclass(frozen=True, slots=True)
class _Moving:
    """One call of :func:`step`: the durable state, both layouts and what the cluster shows."""

    status: MigrationStatus
    source: Layout
    target: Layout
    observed: dict[str, PoolObservation]
    now: datetime

    @property
    def new_pools(self) -> list[str]:
        """Pools the target adds: the ones that must have a Ready replica before the shift."""
        return [p for p in self.target.pools if p not in self.source.pools]

    @property
    def old_only(self) -> list[str]:
        """Pools the target drops: the ones that drain after the shift."""
        return [p for p in self.source.pools if p not in self.target.pools]


def step(
    status: MigrationStatus,
    *,
    source: Layout,
    target: Layout,
    observed: dict[str, PoolObservation],
    now: datetime,
) -> MigrationStep:
    """Advance ``status`` by at most one phase, given what the cluster shows ``now``.

    Worked example (serverless on ``shared`` -> dedicated on ``ded``):
    StartingTarget with ``ded`` 0 ready -> stays, routable (shared,);
    ``ded`` 1 ready -> ShiftingTraffic, routable (ded,), shared draining;
    next step -> Draining; shared in-flight 3 -> stays; in-flight 0 after 5s -> completed,
    roles (("ded", "primary"),).
    """
    m = _Moving(status, source, target, observed, now)
    if status.phase == MigrationPhase.STARTING_TARGET:
        return _starting_target(m)
    if status.phase == MigrationPhase.SHIFTING_TRAFFIC:
        return _advance(
            m,
            MigrationPhase.DRAINING,
            f"traffic shifted to {', '.join(target.pools)};"
            f" draining {', '.join(m.old_only) or '-'}",
        )
    return _draining(m)


def _advance(m: _Moving, to: MigrationPhase, message: str) -> MigrationStep:
    """Into phase ``to``, its clock restarted; from here on the target layout takes traffic."""
    return MigrationStep(
        status=m.status.model_copy(update={"phase": to, "phase_since": m.now}),
        roles=_roles_during(to, m.source, m.target),
        routable=m.target.pools,
        completed=False,
        rolled_back=False,
        message=message,
    )


def _stay(m: _Moving, message: str) -> MigrationStep:
    """Still in this phase: before the shift the source serves, after it the target does."""
    phase = m.status.phase
    routable = m.source.pools if phase == MigrationPhase.STARTING_TARGET else m.target.pools
    return MigrationStep(
        status=m.status,
        roles=_roles_during(phase, m.source, m.target),
        routable=routable,
        completed=False,
        rolled_back=False,
        message=message,
    )


def _end_on(layout: Layout, *, rolled_back: bool, message: str) -> MigrationStep:
    """The migration is over, serving on ``layout`` alone: the target once it completed, the
    source when it rolled back (no status left to carry)."""
    return MigrationStep(
        status=None,
        roles=layout.roles,
        routable=layout.pools,
        completed=not rolled_back,
        rolled_back=rolled_back,
        message=message,
    )


def _starting_target(m: _Moving) -> MigrationStep:
    """Phase 1: shift once every new pool has a Ready replica; roll back to the source after
    :data:`START_TIMEOUT` (no GPU free, an image that never pulls), which never took traffic."""
    waiting = [p for p in m.new_pools if m.observed.get(p, _NONE).ready_replicas < 1]
    if not waiting:
        return _advance(
            m,
            MigrationPhase.SHIFTING_TRAFFIC,
            f"target pools {', '.join(m.target.pools)} ready; shifting traffic",
        )
    if m.now - m.status.started_at > START_TIMEOUT:
        return _end_on(
            m.source,
            rolled_back=True,
            message=(
                f"rolled back: {', '.join(waiting)} had no ready replica after"
                f" {int(START_TIMEOUT.total_seconds() // 60)}m; still serving on"
                f" {', '.join(m.source.pools)}"
            ),
        )
    return _stay(m, f"starting replicas in {', '.join(waiting)}; serving from {m.status.from_pool}")


def _draining(m: _Moving) -> MigrationStep:
    """Phase 3: complete once the dropped pools report nothing in flight after
    :data:`MIN_DRAIN`, or at :data:`DRAIN_TIMEOUT` whatever they report; an unknown in-flight
    count is not zero, so it waits for the timeout."""
    busy, unknown = _still_draining(m)
    age = m.now - m.status.phase_since
    drained = not busy and not unknown and age >= MIN_DRAIN
    timed_out = age >= DRAIN_TIMEOUT
    if drained or timed_out or not m.old_only:
        note = "drained" if not timed_out or drained else "drain timeout reached"
        return _end_on(
            m.target,
            rolled_back=False,
            message=(
                f"migration to {m.status.to_mode} complete ({note}); now on"
                f" {', '.join(m.target.pools)} after"
                f" {int((m.now - m.status.started_at).total_seconds())}s"
            ),
        )
    detail = ", ".join(busy + [f"{p} (in-flight unknown)" for p in unknown]) or "settling"
    return _stay(m, f"draining {detail}")


def _still_draining(m: _Moving) -> tuple[list[str], list[str]]:
    """The dropped pools with requests in flight (described with their count), and those
    whose in-flight count is unknown."""
    busy: list[str] = []
    unknown: list[str] = []
    for pool in m.old_only:
        inflight = m.observed.get(pool, _NONE).inflight
        if isinstance(inflight, NoData):
            unknown.append(pool)
        elif isinstance(inflight, Sample) and inflight.value > 0:
            busy.append(f"{pool} ({int(inflight.value)} in flight)")
    return busy, unknown


_NONE: Final = PoolObservation(ready_replicas=0, inflight=NoData("not observed"))
