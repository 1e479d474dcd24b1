"""Names of child objects: one place, so reconcile, cleanup and tests agree.

Kubernetes names are at most 63 characters for labels and Services; a long name is cut and
suffixed with a short hash of the full name, so two long names never collide.
"""

import hashlib

MAX_NAME = 63


def _fit(name: str, limit: int = MAX_NAME, *, hash_of: str | None = None) -> str:
    """``name`` if it fits, else cut and suffixed with a hash. ``hash_of``: always suffix, with a
    hash of that text (for a name that was rewritten, so two originals never meet)."""
    if hash_of is None and len(name) <= limit:
        return name
    digest = hashlib.sha256((name if hash_of is None else hash_of).encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def engine_deployment(infd_name: str, pool: str) -> str:
    """``llama-shared-a100``: one engine Deployment per pool an InferenceDeployment uses."""
    return _fit(f"{infd_name}-{pool}")


def engine_service(infd_name: str) -> str:
    """``llama-engine``: one Service over the engine pods of every pool."""
    return _fit(f"{infd_name}-engine")


def engine_endpoint(infd_name: str, namespace: str, port: int) -> str:
    """``http://llama-engine.team-a.svc:8000/v1``: the in-cluster OpenAI endpoint of a tenant."""
    return f"http://{engine_service(infd_name)}.{namespace}.svc:{port}/v1"


def shared_engine(engine_name: str) -> str:
    """``sheng-llama-8b``: the engine Deployment and the Service of one SharedEngine.

    A SharedEngine is cluster-scoped, so its name is a DNS subdomain: up to 253 characters, dots
    allowed, perhaps a leading digit. A Service name must be a DNS label starting with a letter:
    the ``sheng-`` prefix gives the letter, and dots become dashes with a hash of the original
    name appended, so ``llama.8b`` and ``llama-8b`` never share a Service.
    """
    name = f"sheng-{engine_name}"
    if "." in name:
        return _fit(name.replace(".", "-"), hash_of=engine_name)
    return _fit(name)


def shared_engine_label(engine_name: str) -> str:
    """The SharedEngine's name as a label value (at most 63 characters; dots are allowed)."""
    return _fit(engine_name)
