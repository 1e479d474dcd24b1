"""The engine Deployment and Service renderers: pure, total, deterministic."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from renderkit import SHARED, pool

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, PoolStatus, Tenancy
from tidepool.policy import plan
from tidepool.render import engine

JSON = dict[str, Any]


def _infd(spec: JSON | None = None, *, name: str = "llama", **meta: Any) -> InferenceDeployment:
    return InferenceDeployment.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a", "uid": "uid-1", **meta},
            "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **(spec or {})},
        }
    )


DEDICATED = pool(
    "dedicated-a100",
    "dedicated",
    nodeSelector={"tidepool.dev/pool": "dedicated-a100"},
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "tidepool.dev/tenancy", "value": "dedicated", "effect": "NoSchedule"},
    ],
)


def _deployment(infd: InferenceDeployment, pool: GPUPool = SHARED, replicas: int = 2) -> JSON:
    return engine.engine_deployment(infd, pool, replicas=replicas, role="primary")


def _pod(obj: JSON) -> JSON:
    pod: JSON = obj["spec"]["template"]["spec"]
    return pod


def _args(spec: JSON) -> list[str]:
    return engine.vllm_args(_infd(spec))


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(
            lambda: _deployment(
                _infd({"engine": {"env": [{"name": "B", "value": "2"}, {"name": "A"}]}})
            ),
            id="deployment",
        ),
        pytest.param(lambda: _deployment(_infd(), DEDICATED), id="dedicated-deployment"),
        pytest.param(lambda: engine.engine_service(_infd()), id="service"),
    ],
)
def test_same_input_gives_identical_json(render: Any) -> None:
    first, second = render(), render()

    assert json.dumps(first) == json.dumps(second)
    assert first is not second


def test_env_and_labels_are_sorted() -> None:
    obj = _deployment(_infd({"engine": {"env": [{"name": "Z", "value": "1"}, {"name": "A"}]}}))

    env = _pod(obj)["containers"][0]["env"]
    pod_labels = obj["spec"]["template"]["metadata"]["labels"]
    assert [e["name"] for e in env] == ["A", "Z"]
    assert list(pod_labels) == sorted(pod_labels)
    assert list(_pod(obj)["nodeSelector"]) == sorted(_pod(obj)["nodeSelector"])


def test_rendering_does_not_mutate_the_pool_or_spec() -> None:
    before = (SHARED.model_dump(), _infd().model_dump())

    obj = _deployment(_infd())
    _pod(obj)["nodeSelector"]["extra"] = "x"
    _pod(obj)["tolerations"].append({"key": "x"})

    assert (SHARED.model_dump(), _infd().model_dump()) == before


# -------------------------------------------------------------------------------- vllm args


@pytest.mark.parametrize(
    ("spec", "check"),
    [
        pytest.param({}, lambda a: a[0] == "meta-llama/Llama-3.1-8B-Instruct", id="model-first"),
        pytest.param(
            {"model": {"name": "m", "source": "s3://models/m"}},
            lambda a: a[0] == "s3://models/m",
            id="source-replaces-model-id",
        ),
        pytest.param(
            {},
            lambda a: _flag(a, "--served-model-name") == "llama",
            id="served-name-defaults-to-resource-name",
        ),
        pytest.param(
            {"model": {"name": "m", "servedName": "llama-8b"}},
            lambda a: _flag(a, "--served-model-name") == "llama-8b",
            id="served-name-from-spec",
        ),
        pytest.param(
            {}, lambda a: "--enable-prefix-caching" not in a, id="no-prefix-caching-by-default"
        ),
        pytest.param(
            {"engine": {"prefixCaching": True}},
            lambda a: "--enable-prefix-caching" in a,
            id="prefix-caching",
        ),
        pytest.param(
            {"engine": {"gpusPerReplica": 4}},
            lambda a: _flag(a, "--tensor-parallel-size") == "4",
            id="tensor-parallel-defaults-to-gpus-per-replica",
        ),
        pytest.param(
            {"engine": {"gpusPerReplica": 4, "tensorParallelSize": 2}},
            lambda a: _flag(a, "--tensor-parallel-size") == "2",
            id="tensor-parallel-explicit",
        ),
        pytest.param(
            {"engine": {"speculativeDecoding": {"numSpeculativeTokens": 5}}},
            lambda a: (
                json.loads(_flag(a, "--speculative-config"))
                == {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}
            ),
            id="speculative-config-is-json",
        ),
        pytest.param({}, lambda a: "--speculative-config" not in a, id="no-speculative-by-default"),
        pytest.param(
            {"engine": {"maxModelLen": 8192, "maxNumSeqs": 128, "port": 9000}},
            lambda a: (
                (_flag(a, "--max-model-len"), _flag(a, "--max-num-seqs"), _flag(a, "--port"))
                == ("8192", "128", "9000")
            ),
            id="numeric-flags",
        ),
        pytest.param(
            {"model": {"name": "m", "revision": "abc123"}},
            lambda a: _flag(a, "--revision") == "abc123",
            id="revision",
        ),
        pytest.param(
            {"engine": {"prefixCaching": True, "extraArgs": ["--dtype", "bfloat16"]}},
            lambda a: a[-2:] == ["--dtype", "bfloat16"],
            id="extra-args-appended-last",
        ),
    ],
)
def test_vllm_args(spec: JSON, check: Any) -> None:
    args = _args(spec)

    assert check(args), args
    assert all(isinstance(a, str) for a in args)


# --------------------------------------------------------------------------- the Deployment


def test_gpu_limits_and_requests_follow_gpus_per_replica() -> None:
    obj = _deployment(_infd({"engine": {"gpusPerReplica": 2}}))

    resources = _pod(obj)["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "2"}
    assert resources["requests"] == {"nvidia.com/gpu": "2"}


def _container(pod: JSON) -> JSON:
    container: JSON = pod["containers"][0]
    return container


def _volume(pod: JSON, name: str) -> JSON:
    return next(v for v in pod["volumes"] if v["name"] == name)


def _mount(pod: JSON, name: str) -> JSON:
    return next(m for m in _container(pod)["volumeMounts"] if m["name"] == name)


@pytest.mark.parametrize(
    ("spec_engine", "read", "expected"),
    [
        pytest.param(
            {
                "env": [
                    {
                        "name": "HF_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
                    }
                ]
            },
            lambda pod: _container(pod)["env"],
            [
                {
                    "name": "HF_TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {"name": "hf-token", "key": "token", "optional": False}
                    },
                }
            ],
            id="env-from-secret-key",
        ),
        pytest.param(
            {
                "env": [
                    {
                        "name": "B",
                        "valueFrom": {
                            "configMapKeyRef": {"name": "c", "key": "k", "optional": True}
                        },
                    },
                    {"name": "A", "value": "1"},
                    {"name": "C"},
                ]
            },
            lambda pod: _container(pod)["env"],
            [
                {"name": "A", "value": "1"},
                {
                    "name": "B",
                    "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}},
                },
                {"name": "C", "value": ""},
            ],
            id="env-literal-configmap-key-and-unset-sorted",
        ),
        pytest.param(
            {
                "envFrom": [
                    {"secretRef": {"name": "s3-creds"}, "prefix": "AWS_"},
                    {"configMapRef": {"name": "engine-env", "optional": True}},
                ]
            },
            lambda pod: _container(pod)["envFrom"],
            [
                {"prefix": "AWS_", "secretRef": {"name": "s3-creds", "optional": False}},
                {"configMapRef": {"name": "engine-env", "optional": True}},
            ],
            id="env-from-in-spec-order",
        ),
        pytest.param(
            {
                "gpusPerReplica": 2,
                "resources": {
                    "requests": {"cpu": "8", "memory": "60Gi"},
                    "limits": {"memory": "64Gi"},
                },
            },
            lambda pod: _container(pod)["resources"],
            {
                "limits": {"memory": "64Gi", "nvidia.com/gpu": "2"},
                "requests": {"cpu": "8", "memory": "60Gi", "nvidia.com/gpu": "2"},
            },
            id="cpu-and-memory-beside-gpus",
        ),
        pytest.param(
            {"resources": {"sharedMemory": "32Gi"}},
            lambda pod: (_volume(pod, "dshm"), _mount(pod, "dshm")),
            (
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}},
                {"name": "dshm", "mountPath": "/dev/shm"},
            ),
            id="shared-memory-size",
        ),
        pytest.param(
            {"modelCache": {"claimName": "hf-cache", "readOnly": True}},
            lambda pod: (_volume(pod, "model-cache"), _mount(pod, "model-cache")),
            (
                {
                    "name": "model-cache",
                    "persistentVolumeClaim": {"claimName": "hf-cache", "readOnly": True},
                },
                {"name": "model-cache", "mountPath": "/root/.cache/huggingface", "readOnly": True},
            ),
            id="model-cache-claim-at-the-default-path",
        ),
        pytest.param(
            {"modelCache": {"sizeLimit": "200Gi", "mountPath": "/models"}},
            lambda pod: (_volume(pod, "model-cache"), _mount(pod, "model-cache")),
            (
                {"name": "model-cache", "emptyDir": {"sizeLimit": "200Gi"}},
                {"name": "model-cache", "mountPath": "/models", "readOnly": False},
            ),
            id="model-cache-emptydir",
        ),
        pytest.param(
            {"modelCache": {}},
            lambda pod: _volume(pod, "model-cache"),
            {"name": "model-cache", "emptyDir": {}},
            id="model-cache-unbounded-emptydir",
        ),
        pytest.param(
            {"imagePullSecrets": ["registry-a", "registry-b"]},
            lambda pod: pod["imagePullSecrets"],
            [{"name": "registry-a"}, {"name": "registry-b"}],
            id="image-pull-secrets",
        ),
        pytest.param(
            {"serviceAccountName": "model-reader"},
            lambda pod: pod["serviceAccountName"],
            "model-reader",
            id="service-account",
        ),
    ],
)
@pytest.mark.parametrize(
    "pool", [pytest.param(SHARED, id="shared"), pytest.param(DEDICATED, id="dedicated")]
)
def test_engine_settings_land_in_the_pod(
    spec_engine: JSON, read: Any, expected: Any, pool: GPUPool
) -> None:
    pod = _pod(_deployment(_infd({"engine": spec_engine}), pool))

    assert read(pod) == expected


def test_unset_engine_settings_render_the_pod_as_before() -> None:
    """A spec without the optional settings renders no key for them: existing engine pods keep
    their template, so upgrading the operator rolls no Deployment."""
    pod = _pod(_deployment(_infd()))

    assert {"imagePullSecrets", "serviceAccountName"}.isdisjoint(pod)
    assert "envFrom" not in _container(pod)
    assert pod["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
    ]
    assert _container(pod)["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert _container(pod)["resources"] == {
        "limits": {"nvidia.com/gpu": "1"},
        "requests": {"nvidia.com/gpu": "1"},
    }


@pytest.mark.parametrize(
    "pool", [pytest.param(SHARED, id="shared"), pytest.param(DEDICATED, id="dedicated")]
)
def test_pool_node_selector_and_tolerations_are_copied(pool: GPUPool) -> None:
    pod = _pod(_deployment(_infd(), pool))

    assert pod["nodeSelector"] == pool.spec.node_selector
    assert pod["tolerations"] == [
        t.model_dump(by_alias=True, exclude_none=True) for t in pool.spec.tolerations
    ]
    assert obj_labels(_deployment(_infd(), pool))[labels.POOL] == pool.name


def obj_labels(obj: JSON) -> dict[str, str]:
    result: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return result


def test_dedicated_pool_gets_required_anti_affinity_against_other_tenants() -> None:
    pod = _pod(_deployment(_infd({"tenant": "team-x"}), DEDICATED))

    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    expressions = term["labelSelector"]["matchExpressions"]
    assert {"key": labels.TENANT, "operator": "NotIn", "values": ["team-x"]} in expressions
    assert (
        obj_labels(_deployment(_infd({"tenant": "team-x"}), DEDICATED))[labels.TENANT] == "team-x"
    )


def test_shared_pool_has_no_affinity() -> None:
    assert "affinity" not in _pod(_deployment(_infd(), SHARED))


def test_tenant_defaults_to_namespace() -> None:
    assert obj_labels(_deployment(_infd()))[labels.TENANT] == "team-a"


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(_deployment, id="deployment"),
        pytest.param(engine.engine_service, id="service"),
    ],
)
def test_owner_reference_is_the_controller(render: Any) -> None:
    infd = _infd()
    (ref,) = render(infd)["metadata"]["ownerReferences"]

    assert ref == {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "name": "llama",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(_deployment, id="deployment"),
        pytest.param(engine.engine_service, id="service"),
    ],
)
def test_no_server_owned_fields(render: Any) -> None:
    obj = render(_infd(resourceVersion="42", managedFields=[{}], creationTimestamp="x"))

    assert "status" not in obj
    for field in ("resourceVersion", "managedFields", "creationTimestamp", "uid", "generation"):
        assert field not in obj["metadata"], field
    assert {"apiVersion", "kind", "metadata", "spec"} == set(obj)


@pytest.mark.parametrize("replicas", [pytest.param(n, id=f"replicas-{n}") for n in (0, 1, 7)])
def test_replicas_always_present(replicas: int) -> None:
    assert _deployment(_infd(), replicas=replicas)["spec"]["replicas"] == replicas


def test_selector_matches_pod_labels_and_is_per_pool() -> None:
    shared, dedicated = _deployment(_infd(), SHARED), _deployment(_infd(), DEDICATED)

    for obj in (shared, dedicated):
        selector = obj["spec"]["selector"]["matchLabels"]
        assert selector.items() <= obj_labels(obj).items()
    assert shared["spec"]["selector"] != dedicated["spec"]["selector"]


def test_rollout_is_make_before_break() -> None:
    strategy = _deployment(_infd())["spec"]["strategy"]

    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_served_model_annotation_and_sim_load_delay() -> None:
    infd = _infd(annotations={labels.SIM_LOAD_DELAY: "3s"})

    annotations = _deployment(infd)["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {labels.SERVED_MODEL: "llama", labels.SIM_LOAD_DELAY: "3s"}


def test_service_selects_every_pool() -> None:
    svc = engine.engine_service(_infd())

    assert svc["spec"]["selector"] == labels.selector_labels("llama")
    assert svc["spec"]["ports"][0]["port"] == 8000
    assert (
        names.engine_endpoint("llama", "team-a", 8000) == "http://llama-engine.team-a.svc:8000/v1"
    )


# ---------------------------------------------------------------------------------- names

LONG_A = "a" * 70
LONG_B = "a" * 69 + "b"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            lambda: names.engine_deployment("llama", "shared-a100"),
            "llama-shared-a100",
            id="short-deployment",
        ),
        pytest.param(lambda: names.engine_service("llama"), "llama-engine", id="short-service"),
    ],
)
def test_short_names_are_readable(name: Any, expected: str) -> None:
    assert name() == expected


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: names.engine_deployment(n, "dedicated-a100"), id="deployment"),
        pytest.param(names.engine_service, id="service"),
    ],
)
def test_long_names_are_cut_to_63_with_a_hash_and_stay_distinct(make: Any) -> None:
    a, b = make(LONG_A), make(LONG_B)

    assert len(a) <= 63
    assert len(b) <= 63
    assert a != b
    assert a == make(LONG_A)
    assert a[-9] == "-"
    assert all(c in "0123456789abcdef" for c in a[-8:])


def test_cut_before_the_hash_drops_trailing_dashes() -> None:
    name = names.engine_deployment("x" * 50 + "-" * 10 + "y" * 10, "pool")

    assert len(name) <= 63
    assert name.startswith("x" * 50 + "-")
    assert "--" not in name


def test_long_deployment_name_is_used_in_the_rendered_object() -> None:
    infd = _infd(name=LONG_A)

    obj = _deployment(infd)
    assert obj["metadata"]["name"] == names.engine_deployment(LONG_A, "shared-a100")
    assert len(obj["metadata"]["name"]) <= 63


def test_pool_summary() -> None:
    pools = [
        PoolStatus(name="dedicated-a100", tenancy=Tenancy.DEDICATED, role="primary"),
        PoolStatus(name="shared-a100", tenancy=Tenancy.SHARED, role="overflow"),
    ]

    assert plan.pool_summary(pools) == "dedicated-a100,shared-a100(overflow)"
    assert plan.pool_summary([]) == "-"


_DNS = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,120}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(a=_DNS, b=_DNS)
def test_any_two_names_in_one_pool_fit_and_stay_distinct(a: str, b: str) -> None:
    da, db = names.engine_deployment(a, "shared-a100"), names.engine_deployment(b, "shared-a100")

    assert len(da) <= 63
    assert len(names.engine_service(a)) <= 63
    assert (da == db) == (a == b)
