"""The Kubernetes Events a reconcile's decisions post, within one budget for the operator.

Why a budget: a decision Event is posted per object, and some causes reach every object at once.
When Prometheus misses one scrape of the gateway, every tenant's metrics become unknown in the
same tick and each posts a ``MetricsUnknown`` Event, then another decision Event when they come
back: at 1,000 tenants, 2,000 POSTs to the API server in seconds, on top of the status writes
(the 1,000-tenant benchmark counted 5,803 such Events in 15 minutes while the gateway's scrapes
were failing). client-go's event recorder drops an object's Events beyond a token bucket (its
spam filter) for the same reason; here, as the storm crosses objects, one bucket covers the whole
operator (:class:`~tidepool.handlers.deps.EventBudget`). Nothing that matters is lost: the status
carries every decision and its reason, ``tidepool_operator_decisions_total`` counts every
decision, and ``tidepool_operator_events_dropped_total`` counts what the budget held back.
"""

from collections.abc import Callable, Iterable
from typing import Any, Final

import kopf

from tidepool.handlers.deps import Deps
from tidepool.policy.plan import Event

#: What Kopf keeps of an Event's message.
MESSAGE_LIMIT: Final = 1000


def post_decisions(
    body: Any, events: Iterable[Event], *, deps: Deps, post: Callable[..., None] = kopf.event
) -> None:
    """Count every decision, and post each as an Event on ``body`` while the operator's
    :class:`~tidepool.handlers.deps.EventBudget` allows."""
    for event in events:
        deps.telemetry.decisions.labels(reason=event.reason).inc()
        if deps.event_budget.take():
            post(body, type=event.type, reason=event.reason, message=event.message[:MESSAGE_LIMIT])
        else:
            deps.telemetry.events_dropped.labels(reason=event.reason).inc()
