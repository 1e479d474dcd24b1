"""How the API server's refusals reach the reconcile: each ``ApiException`` by what it means.

The bodies have the shape and wording of kube-apiserver v1.36's ``Status`` replies (the 404 as
the local control plane sent it): a namespace deleted under a running daemon answers 404 for the
*namespace*, and one still terminating answers 403 from the NamespaceLifecycle admission plugin.
Both mean the object is on its way out with its namespace, which is no error to log with a
traceback.
"""

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tidepool.adapters import kube


def _refusal(code: int, reason: str, message: str, details: dict[str, Any]) -> ApiException:
    exc = ApiException(status=code, reason=reason)
    exc.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        }
    )
    return exc


CASES = [
    pytest.param(
        _refusal(
            404,
            "NotFound",
            'namespaces "team-a" not found',
            {"name": "team-a", "kind": "namespaces"},
        ),
        kube.NamespaceGoneError,
        id="namespace-deleted",
    ),
    pytest.param(
        _refusal(
            403,
            "Forbidden",
            'deployments.apps "bot-shared-a100" is forbidden: unable to create new content in'
            " namespace team-a because it is being terminated",
            {"name": "bot-shared-a100", "group": "apps", "kind": "deployments"},
        ),
        kube.NamespaceGoneError,
        id="namespace-terminating",
    ),
    pytest.param(
        _refusal(
            404,
            "NotFound",
            'deployments.apps "bot-shared-a100" not found',
            {"name": "bot-shared-a100", "group": "apps", "kind": "deployments"},
        ),
        ApiException,
        id="object-not-found-is-not-the-namespace",
    ),
    pytest.param(
        _refusal(403, "Forbidden", 'deployments.apps is forbidden: User "x" cannot create', {}),
        ApiException,
        id="rbac-forbidden-stays-an-error",
    ),
    pytest.param(
        _refusal(409, "Conflict", "the object has been modified", {}),
        kube.TransientKubeError,
        id="conflict-is-transient",
    ),
    pytest.param(
        _refusal(422, "Invalid", "spec.template: Invalid value", {}),
        kube.RefusedKubeError,
        id="invalid-is-refused",
    ),
]


@pytest.mark.parametrize(("exc", "kind"), CASES)
def test_each_refusal_is_classified_by_what_it_means(exc: ApiException, kind: type) -> None:
    wrapped = kube._wrap(exc)

    assert type(wrapped) is kind
