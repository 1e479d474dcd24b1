"""End to end on a real cluster with real kubelets: the images, the chart and a cold start.

Run by .github/workflows/e2e-kind.yaml after it installs the chart with freshly built images;
everything comes from the environment that workflow sets (KUBECONFIG, the release, the
engine-sim image, a loopback port-forward to the gateway). Without TIDEPOOL_E2E_GATEWAY_URL,
i.e. anywhere but such a cluster, the module is skipped. The engine pods run the engine-sim
image, whose `vllm` runs the simulator for the operator's `vllm serve` command.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from waiting import WaitAbortedError, wait_for

GATEWAY_URL = os.environ.get("TIDEPOOL_E2E_GATEWAY_URL", "")
pytestmark = pytest.mark.skipif(
    not GATEWAY_URL, reason="needs the kind workflow's cluster (TIDEPOOL_E2E_GATEWAY_URL)"
)
RELEASE = os.environ.get("TIDEPOOL_E2E_RELEASE", "tidepool")
RELEASE_NS = os.environ.get("TIDEPOOL_E2E_RELEASE_NAMESPACE", "tidepool-system")
ENGINE_IMAGE = os.environ.get("TIDEPOOL_E2E_ENGINE_IMAGE", "")


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def get_json(*args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl("get", *args, "-o", "json"))
    return out


@pytest.fixture
def namespace() -> Any:
    name = f"e2e-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "infd", "--all", "-n", name, "--wait", "--timeout", "120s")
    kubectl("delete", "namespace", name, "--wait=false")


def test_operator_and_gateway_run_from_their_images() -> None:
    for component in ("operator", "gateway"):
        dep = get_json("deployment", f"{RELEASE}-{component}", "-n", RELEASE_NS)
        assert dep["status"].get("readyReplicas", 0) >= 1, component
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.startswith(f"tidepool/{component}:"), image
    with urllib.request.urlopen(f"{GATEWAY_URL}/readyz", timeout=5) as resp:
        assert resp.status == 200


def test_a_cold_request_wakes_a_serverless_model_on_real_pods(namespace: str) -> None:
    assert ENGINE_IMAGE, "TIDEPOOL_E2E_ENGINE_IMAGE names the engine-sim image"
    manifest = {
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "tiny", "namespace": namespace},
        "spec": {
            "model": {"name": "org/tiny", "servedName": f"tiny-{namespace}"},
            "mode": "serverless",
            "engine": {"image": ENGINE_IMAGE},
            "scaling": {"scaleToZeroAfter": "10m"},
        },
    }
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))

    def scaled_to_zero() -> bool:
        obj = get_json("infd", "tiny", "-n", namespace)
        ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
        return bool(ready) and ready[0]["reason"] == "ScaledToZero"

    wait_for(scaled_to_zero, timeout=120, what="the model at zero, Ready=ScaledToZero", interval=1)
    body = json.dumps({"model": f"tiny-{namespace}", "prompt": "hello", "max_tokens": 4}).encode()

    def answered() -> dict[str, Any] | None:
        req = urllib.request.Request(
            f"{GATEWAY_URL}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=200) as resp:
                out: dict[str, Any] = json.loads(resp.read())
                return out
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # the gateway has not discovered the model yet
                return None
            raise WaitAbortedError(f"the gateway answered {exc.code}: {exc.read()!r}") from exc

    reply = wait_for(answered, timeout=300, what="the held request answered", interval=1)
    assert reply["choices"][0]["text"]
    pods = get_json("pods", "-n", namespace, "-l", "tidepool.dev/inference-deployment")
    assert any(
        c.get("ready") for p in pods["items"] for c in p["status"].get("containerStatuses", [])
    )
    obj = get_json("infd", "tiny", "-n", namespace)
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ReplicasReady")
