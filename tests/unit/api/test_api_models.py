"""The CRD models: defaults, examples, and cross-field errors that name the field and the value."""

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from tidepool.api.v1alpha1 import (
    DeploymentMode,
    GPUPool,
    GPUPoolSpec,
    InferenceDeployment,
    InferenceDeploymentSpec,
    SharedEngine,
    Tenancy,
)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml")) if (REPO / "examples").is_dir() else []
MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct"}


def test_spec_defaults_follow_the_product_brief() -> None:
    spec = InferenceDeploymentSpec.model_validate({"model": MODEL})

    assert spec.mode == DeploymentMode.SERVERLESS
    assert spec.scaling.min_replicas == 0
    assert spec.scaling.max_replicas == 4
    assert spec.scaling.scale_to_zero_after.text == "5m"
    assert spec.placement.promote_above == 0.5
    assert spec.placement.demote_below == 0.3
    assert spec.engine.gpus_per_replica == 1
    assert spec.engine.tensor_parallel_size is None
    assert spec.replicas is None
    assert spec.hybrid is None


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"model": MODEL}, id="minimal-serverless"),
        pytest.param(
            {"model": MODEL, "mode": "dedicated", "scaling": {"minReplicas": 1}},
            id="dedicated-with-warm-minimum",
        ),
        pytest.param(
            {
                "model": MODEL,
                "mode": "hybrid",
                "scaling": {"minReplicas": 2, "maxReplicas": 8},
                "hybrid": {"overflowConcurrencyPerReplica": 32, "maxOverflowReplicas": 4},
            },
            id="hybrid-with-floor",
        ),
        pytest.param(
            {
                "model": MODEL,
                "engine": {
                    "gpusPerReplica": 4,
                    "tensorParallelSize": 4,
                    "speculativeDecoding": {"numSpeculativeTokens": 5},
                    "extraArgs": ["--dtype", "bfloat16"],
                },
            },
            id="tensor-parallel-equal-to-gpus",
        ),
        pytest.param(
            {
                "model": MODEL,
                "scaling": {"scaleToZeroAfter": "1h30m", "scaleDownStabilization": "90s"},
            },
            id="go-style-durations",
        ),
        pytest.param(
            {"model": MODEL, "scaling": {"minReplicas": 2, "maxReplicas": 2}, "replicas": 2},
            id="min-equals-max",
        ),
    ],
)
def test_valid_specs_are_accepted(spec: dict[str, Any]) -> None:
    parsed = InferenceDeploymentSpec.model_validate(spec)

    again = InferenceDeploymentSpec.model_validate(parsed.model_dump(by_alias=True))
    assert again == parsed


@pytest.mark.parametrize(
    ("spec", "must_mention"),
    [
        pytest.param(
            {"model": MODEL, "scaling": {"minReplicas": 5, "maxReplicas": 2}},
            ["scaling.minReplicas", "5", "scaling.maxReplicas", "2"],
            id="min-replicas-above-max",
        ),
        pytest.param(
            {"model": MODEL, "mode": "dedicated", "scaling": {"minReplicas": 0}},
            ["dedicated", "scaling.minReplicas", "0"],
            id="dedicated-with-min-replicas-zero",
        ),
        pytest.param(
            {"model": MODEL, "mode": "hybrid"},
            ["hybrid", "scaling.minReplicas", "0"],
            id="hybrid-with-min-replicas-zero",
        ),
        pytest.param(
            {"model": MODEL, "placement": {"demoteBelow": 0.6, "promoteAbove": 0.5}},
            ["placement.demoteBelow", "0.6", "placement.promoteAbove", "0.5"],
            id="demote-above-promote",
        ),
        pytest.param(
            {"model": MODEL, "placement": {"demoteBelow": 0.5, "promoteAbove": 0.5}},
            ["placement.demoteBelow", "0.5", "placement.promoteAbove"],
            id="demote-equal-to-promote",
        ),
        pytest.param(
            {"model": MODEL, "placement": {"sloP99TimeToFirstByte": "0s"}},
            ["placement.sloP99TimeToFirstByte", "0s", "longer than 0s"],
            id="zero-slo",
        ),
        pytest.param(
            {"model": MODEL, "engine": {"gpusPerReplica": 2, "tensorParallelSize": 4}},
            ["engine.tensorParallelSize", "4", "engine.gpusPerReplica", "2"],
            id="tensor-parallel-above-gpus",
        ),
        pytest.param(
            {"model": MODEL, "scaling": {"scaleToZeroAfter": "5 minutes"}},
            ["scaleToZeroAfter", "5 minutes"],
            id="duration-in-words",
        ),
        pytest.param(
            {"model": MODEL, "placement": {"minDwell": "30"}},
            ["minDwell", "'30'"],
            id="duration-without-unit",
        ),
        pytest.param(
            {"model": MODEL, "mode": "sometimes"},
            ["mode", "sometimes"],
            id="unknown-mode",
        ),
        pytest.param(
            {"model": MODEL, "scaling": {"minReplica": 1}},
            ["minReplica"],
            id="typo-in-field-name-refused",
        ),
        pytest.param(
            {"model": MODEL, "tenant": "Team_A"},
            ["tenant", "Team_A"],
            id="tenant-not-a-dns-label",
        ),
    ],
)
def test_invalid_specs_name_field_and_value(spec: dict[str, Any], must_mention: list[str]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        InferenceDeploymentSpec.model_validate(spec)

    text = str(caught.value)
    missing = [word for word in must_mention if word not in text]
    assert not missing, f"message {text!r} does not mention {missing}"


def test_gpupool_defaults_and_tolerations() -> None:
    pool = GPUPoolSpec.model_validate(
        {
            "tenancy": "dedicated",
            "gpuType": "NVIDIA-A100-SXM4-80GB",
            "pricePerGpuHour": 4.0,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        }
    )

    assert pool.tenancy == Tenancy.DEDICATED
    assert pool.gpus_per_node == 8
    assert pool.node_selector == {}
    assert pool.tolerations[0].operator == "Exists"
    assert pool.price_per_million_tokens is None


def test_whole_objects_expose_name_namespace_tenant_and_served_model() -> None:
    infd = InferenceDeployment.model_validate(
        {
            "apiVersion": "tidepool.dev/v1alpha1",
            "kind": "InferenceDeployment",
            "metadata": {"name": "llama", "namespace": "team-a", "generation": 3},
            "spec": {"model": MODEL},
            "status": {"someFutureField": 1},
        }
    )

    assert (infd.name, infd.namespace, infd.generation) == ("llama", "team-a", 3)
    assert infd.tenant == "team-a"
    assert infd.served_model == "llama"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_parses(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} holds no documents"
    kinds = {k.KIND: k for k in (InferenceDeployment, GPUPool, SharedEngine)}
    for doc in docs:
        if str(doc.get("apiVersion", "")).startswith("tidepool.dev/"):
            assert doc.get("kind") in kinds, f"{path.name}: unknown kind {doc.get('kind')!r}"
            kinds[doc["kind"]].model_validate(doc)
