"""Kopf handler for GPUPool: keep its status (nodes, allocatable GPUs) current."""

from typing import Any

import kopf

from tidepool.api.v1alpha1 import GROUP, VERSION, GPUPoolSpec
from tidepool.handlers.deps import MEMO_KEY, Deps


@kopf.timer(GROUP, VERSION, "gpupools", interval=30.0, initial_delay=1.0)
def observe_pool(
    spec: kopf.Spec, patch: kopf.Patch, memo: kopf.Memo, meta: kopf.Meta, **_: Any
) -> None:
    deps: Deps = memo[MEMO_KEY]
    pool = GPUPoolSpec.model_validate(dict(spec))
    nodes, gpus = deps.kube.pool_nodes(pool.node_selector)
    patch.status["nodes"] = nodes
    patch.status["gpusAllocatable"] = gpus
    patch.status["observedGeneration"] = meta.get("generation")
