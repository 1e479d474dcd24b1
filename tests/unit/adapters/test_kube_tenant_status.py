"""Status patches skip an object deleted mid-sync and raise everything else.

The SharedEngine's sync lists its tenants, plans, then patches each one's status; a tenant
deleted in between answers 404. Raising it failed the whole sync, and the SharedEngine's daemon
came back only after Kopf's backoff, its wakes and adapter loads waiting meanwhile.

The kubernetes client runs for real here, against a loopback HTTP server that answers its
discovery requests and the status patch with the API server's own replies (the 404 body is the
one kube-apiserver v1.36 sends; tests/integration/test_lora_tenant_wake.py sends the patch to a
real one).
"""

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from json_http import kube_api, send_json

from tidepool.adapters import kube

GROUP_VERSION = "tidepool.dev/v1alpha1"
PREFIX = f"/apis/{GROUP_VERSION}/namespaces/team/inferencedeployments/"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


DISCOVERY: dict[str, Any] = {
    "/version": {"major": "1", "minor": "36", "gitVersion": "v1.36.3"},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "tidepool.dev",
                "versions": [{"groupVersion": GROUP_VERSION, "version": "v1alpha1"}],
                "preferredVersion": {"groupVersion": GROUP_VERSION, "version": "v1alpha1"},
            }
        ],
    },
    f"/apis/{GROUP_VERSION}": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": "inferencedeployments",
                "singularName": "inferencedeployment",
                "namespaced": True,
                "kind": "InferenceDeployment",
                "verbs": ["get", "list", "patch", "watch"],
            },
            {
                "name": "inferencedeployments/status",
                "singularName": "",
                "namespaced": True,
                "kind": "InferenceDeployment",
                "verbs": ["get", "patch", "update"],
            },
        ],
    },
}

#: Tenant name -> the API server's answer to a patch of its status.
ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "deleted-meanwhile": (
        404,
        _status(404, "NotFound", 'inferencedeployments.tidepool.dev "deleted-meanwhile" not found'),
    ),
    "refused": (
        422,
        _status(
            422,
            "Invalid",
            'InferenceDeployment.tidepool.dev "refused" is invalid: status.conditions: Invalid'
            ' value: "string": status.conditions in body must be of type array: "string"',
        ),
    ),
    "throttled": (429, _status(429, "TooManyRequests", "too many requests, please try again")),
}


class ApiServer(BaseHTTPRequestHandler):
    patches: ClassVar[list[tuple[str, str, Any]]] = []

    def do_GET(self) -> None:
        if self.path in DISCOVERY:
            send_json(self, 200, DISCOVERY[self.path])
        else:
            send_json(self, 404, _status(404, "NotFound", "the server could not find the resource"))

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = self.path.removeprefix(PREFIX).removesuffix("/status")
        self.patches.append((name, self.headers["Content-Type"], body))
        stored = {"apiVersion": GROUP_VERSION, "kind": "InferenceDeployment", **body}
        code, answer = ANSWERS.get(name, (200, stored))
        send_json(self, code, answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[kube.Kube]:
    ApiServer.patches = []
    with kube_api(ApiServer, tmp_path) as api:
        yield kube.Kube(api)


STATUS = {"engine": "base", "conditions": []}


def test_a_tenant_deleted_mid_sync_is_skipped(ops: kube.Kube) -> None:
    ops.patch_tenant_status("team", "deleted-meanwhile", STATUS)

    assert ApiServer.patches == [
        ("deleted-meanwhile", "application/merge-patch+json", {"status": STATUS})
    ]


def test_an_inference_deployment_deleted_mid_sync_has_no_stored_copy(ops: kube.Kube) -> None:
    # Its own sync read it, planned, then a `kubectl delete` landed before the status write:
    # None (nothing stored, nothing to wait for), not a 404 traceback in the operator's log.
    assert ops.merge_patch_status("team", "deleted-meanwhile", STATUS) is None


def test_a_live_inference_deployment_returns_the_stored_object(ops: kube.Kube) -> None:
    stored = ops.merge_patch_status("team", "support-bot", STATUS)

    assert stored is not None
    assert stored["status"] == STATUS


def test_a_live_tenant_is_patched(ops: kube.Kube) -> None:
    ops.patch_tenant_status("team", "support-bot", STATUS)

    assert [name for name, _, _ in ApiServer.patches] == ["support-bot"]


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        pytest.param("refused", kube.RefusedKubeError, "must be of type array", id="422"),
        pytest.param("throttled", kube.TransientKubeError, "429", id="429"),
    ],
)
def test_other_refusals_still_reach_the_caller(
    ops: kube.Kube, name: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ops.patch_tenant_status("team", name, STATUS)
