"""The wake push: tell the operator *now* that a model scaled to zero has a waiting request.

Role: one JSON merge patch of the annotation ``tidepool.dev/wake-requested-at`` (RFC 3339
timestamp) on the InferenceDeployment. The operator watches the object and scales from zero on
the change, so a cold start does not wait for a Prometheus scrape and an autoscaler poll (the
Knative activator's "poke", not KEDA's 30 s poll; see notes/anchors.md).

Must not: rate-limit or decide when to wake (the gateway does, in ``tidepool.gateway.wake``),
touch spec or status, or be called on the gateway's event loop (it is a blocking HTTP call; the
gateway runs it in an executor).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from tidepool.adapters.discovery import PLURAL
from tidepool.api import labels
from tidepool.api.v1alpha1 import types

MERGE_PATCH: Final = "application/merge-patch+json"
#: A wake that cannot reach the API server within this long is dropped; the next held request
#: (or the autoscaler's own metrics path) wakes the model instead.
REQUEST_TIMEOUT_S: Final = 5.0


def rfc3339(now: datetime) -> str:
    """``2026-09-02T10:00:00.123Z``: UTC with milliseconds, so two wakes a second apart differ."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wake_patch(now: datetime) -> dict[str, Any]:
    """The merge-patch body; only the one annotation, so it can never clobber anything else."""
    return {"metadata": {"annotations": {labels.WAKE_REQUESTED_AT: rfc3339(now)}}}


class KubeWaker:
    """Patches the wake annotation through the Kubernetes API."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api_client)

    def request_wake(self, namespace: str, name: str, now: datetime) -> None:
        """Blocking. Raises the client's ApiException on failure (the caller logs and counts)."""
        self._custom.patch_namespaced_custom_object(
            types.GROUP,
            types.VERSION,
            namespace,
            PLURAL,
            name,
            wake_patch(now),
            _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
