"""Label and annotation keys: one place, so the operator, gateway and harness never disagree.

All keys share the ``tidepool.dev/`` prefix from the product brief.
"""

from collections.abc import Mapping
from typing import Final

from tidepool.api import names

PREFIX: Final = "tidepool.dev"

#: Name of the owning InferenceDeployment, on every child object and pod: the name itself, or for
#: a name over 63 characters its cut and hashed form (:func:`tidepool.api.names.label_value`).
INFERENCE_DEPLOYMENT: Final = f"{PREFIX}/inference-deployment"
#: GPUPool a pod or engine Deployment belongs to.
POOL: Final = f"{PREFIX}/pool"
#: Tenancy of that pool (``shared`` or ``dedicated``); used by anti-affinity on dedicated pools.
TENANCY: Final = f"{PREFIX}/tenancy"
#: Tenant owning the workload (defaults to the namespace).
TENANT: Final = f"{PREFIX}/tenant"
#: Marks engine pods (what the gateway and the test harness look for).
COMPONENT: Final = f"{PREFIX}/component"
COMPONENT_ENGINE: Final = "engine"
#: SharedEngine an engine pod, Deployment or Service belongs to (its name, cut to a label value by
#: :func:`tidepool.api.names.shared_engine_label`). Shared engine pods carry no
#: ``inference-deployment`` label: they serve many tenants and belong to none of them.
SHARED_ENGINE: Final = f"{PREFIX}/shared-engine"
#: Pod annotation: the model name clients put in the OpenAI ``model`` field.
SERVED_MODEL: Final = f"{PREFIX}/served-model"

#: GPUPool annotation, like StorageClass's is-default-class: the pool of its tenancy that an
#: InferenceDeployment without ``placement.pools`` uses. Without one, the first pool by name.
DEFAULT_POOL: Final = f"{PREFIX}/is-default-pool"
#: Set by the gateway when a request arrives for a model with no ready replica. The operator
#: reacts to a change of this annotation at once, instead of waiting for a Prometheus scrape.
WAKE_REQUESTED_AT: Final = f"{PREFIX}/wake-requested-at"
#: The most of a wake annotation's value that counts (and that ``status.lastWakeHandled`` keeps):
#: the gateway writes an RFC 3339 time; anyone may write more, and status must stay bounded.
MAX_WAKE_VALUE: Final = 64
#: Hash of the rendered pod template, so a spec change rolls the engine and nothing else does.
TEMPLATE_HASH: Final = f"{PREFIX}/template-hash"
#: Per-pod model-load delay hint for the engine simulator (tests and the demo only).
SIM_LOAD_DELAY: Final = f"{PREFIX}/sim-load-delay"

#: Field managers for server-side apply. Exactly one writer owns each field.
FIELD_MANAGER: Final = "tidepool"
FIELD_MANAGER_AUTOSCALER: Final = "tidepool-autoscaler"


def selector_labels(infd_name: str) -> dict[str, str]:
    """Labels that select every engine pod of the InferenceDeployment named ``infd_name``, in
    every pool. Readers of the label compare it with ``names.label_value(name)``, never the name."""
    return {INFERENCE_DEPLOYMENT: names.label_value(infd_name), COMPONENT: COMPONENT_ENGINE}


def shared_engine_selector_labels(engine_label: str) -> dict[str, str]:
    """Labels that select every engine pod of one SharedEngine."""
    return {SHARED_ENGINE: engine_label, COMPONENT: COMPONENT_ENGINE}


def pending_wake(annotations: Mapping[str, str] | None, last_handled: str | None) -> str | None:
    """The wake-requested-at value not acted on yet, or None.

    The gateway writes a new value for each wake; the operator records the last one it handled in
    ``status.lastWakeHandled``, so the same wake is never acted on twice. E.g. annotation
    ``"2026-01-01T00:00:05Z"`` with ``lastWakeHandled`` ``"2026-01-01T00:00:01Z"``: pending.
    """
    value = str((annotations or {}).get(WAKE_REQUESTED_AT) or "")[:MAX_WAKE_VALUE]
    return value if value and value != last_handled else None
