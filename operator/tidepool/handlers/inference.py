"""Kopf handlers for InferenceDeployment.

One daemon per object is the single writer of its children and status, so there are no races
between a timer and change handlers. Change handlers and the gateway's wake annotation only poke
the daemon (a ``threading.Event`` in the object's memo), which then reconciles at once: a wake
reaches ``replicas: 1`` within one API round trip, not a Prometheus scrape later.
"""

import copy
import threading
import time
from typing import Any

import kopf

from tidepool.adapters.kube import TransientKubeError
from tidepool.adapters.prometheus import utc_now
from tidepool.api import labels
from tidepool.api.v1alpha1 import GROUP, VERSION, InferenceDeployment
from tidepool.handlers.deps import MEMO_KEY, Deps
from tidepool.reconcile import inference

RESOURCE = (GROUP, VERSION, "inferencedeployments")


def _poke(memo: kopf.Memo) -> threading.Event:
    if "poke" not in memo:
        memo["poke"] = threading.Event()
    event: threading.Event = memo["poke"]
    return event


def _wake_pending(body: kopf.Body, **_: Any) -> bool:
    annotations = body.get("metadata", {}).get("annotations")
    return (
        labels.pending_wake(annotations, body.get("status", {}).get("lastWakeHandled")) is not None
    )


@kopf.on.event(*RESOURCE, when=_wake_pending)
def wake(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """The gateway holds a request for this model: reconcile now, not at the next tick.

    A raw watch event, not a change handler: Kopf's change detection is needless latency here,
    and the daemon ignores a wake it has already handled (``status.lastWakeHandled``).
    """
    poke(body=body, memo=memo, **kwargs)


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def poke(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Something changed that the daemon should act on now.

    The body travels with the poke: the daemon may wake before Kopf refreshes its live view of
    the object, and a wake must not wait a whole tick for the annotation to become visible.
    """
    _remember(memo, copy.deepcopy(dict(body)))
    _poke(memo).set()


def _version(obj: dict[str, Any]) -> int:
    text = str(obj.get("metadata", {}).get("resourceVersion", "0"))
    return int(text) if text.isdigit() else 0


def _remember(memo: kopf.Memo, obj: dict[str, Any]) -> None:
    """Keep the newest copy of the object seen outside Kopf's live view (a poke, our own write)."""
    known = memo.get("fresh_body")
    if not known or _version(obj) > _version(known):
        memo["fresh_body"] = obj


def _newest(live: kopf.Body, memo: kopf.Memo) -> dict[str, Any]:
    """The newest copy by resourceVersion: Kopf's live view, a poke's, or our own last write.

    Reconciling from a copy older than our own last status write would write stale status back
    (an older decision, or a migration phase already left behind).
    """
    current = dict(live)
    fresh = memo.get("fresh_body")
    return fresh if fresh and _version(fresh) > _version(current) else current


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0)
def reconcile_loop(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Reconcile whenever poked, or after the decision's requeue interval."""
    deps: Deps = memo[MEMO_KEY]
    poked = _poke(memo)
    cache = memo.setdefault("cache", inference.ObjectCache())
    key = f"{body.get('metadata', {}).get('namespace')}/{body.get('metadata', {}).get('name')}"
    while not stopped:
        poked.clear()
        wait = deps.tick_seconds
        try:
            wait = min(
                wait,
                _reconcile_once(
                    _newest(body, memo),
                    memo=memo,
                    body=body,
                    deps=deps,
                    cache=cache,
                    logger=logger,
                    key=key,
                ),
            )
        except TransientKubeError as exc:
            logger.warning(f"transient API error, retrying: {exc}")
            deps.telemetry.reconciles.labels(result="retry").inc()
        except Exception as exc:  # a bug must not kill the daemon or crash-loop the operator
            logger.exception(f"reconcile failed: {exc}")
            deps.telemetry.reconciles.labels(result="error").inc()
            wait = max(wait, 10.0)
        poked.wait(timeout=wait)
    deps.note_migration(key, active=False)


def _reconcile_once(
    raw: dict[str, Any],
    *,
    memo: kopf.Memo,
    body: kopf.Body,
    deps: Deps,
    cache: inference.ObjectCache,
    logger: kopf.Logger,
    key: str,
) -> float:
    started = time.perf_counter()
    try:
        infd = InferenceDeployment.model_validate(raw)
    except ValueError as exc:
        # The schema should have refused this; say so on the object instead of crash-looping.
        logger.error(f"spec does not validate: {exc}")
        deps.kube.apply_status(
            raw["apiVersion"],
            raw["kind"],
            raw["metadata"]["namespace"],
            raw["metadata"]["name"],
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "InvalidSpec",
                        "message": str(exc).replace("\n", "; ")[:1000],
                        "lastTransitionTime": utc_now().isoformat().replace("+00:00", "Z"),
                    }
                ]
            },
        )
        return 30.0
    result = inference.sync(
        infd,
        kube=deps.kube,
        metrics=deps.metrics,
        cache=cache,
        context=inference.Context(
            operator_started_at=deps.started_at,
            may_start_migration=deps.may_start_migration(key),
        ),
        now=utc_now(),
    )
    deps.note_migration(key, active=result.status.migration is not None)
    new_status = result.status.model_dump(mode="json", by_alias=True)
    old_status = raw.get("status") or {}
    if _differs(new_status, old_status):
        _remember(memo, deps.kube.merge_patch_status(infd.namespace, infd.name, new_status))
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1000])
        deps.telemetry.decisions.labels(reason=event.reason).inc()
    deps.telemetry.reconciles.labels(result="ok").inc()
    deps.telemetry.reconcile_seconds.observe(time.perf_counter() - started)
    return result.requeue_after.total_seconds()


def _differs(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Compare ignoring keys that are None in ``new`` and absent in ``old``."""
    keys = set(new) | set(old)
    return any(new.get(k) != old.get(k) for k in keys if not (new.get(k) is None and k not in old))
