"""Names of child objects, and label values that stand for objects: one place, one rule.

The rule: a rendered name or label value is its readable form when that form is valid and cannot
be another object's; otherwise it is the readable form made valid, cut, and suffixed with
``-`` and 8 hex digits of a SHA-256 of what it stands for. So it is always valid, the same on
every reconcile, and two objects never share one (short of a hash collision).

Why it is needed: the API server accepts any DNS subdomain as an object's name (253 characters,
dots, a leading digit), but a Service name must be an RFC 1035 label (63 characters, ``[-a-z0-9]``,
a leading letter) and a label value is at most 63 characters. Joining names with ``-`` is also
ambiguous: ``a-b`` on pool ``c`` and ``a`` on pool ``b-c`` would both be ``a-b-c``.

Two facts keep the readable forms collision-free:

- a readable form never looks like a hashed one: a readable name ending in ``-`` and 8 hex digits
  is hashed too, and a hashed label value holds ``_``, which no name can; so readable and hashed
  forms are disjoint sets;
- each readable form splits back into what it was made of (see each function).

The hashed forms are distinct among themselves because the hash covers every part, separated by
``/``, which no object name can hold.
"""

import hashlib
import re
from typing import Final

#: Longest label value, Service name and DNS label (Kubernetes' apimachinery validation).
MAX_NAME: Final = 63
#: The vLLM container of every engine pod (a tenant's and a SharedEngine's).
ENGINE_CONTAINER: Final = "engine"
HASH_LEN: Final = 8
#: The prefix of SharedEngine children, which share a namespace with nothing of a tenant's.
SHARED_ENGINE_PREFIX: Final = "sheng"

#: An RFC 1035 label: what a Service's name must be.
DNS_1035_LABEL: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
#: An RFC 1123 label: what Tidepool's Deployment names are (so that pod names stay labels too).
DNS_1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
#: A label value (without the length bound).
LABEL_VALUE: Final = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_HASHED_TAIL: Final = re.compile(rf"-[0-9a-f]{{{HASH_LEN}}}")


def digest(*parts: str) -> str:
    """8 hex digits of the SHA-256 of ``parts`` joined by ``/``: ``digest("a-b", "c")``."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:HASH_LEN]


def _fit(
    readable: str,
    parts: tuple[str, ...],
    valid: re.Pattern[str],
    *,
    unambiguous: bool = True,
    keep: str = "a-z0-9",
    joint: str = "-",
) -> str:
    """``readable`` when it is valid, fits, is ``unambiguous`` and does not end like a hashed
    form; else its characters outside ``keep`` turned to ``-``, cut, and joined by ``joint`` to
    :func:`digest` of ``parts`` (prefixed with ``x`` where a letter must come first)."""
    looks_hashed = joint == "-" and _HASHED_TAIL.fullmatch(readable[-HASH_LEN - 1 :])
    if unambiguous and len(readable) <= MAX_NAME and valid.fullmatch(readable) and not looks_hashed:
        return readable
    stem = re.sub(f"[^{keep}]+", "-", readable.lower()).strip("-.")
    if valid is DNS_1035_LABEL and not stem[:1].isalpha():
        stem = f"x{stem}"
    stem = stem[: MAX_NAME - HASH_LEN - 1].rstrip("-.")
    return f"{stem}{joint}{digest(*parts)}" if stem else f"x{digest(*parts)}"


def engine_deployment(infd_name: str, pool: str) -> str:
    """``llama-shared-a100``: one engine Deployment per pool an InferenceDeployment uses.

    Readable only when ``infd_name`` holds no ``-`` (the first ``-`` then splits it back) and is
    not the SharedEngine prefix (``sheng-llama-8b`` is a fleet's). ``support-bot`` on
    ``shared-a100`` is therefore ``support-bot-shared-a100-<hash>``.
    """
    unambiguous = "-" not in infd_name and infd_name != SHARED_ENGINE_PREFIX
    return _fit(f"{infd_name}-{pool}", (infd_name, pool), DNS_1123_LABEL, unambiguous=unambiguous)


def engine_service(infd_name: str) -> str:
    """``llama-engine``: one Service over the engine pods of every pool.

    Readable forms always end in ``-engine``, so stripping it gives the name back.
    """
    return _fit(f"{infd_name}-engine", (infd_name,), DNS_1035_LABEL)


def engine_endpoint(infd_name: str, namespace: str, port: int) -> str:
    """``http://llama-engine.team-a.svc:8000/v1``: the in-cluster OpenAI endpoint of a tenant."""
    return f"http://{engine_service(infd_name)}.{namespace}.svc:{port}/v1"


def shared_engine(engine_name: str) -> str:
    """``sheng-llama-8b``: the engine Deployment and the Service of one SharedEngine.

    The ``sheng-`` prefix gives the leading letter a Service name needs; ``llama.8b`` (a valid
    SharedEngine name) becomes ``sheng-llama-8b-<hash>``, so it never meets ``llama-8b``.
    """
    return _fit(f"{SHARED_ENGINE_PREFIX}-{engine_name}", (engine_name,), DNS_1035_LABEL)


def label_value(name: str) -> str:
    """An object's name as a label value: the name itself when it fits (dots are allowed in a
    label value), else cut and hashed: a 64-character name is 54 characters, ``_`` and a hash.

    ``_`` may stand in a label value but never in an object's name, so a hashed value is never
    a name (a readable ``chat-20240101`` stays as it is, and selectors of existing Deployments,
    which cannot change, stay too).
    """
    return _fit(name, (name,), LABEL_VALUE, keep="a-z0-9.-", joint="_")


def shared_engine_label(engine_name: str) -> str:
    """The SharedEngine's name as a label value (:func:`label_value`)."""
    return label_value(engine_name)
