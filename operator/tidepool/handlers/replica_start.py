"""Every new engine replica's start, phase by phase, for ``tidepool_replica_start_seconds``.

A scale from zero is explained in the InferenceDeployment's status (``status.coldStart``, from
the held request to the first response routed). A scale-out's new replicas keep no client
waiting in the same way, but their starts are what a platform team tunes (image pulls, model
downloads, a slow readiness probe), so each engine pod's start, from creation to Ready, feeds a
histogram by phase as the pod becomes Ready (:func:`tidepool.policy.cold_start.replica_start`).

A SharedEngine fleet's pods are counted too. They are the same engine pod with LoRA turned on
(:mod:`tidepool.render.shared_engine`), started from the same image, weights and probe, and a
fleet scaling out is where many tenants' latency waits on those starts; leaving them out would
hide the starts that matter most on a shared pool. The one handler is registered twice, once per
owner label, because Kubernetes label selectors cannot say "this label or that one"; Kopf calls
it once per event even when both filters match.

Each pod is observed once: its Kopf memo records it, and a pod already Ready before this
operator started (its start observed by the operator before, or long ago) is not observed.
"""

from typing import Any, Final

import kopf

from tidepool.adapters import kube as kube_adapter
from tidepool.handlers.daemon import in_executor
from tidepool.handlers.deps import MEMO_KEY, Deps
from tidepool.handlers.watched import FLEET_ENGINES, TENANT_ENGINES
from tidepool.policy import cold_start

RECORDED_KEY: Final = "replica_start_recorded"


def _ready_and_new(body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
    if memo.get(RECORDED_KEY):
        return False
    conditions = body.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@kopf.on.event("v1", "pods", labels=TENANT_ENGINES, when=_ready_and_new)
@kopf.on.event("v1", "pods", labels=FLEET_ENGINES, when=_ready_and_new)
async def record_replica_start(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Observe the pod's start once, when it is first seen Ready. The decoding and the one API
    read run on the executor, off the event loop that serves every other handler."""
    memo[RECORDED_KEY] = True
    deps: Deps = memo[MEMO_KEY]
    start = await in_executor(deps.executor, lambda: _measure(body, deps))
    if start is not None:
        deps.telemetry.observe_replica_start(start)


def _measure(body: kopf.Body, deps: Deps) -> cold_start.Breakdown | None:
    """The pod's start, or None when it was Ready before this operator started."""
    pod = kube_adapter.model_from_json(body, "V1Pod")
    created = pod.metadata.creation_timestamp if pod.metadata else None
    if created is None:
        return None
    ready = kube_adapter.pod_timeline(pod, created, None).ready
    if ready is None or ready < deps.started_at:
        return None
    pulled = deps.kube.image_pulled_at(str(pod.metadata.namespace), str(pod.metadata.name))
    return cold_start.replica_start(kube_adapter.pod_timeline(pod, created, pulled))
