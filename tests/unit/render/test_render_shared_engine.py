"""The SharedEngine renderer and the LoRA flags of a tenant's own engine: pure and deterministic."""

import json
from typing import Any

import pytest
from renderkit import SHARED

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import AdapterSpec, InferenceDeployment, SharedEngine
from tidepool.policy import fair_share
from tidepool.render import engine, lora, shared_engine

JSON = dict[str, Any]
BASE = "meta-llama/Llama-3.1-8B-Instruct"
NS = "tidepool-system"


def _engine(spec: JSON | None = None, *, name: str = "llama-8b") -> SharedEngine:
    return SharedEngine.model_validate(
        {
            "metadata": {"name": name, "uid": "uid-se"},
            "spec": {"model": {"name": BASE}, "pool": "shared-a100", **(spec or {})},
        }
    )


def _deployment(se: SharedEngine | None = None, replicas: int = 2) -> JSON:
    return shared_engine.shared_engine_deployment(se or _engine(), SHARED, replicas, namespace=NS)


def _container(obj: JSON) -> JSON:
    container: JSON = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _tenant(adapter: JSON | None) -> InferenceDeployment:
    model: JSON = {"name": BASE, "servedName": "bot"}
    if adapter is not None:
        model["adapter"] = adapter
    return InferenceDeployment.model_validate(
        {"metadata": {"name": "bot", "namespace": "team-a"}, "spec": {"model": model}}
    )


# ------------------------------------------------------------------------- the fleet's flags


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {},
            {
                "--max-loras": "4",
                "--max-cpu-loras": "4",
                "--max-lora-rank": "16",
                "--scheduling-policy": "priority",
            },
            id="defaults-cpu-loras-follow-max-loras-priority-scheduling",
        ),
        pytest.param(
            {"lora": {"maxLoras": 8, "maxCpuLoras": 32, "maxLoraRank": 64}},
            {"--max-loras": "8", "--max-cpu-loras": "32", "--max-lora-rank": "64"},
            id="explicit",
        ),
        pytest.param(
            {"engine": {"port": 9000, "gpusPerReplica": 2}},
            {"--port": "9000", "--tensor-parallel-size": "2", "--served-model-name": BASE},
            id="engine-spec-reused",
        ),
        pytest.param(
            {"model": {"name": BASE, "revision": "abc123"}},
            {"--revision": "abc123", "--served-model-name": BASE},
            id="revision",
        ),
    ],
)
def test_fleet_vllm_flags(spec: JSON, expected: dict[str, str]) -> None:
    args = _container(_deployment(_engine(spec)))["args"]

    assert "--enable-lora" in args
    assert {flag: _flag(args, flag) for flag in expected} == expected
    assert "--lora-modules" not in args  # tenants' adapters are loaded at runtime


def test_fleet_serves_the_source_under_the_model_name_and_extra_args_stay_last() -> None:
    se = _engine(
        {
            "model": {"name": BASE, "source": "s3://models/llama"},
            "engine": {"extraArgs": ["--max-loras", "2"]},
        }
    )

    args = _container(_deployment(se))["args"]
    assert args[0] == "s3://models/llama"
    assert _flag(args, "--served-model-name") == BASE
    assert args[-2:] == ["--max-loras", "2"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param([], [{"name": lora.RUNTIME_UPDATING_ENV, "value": "True"}], id="added"),
        pytest.param(
            [{"name": "ZED", "value": "1"}, {"name": "HF_HOME", "value": "/cache"}],
            [
                {"name": "HF_HOME", "value": "/cache"},
                {"name": lora.RUNTIME_UPDATING_ENV, "value": "True"},
                {"name": "ZED", "value": "1"},
            ],
            id="merged-and-sorted",
        ),
        pytest.param(
            [{"name": lora.RUNTIME_UPDATING_ENV, "value": "False"}],
            [{"name": lora.RUNTIME_UPDATING_ENV, "value": "True"}],
            id="user-value-replaced",
        ),
    ],
)
def test_runtime_lora_updating_env(env: list[JSON], expected: list[JSON]) -> None:
    assert _container(_deployment(_engine({"engine": {"env": env}})))["env"] == expected


# ---------------------------------------------------------------------- the Deployment, Service


def test_deployment_identity_labels_and_placement() -> None:
    obj = _deployment(replicas=3)
    pod = obj["spec"]["template"]["spec"]
    pod_labels = obj["spec"]["template"]["metadata"]["labels"]

    assert obj["metadata"]["name"] == "sheng-llama-8b"
    assert obj["metadata"]["namespace"] == NS
    assert obj["spec"]["replicas"] == 3
    assert pod_labels[labels.SHARED_ENGINE] == "llama-8b"
    assert pod_labels[labels.COMPONENT] == labels.COMPONENT_ENGINE
    assert pod_labels[labels.POOL] == "shared-a100"
    assert list(pod_labels) == sorted(pod_labels)
    # Many tenants share the pods: no tenant label, no owner InferenceDeployment, no anti-affinity.
    assert labels.TENANT not in pod_labels
    assert labels.INFERENCE_DEPLOYMENT not in pod_labels
    assert "affinity" not in pod
    assert pod["nodeSelector"] == SHARED.spec.node_selector
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert obj["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert obj["spec"]["template"]["metadata"]["annotations"] == {labels.SERVED_MODEL: BASE}


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(_deployment, id="deployment"),
        pytest.param(
            lambda: shared_engine.shared_engine_service(_engine(), namespace=NS), id="svc"
        ),
    ],
)
def test_owned_by_the_cluster_scoped_engine_and_deterministic(render: Any) -> None:
    first, second = render(), render()

    assert json.dumps(first) == json.dumps(second)
    assert first["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tidepool.dev/v1alpha1",
            "kind": "SharedEngine",
            "name": "llama-8b",
            "uid": "uid-se",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert "status" not in first


def test_service_selects_the_fleet() -> None:
    svc = shared_engine.shared_engine_service(_engine({"engine": {"port": 9000}}), namespace=NS)

    assert svc["metadata"]["name"] == names.shared_engine("llama-8b")
    assert svc["spec"]["selector"] == _deployment()["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
    ]


@pytest.mark.parametrize(
    "engine_name",
    [
        pytest.param("llama.3.1.8b", id="dotted"),
        pytest.param("x" * 253, id="longest-subdomain"),
        pytest.param("8b", id="leading-digit"),
    ],
)
def test_any_shared_engine_name_renders_valid_object_names(engine_name: str) -> None:
    obj = _deployment(_engine(name=engine_name))
    label = obj["spec"]["template"]["metadata"]["labels"][labels.SHARED_ENGINE]

    assert len(obj["metadata"]["name"]) <= 63
    assert obj["metadata"]["name"][0].isalpha()
    assert "." not in obj["metadata"]["name"]
    assert len(label) <= 63
    assert label[0].isalnum()
    assert label[-1].isalnum()


# ------------------------------------------------------------- a promoted tenant's own engine


@pytest.mark.parametrize(
    ("adapter", "module", "max_rank"),
    [
        pytest.param(
            {"name": "bot", "source": "/models/adapters/bot"},
            "bot=/models/adapters/bot",
            "16",
            id="path-default-rank",
        ),
        pytest.param(
            {"name": "bot", "source": "acme/bot-lora", "rank": 64},
            "bot=acme/bot-lora",
            "64",
            id="hub-reference-passed-through",
        ),
        pytest.param(
            {"name": "bot", "source": "/a", "rank": 12},
            "bot=/a",
            "16",
            id="rank-rounded-up-to-a-vllm-choice",
        ),
        pytest.param(
            {"name": "bot", "source": "/a", "rank": 300},
            "bot=/a",
            "320",
            id="rank-300-needs-320",
        ),
        pytest.param(
            {"name": "bot", "source": "s3://b/bot?versionId=3"},
            '{"name": "bot", "path": "s3://b/bot?versionId=3"}',
            "16",
            id="source-with-equals-sent-as-json",
        ),
    ],
)
def test_tenant_adapter_flags(adapter: JSON, module: str, max_rank: str) -> None:
    args = engine.vllm_args(_tenant(adapter))

    assert "--enable-lora" in args
    assert _flag(args, "--lora-modules") == module
    assert _flag(args, "--max-lora-rank") == max_rank
    assert _flag(args, "--served-model-name") == "bot"  # what the gateway routes on
    assert args[0] == BASE


def test_tenant_without_adapter_has_no_lora_flags() -> None:
    args = engine.vllm_args(_tenant(None))

    assert not [a for a in args if "lora" in a]


def test_tenant_extra_args_stay_last_after_lora_flags() -> None:
    infd = InferenceDeployment.model_validate(
        {
            "metadata": {"name": "bot", "namespace": "team-a"},
            "spec": {
                "model": {"name": BASE, "adapter": {"name": "bot", "source": "/a"}},
                "engine": {"extraArgs": ["--max-lora-rank", "32"]},
            },
        }
    )

    assert engine.vllm_args(infd)[-2:] == ["--max-lora-rank", "32"]


@pytest.mark.parametrize(
    ("rank", "expected"),
    [pytest.param(r, e, id=f"{r}-to-{e}") for r, e in ((1, 8), (8, 8), (9, 16), (321, 512))],
)
def test_max_lora_rank_for(rank: int, expected: int) -> None:
    assert lora.max_lora_rank_for(rank) == expected


def test_lora_module_json_form_round_trips() -> None:
    adapter = AdapterSpec(name="bot", source="/p,q")

    assert json.loads(lora.lora_module(adapter)) == {"name": "bot", "path": "/p,q"}


def test_the_fleet_pod_gets_the_engine_block_pod_settings() -> None:
    """SharedEngine and InferenceDeployment share one engine block and one pod renderer."""
    settings: JSON = {
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}],
        "envFrom": [{"configMapRef": {"name": "engine-env"}}],
        "resources": {"limits": {"memory": "64Gi"}, "sharedMemory": "16Gi"},
        "modelCache": {"claimName": "hf-cache"},
        "imagePullSecrets": ["registry"],
        "serviceAccountName": "model-reader",
    }
    pod = _deployment(_engine({"engine": settings}))["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert [e["name"] for e in container["env"]] == ["HF_TOKEN", lora.RUNTIME_UPDATING_ENV]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "hf"
    assert container["envFrom"] == [{"configMapRef": {"name": "engine-env", "optional": False}}]
    assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "1"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "hf-cache", "readOnly": False},
    } in pod["volumes"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["serviceAccountName"] == "model-reader"


@pytest.mark.parametrize(
    "extra_args",
    [
        pytest.param([], id="rendered"),
        pytest.param(["--scheduling-policy", "fcfs"], id="a-user-override"),
        pytest.param(["--scheduling-policy=fcfs"], id="a-user-override-with-equals"),
    ],
)
def test_the_policy_the_status_expects_is_the_one_rendered(extra_args: list[str]) -> None:
    """The SharedEngine's status says ``priority`` only while the template runs what the spec
    renders (policy.shared_engine.fleet_scheduling_policy): the two must read the same."""
    se = _engine({"engine": {"extraArgs": extra_args}})
    args = _container(_deployment(se))["args"]
    assert fair_share.scheduling_policy(args) == fair_share.rendered_policy(extra_args)
