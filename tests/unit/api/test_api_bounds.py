"""Every string, list and map of the CRDs is bounded, and the bounds add up to a spec that fits.

Why: Kopf copies an object's spec into its last-handled-configuration annotation, and the API
server refuses any write to an object whose annotations pass 256 KiB, the removal of the
finalizer included. A 1 MB ``model.name`` was accepted once, and the object then stayed
Terminating for good, its pods running.
"""

import json
import re
from typing import Any

import pydantic
import pytest

from tidepool.api import crdgen
from tidepool.api.v1alpha1 import EngineSpec, types

JSON = dict[str, Any]
#: The API server's limit on all of an object's annotations together (apimachinery's
#: ``TotalAnnotationSizeLimitB``).
ANNOTATIONS_LIMIT = 256 * 1024
#: What one spec may take of it: the rest is for kubectl's own last-applied-configuration copy
#: and the user's labels and annotations (which Kopf copies too).
SPEC_BUDGET = ANNOTATIONS_LIMIT // 2
#: The most bytes one character of free text becomes in JSON: a control character is
#: ``\u0001``, as Kopf's ``json.dumps`` (and Go's encoder) write it.
WORST_BYTES_PER_CHAR = 6

CRDS = {c["spec"]["names"]["kind"]: c for c in crdgen.all_crds()}


def _root(kind: str) -> JSON:
    schema: JSON = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: JSON, path: str) -> list[tuple[str, JSON]]:
    out = [(path, node)]
    for name, prop in node.get("properties", {}).items():
        out += _walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def _unbounded(kind: str, part: str) -> list[str]:
    missing = []
    for path, node in _walk(_root(kind)["properties"][part], f"{kind}.{part}"):
        kind_of = node.get("type")
        # RFC 3339 timestamps (format date-time) bound themselves.
        bounded = {"maxLength", "enum"} & set(node) or node.get("format") == "date-time"
        if kind_of == "string" and not bounded:
            missing.append(f"{path}: no maxLength")
        if kind_of == "array" and "maxItems" not in node:
            missing.append(f"{path}: no maxItems")
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            missing.append(f"{path}: no maxProperties")
    return missing


@pytest.mark.parametrize("kind", sorted(CRDS))
@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_string_list_and_map_is_bounded(kind: str, part: str) -> None:
    assert _unbounded(kind, part) == []


def _rule_bound(node: JSON, pattern: str) -> int | None:
    for rule in node.get("x-kubernetes-validations", []):
        found = re.search(pattern, rule["rule"])
        if found:
            return int(found.group(1))
    return None


def _worst_size(node: JSON, *, text: bool = True) -> int:
    """An upper bound on the JSON bytes of any value ``node`` admits (``text=False``: with every
    string empty, for lists whose characters a CEL rule bounds in all; see
    :func:`test_a_total_covers_every_string_of_its_items`)."""
    kind_of = node.get("type")
    if "enum" in node:
        return max(len(json.dumps(v)) for v in node["enum"])
    if kind_of == "string":
        if node.get("format") == "date-time":
            return 2 + len("2026-01-01T00:00:00.000000Z")
        per_char = 1 if "pattern" in node else WORST_BYTES_PER_CHAR
        return 2 + (per_char * node["maxLength"] if text else 0)
    if kind_of in ("integer", "number", "boolean"):
        return 24
    if kind_of == "array":
        total_chars = _rule_bound(node, r"\.sum\(\) <= (\d+)")
        item = _worst_size(node["items"], text=text and total_chars is None)
        chars = WORST_BYTES_PER_CHAR * total_chars if total_chars is not None and text else 0
        return 2 + node["maxItems"] * (item + 1) + chars
    if isinstance(node.get("additionalProperties"), dict):
        key_chars = _rule_bound(node, r"size\(k\) <= (\d+)")
        assert key_chars is not None, "map keys need a CEL bound"
        entry = 4 + WORST_BYTES_PER_CHAR * key_chars + _worst_size(node["additionalProperties"])
        return 2 + node["maxProperties"] * entry
    props = node.get("properties", {})
    return 2 + sum(len(name) + 4 + _worst_size(p, text=text) for name, p in props.items())


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_the_largest_spec_fits_kopfs_annotation(kind: str) -> None:
    worst = _worst_size(_root(kind)["properties"]["spec"])

    assert worst <= SPEC_BUDGET, f"{kind} spec may take {worst} bytes of JSON"


def test_worst_size_counts_a_known_spec_upwards() -> None:
    """The bound is a bound: the JSON of a large real spec is no larger."""
    spec = {
        "model": {"name": "m" * types.MAX_MODEL_REF, "source": "\x01" * types.MAX_MODEL_REF},
        "engine": {"extraArgs": ["\x01" * 64] * 64, "env": [{"name": "A", "value": "\x02" * 8000}]},
    }
    types.InferenceDeploymentSpec.model_validate(spec)

    assert len(json.dumps(spec)) <= _worst_size(_root("InferenceDeployment")["properties"]["spec"])


@pytest.mark.parametrize(
    ("engine", "must_mention"),
    [
        pytest.param(
            {"extraArgs": ["x" * 4000, "y" * 97]},
            ["extraArgs", str(types.MAX_EXTRA_ARGS_CHARS)],
            id="extra-args-in-all",
        ),
        pytest.param(
            {"env": [{"name": "A", "value": "x" * 8000}, {"name": "B", "value": "y" * 200}]},
            ["env", str(types.MAX_ENV_CHARS)],
            id="env-in-all",
        ),
        pytest.param({"extraArgs": ["-"] * 65}, ["extraArgs", "64"], id="extra-args-items"),
    ],
)
def test_python_refuses_what_the_cel_totals_refuse(engine: JSON, must_mention: list[str]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        EngineSpec.model_validate(engine)

    for text in must_mention:
        assert text in str(caught.value)


def _strings(node: JSON, path: str) -> list[str]:
    """Paths such as ``e.valueFrom.secretKeyRef.key`` of every string under ``node``."""
    if node.get("type") == "string":
        return [path]
    return [
        s for name, p in node.get("properties", {}).items() for s in _strings(p, f"{path}.{name}")
    ]


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_a_total_covers_every_string_of_its_items(kind: str) -> None:
    """:func:`_worst_size` counts the strings of a list with a ``.sum() <= N`` rule as empty, and
    N characters in all instead: a bound only if the rule sums the size of every one of them."""
    for path, node in _walk(_root(kind)["properties"]["spec"], f"{kind}.spec"):
        if node.get("type") != "array" or _rule_bound(node, r"\.sum\(\) <= (\d+)") is None:
            continue
        rule = next(r["rule"] for r in node["x-kubernetes-validations"] if ".sum()" in r["rule"])
        variable = re.search(r"self\.map\((\w+),", rule)
        assert variable, rule
        missing = [
            s for s in _strings(node["items"], variable.group(1)) if f"size({s})" not in rule
        ]
        assert not missing, f"{path}: {rule} does not sum {missing}"
