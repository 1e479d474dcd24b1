"""Generated CRDs: structural, with CEL rules, columns and scale; equal to the committed files."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool.api import crdgen, generate, quantities
from tidepool.api.v1alpha1 import types

REPO = Path(__file__).resolve().parents[3]
JSON = dict[str, Any]


def _crd(kind: str) -> JSON:
    return next(c for c in crdgen.all_crds() if c["spec"]["names"]["kind"] == kind)


def _root(kind: str) -> JSON:
    schema: JSON = _crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, JSON]]:
    """Every schema node: the values under ``properties`` are nodes, their keys are not."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _at(kind: str, path: str) -> JSON:
    """The schema node at ``path``; ``env[]`` is an item of the list ``env``."""
    node = _root(kind)
    for part in path.strip(".").split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return node


KINDS = [
    pytest.param("InferenceDeployment", id="inferencedeployment"),
    pytest.param("GPUPool", id="gpupool"),
    pytest.param("SharedEngine", id="sharedengine"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("forbidden", "why"),
    [
        pytest.param("$ref", "references are not structural", id="no-ref"),
        pytest.param("$defs", "definitions must be inlined", id="no-defs"),
        pytest.param("anyOf", "optional fields must not become anyOf-with-null", id="no-anyof"),
        pytest.param("oneOf", "not structural", id="no-oneof"),
        pytest.param("allOf", "not structural", id="no-allof"),
        pytest.param("const", "the API server wants enum", id="no-const"),
        pytest.param("title", "pydantic titles are noise in kubectl explain", id="no-title"),
        pytest.param("examples", "not part of the Kubernetes OpenAPI subset", id="no-examples"),
    ],
)
def test_schema_has_no_forbidden_keyword(kind: str, forbidden: str, why: str) -> None:
    offenders = [path or "<root>" for path, node in _walk(_root(kind)) if forbidden in node]

    assert not offenders, f"{forbidden} at {offenders}: {why}"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    problems = []
    for path, node in _walk(_root(kind)):
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: additionalProperties beside properties")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if node.get("default", 0) is None:
            problems.append(f"{path}: default null")
    assert not problems


@pytest.mark.parametrize(
    ("kind", "path", "rule_fragment"),
    [
        pytest.param(
            "InferenceDeployment",
            "spec.scaling",
            "self.minReplicas <= self.maxReplicas",
            id="min-le-max",
        ),
        pytest.param(
            "InferenceDeployment",
            "spec.placement",
            "self.demoteBelow < self.promoteAbove",
            id="demote-below-promote",
        ),
        pytest.param(
            "InferenceDeployment",
            "spec.placement",
            "duration(self.sloP99TimeToFirstByte) > duration('0s')",
            id="slo-above-zero",
        ),
        pytest.param(
            "InferenceDeployment",
            "spec.engine",
            "self.tensorParallelSize <= self.gpusPerReplica",
            id="tensor-parallel-le-gpus",
        ),
        pytest.param(
            "InferenceDeployment", "spec", "self.mode != 'dedicated'", id="dedicated-warm-minimum"
        ),
        pytest.param("InferenceDeployment", "spec", "self.mode != 'hybrid'", id="hybrid-floor"),
        pytest.param(
            "InferenceDeployment",
            "spec",
            "self.replicas >= self.scaling.minReplicas",
            id="pinned-replicas-in-range",
        ),
        pytest.param(
            "GPUPool", "spec", "!has(self.pricePerMillionTokens)", id="token-price-only-on-shared"
        ),
        pytest.param(
            "SharedEngine",
            "spec.lora",
            "self.maxCpuLoras >= self.maxLoras",
            id="shared-cpu-loras-ge-loras",
        ),
        pytest.param(
            "SharedEngine",
            "spec.scaling",
            "self.minReplicas <= self.maxReplicas",
            id="shared-min-le-max",
        ),
        pytest.param(
            "SharedEngine",
            "spec",
            "self.replicas >= self.scaling.minReplicas",
            id="shared-pinned-replicas-in-range",
        ),
        pytest.param(
            "SharedEngine",
            "spec.engine",
            "self.tensorParallelSize <= self.gpusPerReplica",
            id="shared-tensor-parallel-le-gpus",
        ),
        *[
            pytest.param(kind, path, fragment, id=f"{kind.lower()}-{name}")
            for kind in ("InferenceDeployment", "SharedEngine")
            for path, fragment, name in [
                ("spec.engine.env[]", "!has(self.value) || !has(self.valueFrom)", "value-xor-from"),
                (
                    "spec.engine.env[].valueFrom",
                    "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                    "one-key-source",
                ),
                (
                    "spec.engine.envFrom[]",
                    "has(self.secretRef) != has(self.configMapRef)",
                    "one-env-from-source",
                ),
                (
                    "spec.engine.resources",
                    "quantity(self.requests.cpu).compareTo(quantity(self.limits.cpu)) <= 0",
                    "cpu-request-le-limit",
                ),
                (
                    "spec.engine.resources",
                    "quantity(self.requests.memory).compareTo(quantity(self.limits.memory)) <= 0",
                    "memory-request-le-limit",
                ),
                (
                    "spec.engine.modelCache",
                    "!has(self.claimName) || !has(self.sizeLimit)",
                    "cache-size-only-for-emptydir",
                ),
                ("spec.engine.modelCache", "self.mountPath != '/dev/shm'", "cache-not-on-shm"),
            ]
        ],
    ],
)
def test_cel_rules_present(kind: str, path: str, rule_fragment: str) -> None:
    rules = _at(kind, path).get("x-kubernetes-validations", [])

    matching = [r for r in rules if rule_fragment in r["rule"]]
    assert matching, f"no rule containing {rule_fragment!r} at {path}: {rules}"
    assert all(r["message"] and r.get("fieldPath", ".").startswith(".") for r in matching)


def test_request_le_limit_rules_guard_every_optional_field() -> None:
    """``quantity(self.requests.cpu)`` fails with "no such key" when a part is absent, which would
    refuse a spec that sets only a limit; each rule checks has() of all four parts first."""
    rules = _at("InferenceDeployment", "spec.engine.resources")["x-kubernetes-validations"]

    for resource in ("cpu", "memory"):
        (rule,) = [r["rule"] for r in rules if f"requests.{resource})" in r["rule"]]
        for part in ("requests", "limits", f"requests.{resource}", f"limits.{resource}"):
            assert f"!has(self.{part}) ||" in rule, (part, rule)


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        pytest.param("spec.engine.serviceAccountName", types.DNS_SUBDOMAIN, id="service-account"),
        pytest.param("spec.engine.imagePullSecrets[]", types.DNS_SUBDOMAIN, id="pull-secret"),
        pytest.param("spec.engine.modelCache.claimName", types.DNS_SUBDOMAIN, id="claim"),
        pytest.param("spec.engine.env[].valueFrom.secretKeyRef.key", types.CONFIG_KEY, id="key"),
        pytest.param("spec.engine.envFrom[].prefix", types.ENV_NAME, id="env-from-prefix"),
        pytest.param(
            "spec.engine.resources.sharedMemory", quantities.MEMORY_PATTERN, id="shared-memory"
        ),
        pytest.param("spec.engine.resources.limits.cpu", quantities.CPU_PATTERN, id="cpu-quantity"),
    ],
)
def test_references_and_quantities_carry_kubernetes_patterns(path: str, pattern: str) -> None:
    """The API server checks what Kubernetes would check of the rendered pod, at admission."""
    assert _at("InferenceDeployment", path)["pattern"] == pattern


def test_root_cel_rules_guard_optional_sub_objects() -> None:
    # CEL on ``self.scaling.minReplicas`` fails with "no such key" when ``scaling`` is absent,
    # which would refuse ``kubectl scale`` on a manifest without a scaling block. A ``default: {}``
    # would fix that but the API server refuses it beside such rules, so the rules use has().
    rules = _at("InferenceDeployment", "spec")["x-kubernetes-validations"]
    reading_scaling = [r["rule"] for r in rules if "self.scaling." in r["rule"]]

    assert reading_scaling
    assert all("has(self.scaling)" in rule for rule in reading_scaling)


def test_duration_fields_carry_the_pattern() -> None:
    node = _at("InferenceDeployment", "spec.scaling.scaleToZeroAfter")

    assert node["type"] == "string"
    assert node["pattern"] == r"^([0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h))+$"
    assert node["default"] == "5m"
    assert {"rule": "duration(self) <= duration('8760h')", "message": "must be at most 8760h"} in (
        node["x-kubernetes-validations"]
    )


def test_conditions_are_a_map_list_keyed_by_type() -> None:
    node = _at("InferenceDeployment", "status.conditions")

    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in node["items"]["required"]


def test_printer_columns_and_scale_subresource() -> None:
    version = _crd("InferenceDeployment")["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}

    assert {"Mode", "Pool", "Ready", "Queue", "Age"} <= set(columns)
    assert columns["Mode"]["jsonPath"] == ".spec.mode"
    assert columns["Ready"]["jsonPath"] == ".status.ready"
    assert columns["Queue"] == {
        "name": "Queue",
        "type": "integer",
        "jsonPath": ".status.queueDepth",
    }
    assert columns["Age"]["type"] == "date"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    for column in columns.values():
        field = column["jsonPath"].split(".")[2].split("[")[0]
        top = column["jsonPath"].split(".")[1]
        if top in ("spec", "status"):
            assert field in _at("InferenceDeployment", top)["properties"], column


def test_gpupool_is_cluster_scoped_without_scale() -> None:
    crd = _crd("GPUPool")

    assert crd["spec"]["scope"] == "Cluster"
    assert "scale" not in crd["spec"]["versions"][0]["subresources"]
    assert crd["spec"]["names"]["shortNames"] == ["gpool"]
    assert _crd("InferenceDeployment")["spec"]["names"]["shortNames"] == ["infd"]


def test_generation_is_deterministic() -> None:
    assert generate.artefacts() == generate.artefacts()


@pytest.mark.parametrize("rel", sorted(generate.artefacts()))
def test_committed_artefact_is_up_to_date(rel: str) -> None:
    path = REPO / rel
    expected = generate.artefacts()[rel]

    current = path.read_text() if path.exists() else None
    assert current == expected, f"{rel} is out of date: run `tidepool crd` and commit the result"


def test_chart_crds_are_behind_install_and_keep_flags() -> None:
    text = generate.artefacts()["charts/tidepool/templates/crds/inferencedeployments.yaml"]

    assert "{{- if .Values.crds.install }}" in text
    assert "{{- if .Values.crds.keep }}" in text
    assert "helm.sh/resource-policy: keep" in text
    assert text.rstrip().endswith("{{- end }}")


def test_gpupool_names_fit_a_label_value() -> None:
    """Engine pods carry their pool's name as the tidepool.dev/pool label value."""
    root = crdgen.gpu_pool_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    assert root["properties"]["metadata"]["properties"]["name"]["maxLength"] == 63
