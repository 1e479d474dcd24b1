"""The engine's pod settings: env from Secrets and ConfigMaps, envFrom, CPU, memory and /dev/shm,
a model cache, image pull secrets and a service account.

One ``engine`` block serves InferenceDeployment and SharedEngine alike, so every case runs on
both kinds. A refusal names the field, the value and what is allowed.
"""

from decimal import Decimal
from typing import Any

import pydantic
import pytest

from tidepool.api import quantities
from tidepool.api.v1alpha1 import InferenceDeploymentSpec, SharedEngineSpec, types

JSON = dict[str, Any]
MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct"}
HF_TOKEN_KEY = {"name": "hf-token", "key": "token"}
HF_TOKEN = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": HF_TOKEN_KEY}}

KINDS = [
    pytest.param(
        lambda engine: {"model": MODEL, "engine": engine}, InferenceDeploymentSpec, id="infd"
    ),
    pytest.param(
        lambda engine: {"model": MODEL, "pool": "shared-a100", "engine": engine},
        SharedEngineSpec,
        id="shared-engine",
    ),
]


@pytest.mark.parametrize(("wrap", "kind"), KINDS)
@pytest.mark.parametrize(
    "engine",
    [
        pytest.param({"env": [HF_TOKEN]}, id="env-from-a-secret-key"),
        pytest.param(
            {
                "env": [
                    {
                        "name": "VLLM_LOGGING_LEVEL",
                        "valueFrom": {
                            "configMapKeyRef": {"name": "vllm.config", "key": "log.level"}
                        },
                    }
                ]
            },
            id="env-from-a-configmap-key",
        ),
        pytest.param(
            {
                "env": [
                    {**HF_TOKEN, "valueFrom": {"secretKeyRef": {**HF_TOKEN_KEY, "optional": True}}}
                ]
            },
            id="optional-secret-key",
        ),
        pytest.param(
            {
                "envFrom": [
                    {"secretRef": {"name": "s3-credentials"}, "prefix": "AWS_"},
                    {"configMapRef": {"name": "engine-env", "optional": True}},
                ]
            },
            id="env-from",
        ),
        pytest.param(
            {
                "resources": {
                    "requests": {"cpu": "500m", "memory": "60G"},
                    "limits": {"cpu": "0.5", "memory": "64Gi"},
                    "sharedMemory": "16Gi",
                }
            },
            id="requests-equal-to-limits-in-other-units",
        ),
        pytest.param({"resources": {"limits": {"memory": "64Gi"}}}, id="limit-only"),
        pytest.param({"modelCache": {"claimName": "hf-cache", "readOnly": True}}, id="cache-claim"),
        pytest.param(
            {"modelCache": {"sizeLimit": "200Gi", "mountPath": "/models"}}, id="cache-emptydir"
        ),
        pytest.param(
            {"imagePullSecrets": ["registry-creds"], "serviceAccountName": "model-reader"},
            id="pull-secrets-and-service-account",
        ),
    ],
)
def test_engine_pod_settings_are_accepted(wrap: Any, kind: Any, engine: JSON) -> None:
    parsed = kind.model_validate(wrap(engine))

    again = kind.model_validate(parsed.model_dump(by_alias=True, exclude_none=True))
    assert again == parsed


def test_defaults_keep_the_pod_as_it_was() -> None:
    """No settings: the 8Gi /dev/shm the engine pod always had, and nothing else added."""
    engine = InferenceDeploymentSpec.model_validate({"model": MODEL}).engine

    assert engine.resources.shared_memory == "8Gi"
    assert (engine.resources.requests, engine.resources.limits) == (None, None)
    assert (engine.env_from, engine.image_pull_secrets) == ([], [])
    assert (engine.model_cache, engine.service_account_name) == (None, None)
    cache = types.ModelCache()
    assert cache.mount_path == "/root/.cache/huggingface"


@pytest.mark.parametrize(("wrap", "kind"), KINDS)
@pytest.mark.parametrize(
    ("engine", "must_mention"),
    [
        pytest.param(
            {"env": [{**HF_TOKEN, "value": "hf_abc"}]},
            ["HF_TOKEN", "value and valueFrom", "mutually exclusive"],
            id="value-and-value-from",
        ),
        pytest.param(
            {
                "env": [
                    {
                        "name": "X",
                        "valueFrom": {
                            "secretKeyRef": {"name": "a", "key": "k"},
                            "configMapKeyRef": {"name": "b", "key": "k"},
                        },
                    }
                ]
            },
            ["valueFrom", "sets secretKeyRef and configMapKeyRef", "exactly one"],
            id="value-from-both-sources",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {}}]},
            ["valueFrom", "sets neither", "secretKeyRef or configMapKeyRef"],
            id="value-from-no-source",
        ),
        pytest.param(
            {
                "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "HF_Token", "key": "t"}}}
                ]
            },
            ["secretKeyRef.name", "'HF_Token'", "[a-z0-9]"],
            id="secret-name-not-a-dns-subdomain",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": ".."}}}]},
            ["secretKeyRef.key", "'..'"],
            id="secret-key-dot-dot",
        ),
        pytest.param(
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}]},
            ["secretKeyRef.key", "'a/b'"],
            id="secret-key-with-slash",
        ),
        pytest.param(
            {"envFrom": [{"prefix": "AWS_"}]},
            ["envFrom", "sets neither", "secretRef or configMapRef"],
            id="env-from-no-source",
        ),
        pytest.param(
            {"envFrom": [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]},
            ["envFrom", "sets secretRef and configMapRef", "exactly one"],
            id="env-from-both-sources",
        ),
        pytest.param(
            {"envFrom": [{"secretRef": {"name": "s"}, "prefix": "A="}]},
            ["envFrom.0.prefix", "'A='"],
            id="env-from-prefix-with-equals",
        ),
        pytest.param(
            {"envFrom": [{"secretRef": {"name": f"s{i}"}} for i in range(9)]},
            ["envFrom", "at most 8 items"],
            id="env-from-too-many",
        ),
        pytest.param(
            {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}},
            ["engine.resources.requests.cpu (4)", "engine.resources.limits.cpu (2)", "less than"],
            id="cpu-request-above-limit",
        ),
        pytest.param(
            {"resources": {"requests": {"memory": "65G"}, "limits": {"memory": "60Gi"}}},
            ["requests.memory (65G)", "limits.memory (60Gi)"],
            id="memory-request-above-limit-across-units",
        ),
        pytest.param(
            {"resources": {"limits": {"memory": "64GB"}}},
            ["limits.memory", "'64GB'", "Gi"],
            id="memory-with-a-unit-kubernetes-lacks",
        ),
        pytest.param(
            {"resources": {"requests": {"cpu": "-1"}}},
            ["requests.cpu", "'-1'"],
            id="negative-cpu",
        ),
        pytest.param(
            {"resources": {"sharedMemory": "1.5Gi"}},
            ["sharedMemory", "'1.5Gi'"],
            id="fractional-shared-memory",
        ),
        pytest.param(
            {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
            ["nvidia.com/gpu", "Extra inputs"],
            id="gpus-only-through-gpus-per-replica",
        ),
        pytest.param(
            {"modelCache": {"claimName": "hf-cache", "sizeLimit": "100Gi"}},
            ["engine.modelCache.sizeLimit (100Gi)", "claimName (hf-cache)", "emptyDir"],
            id="cache-claim-with-size-limit",
        ),
        pytest.param(
            {"modelCache": {"mountPath": "/dev/shm"}},
            ["engine.modelCache.mountPath (/dev/shm)", "shared memory"],
            id="cache-over-shared-memory",
        ),
        pytest.param(
            {"modelCache": {"mountPath": "cache"}},
            ["mountPath", "'cache'", "^/"],
            id="cache-relative-mount-path",
        ),
        pytest.param(
            {"imagePullSecrets": ["Registry_Creds"]},
            ["imagePullSecrets.0", "'Registry_Creds'"],
            id="pull-secret-not-a-dns-subdomain",
        ),
        pytest.param(
            {"serviceAccountName": "x" * 254},
            ["serviceAccountName", "at most 253 characters"],
            id="service-account-too-long",
        ),
    ],
)
def test_invalid_engine_pod_settings_name_field_and_value(
    wrap: Any, kind: Any, engine: JSON, must_mention: list[str]
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        kind.model_validate(wrap(engine))

    text = str(caught.value)
    missing = [word for word in must_mention if word not in text]
    assert not missing, f"message {text!r} does not mention {missing}"


@pytest.mark.parametrize(
    ("env", "characters"),
    [
        pytest.param({"name": "A", "value": "xyz"}, 4, id="literal"),
        pytest.param({"name": "A"}, 1, id="unset-value"),
        pytest.param(HF_TOKEN, len("HF_TOKEN") + len("hf-token") + len("token"), id="secret-key"),
    ],
)
def test_env_characters_count_names_values_and_references(env: JSON, characters: int) -> None:
    """The Python twin of the CEL total on engine.env: HF_TOKEN from hf-token/token is 8+8+5."""
    assert types.EnvVar.model_validate(env).characters == characters


def test_value_from_references_count_toward_the_env_total() -> None:
    long_key = {"secretKeyRef": {"name": "s" * 253, "key": "k" * 253}}
    # V0..V16: 10 x 2 + 7 x 3 name characters, and 17 x (253 + 253) referenced: 8643 > 8192.
    env = [{"name": f"V{i}", "valueFrom": long_key} for i in range(17)]

    with pytest.raises(pydantic.ValidationError) as caught:
        types.EngineSpec.model_validate({"env": env})

    assert "valueFrom names and keys hold 8643 characters" in str(caught.value)
    assert str(types.MAX_ENV_CHARS) in str(caught.value)


# ------------------------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2", Decimal(2), id="cpus"),
        pytest.param("1.5", Decimal("1.5"), id="fractional-cpus"),
        pytest.param("500m", Decimal("0.5"), id="millicores"),
        pytest.param("1000m", Decimal(1), id="millicores-equal-a-cpu"),
        pytest.param("64Gi", Decimal(64 * 1024**3), id="gibibytes"),
        pytest.param("64G", Decimal(64 * 1000**3), id="gigabytes"),
        pytest.param("512Mi", Decimal(512 * 1024**2), id="mebibytes"),
        pytest.param("1Ti", Decimal(1024**4), id="tebibytes"),
        pytest.param("8k", Decimal(8000), id="kilobytes"),
        pytest.param("1048576", Decimal(1048576), id="plain-bytes"),
    ],
)
def test_quantity_value(text: str, expected: Decimal) -> None:
    assert quantities.value(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("64GB", id="unknown-suffix"),
        pytest.param("-1", id="negative"),
        pytest.param("1e3", id="exponent"),
        pytest.param("1.5Gi", id="fractional-bytes"),
        pytest.param("0.0001", id="below-a-millicore"),
        pytest.param("64 Gi", id="space"),
    ],
)
def test_quantity_refuses_with_the_value_and_examples(text: str) -> None:
    with pytest.raises(quantities.InvalidQuantityError) as caught:
        quantities.value(text)

    assert repr(text) in str(caught.value)
    assert "500m" in str(caught.value)
    assert "64Gi" in str(caught.value)
