"""The wake push: tell the operator *now* that a model scaled to zero has a waiting request.

Role: the gateway creates one Kubernetes Event naming the InferenceDeployment (reason
``WakeRequested``, the exact time in the Event's ``tidepool.dev/wake-requested-at``
annotation); the operator watches such Events and copies that time into the
InferenceDeployment's own ``tidepool.dev/wake-requested-at`` annotation, on which it scales from
zero. A cold start thus waits for no Prometheus scrape and no autoscaler poll (the Knative
activator's "poke", not KEDA's 30 s poll).

Why an Event and not a patch by the gateway: the gateway is the internet-facing component, and
``patch`` on InferenceDeployments would let it rewrite any model's image, arguments and
environment. ``create`` on Events lets it change nothing; the operator, which may patch
InferenceDeployments anyway, does the one write. The cost is one more watch hop (milliseconds).
Anyone else who may create Events in the namespace could also wake a model; that costs a
scale-from-zero that the autoscaler undoes after the idle window, and such a user can usually
edit the InferenceDeployment directly anyway.

Must not: rate-limit or decide when to wake (the gateway does, in ``tidepool.gateway.wake``),
touch spec or status, or be called on an event loop (these are blocking HTTP calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from tidepool.adapters.discovery import PLURAL
from tidepool.api import labels
from tidepool.api.conditions import EventType
from tidepool.api.v1alpha1 import types
from tidepool.policy.cold_start import parse_wake

MERGE_PATCH: Final = "application/merge-patch+json"
#: A wake that cannot reach the API server within this long is dropped; the next held request
#: (or the autoscaler's own metrics path) wakes the model instead.
REQUEST_TIMEOUT_S: Final = 5.0
#: The Event reason and reporting component the operator listens for.
WAKE_REASON: Final = "WakeRequested"
GATEWAY_COMPONENT: Final = "tidepool-gateway"
#: The Event reason of the gateway's report that it routed the first response after a wake, and
#: the annotation with the exact time (see :meth:`KubeWaker.report_first_response`).
FIRST_RESPONSE_REASON: Final = "FirstResponseRouted"
FIRST_RESPONSE_AT: Final = f"{labels.PREFIX}/first-response-at"
#: Wake Events older than this are history, not requests: when the operator (re)starts, Kopf
#: lists every Event still kept (an hour by default), and those must not wake anything.
MAX_WAKE_AGE: Final = timedelta(seconds=60)


def rfc3339(now: datetime) -> str:
    """``2026-09-02T10:00:00.123Z``: UTC with milliseconds, so two wakes a second apart differ."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def annotation_patch(value: str) -> dict[str, Any]:
    """The merge-patch body; only the one annotation, so it can never clobber anything else."""
    return {"metadata": {"annotations": {labels.WAKE_REQUESTED_AT: value}}}


def wake_patch(now: datetime) -> dict[str, Any]:
    """:func:`annotation_patch` for a wake requested at ``now``."""
    return annotation_patch(rfc3339(now))


def wake_event(namespace: str, name: str, now: datetime, instance: str = "") -> dict[str, Any]:
    """The core/v1 Event the gateway creates to wake ``namespace/name``."""
    return _gateway_event(
        namespace,
        name,
        now,
        instance,
        tag="wake",
        reason=WAKE_REASON,
        message="the gateway holds a request for this model; scale it from zero",
        annotations={labels.WAKE_REQUESTED_AT: rfc3339(now)},
    )


def first_response_event(
    namespace: str, name: str, wake_at: datetime, now: datetime, instance: str = ""
) -> dict[str, Any]:
    """The core/v1 Event with which the gateway reports that it routed the first response for
    ``namespace/name`` after the wake it pushed at ``wake_at``: the last mark of a cold start
    (:mod:`tidepool.policy.cold_start`)."""
    return _gateway_event(
        namespace,
        name,
        now,
        instance,
        tag="routed",
        reason=FIRST_RESPONSE_REASON,
        message=f"first response routed {(now - wake_at).total_seconds():.3f}s after the wake",
        annotations={labels.WAKE_REQUESTED_AT: rfc3339(wake_at), FIRST_RESPONSE_AT: rfc3339(now)},
    )


def first_response_at(annotations: Mapping[str, str] | None) -> datetime | None:
    """The time in a :func:`first_response_event`'s annotations, or None if they hold none."""
    return parse_wake((annotations or {}).get(FIRST_RESPONSE_AT))


def _gateway_event(
    namespace: str,
    name: str,
    now: datetime,
    instance: str,
    *,
    tag: str,
    reason: str,
    message: str,
    annotations: dict[str, str],
) -> dict[str, Any]:
    """A core/v1 Event from the gateway about InferenceDeployment ``namespace/name``: the one
    kind of write it may make (see the module docstring), named ``<name>.<tag>-<random>``."""
    stamp = now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{name}.{tag}-"[:200],
            "namespace": namespace,
            "annotations": annotations,
        },
        "involvedObject": {
            "apiVersion": types.API_VERSION,
            "kind": "InferenceDeployment",
            "namespace": namespace,
            "name": name,
        },
        "reason": reason,
        "message": message,
        "type": EventType.NORMAL,
        "source": {"component": GATEWAY_COMPONENT},
        "reportingComponent": GATEWAY_COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def requested_wake(event: Mapping[str, Any], now: datetime) -> tuple[str, str, str] | None:
    """``(namespace, name, wake value)`` if ``event`` is a fresh wake Event from the gateway.

    E.g. an Event made by :func:`wake_event` 2 s ago gives ``("team-a", "llama",
    "2026-09-02T10:00:00.123Z")``; one 2 minutes old, or another component's, gives None.
    """
    involved = event.get("involvedObject") or {}
    source = event.get("source") or {}
    if (
        event.get("reason") != WAKE_REASON
        or source.get("component") != GATEWAY_COMPONENT
        or involved.get("kind") != "InferenceDeployment"
        or str(involved.get("apiVersion", "")).split("/")[0] != types.GROUP
    ):
        return None
    annotations = (event.get("metadata") or {}).get("annotations") or {}
    value = str(annotations.get(labels.WAKE_REQUESTED_AT) or "")
    at = parse_wake(value)
    if at is None or not timedelta(seconds=-5) <= now - at <= MAX_WAKE_AGE:
        return None
    namespace = str(involved.get("namespace") or (event.get("metadata") or {}).get("namespace"))
    return namespace, str(involved.get("name")), value


class KubeWaker:
    """The gateway's side: creates the wake Event through the Kubernetes API."""

    def __init__(self, api_client: Any, instance: str = "") -> None:
        from kubernetes import client

        # Any: the client accepts a plain dict body and sends it as is.
        self._core: Any = client.CoreV1Api(api_client)
        self._instance = instance

    def request_wake(self, namespace: str, name: str, now: datetime) -> None:
        """Blocking. Raises the client's ApiException on failure (the caller logs and counts)."""
        self._core.create_namespaced_event(
            namespace,
            wake_event(namespace, name, now, self._instance),
            _request_timeout=REQUEST_TIMEOUT_S,
        )

    def report_first_response(
        self, namespace: str, name: str, wake_at: datetime, now: datetime
    ) -> None:
        """Blocking. Raises the client's ApiException on failure (the caller logs it)."""
        self._core.create_namespaced_event(
            namespace,
            first_response_event(namespace, name, wake_at, now, self._instance),
            _request_timeout=REQUEST_TIMEOUT_S,
        )


class WakeForwarder:
    """The operator's side: copies a wake Event's time onto its InferenceDeployment."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api_client)

    def forward(self, namespace: str, name: str, value: str) -> bool:
        """Blocking. False when the InferenceDeployment is gone (nothing to wake)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom.patch_namespaced_custom_object(
                types.GROUP,
                types.VERSION,
                namespace,
                PLURAL,
                name,
                annotation_patch(value),
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
