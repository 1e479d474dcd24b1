"""values.yaml, the ChartValues model and values.schema.json agree, and bad values are refused.

Bad values are checked twice: by the pydantic model (always) and by Helm itself, which
validates against values.schema.json on `helm template` (when helm is available). Each case
names the key Helm's error must mention.
"""

import json
from pathlib import Path
from typing import Any

import chartkit
import pydantic
import pytest
import yaml

from tidepool.api import chartvalues

VALUES_YAML = chartkit.CHART / "values.yaml"
SCHEMA_JSON = chartkit.CHART / "values.schema.json"


def merged(override: dict[str, Any]) -> dict[str, Any]:
    """The chart's defaults with ``override`` coalesced over them, as Helm does."""
    result = chartkit.coalesce(chartvalues.default_values(), override)
    assert isinstance(result, dict)
    return result


def _dedicated_pool(**extra: Any) -> dict[str, Any]:
    return {
        "name": "dedicated-h100",
        "tenancy": "dedicated",
        "gpuType": "NVIDIA-H100-80GB-HBM3",
        "pricePerGpuHour": 6.5,
        **extra,
    }


#: (override, key Helm's schema error names). All are refused by the model and by the schema.
BAD_VALUES = [
    pytest.param({"replicaCount": 3}, "replicaCount", id="unknown-top-level-key"),
    pytest.param(
        {"gateway": {"apiKeys": {"allowNoKeys": "yes"}}}, "allowNoKeys", id="allow-no-keys-string"
    ),
    pytest.param({"operator": {"replica": 2}}, "replica", id="operator-replicas-misspelt"),
    pytest.param({"operator": {"replicas": 0}}, "replicas", id="operator-replicas-zero"),
    pytest.param(
        {"operator": {"peering": {"name": "Tidepool_Peers"}}}, "name", id="peering-name-not-dns"
    ),
    pytest.param({"operator": {"peering": {"lifetime": 0}}}, "lifetime", id="peering-lifetime-0"),
    pytest.param(
        {"operator": {"podDisruptionBudget": {"maxUnavailable": 0}}},
        "maxUnavailable",
        id="operator-pdb-blocks-every-drain",
    ),
    pytest.param({"operator": {"metricsPort": 0}}, "metricsPort", id="port-zero"),
    pytest.param({"gateway": {"port": 70000}}, "port", id="port-too-high"),
    pytest.param({"gateway": {"replicas": "two"}}, "replicas", id="replicas-not-int"),
    pytest.param({"gateway": {"queueTimeout": "2 minutes"}}, "queueTimeout", id="bad-timeout"),
    pytest.param(
        {"gateway": {"terminationGracePeriodSeconds": 5}},
        "terminationGracePeriodSeconds",
        id="grace-too-short-to-drain",
    ),
    pytest.param(
        {"operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy", id="bad-pull-policy"
    ),
    pytest.param({"operator": {"image": {"digest": "latest"}}}, "digest", id="bad-digest"),
    pytest.param(
        {"operator": {"prometheusUrl": "prometheus:9090"}}, "prometheusUrl", id="url-no-scheme"
    ),
    pytest.param(
        {"operator": {"watchNamespaces": ["Team_A"]}}, "watchNamespaces", id="bad-namespace"
    ),
    pytest.param({"crds": {"install": "yes"}}, "install", id="crds-install-not-bool"),
    pytest.param(
        {"gpuPools": [{**_dedicated_pool(), "tenancy": "spot"}]}, "tenancy", id="bad-tenancy"
    ),
    pytest.param(
        {"gpuPools": [_dedicated_pool(pricePerMillionTokens=0.1)]},
        "pricePerMillionTokens",
        id="dedicated-pool-with-token-price",
    ),
    pytest.param(
        {"gpuPools": [_dedicated_pool(pricePerGpuHour=-1)]}, "pricePerGpuHour", id="neg-price"
    ),
    pytest.param(
        {"gpuPools": [{k: v for k, v in _dedicated_pool().items() if k != "gpuType"}]},
        "gpuType",
        id="pool-without-gpu-type",
    ),
    pytest.param(
        {"gpuPools": [_dedicated_pool(gpusPerNode=128)]}, "gpusPerNode", id="too-many-gpus"
    ),
    pytest.param(
        {"gpuPools": [_dedicated_pool(name="Dedicated_H100")]}, "name", id="pool-name-not-dns"
    ),
    pytest.param(
        {"gpuPools": [_dedicated_pool(tolerations=[{"key": "x", "operator": "In"}])]},
        "operator",
        id="pool-toleration-operator",
    ),
    pytest.param(
        {"monitoring": {"serviceMonitor": {"interval": "15 seconds"}}},
        "interval",
        id="bad-scrape-interval",
    ),
    pytest.param({"gateway": {"service": {"type": "ExternalName"}}}, "type", id="bad-service-type"),
    pytest.param(
        {"operator": {"resources": {"requests": {"cpu": ["1"]}}}}, "cpu", id="bad-quantity"
    ),
]

#: (override, key the model's error names). Refused by the model, but beyond what a JSON Schema
#: can say (it cannot compare two values): the template's `fail` refuses these in Helm
#: (test_chart_render).
BAD_VALUES_BEYOND_SCHEMA = [
    pytest.param({"gateway": {"metricsPort": 8080}}, "metricsPort", id="metrics-on-api-port"),
    pytest.param({"gateway": {"port": 9090}}, "metricsPort", id="api-on-metrics-port"),
]

GOOD_VALUES = [
    pytest.param({}, id="defaults"),
    pytest.param(
        {
            "operator": {
                "watchNamespaces": ["team-a"],
                "image": {"digest": "sha256:" + "a" * 64},
                "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
                "extraArgs": ["--verbose"],
            },
            "imageRegistry": "registry.example.internal",
            "gateway": {"replicas": 4, "service": {"type": "LoadBalancer", "port": 443}},
            "gpuPools": [_dedicated_pool(nodeSelector={"pool": "h100"})],
            "monitoring": {"serviceMonitor": {"enabled": True, "interval": "1m"}},
            "networkPolicy": {"enabled": True, "gatewayFrom": [{"namespaceSelector": {}}]},
        },
        id="non-default",
    ),
    pytest.param({"gpuPools": []}, id="no-pools"),
    pytest.param(
        {"operator": {"replicas": 3, "peering": {"name": "tidepool.peers", "lifetime": 30}}},
        id="three-peered-operators",
    ),
    pytest.param({"operator": {"replicas": 1}}, id="one-standalone-operator"),
    pytest.param({"gateway": {"enabled": False}, "crds": {"install": False}}, id="minimal"),
]


def test_values_yaml_equals_model_defaults() -> None:
    assert yaml.safe_load(VALUES_YAML.read_text()) == chartvalues.default_values()


def test_committed_schema_is_current() -> None:
    assert json.loads(SCHEMA_JSON.read_text()) == chartvalues.values_schema(), (
        "values.schema.json is stale: run `tidepool crd`"
    )


def test_schema_is_closed_self_contained_draft_07() -> None:
    schema = chartvalues.values_schema()
    text = json.dumps(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    assert "$ref" not in text
    assert "$defs" not in text
    for key in ("crds", "operator", "gateway", "monitoring", "networkPolicy", "rbac"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    assert schema["properties"]["gpuPools"]["items"]["additionalProperties"] is False


#: Fields of the CRD's Toleration model: a standard Kubernetes toleration, documented there.
UNDOCUMENTED_OK = {f"gpuPools[].tolerations[].{k}" for k in ("key", "operator", "value", "effect")}


def test_every_value_is_documented() -> None:
    """Each key in the schema has a description (it becomes `helm show values` help)."""

    def walk(node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for name, sub in node.get("properties", {}).items():
            here = f"{path}.{name}" if path else name
            if not sub.get("description") and here not in UNDOCUMENTED_OK:
                missing.append(here)
            missing += walk(sub, here)
            missing += walk(sub.get("items", {}), here + "[]")
        return missing

    assert walk(chartvalues.values_schema(), "") == []


@pytest.mark.parametrize("override", GOOD_VALUES)
def test_model_accepts(override: dict[str, Any]) -> None:
    chartvalues.ChartValues.model_validate(merged(override))


@pytest.mark.parametrize(("override", "key"), BAD_VALUES + BAD_VALUES_BEYOND_SCHEMA)
def test_model_rejects(override: dict[str, Any], key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        chartvalues.ChartValues.model_validate(merged(override))
    assert key in str(info.value)


def test_model_rejects_duplicate_pool_names() -> None:
    pools = [_dedicated_pool(), _dedicated_pool()]
    with pytest.raises(pydantic.ValidationError, match="duplicate pool names"):
        chartvalues.ChartValues.model_validate(merged({"gpuPools": pools}))


@pytest.mark.parametrize("override", GOOD_VALUES)
def test_helm_schema_accepts(helm: str, tmp_path: Path, override: dict[str, Any]) -> None:
    proc = chartkit.run_helm(helm, *chartkit.template_args(override, tmp_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("override", "key"), BAD_VALUES)
def test_helm_schema_rejects(helm: str, tmp_path: Path, override: dict[str, Any], key: str) -> None:
    proc = chartkit.run_helm(helm, *chartkit.template_args(override, tmp_path))
    assert proc.returncode != 0, f"helm accepted {override}"
    assert "schema" in proc.stderr, proc.stderr
    assert key in proc.stderr, proc.stderr


def test_helm_lint_strict(helm: str) -> None:
    proc = chartkit.run_helm(
        helm, "lint", str(chartkit.CHART), "--strict", "--kube-version", chartkit.KUBE_VERSION,
        *chartkit.WITH_KEYS_FLAGS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
