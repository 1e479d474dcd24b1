"""Kopf handlers for SharedEngine: one daemon per engine reconciles its fleet and its tenants.

As for InferenceDeployments (:mod:`tidepool.handlers.inference`), one daemon per object is the
single writer of its children and status; change handlers only poke it. A tenant's change (an
InferenceDeployment with ``spec.model.adapter``: created, edited, woken by the gateway, deleted)
pokes every engine of its base model, so a new tenant's adapter is loaded, and a wake scales the
fleet from zero, within one API round trip rather than one tick later.

The engine fleets run in the operator's own namespace (``POD_NAMESPACE``, which the chart sets
through the downward API): a SharedEngine is cluster-scoped, its Deployment cannot be.
"""

import os
import threading
from typing import Any, Final

import kopf

from tidepool.adapters.kube import RefusedKubeError
from tidepool.adapters.lora import HttpLoraClient
from tidepool.adapters.prometheus import utc_now
from tidepool.api.v1alpha1 import GROUP, VERSION, SharedEngine
from tidepool.handlers.daemon import Poke, reconcile_until_stopped
from tidepool.handlers.deps import MEMO_KEY, Deps
from tidepool.handlers.inference import (
    INVALID_SPEC_REQUEUE_SECONDS,
    report_invalid_spec,
    validated_or_reported,
)
from tidepool.handlers.inference import RESOURCE as TENANT_RESOURCE
from tidepool.handlers.posting import post_decisions
from tidepool.handlers.watched import Indices, WatchedFleetKube
from tidepool.reconcile import shared_engine
from tidepool.reconcile.shared_engine import SharedEngineKubePort

RESOURCE = (GROUP, VERSION, "sharedengines")
NAMESPACE_ENV: Final = "POD_NAMESPACE"
DEFAULT_NAMESPACE: Final = "default"
CACHE_KEY: Final = "shared_engine_cache"


class _Pokes:
    """Engine name -> (its base model, the event its daemon waits on), for tenants to poke."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[str, tuple[str, Poke]] = {}

    def register(self, name: str, model: str) -> Poke:
        with self._lock:
            known = self._engines.get(name)
            event = known[1] if known else Poke()
            self._engines[name] = (model, event)
            return event

    def forget(self, name: str) -> None:
        with self._lock:
            self._engines.pop(name, None)

    def poke(self, *, name: str | None = None, model: str | None = None) -> None:
        with self._lock:
            for engine, (base, event) in self._engines.items():
                if engine == name or (model is not None and base == model):
                    event.set()


POKES: Final = _Pokes()


def _base_model(body: kopf.Body) -> str:
    return str(body.get("spec", {}).get("model", {}).get("name", ""))


def _has_adapter(body: kopf.Body, **_: Any) -> bool:
    return bool(body.get("spec", {}).get("model", {}).get("adapter"))


@kopf.on.event(*TENANT_RESOURCE, when=_has_adapter)
async def tenant_changed(body: kopf.Body, **_: Any) -> None:
    """A LoRA tenant changed (or was woken, or went): its engines reconcile now."""
    POKES.poke(model=_base_model(body))


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def poke(name: str, **_: Any) -> None:
    """The SharedEngine's spec changed: its daemon reconciles now."""
    POKES.poke(name=name)


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0)
async def shared_engine_loop(
    stopped: kopf.DaemonStopped,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Reconcile whenever poked, or after the plan's requeue interval."""
    deps: Deps = memo[MEMO_KEY]
    poked = POKES.register(name, _base_model(body))
    cache = memo.setdefault(CACHE_KEY, shared_engine.SharedEngineCache())
    kube = WatchedFleetKube(deps.kube, Indices.from_kwargs(kwargs))
    lora = HttpLoraClient()
    namespace = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE

    def once() -> float:
        POKES.register(name, _base_model(body))  # the base model may have been edited
        return _reconcile_once(
            dict(body),
            body=body,
            deps=deps,
            cache=cache,
            kube=kube,
            lora=lora,
            namespace=namespace,
            logger=logger,
        )

    try:
        await reconcile_until_stopped(stopped, poked, once, deps=deps)
    finally:
        POKES.forget(name)


def _reconcile_once(
    raw: dict[str, Any],
    *,
    body: kopf.Body,
    deps: Deps,
    cache: shared_engine.SharedEngineCache,
    kube: SharedEngineKubePort,
    lora: HttpLoraClient,
    namespace: str,
    logger: kopf.Logger,
) -> float:
    engine = validated_or_reported(SharedEngine, raw, deps=deps, logger=logger)
    if engine is None:
        return INVALID_SPEC_REQUEUE_SECONDS
    try:
        result = shared_engine.sync_shared_engine(
            engine,
            namespace=namespace,
            kube=kube,
            lora=lora,
            metrics=deps.metrics,
            cache=cache,
            operator_started_at=deps.started_at,
            now=utc_now(),
        )
    except RefusedKubeError as exc:
        # As for an InferenceDeployment: the spec passed the schema but the API server refuses
        # the fleet it renders (say, an env var name it does not take). The same spec can never
        # succeed, so the SharedEngine says why and is looked at again later (a spec change
        # pokes it at once), instead of a traceback at every backoff.
        error = f"the API server refused an object rendered from the spec: {exc}"
        logger.error(error)
        try:
            report_invalid_spec(raw, error, deps=deps)
        except RefusedKubeError as again:  # a status it refuses too: the log must do
            logger.error(f"the API server refused the SharedEngine's status too: {again}")
        return INVALID_SPEC_REQUEUE_SECONDS
    post_decisions(body, result.events, deps=deps)
    return min(result.requeue_after.total_seconds(), deps.tick_seconds)
