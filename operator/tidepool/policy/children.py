"""A tenant's children as the cluster shows them: its engine Deployments and the pods that cannot
run, and when a Deployment of an older name goes.

A change of the naming rule (:mod:`tidepool.api.names`) gives an existing tenant's children a
new name on an operator upgrade: ``support-bot`` on ``shared-a100`` ran Deployment
``support-bot-shared-a100`` and now gets ``support-bot-shared-a100-<hash>``. Both carry the
same pod labels, so the Service and the gateway send requests to the pods of both. The
operator adopts the new name make-before-break: the plan sizes the pool from the Deployment
that serves it (:func:`serving_view`), the current one is applied beside the older one, and
the older one goes only once the current one has as many ready replicas as the pool should
serve (:func:`retired`), as Kubernetes' own rolling update (maxUnavailable 0) would do.

Both the InferenceDeployment's plan and the SharedEngine's use these rules.

This module must not read the clock, do I/O, or import ``kopf``/``kubernetes``.
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tidepool.api.conditions import Reason
from tidepool.policy import fair_share


@dataclass(frozen=True, slots=True)
class ObservedDeployment:
    """An engine Deployment as the cluster shows it."""

    name: str
    pool: str
    replicas: int
    ready_replicas: int
    updated_replicas: int
    generation_observed: bool
    replica_failure: str | None = None
    """Why its ReplicaSet cannot create pods (the ``ReplicaFailure`` condition's message), if
    it cannot: then no pod exists whose status could say why."""
    outdated_replicas: int = 0
    """Pods still up from an older pod template (a rollout under way), or serving the pool
    under an older name (:func:`serving_view`): they run what the current template no longer
    says."""
    scheduling_policy: str = fair_share.FCFS
    """vLLM's ``--scheduling-policy`` its pod template's engine runs
    (:func:`tidepool.policy.fair_share.scheduling_policy`)."""


@dataclass(frozen=True, slots=True)
class PodProblem:
    """An engine pod that cannot run, e.g. ``Unschedulable: 0/4 nodes have free nvidia.com/gpu``,
    or, with ``pod`` empty, engine pods that cannot even be created (:func:`replica_failures`)."""

    pod: str
    pool: str
    reason: str
    message: str


def replica_failures(deployments: Iterable[ObservedDeployment]) -> tuple[PodProblem, ...]:
    """The engine Deployments whose pods cannot be created, as problems of no pod, e.g.
    ``Deployment llama-dedicated-a100: pods "..." is forbidden: ... serviceaccount "engine" not
    found``."""
    return tuple(
        PodProblem(
            pod="",
            pool=d.pool,
            reason=Reason.REPLICA_FAILURE,
            message=f"Deployment {d.name}: {d.replica_failure}",
        )
        for d in deployments
        if d.replica_failure is not None
    )


def split_renamed(
    listed: Iterable[ObservedDeployment], current_name: Callable[[str], str]
) -> tuple[dict[str, ObservedDeployment], tuple[ObservedDeployment, ...]]:
    """Pool -> the Deployment named ``current_name(pool)``, and every other one (stale), by
    name. E.g. for ``support-bot``: ``support-bot-shared-a100-<hash>`` is current and
    ``support-bot-shared-a100`` stale."""
    current: dict[str, ObservedDeployment] = {}
    stale: list[ObservedDeployment] = []
    for dep in sorted(listed, key=lambda d: d.name):
        if dep.name == current_name(dep.pool):
            current[dep.pool] = dep
        else:
            stale.append(dep)
    return current, tuple(stale)


def serving_view(
    current: ObservedDeployment | None, stale: Iterable[ObservedDeployment]
) -> ObservedDeployment | None:
    """The Deployment that stands for a pool while ones of an older name may serve it too.

    Its replicas are the current one's, what this operator last asked for; before the current
    one exists, the older one's with the most ready replicas, what the last operator asked for,
    so that the first plan after an upgrade starts from the replicas that serve and not from
    zero. Its ready replicas are the most that any of them has ready: not their sum, which
    would count a pool twice over while the current one catches up (``ready`` 4/2). The older
    ones' replicas count as outdated: their pods run an older operator's template.
    E.g. current 2 replicas 0 ready, older 2 ready: 2 replicas, 2 ready, 2 outdated.
    """
    older = sorted(stale, key=lambda d: (-d.ready_replicas, -d.replicas, d.name))
    if not older:
        return current
    if current is None:
        return older[0]
    return dataclasses.replace(
        current,
        ready_replicas=max(current.ready_replicas, older[0].ready_replicas),
        outdated_replicas=current.outdated_replicas + sum(d.replicas for d in older),
    )


def serving_deployments(
    current: Mapping[str, ObservedDeployment], stale: Sequence[ObservedDeployment]
) -> dict[str, ObservedDeployment]:
    """Pool -> :func:`serving_view` of its Deployments, for every pool that has one."""
    pools = sorted({*current, *(d.pool for d in stale)})
    views = {p: serving_view(current.get(p), [d for d in stale if d.pool == p]) for p in pools}
    return {p: v for p, v in views.items() if v is not None}


def may_retire(current: ObservedDeployment | None, wanted: int) -> bool:
    """Whether a pool's Deployments of an older name may go, the plan wanting ``wanted``
    replicas there: when the pool is scaled to zero, or when the current Deployment has at
    least ``wanted`` ready replicas, so that what is left still serves all the pool should."""
    return wanted <= 0 or (current is not None and current.ready_replicas >= wanted)


def retired(
    current: Mapping[str, ObservedDeployment],
    stale: Sequence[ObservedDeployment],
    wanted: Mapping[str, int],
) -> tuple[str, ...]:
    """Engine Deployments to delete, by name: every one in a pool the plan no longer uses (not
    in ``wanted``, pool -> replicas), and each of an older name once :func:`may_retire`."""
    unused = {d.name for pool, d in current.items() if pool not in wanted}
    older = {
        d.name
        for d in stale
        if d.pool not in wanted or may_retire(current.get(d.pool), wanted[d.pool])
    }
    return tuple(sorted(unused | older))


def stale_services(listed: Sequence[str] | None, current: str) -> tuple[str, ...]:
    """Services of an older name than ``current``, to delete once ``current`` exists (it selects
    the same pods, so a client that follows ``status.endpoint`` is never without one). Nothing
    when the Services were not looked at (``None``)."""
    if listed is None or current not in listed:
        return ()
    return tuple(sorted(name for name in listed if name != current))
