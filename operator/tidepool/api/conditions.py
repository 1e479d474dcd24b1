"""The ``metav1.Condition`` and Event vocabulary, and the one function that updates a
condition list.

Rules follow apimachinery's ``meta.SetStatusCondition``: ``lastTransitionTime`` moves only when
``status`` changes, so "Ready=False for 10m" stays readable from the object itself. Because Kopf
merge-patches status, callers always write the whole list this returns.
"""

from datetime import datetime
from enum import StrEnum

from tidepool.api.v1alpha1 import Condition


class ConditionType(StrEnum):
    """Positive-polarity condition types on an InferenceDeployment (and Ready and Scaling on a
    SharedEngine)."""

    READY = "Ready"  # the summary: serving, or scaled to zero on purpose and able to wake
    SCALING = "Scaling"  # the autoscaler can act (metrics known, within bounds)
    MIGRATING = "Migrating"  # a make-before-break move between pools is in progress
    METRICS_AVAILABLE = "MetricsAvailable"
    SCHEDULED = "Scheduled"  # every engine pod found a GPU node in its pool
    ADAPTER_LOADED = "AdapterLoaded"  # a LoRA tenant's adapter is on its SharedEngine's replicas


class Reason(StrEnum):
    """CamelCase reasons. Conditions and Events are built from these; nothing re-derives why."""

    # Ready
    REPLICAS_READY = "ReplicasReady"
    SCALED_TO_ZERO = "ScaledToZero"
    WAITING_FOR_REPLICAS = "WaitingForReplicas"
    INVALID_SPEC = "InvalidSpec"
    POOL_NOT_FOUND = "PoolNotFound"
    # Ready=False because no engine pod can run (Unschedulable, below, too); the kubelet's own
    # words, so `kubectl describe pod` and the Argo CD health message agree.
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    OOM_KILLED = "OOMKilled"
    # The kubelet cannot build the container's config: a Secret or ConfigMap (or a key in it)
    # that spec.engine.env/envFrom names does not exist; its message names which.
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    # The ReplicaSet cannot create pods at all (the Deployment's ReplicaFailure condition, e.g.
    # a missing serviceAccountName or an exhausted ResourceQuota): no pod exists to say why.
    REPLICA_FAILURE = "ReplicaFailure"
    # Scheduled
    ALL_PODS_SCHEDULED = "AllPodsScheduled"
    UNSCHEDULABLE = "Unschedulable"
    # Scaling / metrics
    SCALED_FROM_ZERO = "ScaledFromZero"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    SCALED_TO_ZERO_AFTER_IDLE = "ScaledToZeroAfterIdle"
    HOLDING = "Holding"
    HOLDING_WARM_MINIMUM = "HoldingWarmMinimum"
    COOLING_DOWN = "CoolingDown"
    PINNED = "PinnedByScaleSubresource"
    METRICS_UNKNOWN = "MetricsUnknown"
    METRICS_FRESH = "MetricsFresh"
    WAKE_REQUESTED = "WakeRequested"
    # Migrating
    NOT_MIGRATING = "Stable"
    STARTING_TARGET = "StartingTarget"
    SHIFTING_TRAFFIC = "ShiftingTraffic"
    DRAINING = "Draining"
    MIGRATION_COMPLETE = "MigrationComplete"
    # AdapterLoaded (WaitingForReplicas as for Ready)
    ADAPTER_LOADED = "AdapterLoaded"
    ADAPTER_LOAD_FAILED = "AdapterLoadFailed"
    ADAPTER_LOADING = "Loading"
    ENGINE_SCALED_TO_ZERO = "EngineScaledToZero"
    NO_ADAPTER_SLOT = "NoAdapterSlot"
    # Ready of a SharedEngine whose base model an older SharedEngine serves
    BASE_MODEL_SERVED_ELSEWHERE = "BaseModelServedElsewhere"


class EventType(StrEnum):
    """The two values core/v1 Event ``type`` allows; ``kubectl get events --field-selector
    type=Warning`` filters on exactly these strings, so nothing else may be sent."""

    NORMAL = "Normal"  # an expected step: scaled, migrated, adapter loaded
    WARNING = "Warning"  # something a user should look at: no metrics, unschedulable, bad spec


def set_condition(
    conditions: list[Condition],
    *,
    type_: ConditionType,
    status: bool | None,
    reason: Reason,
    message: str,
    generation: int | None,
    now: datetime,
) -> tuple[list[Condition], bool]:
    """Return the new condition list and whether anything changed.

    ``status=None`` means ``Unknown``. The list keeps its order; a new type is appended.
    """
    status_text = "Unknown" if status is None else ("True" if status else "False")
    out: list[Condition] = []
    found = False
    changed = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        transition = cond.last_transition_time if cond.status == status_text else now
        new = Condition(
            type=type_,
            status=status_text,
            reason=reason,
            message=message,
            last_transition_time=transition,
            observed_generation=generation,
        )
        changed = changed or new != cond
        out.append(new)
    if not found:
        changed = True
        out.append(
            Condition(
                type=type_,
                status=status_text,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out, changed


def find(conditions: list[Condition], type_: ConditionType) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.type == type_), None)
