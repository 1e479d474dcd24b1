"""Names of child objects: one place, so reconcile, cleanup and tests agree.

Kubernetes names are at most 63 characters for labels and Services; a long name is cut and
suffixed with a short hash of the full name, so two long names never collide.
"""

import hashlib

MAX_NAME = 63


def _fit(name: str, limit: int = MAX_NAME) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def engine_deployment(infd_name: str, pool: str) -> str:
    """``llama-shared-a100``: one engine Deployment per pool an InferenceDeployment uses."""
    return _fit(f"{infd_name}-{pool}")


def engine_service(infd_name: str) -> str:
    """``llama-engine``: one Service over the engine pods of every pool."""
    return _fit(f"{infd_name}-engine")


def engine_endpoint(infd_name: str, namespace: str, port: int) -> str:
    """``http://llama-engine.team-a.svc:8000/v1``: the in-cluster OpenAI endpoint of a tenant."""
    return f"http://{engine_service(infd_name)}.{namespace}.svc:{port}/v1"
