"""Any spec the API server accepts either works or gets Ready=False with a reason.

Against the real API server and the real operator. Each regression test here reproduced a spec
that the API server accepted and that then never got a status (the operator logged a traceback
every 10 s and ``kubectl get infd`` showed an empty STATUS), or an object that could never be
deleted; the property at the end sends a few hundred generated specs through the same path.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures_stack import Tidepool
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from tidepool_stack import GROUP, PLURAL, VERSION, apply_infd, condition, wait_for

from tidepool.adapters import kube as kube_adapter

pytestmark = pytest.mark.usefixtures("logs_on_failure")

JSON = dict[str, Any]
#: GPUPools whose nodes do not exist: engine pods stay Pending, so no simulator runs for them.
#: Named after the chart's pools by sort order, so no other test's default placement changes.
#: ``zzq`` and ``zzp-zzq`` make the ambiguous pair: ``a-zzp`` on ``zzq`` and ``a`` on ``zzp-zzq``.
NOWHERE_POOLS = {
    "zzq": "shared",
    "zzp-zzq": "shared",
    "zz-spec-shared": "shared",
    "zz-spec-dedicated": "dedicated",
}


def _custom(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


@pytest.fixture(scope="module")
def nowhere_pools(kube: client.ApiClient, gpupools: list[str]) -> Iterator[list[str]]:
    api = _custom(kube)
    for name, tenancy in NOWHERE_POOLS.items():
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GPUPool",
            "metadata": {"name": name},
            "spec": {
                "tenancy": tenancy,
                "gpuType": "NVIDIA-A100-SXM4-80GB",
                "nodeSelector": {"tidepool.dev/test-pool": "no-such-node"},
                "pricePerGpuHour": 4.0,
            },
        }
        api.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "gpupools",
            name,
            body,
            field_manager="test",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    try:
        yield list(NOWHERE_POOLS)
    finally:
        for name in NOWHERE_POOLS:
            with contextlib.suppress(ApiException):
                api.delete_cluster_custom_object(GROUP, VERSION, "gpupools", name)


def _manifest(name: str, namespace: str, spec: JSON) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _serverless_on(pool: str, **more: Any) -> JSON:
    return {
        "model": {"name": "org/m"},
        "mode": "serverless",
        "scaling": {"minReplicas": 0, "initialReplicas": 1},
        "placement": {"pools": {"shared": pool}},
        **more,
    }


def _status_reached(obj: JSON) -> bool:
    """Ready is set, with a reason, for the object's current generation."""
    ready = condition(obj, "Ready")
    return bool(
        ready.get("reason")
        and ready.get("status") in ("True", "False")
        and ready.get("observedGeneration") == obj["metadata"].get("generation")
    )


def _all_reach_status(kube: client.ApiClient, namespace: str, names: set[str], timeout: float):  # type: ignore[no-untyped-def]
    """Wait until every named object has reached a status; return them by name."""
    found: dict[str, JSON] = {}

    def done() -> bool:
        items = _custom(kube).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        for obj in items["items"]:
            if obj["metadata"]["name"] in names and _status_reached(obj):
                found[obj["metadata"]["name"]] = obj
        return set(found) == names

    try:
        wait_for(done, timeout=timeout, what=f"status on {len(names)} objects", interval=0.5)
    except TimeoutError as exc:
        missing = sorted(names - set(found))
        raise AssertionError(f"no status after {timeout}s: {[m[:80] for m in missing]}") from exc
    return found


def _refusal(kube: client.ApiClient, body: JSON) -> str:
    with pytest.raises(ApiException) as caught:
        apply_infd(kube, body)
    assert caught.value.status == 422, caught.value.body
    return str(caught.value.body)


# ------------------------------------------------------------------------------ admission


@pytest.mark.parametrize(
    ("scaling", "must_mention"),
    [
        pytest.param(
            {"scaleToZeroAfter": "999999999999h"},
            ["spec.scaling.scaleToZeroAfter", "999999999999h"],
            id="digits-that-overflow",
        ),
        pytest.param(
            {"scaleDownStabilization": "8761h"},
            ["spec.scaling.scaleDownStabilization", "must be at most 8760h"],
            id="over-a-year",
        ),
    ],
)
def test_durations_beyond_the_maximum_are_refused_naming_field_and_value(
    kube: client.ApiClient, namespace: str, scaling: JSON, must_mention: list[str]
) -> None:
    message = _refusal(
        kube, _manifest("d", namespace, {"model": {"name": "m"}, "scaling": scaling})
    )

    for text in must_mention:
        assert text in message


@pytest.mark.parametrize(
    ("spec", "must_mention"),
    [
        pytest.param(
            {"model": {"name": "x" * 1_000_000}},
            ["spec.model.name", "1024"],
            id="a-megabyte-model-name",
        ),
        pytest.param(
            {"model": {"name": "m"}, "engine": {"extraArgs": ["x" * 4000, "y" * 200]}},
            ["spec.engine.extraArgs", "4096 characters in all"],
            id="extra-args-in-all",
        ),
        pytest.param(
            {"model": {"name": "m"}, "engine": {"env": [{"name": "A=B"}]}},
            ["spec.engine.env[0].name"],
            id="env-name-with-equals",
        ),
    ],
)
def test_oversized_or_unusable_strings_are_refused_at_admission(
    kube: client.ApiClient, namespace: str, spec: JSON, must_mention: list[str]
) -> None:
    message = _refusal(kube, _manifest("big", namespace, spec))

    for text in must_mention:
        assert text in message


def test_a_long_gpupool_name_is_refused(kube: client.ApiClient) -> None:
    """Engine pods carry their pool's name as a label value: at most 63 characters."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GPUPool",
        "metadata": {"name": "p" * 64},
        "spec": {"tenancy": "shared", "gpuType": "g", "pricePerGpuHour": 1.0},
    }
    with pytest.raises(ApiException) as caught:
        _custom(kube).create_cluster_custom_object(GROUP, VERSION, "gpupools", body)

    assert caught.value.status == 422
    assert "metadata.name" in str(caught.value.body)


# ------------------------------------------------------------------------------ regressions


def test_dotted_long_and_colliding_names_each_get_their_own_children(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, nowhere_pools: list[str]
) -> None:
    """A dot made the Service name invalid, a name over 63 characters an invalid label value, and
    ``a-zzp`` on ``zzq`` and ``a`` on ``zzp-zzq`` fought over one Deployment, ``a-zzp-zzq``."""
    specs = {
        "llama.v2": _serverless_on("zz-spec-shared"),
        "l" + "o" * 100 + "ng": _serverless_on("zz-spec-shared"),
        "a-zzp": _serverless_on("zzq"),
        "a": _serverless_on("zzp-zzq"),
    }
    for name, spec in specs.items():
        apply_infd(kube, _manifest(name, namespace, spec))

    objs = _all_reach_status(kube, namespace, set(specs), timeout=60)

    apps = client.AppsV1Api(kube)
    owners: dict[str, str] = {}
    for obj in objs.values():
        assert condition(obj, "Ready")["reason"] != "InvalidSpec", condition(obj, "Ready")
        (pool,) = obj["status"]["pools"]
        dep = apps.read_namespaced_deployment(pool["deployment"], namespace)
        owners[dep.metadata.name] = dep.metadata.owner_references[0].name
        selected = apps.list_namespaced_deployment(
            namespace, label_selector=obj["status"]["selector"]
        )
        assert [d.metadata.name for d in selected.items] == [pool["deployment"]]
    assert sorted(owners.values()) == sorted(specs)
    services = client.CoreV1Api(kube).list_namespaced_service(namespace).items
    assert len(services) == len(specs)


def test_an_emoji_in_the_spec_reaches_the_pod_template_as_it_is(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, nowhere_pools: list[str]
) -> None:
    """Server-side apply sent ``\\ud83e\\udd99``, which the API server's YAML parser refuses."""
    spec = _serverless_on(
        "zz-spec-shared",
        engine={"env": [{"name": "GREETING", "value": "hi 🦙 naïve 日本"}], "extraArgs": ["🦙"]},
    )
    spec["model"]["name"] = "org/llama-🦙"
    # Created as JSON: the kubernetes client's own apply would be refused, as the test below shows.
    _custom(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _manifest("emoji", namespace, spec)
    )

    obj = _all_reach_status(kube, namespace, {"emoji"}, timeout=60)["emoji"]

    assert condition(obj, "Ready")["reason"] != "InvalidSpec"
    dep = client.AppsV1Api(kube).read_namespaced_deployment(
        obj["status"]["pools"][0]["deployment"], namespace
    )
    engine = dep.spec.template.spec.containers[0]
    assert engine.env[0].value == "hi 🦙 naïve 日本"
    assert engine.args[0] == "org/llama-🦙"
    assert engine.args[-1] == "🦙"


def test_the_api_server_refuses_surrogate_escapes_in_an_apply_and_takes_utf8(
    kube: client.ApiClient, namespace: str
) -> None:
    """The root cause, shown on the API server itself: the client's ``json.dumps`` body."""
    body = _manifest("emoji", namespace, {"model": {"name": "org/llama-🦙"}})
    message = _refusal_of_apply(kube, json.dumps(body))

    assert "invalid Unicode character escape code" in message
    _apply_raw(kube, kube_adapter.apply_body(body))
    stored = _custom(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "emoji")
    assert stored["spec"]["model"]["name"] == "org/llama-🦙"


def _apply_raw(kube: client.ApiClient, body: str | bytes) -> None:
    """Server-side apply of an already serialised body, which the client sends as it is."""
    resource = DynamicClient(kube).resources.get(  # type: ignore[no-untyped-call]
        api_version=f"{GROUP}/{VERSION}", kind="InferenceDeployment"
    )
    manifest = json.loads(body)
    resource.server_side_apply(
        body=body,
        name=manifest["metadata"]["name"],
        namespace=manifest["metadata"]["namespace"],
        field_manager="test",
        force_conflicts=True,
    )


def _refusal_of_apply(kube: client.ApiClient, body: str) -> str:
    with pytest.raises(ApiException) as caught:
        _apply_raw(kube, body)
    assert caught.value.status == 400, caught.value.body
    return str(caught.value.body)


def test_the_largest_spec_the_schema_takes_can_be_deleted(
    kube: client.ApiClient, namespace: str, tidepool: Tidepool, nowhere_pools: list[str]
) -> None:
    """A 1 MB model.name pushed Kopf's annotation past 256 KiB: the finalizer stayed for good."""
    spec = _serverless_on(
        "zz-spec-shared",
        model={
            "name": "\x01" * 1024,
            "source": "\x01" * 1024,
            "revision": "\x01" * 256,
            "servedName": "s" * 253,
        },
        engine={
            "image": "\x01" * 512,
            "extraArgs": ["\x01" * 64] * 64,
            "env": [{"name": f"V{i:02d}", "value": "\x01" * 125} for i in range(64)],
        },
    )
    apply_infd(kube, _manifest("largest", namespace, spec))
    _all_reach_status(kube, namespace, {"largest"}, timeout=60)

    _custom(kube).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "largest")

    wait_for(
        lambda: (
            not _custom(kube).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
                "items"
            ]
        ),
        timeout=30,
        what="the largest spec to be deleted",
    )


# ------------------------------------------------------------------------------ the property

#: Generated specs, and how many are alive at once: each batch of objects shares a namespace,
#: reaches a status, and is deleted before the next, so the operator is never swamped.
EXAMPLES, BATCH = 240, 60
#: Specs the API server must accept and the operator give a status: the generator aims at the
#: schema, but a few CEL rules it does not aim at may refuse a spec.
MIN_ACCEPTED = 200

_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?", fullmatch=True)
_object_names = st.one_of(
    _label,
    st.lists(_label, min_size=2, max_size=6).map(".".join),
    st.tuples(_label, st.integers(60, 240)).map(lambda t: (t[0] + "x" * t[1])[: t[1]]),
)
_text = st.text(min_size=1, max_size=40)
_durations = st.one_of(
    st.sampled_from(["0s", "90s", "5m", "1h30m", "8760h", "1.5h", "250ms"]),
    st.from_regex(r"[0-9]{1,4}(ms|s|m)", fullmatch=True),
)
_pool_ref = st.one_of(st.sampled_from(["zz-spec-shared", "zz-spec-dedicated"]), _label)


@st.composite
def _specs(draw: st.DrawFn) -> JSON:
    """InferenceDeployment specs the schema accepts, nearly always: any text where text goes,
    every mode, bounds at their edges, pools that exist nowhere or not at all."""
    mode = draw(st.sampled_from(["serverless", "dedicated", "hybrid", "auto"]))
    low = 1 if mode in ("dedicated", "hybrid") else 0
    min_replicas = draw(st.integers(low, 3))
    max_replicas = draw(st.integers(max(1, min_replicas), 5))
    gpus = draw(st.integers(1, 16))
    model: JSON = {"name": draw(_text)}
    for key in ("source", "revision"):
        if draw(st.booleans()):
            model[key] = draw(_text)
    if draw(st.booleans()):
        model["servedName"] = draw(
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,30}", fullmatch=True)
        )
    if draw(st.integers(0, 4)) == 0:
        model["adapter"] = {
            "name": draw(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True)),
            "source": draw(_text),
            "rank": draw(st.integers(1, 512)),
        }
    engine: JSON = {
        "image": draw(_text),
        "gpusPerReplica": gpus,
        "maxNumSeqs": draw(st.integers(1, 4096)),
        "prefixCaching": draw(st.booleans()),
        "port": draw(st.integers(1, 65535)),
        "extraArgs": draw(st.lists(_text, max_size=4)),
        "env": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.from_regex(r"[ -<>-~]{1,20}", fullmatch=True), "value": _text}
                ),
                max_size=3,
                unique_by=lambda e: e["name"],
            )
        ),
    }
    if draw(st.booleans()):
        engine["tensorParallelSize"] = draw(st.integers(1, gpus))
    if draw(st.booleans()):
        engine["maxModelLen"] = draw(st.integers(128, 1_000_000))
    if draw(st.booleans()):
        engine["speculativeDecoding"] = {"numSpeculativeTokens": draw(st.integers(1, 16))}
    promote = draw(st.floats(0.01, 1.0))
    spec: JSON = {
        "model": model,
        "mode": mode,
        "engine": engine,
        "scaling": {
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "targetQueueDepth": draw(st.integers(1, 10000)),
            "scaleToZeroAfter": draw(_durations),
            "scaleUpStabilization": draw(_durations),
            "scaleDownStabilization": draw(_durations),
            "maxScaleUpRate": draw(st.floats(1.0, 100.0)),
        },
        "placement": {
            "promoteAbove": promote,
            "demoteBelow": draw(st.floats(0.0, promote, exclude_max=True)),
            "window": draw(_durations),
            "minDwell": draw(_durations),
            "pools": {"shared": draw(_pool_ref), "dedicated": draw(_pool_ref)},
        },
    }
    if draw(st.booleans()):
        spec["scaling"]["initialReplicas"] = draw(st.integers(0, max_replicas))
    if draw(st.booleans()):
        spec["tenant"] = draw(_label)
    if mode in ("hybrid", "auto") and draw(st.booleans()):
        spec["hybrid"] = {
            "overflowConcurrencyPerReplica": draw(st.integers(1, 10000)),
            "maxOverflowReplicas": draw(st.integers(0, 1000)),
        }
    if draw(st.integers(0, 4)) == 0:
        spec["replicas"] = draw(st.integers(min_replicas, max_replicas))
    return spec


def test_every_spec_the_api_server_accepts_gets_a_status(
    kube: client.ApiClient, tidepool: Tidepool, nowhere_pools: list[str]
) -> None:
    """The property: each generated spec the API server accepts reaches Ready True or False with
    a reason for its generation, and can be deleted; the operator logs no traceback meanwhile.

    One example creates one object (Hypothesis keeps each example small); every ``BATCH``
    objects, the batch's statuses are awaited and the batch is deleted.
    """
    core, api = client.CoreV1Api(kube), _custom(kube)
    tracebacks_before = tidepool.operator.tail(1_000_000).count("Traceback")
    started = time.monotonic()
    accepted, refused, namespaces = 0, [], []
    batch: dict[str, JSON] = {}
    open_namespace: list[str] = []

    def flush() -> None:
        namespace = open_namespace.pop() if open_namespace else None
        if namespace is None:
            return
        try:
            _all_reach_status(kube, namespace, set(batch), timeout=120)
        finally:
            batch.clear()
            with contextlib.suppress(ApiException):
                api.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: a failed batch names its objects itself
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(name=_object_names, spec=_specs())
    def create_one(name: str, spec: JSON) -> None:
        nonlocal accepted
        if not open_namespace:
            namespace = f"t-spec-{uuid.uuid4().hex[:8]}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            namespaces.append(namespace)
            open_namespace.append(namespace)
        namespace = open_namespace[0]
        if name in batch:  # Hypothesis repeats small names; a repeat would update, not create
            suffix = f"-{len(batch)}"
            name = name[: 253 - len(suffix)].rstrip("-.") + suffix
        try:
            api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _manifest(name, namespace, spec)
            )
        except ApiException as exc:
            if exc.status != 422:
                raise
            refused.append(json.loads(exc.body)["message"][:300])
            return
        batch[name] = spec
        accepted += 1
        if len(batch) >= BATCH:
            flush()

    create_one()
    flush()

    wait_for(
        lambda: not {n.metadata.name for n in core.list_namespace().items} & set(namespaces),
        timeout=180,
        what="every generated object deleted and its namespace gone",
        interval=1.0,
    )
    elapsed = time.monotonic() - started
    print(
        f"\nspec property: {accepted} accepted specs reached a status, {len(refused)} refused"
        f" at admission, in {elapsed:.0f}s"
    )
    assert accepted >= MIN_ACCEPTED, refused[:10]
    traceback_count = tidepool.operator.tail(1_000_000).count("Traceback") - tracebacks_before
    assert traceback_count == 0, tidepool.operator.tail(200)
