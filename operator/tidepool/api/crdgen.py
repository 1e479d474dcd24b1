"""Turn the pydantic models into structural CustomResourceDefinitions. Pure: returns dicts.

Pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3 schema. The
differences handled here, each by name:

- ``$ref``/``$defs`` are not allowed: references are inlined.
- ``Optional[X]`` arrives as ``anyOf: [X, {type: null}]``: it becomes plain ``X``, simply not
  required (an absent field, never an explicit null).
- ``title`` and ``examples`` are dropped; a single-value ``Literal`` (``const``) becomes an enum.
- ``additionalProperties: false`` cannot sit beside ``properties``: the API server prunes and, with
  kubectl's default strict field validation, rejects unknown fields anyway.
- Condition lists become ``x-kubernetes-list-type: map`` keyed by ``type``, as in ``metav1``.

The CEL rules come through untouched from ``json_schema_extra`` as ``x-kubernetes-validations``.
"""

from typing import Any, Final

from pydantic import BaseModel

from tidepool.api.v1alpha1 import types

JSON = dict[str, Any]
_DROP: Final = {"title", "examples", "additionalProperties"}


def _inline(node: Any, defs: JSON) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                del rest["default"]
            return _inline({**options[0], **rest}, defs)
    out: JSON = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and "properties" not in node):
            continue
        if key == "$defs":
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out[key] = {name: _inline(prop, defs) for name, prop in value.items()}
            continue
        out[key] = _inline(value, defs)
    if out.get("type") == "object" and "properties" in out and not out["properties"]:
        del out["properties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def structural_schema(model: type[BaseModel]) -> JSON:
    """The structural OpenAPI v3 schema of ``model``, as the API server accepts it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: JSON = _inline(raw, defs)
    return schema


def _conditions_as_map(status_schema: JSON) -> JSON:
    conditions = status_schema["properties"].get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]
    return status_schema


def _crd(
    *,
    plural: str,
    kind: str,
    scope: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    description: str,
    printer_columns: list[JSON],
    scale: bool,
    max_name: int | None = None,
) -> JSON:
    spec_schema = structural_schema(spec_model)
    status_schema = _conditions_as_map(structural_schema(status_model))
    metadata: JSON = {"type": "object"}
    if max_name is not None:
        # A structural schema may constrain metadata.name (and nothing else of metadata).
        metadata["properties"] = {"name": {"type": "string", "maxLength": max_name}}
    subresources: JSON = {"status": {}}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{types.GROUP}"},
        "spec": {
            "group": types.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["tidepool"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": types.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": metadata,
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _column(name: str, path: str, type_: str = "string", priority: int = 0, **extra: str) -> JSON:
    col: JSON = {"name": name, "type": type_, "jsonPath": path, **extra}
    if priority:
        col["priority"] = priority
    return col


def inference_deployment_crd() -> JSON:
    """The InferenceDeployment CRD: columns tell the story (mode, pool, ready/desired, queue)."""
    return _crd(
        plural="inferencedeployments",
        kind="InferenceDeployment",
        scope="Namespaced",
        short_names=["infd"],
        spec_model=types.InferenceDeploymentSpec,
        status_model=types.InferenceDeploymentStatus,
        description=(
            "An LLM served by vLLM on GPU pools: scaled from zero on queue depth, kept warm at"
            " minReplicas, and moved between shared and dedicated pools by Tidepool."
        ),
        printer_columns=[
            _column("Model", ".status.servedModel"),
            _column("Mode", ".spec.mode"),
            _column("Running", ".status.effectiveMode", priority=1),
            _column("Pool", ".status.pool"),
            _column("Engine", ".status.engine"),
            _column("Ready", ".status.ready"),
            _column("Queue", ".status.queueDepth", "integer"),
            _column("Status", '.status.conditions[?(@.type=="Ready")].reason'),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Spend/mo", ".status.spendPerMonth", "number", priority=1),
            _column("Chargeback/mo", ".status.chargebackPerMonth", "number", priority=1),
            _column("Last Decision", ".status.lastDecision.message", priority=1),
        ],
        scale=True,
    )


def gpu_pool_crd() -> JSON:
    """The cluster-scoped GPUPool CRD."""
    return _crd(
        plural="gpupools",
        kind="GPUPool",
        scope="Cluster",
        short_names=["gpool"],
        spec_model=types.GPUPoolSpec,
        status_model=types.GPUPoolStatus,
        description=(
            "A GPU node pool engine pods may be placed on: its selector, taints, tenancy and"
            " price. Tidepool never creates nodes."
        ),
        printer_columns=[
            _column("Tenancy", ".spec.tenancy"),
            _column("GPU", ".spec.gpuType"),
            _column("$/GPU-h", ".spec.pricePerGpuHour", "number"),
            _column("Nodes", ".status.nodes", "integer"),
            _column("GPUs", ".status.gpusAllocatable", "integer"),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
        scale=False,
        # Every engine pod carries its pool's name as a label value (tidepool.dev/pool), which
        # the gateway, Prometheus and the operator read back: at most 63 characters.
        max_name=types.MAX_LABEL_VALUE,
    )


def shared_engine_crd() -> JSON:
    """The cluster-scoped SharedEngine CRD: one base model's engine fleet, shared by LoRA tenants.

    Cluster-scoped like GPUPool: the platform, not a tenant, decides which base models run as
    shared fleets. It has a scale subresource, as InferenceDeployment does, so ``kubectl scale``
    pins the fleet and an HPA could drive it.
    """
    return _crd(
        plural="sharedengines",
        kind="SharedEngine",
        scope="Cluster",
        short_names=["sheng"],
        spec_model=types.SharedEngineSpec,
        status_model=types.SharedEngineStatus,
        description=(
            "A running fleet of vLLM engines of one base model with LoRA enabled, shared by the"
            " InferenceDeployments whose spec.model.adapter fine-tunes that model: one copy of"
            " the base weights per replica serves every tenant's adapter."
        ),
        printer_columns=[
            _column("Model", ".spec.model.name"),
            _column("Pool", ".spec.pool"),
            _column("Ready", ".status.ready"),
            _column("Tenants", ".status.tenants", "integer"),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
        scale=True,
    )


#: Kopf's own API group: its peering CRDs.
KOPF_GROUP: Final = "kopf.dev"


def kopf_peering_crd(*, scope: str) -> JSON:
    """Kopf's own peering CRD (``ClusterKopfPeering``, or ``KopfPeering`` for ``Namespaced``).

    Kopf does not install it (Kopf's docs, "Peering"), and an operator run with a peering name
    pauses until it exists. Its shape is Kopf's: one record per running operator under
    ``status``, written by a plain patch of the object, so there is no status subresource (with
    one, the API server would drop Kopf's keep-alives).
    """
    kind = "ClusterKopfPeering" if scope == "Cluster" else "KopfPeering"
    plural = f"{kind.lower()}s"
    free: JSON = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{KOPF_GROUP}"},
        "spec": {
            "group": KOPF_GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
            },
            "scope": scope,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Kopf's peering: the running operator replicas, so"
                            " that only the one with the highest priority reconciles.",
                            "properties": {"spec": free, "status": free},
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> list[JSON]:
    return [
        gpu_pool_crd(),
        inference_deployment_crd(),
        shared_engine_crd(),
        kopf_peering_crd(scope="Cluster"),
        kopf_peering_crd(scope="Namespaced"),
    ]
