"""Render the engine Deployment and Service of a SharedEngine: one base model, many LoRA tenants.

One Deployment per SharedEngine, in the namespace the operator runs its shared fleets in (a
SharedEngine is cluster-scoped, its children cannot be). The pod is the tenant engine pod of
:mod:`tidepool.render.engine` with LoRA turned on: the base model is served under its own name,
and tenants' adapters are loaded and unloaded at runtime (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``),
so a tenant joining or leaving never restarts the fleet. The replicas schedule by priority
(``--scheduling-policy priority``), which the gateway sets per tenant
(:mod:`tidepool.policy.fair_share`), so one tenant's burst does not queue every other tenant
behind it.

Placement is that of a shared pool: the pool's node selector and tolerations, no anti-affinity,
and no tenant label, since the pods belong to every tenant they serve.
"""

from tidepool.api import labels, names
from tidepool.api.v1alpha1 import EnvVar, GPUPool, SharedEngine
from tidepool.policy import fair_share
from tidepool.render import engine as tenant_engine
from tidepool.render import lora

JSON = tenant_engine.JSON


def _selector(engine: SharedEngine) -> dict[str, str]:
    return labels.shared_engine_selector_labels(names.shared_engine_label(engine.name))


def pod_labels(engine: SharedEngine, pool: GPUPool) -> dict[str, str]:
    return dict(
        sorted(
            {
                **_selector(engine),
                labels.POOL: pool.name,
                labels.TENANCY: str(pool.spec.tenancy),
                "app.kubernetes.io/name": "vllm",
                "app.kubernetes.io/managed-by": "tidepool",
            }.items()
        )
    )


def vllm_args(engine: SharedEngine) -> list[str]:
    """``vllm serve`` arguments: the base model, served under its model id, with LoRA enabled
    and priority scheduling."""
    spec = engine.spec
    extra = [*lora.shared_lora_args(spec.lora), *fair_share.RENDERED_ARGS]
    return tenant_engine.serve_args(spec.model, spec.engine, spec.model.name, extra)


def _env(engine: SharedEngine) -> list[EnvVar]:
    # Runtime loading is how tenants join, so a user's own value for the variable is replaced.
    user = [e for e in engine.spec.engine.env if e.name != lora.RUNTIME_UPDATING_ENV]
    return [*user, EnvVar(name=lora.RUNTIME_UPDATING_ENV, value="True")]


def shared_engine_deployment(
    engine: SharedEngine, pool: GPUPool, replicas: int, *, namespace: str
) -> JSON:
    """The complete desired engine Deployment of ``engine`` on ``pool``, with ``replicas``."""
    pod_meta_labels = pod_labels(engine, pool)
    container = tenant_engine.container(engine.spec.engine, vllm_args(engine), _env(engine))
    return tenant_engine.deployment(
        {
            "name": names.shared_engine(engine.name),
            "namespace": namespace,
            "labels": pod_meta_labels,
            "ownerReferences": [tenant_engine.owner_reference(engine)],
        },
        replicas=replicas,
        selector=_selector(engine),
        pod_metadata={
            "labels": pod_meta_labels,
            "annotations": {labels.SERVED_MODEL: engine.spec.model.name},
        },
        pod_spec=tenant_engine.pool_pod_spec(container, pool, engine.spec.engine),
    )


def shared_engine_service(engine: SharedEngine, *, namespace: str) -> JSON:
    """One ClusterIP Service over the fleet's engine pods."""
    return tenant_engine.service(
        engine,
        names.shared_engine(engine.name),
        namespace,
        _selector(engine),
        engine.spec.engine.port,
    )
