"""Render the engine Deployment (one per pool) and the engine Service of an InferenceDeployment.

Why the pod looks the way it does:

- ``vllm serve`` arguments come from the spec, so what a user reads in the CR is what runs.
- ``nvidia.com/gpu`` limits plus the pool's node selector and tolerations put the pod on the
  pool's GPU nodes; the scheduler then accounts for GPUs per node.
- Dedicated pools are single-tenant: a required anti-affinity keeps pods of *other* tenants off
  the node (the scheduler honours it in both directions).
- The rollout is ``maxUnavailable: 0, maxSurge: 1`` (make-before-break), and a long
  termination grace period lets streaming responses finish before the engine exits.
- Replicas are always sent, by the single field manager ``tidepool``, with the autoscaler's
  current value (style note R6, option b), so an apply never resets them.
- /dev/shm is an in-memory emptyDir of ``engine.resources.sharedMemory``: vLLM's docs ask for a
  larger /dev/shm than a container's default 64Mi for tensor parallelism.
- Optional pod settings (envFrom, a model cache, imagePullSecrets, serviceAccountName) are left
  out entirely when unset, so a spec without them renders exactly as before they existed.
"""

import json
from typing import Any, Final

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import (
    BaseModelSpec,
    EngineSpec,
    EnvVar,
    GPUPool,
    InferenceDeployment,
    SharedEngine,
    Tenancy,
)
from tidepool.render import lora

JSON = dict[str, Any]
TERMINATION_GRACE_SECONDS: Final = 600
MODEL_LOAD_BUDGET_SECONDS: Final = 1800
#: Volume names in the engine pod.
SHM_VOLUME: Final = "dshm"
MODEL_CACHE_VOLUME: Final = "model-cache"


def owner_reference(owner: InferenceDeployment | SharedEngine) -> JSON:
    """A controller owner reference, so deleting the CR cascades to its children. A namespaced
    child may have a cluster-scoped owner (a SharedEngine), never the other way round."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": str(owner.metadata.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def vllm_args(infd: InferenceDeployment) -> list[str]:
    """``vllm serve`` arguments, e.g. ``[model, --served-model-name, llama, --port, 8000, ...]``.

    A tenant with ``spec.model.adapter`` that runs replicas of its own loads its adapter at start
    (:func:`tidepool.render.lora.tenant_lora_args`); the served name stays the tenant's.
    """
    adapter = infd.spec.model.adapter
    extra = lora.tenant_lora_args(adapter) if adapter else []
    return serve_args(infd.spec.model, infd.spec.engine, infd.served_model, extra)


def serve_args(
    model: BaseModelSpec, engine: EngineSpec, served_name: str, extra: list[str]
) -> list[str]:
    """``vllm serve`` arguments of ``model`` on ``engine``: ``extra`` comes just before the
    user's ``extraArgs``, which stay last so that a user can override anything rendered."""
    args = [
        model.source or model.name,
        "--served-model-name",
        served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(engine.port),
        "--tensor-parallel-size",
        str(engine.tensor_parallel_size or engine.gpus_per_replica),
        "--max-num-seqs",
        str(engine.max_num_seqs),
    ]
    if model.revision:
        args += ["--revision", model.revision]
    if engine.max_model_len:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.prefix_caching:
        args.append("--enable-prefix-caching")
    if engine.speculative_decoding:
        spec = engine.speculative_decoding
        config = {
            "method": spec.method,
            "num_speculative_tokens": spec.num_speculative_tokens,
            "prompt_lookup_max": spec.prompt_lookup_max,
        }
        args += ["--speculative-config", json.dumps(config, sort_keys=True)]
    return args + extra + list(engine.extra_args)


def pod_labels(infd: InferenceDeployment, pool: GPUPool) -> dict[str, str]:
    return dict(
        sorted(
            {
                **labels.selector_labels(infd.name),
                labels.POOL: pool.name,
                labels.TENANCY: str(pool.spec.tenancy),
                labels.TENANT: infd.tenant,
                "app.kubernetes.io/name": "vllm",
                "app.kubernetes.io/managed-by": "tidepool",
            }.items()
        )
    )


def _affinity(infd: InferenceDeployment, pool: GPUPool) -> JSON | None:
    if pool.spec.tenancy != Tenancy.DEDICATED:
        return None
    other_tenants = {
        "labelSelector": {
            "matchExpressions": [
                {"key": labels.TENANT, "operator": "Exists"},
                {"key": labels.TENANT, "operator": "NotIn", "values": [infd.tenant]},
            ]
        },
        "topologyKey": "kubernetes.io/hostname",
    }
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [other_tenants]}}


def env_var(var: EnvVar) -> JSON:
    """A container ``env`` entry: ``{name, value}`` (``""`` if unset) or ``{name, valueFrom}``."""
    if var.value_from is None:
        return {"name": var.name, "value": var.value or ""}
    return {
        "name": var.name,
        "valueFrom": var.value_from.model_dump(by_alias=True, exclude_none=True),
    }


def resources(engine: EngineSpec) -> JSON:
    """Requests and limits: ``gpusPerReplica`` GPUs in both, plus the CPU and memory set."""
    gpus = str(engine.gpus_per_replica)
    out: JSON = {}
    for kind, amounts in (
        ("limits", engine.resources.limits),
        ("requests", engine.resources.requests),
    ):
        set_amounts = amounts.model_dump(exclude_none=True) if amounts else {}
        out[kind] = {**set_amounts, "nvidia.com/gpu": gpus}
    return out


def container(engine: EngineSpec, args: list[str], env: list[EnvVar]) -> JSON:
    """The engine container running ``vllm serve args`` with ``env`` (sorted by name)."""
    probe_get = {"path": "/health", "port": "http"}
    mounts: list[JSON] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    cache = engine.model_cache
    if cache:
        mount = {"name": MODEL_CACHE_VOLUME, "mountPath": cache.mount_path}
        mounts.append({**mount, "readOnly": cache.read_only})
    out: JSON = {
        "name": names.ENGINE_CONTAINER,
        "image": engine.image,
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"name": "http", "containerPort": engine.port, "protocol": "TCP"}],
        "env": [env_var(e) for e in sorted(env, key=lambda e: e.name)],
        "resources": resources(engine),
        "startupProbe": {
            "httpGet": probe_get,
            "periodSeconds": 5,
            "failureThreshold": MODEL_LOAD_BUDGET_SECONDS // 5,
        },
        "readinessProbe": {"httpGet": probe_get, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": probe_get, "periodSeconds": 15, "failureThreshold": 4},
        "volumeMounts": mounts,
    }
    if engine.env_from:
        out["envFrom"] = [s.model_dump(by_alias=True, exclude_none=True) for s in engine.env_from]
    return out


def _model_cache_volume(engine: EngineSpec) -> JSON | None:
    cache = engine.model_cache
    if cache is None:
        return None
    if cache.claim_name is not None:
        claim = {"claimName": cache.claim_name, "readOnly": cache.read_only}
        source: JSON = {"persistentVolumeClaim": claim}
    else:
        source = {"emptyDir": {"sizeLimit": cache.size_limit} if cache.size_limit else {}}
    return {"name": MODEL_CACHE_VOLUME, **source}


def pool_pod_spec(engine_container: JSON, pool: GPUPool, engine: EngineSpec) -> JSON:
    """A pod spec placing ``engine_container`` on ``pool``'s nodes (selector and tolerations),
    with ``engine``'s volumes, image pull secrets and service account."""
    shm = {"medium": "Memory", "sizeLimit": engine.resources.shared_memory}
    volumes = [{"name": SHM_VOLUME, "emptyDir": shm}]
    cache = _model_cache_volume(engine)
    if cache:
        volumes.append(cache)
    out: JSON = {
        "containers": [engine_container],
        "nodeSelector": dict(sorted(pool.spec.node_selector.items())),
        "tolerations": [
            t.model_dump(by_alias=True, exclude_none=True) for t in pool.spec.tolerations
        ],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "volumes": volumes,
    }
    if engine.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": name} for name in engine.image_pull_secrets]
    if engine.service_account_name:
        out["serviceAccountName"] = engine.service_account_name
    return out


def deployment(
    metadata: JSON,
    *,
    replicas: int,
    selector: dict[str, str],
    pod_metadata: JSON,
    pod_spec: JSON,
) -> JSON:
    """An engine Deployment: ``replicas`` always sent, make-before-break rollout."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(sorted(selector.items()))},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def engine_deployment(
    infd: InferenceDeployment, pool: GPUPool, *, replicas: int, role: str
) -> JSON:
    """The complete desired engine Deployment of ``infd`` in ``pool``, with ``replicas``."""
    pod_meta_labels = pod_labels(infd, pool)
    # Served names may hold "/" and ":", which label values cannot: an annotation it is.
    annotations = {labels.SERVED_MODEL: infd.served_model}
    load_delay = infd.metadata.get("annotations", {}).get(labels.SIM_LOAD_DELAY)
    if load_delay:
        annotations[labels.SIM_LOAD_DELAY] = str(load_delay)
    engine = infd.spec.engine
    pod_spec = pool_pod_spec(container(engine, vllm_args(infd), engine.env), pool, engine)
    affinity = _affinity(infd, pool)
    if affinity:
        pod_spec["affinity"] = affinity
    return deployment(
        {
            "name": names.engine_deployment(infd.name, pool.name),
            "namespace": infd.namespace,
            "labels": {**pod_meta_labels, f"{labels.PREFIX}/role": role},
            "ownerReferences": [owner_reference(infd)],
        },
        replicas=replicas,
        selector={**labels.selector_labels(infd.name), labels.POOL: pool.name},
        pod_metadata={"labels": pod_meta_labels, "annotations": annotations},
        pod_spec=pod_spec,
    )


def engine_service(infd: InferenceDeployment) -> JSON:
    """One ClusterIP Service over the engine pods of every pool (the gateway is the front door)."""
    return service(
        infd,
        names.engine_service(infd.name),
        infd.namespace,
        labels.selector_labels(infd.name),
        infd.spec.engine.port,
    )


def service(
    owner: InferenceDeployment | SharedEngine,
    name: str,
    namespace: str,
    selector: dict[str, str],
    port: int,
) -> JSON:
    """A ClusterIP Service named ``name`` over the pods ``selector`` picks, owned by ``owner``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(sorted(selector.items())),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "selector": dict(sorted(selector.items())),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
