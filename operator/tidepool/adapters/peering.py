"""Kopf's peering objects: where each operator replica announces itself, and how a newcomer
ranks itself below the replicas already running.

Kopf's peering (Kopf's docs, "Peering") keeps one record per running operator in the
``status`` of a ``ClusterKopfPeering`` (cluster-wide operators) or a ``KopfPeering`` in each
watched namespace: ``{identity: {priority, lifetime, lastseen}}``. An operator that sees a live
peer with a higher priority pauses all its watches, daemons and timers; two live peers with the
same priority both pause. Kopf neither creates the peering object nor picks distinct priorities,
and the replicas of one Deployment share their arguments, so this module does both:

- :class:`PeeringStore` creates the object if it is missing and writes the replica's record
  before Kopf starts watching (see :func:`standby_priority` for why);
- :func:`standby_priority` ranks a newcomer below every live peer, so the replica that has run
  longest stays active and a restarted one joins as the standby.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP: Final = "kopf.dev"
VERSION: Final = "v1"
CLUSTER_PLURAL: Final = "clusterkopfpeerings"
NAMESPACED_PLURAL: Final = "kopfpeerings"
MERGE_PATCH: Final = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Peer:
    """One operator's record, as Kopf writes it."""

    identity: str
    priority: int
    lifetime: timedelta
    lastseen: datetime

    def alive(self, now: datetime) -> bool:
        """Kopf's own rule: a peer is dead once ``lastseen + lifetime`` has passed."""
        return self.lastseen + self.lifetime > now


def parse_peers(status: Mapping[str, Any] | None) -> list[Peer]:
    """The records in a peering object's ``status``; a malformed one is skipped (Kopf would
    fail on it the same way, so it cannot be a live operator)."""
    peers = []
    for identity, info in (status or {}).items():
        if not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.fromisoformat(str(info["lastseen"]).replace("Z", "+00:00"))
            peer = Peer(
                identity=str(identity),
                priority=int(info.get("priority", 0)),
                lifetime=timedelta(seconds=int(info.get("lifetime", 60))),
                lastseen=lastseen,
            )
        except (KeyError, TypeError, ValueError):
            continue
        if lastseen.tzinfo is not None:
            peers.append(peer)
    return peers


def start_rank(started_at: datetime) -> int:
    """A priority from the start time: the earlier, the higher (milliseconds, negated).

    E.g. a start at 2026-09-02T10:00:00.250Z ranks -1788343200250, one 1 ms later
    -1788343200251: replicas started together still get distinct priorities.
    """
    return -round(started_at.timestamp() * 1000)


def standby_priority(
    peers: list[Peer], *, identity: str, started_at: datetime, now: datetime
) -> int:
    """The priority for a replica starting now: below every live peer, and from its start time.

    Below every live peer, so a newcomer never preempts the active replica (Kopf has no handover:
    a higher-priority newcomer starts at once while the old one is still stopping its daemons,
    and both would write). From the start time, so two replicas that find each other absent
    (started together) still differ: equal priorities would pause both (Kopf's docs).
    A dead peer does not count: its priority says nothing about the replicas running now.

    >>> from datetime import UTC
    >>> t = datetime(2026, 9, 2, 10, 0, 0, tzinfo=UTC)
    >>> active = Peer("a", -5, timedelta(seconds=10), t)
    >>> standby_priority([active], identity="b", started_at=t, now=t + timedelta(seconds=1))
    -6
    """
    live = [p.priority for p in peers if p.identity != identity and p.alive(now)]
    return min([start_rank(started_at), *(p - 1 for p in live)])


class PeeringStore:
    """One peering object: ``ClusterKopfPeering/<name>``, or ``KopfPeering/<name>`` in
    ``namespace``."""

    def __init__(self, api: client.ApiClient, name: str, namespace: str | None) -> None:
        self._api = client.CustomObjectsApi(api)
        self.name = name
        self.namespace = namespace

    @property
    def kind(self) -> str:
        return "KopfPeering" if self.namespace else "ClusterKopfPeering"

    def ensure(self) -> dict[str, Any]:
        """The object, created empty if missing (Kopf only patches it, and pauses forever
        while it does not exist)."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.kind,
            "metadata": {"name": self.name},
        }
        try:
            if self.namespace:
                self._api.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, NAMESPACED_PLURAL, body
                )
            else:
                self._api.create_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, body)
        except ApiException as exc:
            if exc.status == 404:
                raise RuntimeError(
                    f"the {self.kind} CRD ({GROUP}/{VERSION}) is not installed; peering needs"
                    " it: kubectl apply -f crds/kopf.dev_"
                    f"{NAMESPACED_PLURAL if self.namespace else CLUSTER_PLURAL}.yaml"
                ) from exc
            if exc.status != 409:  # 409: it exists already
                raise
        return self._get()

    def _get(self) -> dict[str, Any]:
        obj: object
        if self.namespace:
            obj = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, NAMESPACED_PLURAL, self.name
            )
        else:
            obj = self._api.get_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, self.name)
        if not isinstance(obj, dict):  # pragma: no cover - the API server answers with JSON
            raise TypeError(f"{self.kind}/{self.name}: expected an object, got {obj!r}")
        return obj

    def announce(self, peer: Peer) -> None:
        """Write ``peer``'s record as Kopf's keep-alive does (a merge patch of ``status``)."""
        body = {
            "status": {
                peer.identity: {
                    "priority": peer.priority,
                    "lifetime": round(peer.lifetime.total_seconds()),
                    "lastseen": peer.lastseen.isoformat(),
                }
            }
        }
        if self.namespace:
            self._api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                NAMESPACED_PLURAL,
                self.name,
                body,
                _content_type=MERGE_PATCH,
            )
        else:
            self._api.patch_cluster_custom_object(
                GROUP, VERSION, CLUSTER_PLURAL, self.name, body, _content_type=MERGE_PATCH
            )
