"""Kopf handler for the gateway's wake Events (see :mod:`tidepool.adapters.wake`).

The gateway may create Events but not patch InferenceDeployments; this handler turns a fresh
``WakeRequested`` Event into the InferenceDeployment's ``tidepool.dev/wake-requested-at``
annotation, whose watch event pokes the model's daemon (``handlers.inference.wake``).
"""

from typing import Any, Final

import kopf

from tidepool.adapters import wake
from tidepool.adapters.prometheus import utc_now
from tidepool.handlers.daemon import in_executor
from tidepool.handlers.deps import MEMO_KEY, Deps

FORWARDER_KEY: Final = "tidepool_wake_forwarder"


def _is_wake(body: kopf.Body, **_: Any) -> bool:
    return body.get("reason") == wake.WAKE_REASON


@kopf.on.event("", "v1", "events", when=_is_wake)
async def forward_wake(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Copy a fresh wake onto its InferenceDeployment; ignore stale or foreign ones.

    The patch runs on the urgent lane (:mod:`tidepool.handlers.daemon`): a sync handler would
    run on Kopf's executor, behind every InferenceDeployment's queued tick, and a held request
    would wait for them all before its model's daemon even heard of it.
    """
    found = wake.requested_wake(body, utc_now())
    if found is None:
        return
    namespace, name, value = found
    forwarder: wake.WakeForwarder = memo[FORWARDER_KEY]
    deps: Deps = memo[MEMO_KEY]
    forwarded = await in_executor(
        deps.urgent_executor, lambda: forwarder.forward(namespace, name, value)
    )
    if not forwarded:
        logger.info("wake for %s/%s: no such InferenceDeployment", namespace, name)
