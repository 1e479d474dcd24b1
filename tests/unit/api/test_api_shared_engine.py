"""SharedEngine and LoRA adapters: defaults, Python mirrors of the CEL rules, and the CRD."""

from typing import Any

import pydantic
import pytest

from tidepool.api import crdgen, labels, names
from tidepool.api.v1alpha1 import (
    LORA_RANKS,
    MAX_REPLICAS,
    InferenceDeploymentSpec,
    ScalingSpec,
    SharedEngine,
    SharedEngineSpec,
)

JSON = dict[str, Any]
BASE = {"name": "meta-llama/Llama-3.1-8B-Instruct"}
ADAPTER = {"name": "support-bot", "source": "/models/adapters/support-bot"}


def _engine_spec(**spec: Any) -> JSON:
    return {"model": BASE, "pool": "shared-a100", **spec}


def test_shared_engine_defaults() -> None:
    spec = SharedEngineSpec.model_validate(_engine_spec())

    assert (spec.scaling.min_replicas, spec.scaling.max_replicas) == (0, 4)
    assert spec.scaling.target_queue_depth == ScalingSpec().target_queue_depth
    assert spec.scaling.scale_to_zero_after.text == "5m"
    assert (spec.lora.max_loras, spec.lora.max_cpu_loras, spec.lora.max_lora_rank) == (4, None, 16)
    assert spec.replicas is None


def test_adapter_defaults_and_base_model() -> None:
    spec = InferenceDeploymentSpec.model_validate({"model": {**BASE, "adapter": ADAPTER}})

    assert spec.model.adapter is not None
    assert spec.model.adapter.rank == 16
    assert spec.model.name == BASE["name"]
    assert InferenceDeploymentSpec.model_validate({"model": BASE}).model.adapter is None


def test_vllm_max_lora_ranks() -> None:
    # vLLM's --max-lora-rank accepts 8, 16, 32, 64, 128, 256, 320 or 512.
    assert LORA_RANKS == (8, 16, 32, 64, 128, 256, 320, 512)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(_engine_spec(), id="minimal"),
        pytest.param(
            _engine_spec(lora={"maxLoras": 8, "maxCpuLoras": 8, "maxLoraRank": 64}),
            id="cpu-loras-equal-to-loras",
        ),
        pytest.param(_engine_spec(lora={"maxLoraRank": 320}), id="rank-320"),
        pytest.param(
            _engine_spec(scaling={"minReplicas": 1, "maxReplicas": 2}, replicas=2),
            id="pinned-replicas-within-bounds",
        ),
        pytest.param(
            _engine_spec(model={**BASE, "revision": "main", "source": "s3://models/llama"}),
            id="base-model-with-revision-and-source",
        ),
        pytest.param(
            _engine_spec(scaling={"maxReplicas": MAX_REPLICAS, "scaleToZeroAfter": "1h"}),
            id="max-replicas-at-the-bound",
        ),
    ],
)
def test_valid_shared_engine_specs(spec: JSON) -> None:
    parsed = SharedEngineSpec.model_validate(spec)

    assert SharedEngineSpec.model_validate(parsed.model_dump(by_alias=True)) == parsed


@pytest.mark.parametrize(
    ("spec", "must_mention"),
    [
        pytest.param(
            _engine_spec(lora={"maxLoras": 8, "maxCpuLoras": 4}),
            ["lora.maxCpuLoras", "4", "lora.maxLoras", "8"],
            id="cpu-loras-below-loras",
        ),
        pytest.param(
            _engine_spec(lora={"maxLoraRank": 24}),
            ["maxLoraRank", "24", "320"],
            id="rank-not-a-vllm-choice",
        ),
        pytest.param(_engine_spec(lora={"maxLoras": 0}), ["maxLoras", "0"], id="no-adapter-slots"),
        pytest.param(
            _engine_spec(scaling={"minReplicas": 3, "maxReplicas": 2}),
            ["scaling.minReplicas", "3", "scaling.maxReplicas", "2"],
            id="min-replicas-above-max",
        ),
        pytest.param(
            _engine_spec(scaling={"maxReplicas": MAX_REPLICAS + 1}),
            ["maxReplicas", str(MAX_REPLICAS)],
            id="max-replicas-above-the-bound",
        ),
        pytest.param(
            _engine_spec(replicas=9),
            ["replicas", "9", "scaling.minReplicas", "0..4"],
            id="pinned-replicas-above-max",
        ),
        pytest.param(
            _engine_spec(scaling={"scaleToZeroAfter": "five minutes"}),
            ["scaleToZeroAfter", "five minutes"],
            id="duration-in-words",
        ),
        pytest.param(
            _engine_spec(engine={"gpusPerReplica": 1, "tensorParallelSize": 2}),
            ["engine.tensorParallelSize", "2", "engine.gpusPerReplica", "1"],
            id="tensor-parallel-above-gpus",
        ),
        pytest.param(_engine_spec(pool="Shared_A100"), ["pool", "Shared_A100"], id="pool-not-dns"),
        pytest.param(
            _engine_spec(model={**BASE, "adapter": ADAPTER}), ["adapter"], id="no-adapter-on-base"
        ),
        pytest.param(
            _engine_spec(model={"name": "m" * 1025}), ["name", "1024"], id="model-name-too-long"
        ),
    ],
)
def test_invalid_shared_engine_specs_name_field_and_value(
    spec: JSON, must_mention: list[str]
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        SharedEngineSpec.model_validate(spec)

    text = str(caught.value)
    missing = [word for word in must_mention if word not in text]
    assert not missing, f"message {text!r} does not mention {missing}"


@pytest.mark.parametrize(
    ("adapter", "must_mention"),
    [
        pytest.param({**ADAPTER, "rank": 1024}, ["rank", "512"], id="rank-above-vllm-max"),
        pytest.param({**ADAPTER, "rank": 0}, ["rank", "1"], id="rank-zero"),
        pytest.param({**ADAPTER, "name": "Support_Bot"}, ["name", "Support_Bot"], id="name-case"),
        pytest.param({**ADAPTER, "name": "a=b"}, ["name", "a=b"], id="name-with-equals"),
        pytest.param({**ADAPTER, "name": "a" * 64}, ["name", "63"], id="name-too-long"),
        pytest.param({**ADAPTER, "source": ""}, ["source"], id="empty-source"),
        pytest.param({**ADAPTER, "source": "/" * 1025}, ["source", "1024"], id="source-too-long"),
        pytest.param({"name": "support-bot"}, ["source"], id="source-missing"),
    ],
)
def test_invalid_adapters_name_field_and_value(adapter: JSON, must_mention: list[str]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        InferenceDeploymentSpec.model_validate({"model": {**BASE, "adapter": adapter}})

    text = str(caught.value)
    missing = [word for word in must_mention if word not in text]
    assert not missing, f"message {text!r} does not mention {missing}"


@pytest.mark.parametrize("rank", [pytest.param(r, id=f"rank-{r}") for r in (1, 12, 16, 320, 512)])
def test_any_adapter_rank_up_to_512_is_accepted(rank: int) -> None:
    spec = InferenceDeploymentSpec.model_validate(
        {"model": {**BASE, "adapter": {**ADAPTER, "rank": rank}}}
    )

    assert spec.model.adapter is not None
    assert spec.model.adapter.rank == rank


def test_whole_object_name_and_status() -> None:
    obj = SharedEngine.model_validate(
        {
            "apiVersion": "tidepool.dev/v1alpha1",
            "kind": "SharedEngine",
            "metadata": {"name": "llama-8b", "generation": 2},
            "spec": _engine_spec(),
            "status": {
                "tenants": 1,
                "adapters": [{"name": "support-bot", "tenant": "team-a/bot", "loadedReplicas": 2}],
                "someFutureField": True,
            },
        }
    )

    assert obj.name == "llama-8b"
    assert obj.status.adapters[0].loaded_replicas == 2
    assert obj.status.ready == "0/0"


# ------------------------------------------------------------------------------------ the CRD


def _crd() -> JSON:
    crd: JSON = crdgen.shared_engine_crd()
    return crd


def _schema(path: str) -> JSON:
    node: JSON = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path.split("."):
        node = node["properties"][part]
    return node


def _strings(node: JSON, path: str = "") -> list[tuple[str, JSON]]:
    found = [(path, node)] if node.get("type") == "string" else []
    for name, prop in node.get("properties", {}).items():
        found += _strings(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _strings(node["items"], f"{path}[]")
    return found


def test_crd_names_scope_and_subresources() -> None:
    crd = _crd()
    version = crd["spec"]["versions"][0]

    assert crd["metadata"]["name"] == "sharedengines.tidepool.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["plural"] == "sharedengines"
    assert crd["spec"]["names"]["shortNames"] == ["sheng"]
    # kubectl scale works as on an InferenceDeployment: same paths, status and scale.
    infd_version = crdgen.inference_deployment_crd()["spec"]["versions"][0]
    assert version["subresources"] == infd_version["subresources"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"


def test_crd_printer_columns_point_at_fields() -> None:
    columns = _crd()["spec"]["versions"][0]["additionalPrinterColumns"]

    assert [c["name"].upper() for c in columns] == ["MODEL", "POOL", "READY", "TENANTS", "AGE"]
    for column in columns:
        top, *rest = column["jsonPath"].strip(".").split(".")
        if top in ("spec", "status"):
            assert _schema(".".join([top, *rest])), column


def test_crd_cel_rule_on_optional_field_uses_has() -> None:
    # maxCpuLoras has no default: without has() the rule fails with "no such key" when unset.
    (rule,) = _schema("spec.lora")["x-kubernetes-validations"]

    assert rule["rule"].startswith("!has(self.maxCpuLoras) ||")
    assert "default" not in _schema("spec.lora.maxCpuLoras")


def test_crd_rank_is_vllm_enum_and_adapter_on_inference_deployment() -> None:
    rank = _schema("spec.lora.maxLoraRank")
    adapter = crdgen.inference_deployment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]["properties"]["model"]["properties"]["adapter"]

    assert rank["enum"] == list(LORA_RANKS)
    assert rank["default"] == 16
    assert adapter["required"] == ["name", "source"]
    assert adapter["properties"]["rank"]["maximum"] == 512
    assert "adapter" not in _schema("spec.model")["properties"]


def test_every_spec_string_has_a_max_length() -> None:
    # A 1 MB string in a spec can make an object too big to update, and so to delete.
    unbounded = [
        p for p, node in _strings(_schema("spec"), "spec") if not {"maxLength", "enum"} & set(node)
    ]

    assert not unbounded, f"strings without maxLength: {unbounded}"


def test_inference_deployment_shows_its_engine() -> None:
    version = crdgen.inference_deployment_crd()["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]

    assert columns.index("Engine") == columns.index("Pool") + 1
    assert status["engine"]["type"] == "string"
    assert status["engine"]["default"] == ""


# ------------------------------------------------------------------------------ labels, names


@pytest.mark.parametrize(
    ("engine_name", "expected"),
    [
        pytest.param("llama-8b", "sheng-llama-8b", id="readable"),
        pytest.param("8b", "sheng-8b", id="leading-digit-gets-a-letter"),
    ],
)
def test_shared_engine_names_are_readable(engine_name: str, expected: str) -> None:
    assert names.shared_engine(engine_name) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("llama.8b", "llama-8b", id="dot-versus-dash"),
        pytest.param("x" * 253, "x" * 252 + "y", id="long-subdomain-names"),
        pytest.param("a." * 100 + "b", "a-" * 100 + "b", id="long-dotted"),
    ],
)
def test_shared_engine_names_are_dns_labels_and_stay_distinct(a: str, b: str) -> None:
    dns_label = pydantic.TypeAdapter(
        pydantic.constr(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    )
    label_value = pydantic.TypeAdapter(
        pydantic.constr(pattern=r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$", max_length=63)
    )

    assert dns_label.validate_python(names.shared_engine(a))
    assert dns_label.validate_python(names.shared_engine(b))
    assert names.shared_engine(a) != names.shared_engine(b)
    assert label_value.validate_python(names.shared_engine_label(a))
    assert names.shared_engine_label(a) != names.shared_engine_label(b)


def test_shared_engine_selector_labels() -> None:
    assert labels.shared_engine_selector_labels("llama-8b") == {
        "tidepool.dev/shared-engine": "llama-8b",
        "tidepool.dev/component": "engine",
    }
