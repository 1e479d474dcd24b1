"""Kopf handlers for InferenceDeployment.

One daemon per object is the single writer of its children and status, so there are no races
between a timer and change handlers. Change handlers and the gateway's wake annotation only poke
the daemon (a :class:`~tidepool.handlers.daemon.Poke` in the object's memo), which then
reconciles at once: a wake reaches ``replicas: 1`` within one API round trip, not a Prometheus
scrape later. The daemon and the handlers are async, so they hold no thread while they wait
(:mod:`tidepool.handlers.daemon` says why); only the reconcile itself runs on a thread.

Errors are Kopf's to retry: a transient API error becomes ``kopf.TemporaryError`` with a delay,
anything else propagates and Kopf restarts the daemon after ``settings.execution.default_backoff``
(Kopf's docs on error handling).
"""

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, TypeVar

import kopf
from pydantic import BaseModel

from tidepool.adapters.kube import NamespaceGoneError, RefusedKubeError
from tidepool.adapters.prometheus import utc_now
from tidepool.api import labels
from tidepool.api.conditions import ConditionType, Reason, set_condition
from tidepool.api.v1alpha1 import (
    GROUP,
    VERSION,
    Condition,
    InferenceDeployment,
    InferenceDeploymentStatus,
)
from tidepool.handlers.daemon import Poke, reconcile_until_stopped
from tidepool.handlers.deps import MEMO_KEY, Deps
from tidepool.handlers.posting import post_decisions
from tidepool.handlers.watched import Indices, WatchedKube
from tidepool.policy import cold_start
from tidepool.reconcile import inference
from tidepool.reconcile.ports import KubePort

RESOURCE = (GROUP, VERSION, "inferencedeployments")
JSON = dict[str, Any]
#: How soon an object whose spec cannot work is looked at again (a spec change pokes at once).
INVALID_SPEC_REQUEUE_SECONDS: Final = 30.0
OWN_WRITES_KEY: Final = "own_writes"


def _poke(memo: kopf.Memo) -> Poke:
    # setdefault: the daemon and the handlers may get here first in any order.
    poke: Poke = memo.get("poke") or memo.setdefault("poke", Poke())
    return poke


def resource_version(obj: Mapping[str, Any]) -> str:
    """``metadata.resourceVersion`` as the opaque string Kubernetes documents it to be."""
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


@dataclass(frozen=True, slots=True)
class _Written:
    version: str
    body: JSON
    at: float


class OwnWrites:
    """The daemon's own last status write, until Kopf's live view has caught up with it.

    The write returns the object as the API server stored it, fresher than the watch event that
    carries it (which may still be in flight); reconciling from the older live view would write
    stale status back (an older decision, a migration phase already left). ``resourceVersion``
    is opaque (the Kubernetes API concepts page: clients must not assume versions are numeric
    or ordered), so the stored copy is preferred until the watch delivers exactly its version,
    or, as Kopf does for its own patches (``settings.persistence.consistency_timeout``), until
    a timeout passes without it.
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._writing = False
        self._seen_while_writing: set[str] = set()
        self._pending: _Written | None = None

    def awaiting(self) -> bool:
        """Whether a write is in flight or not yet delivered (the only time events matter)."""
        with self._lock:
            return self._writing or self._pending is not None

    def observe(self, version: str) -> None:
        """A watch event with this version reached Kopf (called for every event, in order)."""
        with self._lock:
            if self._writing:
                self._seen_while_writing.add(version)
            if self._pending is not None and self._pending.version == version:
                self._pending = None

    def write(self, do_write: Callable[[], JSON | None]) -> JSON | None:
        """Run ``do_write`` and remember what it stored.

        Its own event may be observed before ``do_write`` returns; the versions seen meanwhile
        are kept so that such an early event still counts as delivered. A write that stored
        nothing (None: the object was deleted meanwhile) leaves nothing to wait for.
        """
        with self._lock:
            self._writing = True
        stored: JSON | None = None
        try:
            stored = do_write()
        finally:
            with self._lock:
                self._writing = False
                if stored is not None:
                    version = resource_version(stored)
                    delivered = version in self._seen_while_writing
                    self._pending = None if delivered else _Written(version, stored, self._clock())
                self._seen_while_writing.clear()
        return stored

    def newest(self, live: JSON) -> JSON:
        """``live`` once it has caught up with our last write (or waited long enough for it)."""
        with self._lock:
            pending = self._pending
            if pending is None:
                return live
            if (
                resource_version(live) == pending.version
                or self._clock() - pending.at >= self._timeout
            ):
                self._pending = None
                return live
            return pending.body


def _own_writes(memo: kopf.Memo) -> OwnWrites:
    deps: Deps = memo[MEMO_KEY]
    writes: OwnWrites | None = memo.get(OWN_WRITES_KEY)
    return writes or memo.setdefault(OWN_WRITES_KEY, OwnWrites(deps.consistency_timeout))


def _wake_pending(body: kopf.Body, **_: Any) -> bool:
    annotations = body.get("metadata", {}).get("annotations")
    return (
        labels.pending_wake(annotations, body.get("status", {}).get("lastWakeHandled")) is not None
    )


def _awaiting_own_write(memo: kopf.Memo, **_: Any) -> bool:
    return _own_writes(memo).awaiting()


@kopf.on.event(*RESOURCE, when=_awaiting_own_write)
async def observe(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The watch events, in order, while our own status write is awaited: tells the daemon
    when it has arrived.

    Async, so it costs no executor thread; filtered, so Kopf logs a line for it only around
    our own writes, not for every event.
    """
    _own_writes(memo).observe(resource_version(body))


@kopf.on.event(*RESOURCE, when=_wake_pending)
async def wake(memo: kopf.Memo, **_: Any) -> None:
    """The gateway holds a request for this model: reconcile now, not at the next tick.

    A raw watch event, not a change handler: Kopf's change detection is needless latency here,
    and the daemon ignores a wake it has already handled (``status.lastWakeHandled``).
    """
    _poke(memo).set()


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def poke(memo: kopf.Memo, **_: Any) -> None:
    """Something changed that the daemon should act on now.

    The daemon reads Kopf's live view, which Kopf refreshes with each event before it calls
    that event's handlers, so a poke carries no body.
    """
    _poke(memo).set()


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0)
async def reconcile_loop(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Reconcile whenever poked, or after the decision's requeue interval."""
    deps: Deps = memo[MEMO_KEY]
    kube = WatchedKube(deps.kube, Indices.from_kwargs(kwargs))
    poked = _poke(memo)
    cache = memo.setdefault("cache", inference.ObjectCache())
    writes = _own_writes(memo)
    key = f"{body.get('metadata', {}).get('namespace')}/{body.get('metadata', {}).get('name')}"
    try:
        await reconcile_until_stopped(
            stopped,
            poked,
            lambda: _reconcile_once(
                writes.newest(dict(body)),
                body=body,
                deps=deps,
                kube=kube,
                cache=cache,
                writes=writes,
                logger=logger,
                key=key,
            ),
            deps=deps,
        )
    finally:
        # Also while Kopf waits out a retry: it may stop the daemon then without calling it
        # again, and a slot kept would leak. The next reconcile claims the slot back.
        deps.note_migration(key, active=False)


def _reconcile_once(
    raw: JSON,
    *,
    body: kopf.Body,
    deps: Deps,
    kube: KubePort,
    cache: inference.ObjectCache,
    writes: OwnWrites,
    logger: kopf.Logger,
    key: str,
) -> float:
    infd = validated_or_reported(InferenceDeployment, raw, deps=deps, logger=logger)
    if infd is None:
        return INVALID_SPEC_REQUEUE_SECONDS
    try:
        result = inference.sync(
            infd,
            kube=kube,
            metrics=deps.metrics,
            cache=cache,
            context=inference.Context(
                operator_started_at=deps.started_at,
                may_start_migration=deps.may_start_migration(key),
            ),
            now=utc_now(),
        )
    except NamespaceGoneError as exc:
        # `kubectl delete namespace` with objects in it: this object's deletion is on its way,
        # and Kopf stops the daemon when it lands. No traceback for an ordinary delete.
        logger.info(f"its namespace is going away, nothing to reconcile: {exc}")
        return deps.tick_seconds
    except RefusedKubeError as exc:
        # The spec passed the schema, but the API server refuses what it renders (say, an env
        # var name it does not take): the same spec can never succeed, so the object says so,
        # instead of a traceback at every backoff and no status at all.
        logger.error(f"the API server refused an object rendered from the spec: {exc}")
        report_invalid_spec(
            raw, f"the API server refused an object rendered from the spec: {exc}", deps=deps
        )
        return INVALID_SPEC_REQUEUE_SECONDS
    deps.note_migration(key, active=result.status.migration is not None)
    new_status = result.status.model_dump(mode="json", by_alias=True)
    old_status = raw.get("status") or {}
    if _differs(new_status, old_status):
        writes.write(lambda: deps.kube.merge_patch_status(infd.namespace, infd.name, new_status))
    completed = cold_start.just_completed(infd.status.cold_start, result.status.cold_start)
    if completed is not None:  # written: a retry of this sync finds it completed already
        deps.telemetry.observe_cold_start(completed)
    post_decisions(body, result.events, deps=deps)
    return next_look_seconds(infd, result.status, result.requeue_after, tick=deps.tick_seconds)


def next_look_seconds(
    infd: InferenceDeployment,
    status: InferenceDeploymentStatus,
    requeue_after: timedelta,
    *,
    tick: float,
) -> float:
    """Seconds until the daemon looks again unpoked: the plan's requeue, at most one tick (the
    operator's ``--tick``, its autoscaling cadence), except for a tenant of its own replicas idle
    at zero. Such a tenant has nothing to scale until a request comes, and the gateway pokes it
    at once when one does (the held request's wake), so it waits out the plan's requeue (15 s).
    At 1,000 tenants, two thirds of them idle, that takes the timed reconciles from 200 to 111
    a second. The queue figure is not consulted: at zero, every request is one the gateway
    holds, and it pokes for each; the figure (unknown for a tenant never sent a request) would
    only confirm that 15 s later.

    E.g. tick 5 s, plan 15 s: at zero, 15; with one replica, 5; a LoRA tenant at zero, 5.
    """
    idle_at_zero = (
        infd.spec.model.adapter is None
        and status.replicas == 0
        and status.desired_replicas == 0
        and status.migration is None
    )
    requeue = requeue_after.total_seconds()
    return requeue if idle_at_zero else min(requeue, tick)


_Object = TypeVar("_Object", bound=BaseModel)


def validated_or_reported(
    kind: type[_Object], raw: JSON, *, deps: Deps, logger: kopf.Logger
) -> _Object | None:
    """``raw`` as ``kind``; or None, once the object (Ready=False/InvalidSpec) and the log say
    why it does not validate. The schema should have refused it; a crash loop would say nothing.
    """
    try:
        return kind.model_validate(raw)
    except ValueError as exc:
        logger.error(f"spec does not validate: {exc}")
        report_invalid_spec(raw, str(exc), deps=deps)
        return None


def report_invalid_spec(raw: JSON, error: str, *, deps: Deps) -> None:
    """Ready=False/InvalidSpec on the object (an InferenceDeployment, or a cluster-scoped
    SharedEngine), through the one condition rule there is."""
    status = raw.get("status") or {}
    existing = []
    for item in status.get("conditions") or []:
        try:
            existing.append(Condition.model_validate(item))
        except ValueError:
            continue  # a malformed condition is dropped, not copied forward
    conditions, _ = set_condition(
        existing,
        type_=ConditionType.READY,
        status=False,
        reason=Reason.INVALID_SPEC,
        message=error.replace("\n", "; ")[:1000],
        generation=raw["metadata"].get("generation"),
        now=utc_now(),
    )
    deps.kube.apply_status(
        raw["apiVersion"],
        raw["kind"],
        raw["metadata"].get("namespace"),
        raw["metadata"]["name"],
        {
            "conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
            ]
        },
    )


def _differs(new: JSON, old: JSON) -> bool:
    """Compare ignoring keys that are None in ``new`` and absent in ``old``."""
    keys = set(new) | set(old)
    return any(new.get(k) != old.get(k) for k in keys if not (new.get(k) is None and k not in old))
