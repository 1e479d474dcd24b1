"""A discovery source from a YAML file: fixed routes for local runs, the demo and benchmarks.

Role: the same ``start(on_change)`` / ``stop()`` surface as
:class:`tidepool.adapters.discovery.KubeDiscovery`, publishing one snapshot read from a file,
so the gateway can run without a cluster (``tidepool gateway --static-routes routes.yaml``)::

    models:
      - name: llama            # InferenceDeployment name (also the served model by default)
        namespace: default
        servedModel: llama
        tenant: acme
        mode: serverless       # or hybrid
        overflowConcurrencyPerReplica: 32
        routablePools: []
        pools: [{name: shared, tenancy: shared, role: primary}]
        endpoints: [{host: 127.0.0.1, port: 8001, pool: shared}]
        adapter: support-bot   # optional: the LoRA adapter name the engine serves it under

Must not: watch files or poll; it publishes once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tidepool.gateway.snapshot import (
    Endpoint,
    ModelRoute,
    RoutingSnapshot,
    model_from_inference_deployment,
)


class StaticRoutesError(ValueError):
    """The routes file is malformed; the message names the entry and field."""


def parse(document: Any) -> RoutingSnapshot:
    if not isinstance(document, Mapping) or not isinstance(document.get("models"), list):
        raise StaticRoutesError("static routes: expected a mapping with a list 'models'")
    models: list[ModelRoute] = []
    endpoints: list[Endpoint] = []
    for i, m in enumerate(document["models"]):
        if not isinstance(m, Mapping) or not m.get("name"):
            raise StaticRoutesError(f"static routes: models[{i}].name is required")
        obj = {
            "metadata": {"name": m["name"], "namespace": m.get("namespace", "default")},
            "spec": {
                "mode": m.get("mode", "serverless"),
                "tenant": m.get("tenant"),
                "hybrid": {"overflowConcurrencyPerReplica": m.get("overflowConcurrencyPerReplica")},
                "model": {"adapter": {"name": m["adapter"]}} if m.get("adapter") else {},
            },
            "status": {
                "servedModel": m.get("servedModel", ""),
                "routablePools": m.get("routablePools", []),
                "pools": m.get("pools", []),
            },
        }
        route = model_from_inference_deployment(obj)
        models.append(route)
        for j, e in enumerate(m.get("endpoints", [])):
            if not isinstance(e, Mapping) or "port" not in e:
                raise StaticRoutesError(
                    f"static routes: models[{i}].endpoints[{j}].port is required"
                )
            endpoints.append(
                Endpoint(
                    namespace=route.namespace,
                    pod=str(e.get("pod", f"{route.name}-{j}")),
                    deployment=route.name,
                    pool=str(e.get("pool", "")),
                    host=str(e.get("host", "127.0.0.1")),
                    port=int(e["port"]),
                )
            )
    return RoutingSnapshot(models=tuple(models), endpoints=tuple(endpoints))


class StaticDiscovery:
    def __init__(self, snapshot: RoutingSnapshot) -> None:
        self.snapshot = snapshot

    @classmethod
    def from_file(cls, path: str | Path) -> StaticDiscovery:
        with open(path, encoding="utf-8") as f:
            return cls(parse(yaml.safe_load(f)))

    def start(self, on_change: Callable[[RoutingSnapshot], None]) -> None:
        on_change(self.snapshot)

    def stop(self) -> None:
        pass
