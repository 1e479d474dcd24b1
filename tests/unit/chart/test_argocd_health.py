"""The Argo CD health checks (charts/tidepool/argocd/resource_customizations), run by Lua 5.1.

The checks live in Argo CD's own layout, one folder per kind with health.lua, health_test.yaml
and testdata/. Every health_test.yaml entry runs here through harness.lua, which calls the
script the way Argo CD does (`obj` global, only the base/table/os libraries, return value
{status, message}), and must give exactly the recorded status and message.

The InferenceDeployment testdata for the states the operator reaches in its reconcile loop
(ready, scaled to zero, waiting, pool not found, each pod failure, deleting) is written by that
loop itself (argocd_scenarios.py), and a test fails when it goes stale; the rest is
hand-written and parsed with the API models, so no testdata can drift from what the operator
writes.
"""

import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import argocd_scenarios
import chartkit
import pytest
import yaml

from tidepool.api.conditions import Reason
from tidepool.api.v1alpha1 import GPUPool, InferenceDeployment, SharedEngine
from tidepool.policy import plan

HERE = Path(__file__).parent
ARGOCD = chartkit.CHART / "argocd"
CUSTOMIZATIONS = ARGOCD / "resource_customizations" / "tidepool.dev"
ARGOCD_CM = ARGOCD / "argocd-cm.yaml"
APPLICATION = ARGOCD / "application.yaml"
MODELS = {
    "InferenceDeployment": InferenceDeployment,
    "SharedEngine": SharedEngine,
    "GPUPool": GPUPool,
}

#: kind -> testdata -> the status a person expects (the messages are in health_test.yaml).
EXPECTED = {
    "InferenceDeployment": {
        "ready": "Healthy",
        "scaled-to-zero": "Healthy",
        "ready-metrics-unknown": "Healthy",
        "waiting-for-replicas": "Progressing",
        "no-status-yet": "Progressing",
        "new-generation-not-observed": "Progressing",
        "ready-condition-stale": "Progressing",
        "ready-unknown": "Progressing",
        "migrating": "Progressing",
        "deleting": "Progressing",
        "invalid-spec": "Degraded",
        "pool-not-found": "Degraded",
        "unschedulable": "Degraded",
        "crash-loop": "Degraded",
        "image-pull-back-off": "Degraded",
        "oom-killed": "Degraded",
        "create-container-config-error": "Degraded",
        "replica-failure": "Degraded",
    },
    "SharedEngine": {
        "ready": "Healthy",
        "scaled-to-zero": "Healthy",
        "waiting-for-replicas": "Progressing",
        "no-status-yet": "Progressing",
        "deleting": "Progressing",
        "pool-not-found": "Degraded",
    },
    "GPUPool": {
        "observed": "Healthy",
        "no-nodes-yet": "Healthy",
        "not-observed-yet": "Progressing",
        "generation-not-observed": "Progressing",
        "deleting": "Progressing",
        "no-device-plugin": "Degraded",
    },
}


def health_tests(kind: str) -> list[dict[str, Any]]:
    tests = yaml.safe_load((CUSTOMIZATIONS / kind / "health_test.yaml").read_text())["tests"]
    assert isinstance(tests, list)
    return tests


def load_testdata(kind: str, name: str) -> dict[str, Any]:
    obj = yaml.safe_load((CUSTOMIZATIONS / kind / "testdata" / f"{name}.yaml").read_text())
    assert isinstance(obj, dict)
    return obj


def find_lua() -> str | None:
    for candidate in (os.environ.get("LUA"), "/usr/bin/lua5.1", shutil.which("lua5.1")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def lua() -> str:
    path = find_lua()
    if path is None:
        pytest.fail("lua5.1 not installed: run `make deps` (apt-get install lua5.1)")
    return path


def to_lua(value: Any) -> str:
    """A Lua table literal for decoded JSON. JSON arrays become 1-based sequences (ipairs)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        # Lua 5.1 decimal escapes for anything outside printable ASCII; no \u in 5.1.
        return (
            '"'
            + "".join(
                c
                if 32 <= ord(c) < 127 and c not in '"\\'
                else "".join(f"\\{b}" for b in c.encode())
                for c in value
            )
            + '"'
        )
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def run_health(lua: str, obj: dict[str, Any], tmp_path: Path, script: Path) -> tuple[str, str]:
    literal = tmp_path / "object.lua"
    literal.write_text("return " + to_lua(obj) + "\n")
    proc = subprocess.run(
        [lua, str(HERE / "harness.lua"), str(script), str(literal)],
        capture_output=True,
        text=True,
        timeout=5,  # Argo CD allows the script 1 s; the interpreter start-up is the rest.
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    status, message = proc.stdout.split("\n", 1)
    return status, message.rstrip("\n")


ALL_TESTS = [
    pytest.param(kind, t, id=f"{kind}/{Path(t['inputPath']).stem}")
    for kind in EXPECTED
    for t in health_tests(kind)
]


def test_health_tests_cover_every_testdata_and_expected_state() -> None:
    for kind, expected in EXPECTED.items():
        files = {p.stem for p in (CUSTOMIZATIONS / kind / "testdata").glob("*.yaml")}
        recorded = {
            Path(t["inputPath"]).stem: t["healthStatus"]["status"] for t in health_tests(kind)
        }
        assert set(recorded) == files == set(expected), kind
        assert recorded == expected, kind


@pytest.mark.parametrize(("kind", "case"), ALL_TESTS)
def test_health(lua: str, tmp_path: Path, kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CUSTOMIZATIONS / kind / case["inputPath"]).read_text())
    got = run_health(lua, obj, tmp_path, CUSTOMIZATIONS / kind / "health.lua")
    assert got == (case["healthStatus"]["status"], case["healthStatus"]["message"])


@pytest.mark.parametrize(
    ("kind", "name"),
    [(kind, name) for kind, cases in EXPECTED.items() for name in cases],
)
def test_testdata_matches_the_api(kind: str, name: str) -> None:
    MODELS[kind].model_validate(load_testdata(kind, name))


@pytest.mark.parametrize("name", sorted(argocd_scenarios.SCENARIOS))
def test_testdata_is_what_the_reconcile_loop_writes(name: str) -> None:
    """Regenerate with `.venv/bin/python tests/unit/chart/argocd_scenarios.py`."""
    written = (argocd_scenarios.TESTDATA / f"{name}.yaml").read_text()
    assert written == argocd_scenarios.render(argocd_scenarios.SCENARIOS[name]()), name


def test_every_failure_reason_the_operator_writes_is_degraded(lua: str, tmp_path: Path) -> None:
    """Each reason the plan may put on Ready=False for a broken model maps to Degraded, and
    WaitingForReplicas (patience, not a person) does not."""
    base = load_testdata("InferenceDeployment", "waiting-for-replicas")
    script = CUSTOMIZATIONS / "InferenceDeployment" / "health.lua"
    broken = {*plan.POD_FAILURES, Reason.INVALID_SPEC, Reason.POOL_NOT_FOUND}
    for reason in [*broken, Reason.WAITING_FOR_REPLICAS]:
        ready = next(c for c in base["status"]["conditions"] if c["type"] == "Ready")
        ready["reason"] = str(reason)
        status, message = run_health(lua, base, tmp_path, script)
        assert status == ("Progressing" if reason == Reason.WAITING_FOR_REPLICAS else "Degraded")
        assert message.startswith(str(reason)) or reason == Reason.WAITING_FOR_REPLICAS


def test_shared_engine_runs_the_same_script() -> None:
    assert (CUSTOMIZATIONS / "SharedEngine" / "health.lua").read_text() == (
        CUSTOMIZATIONS / "InferenceDeployment" / "health.lua"
    ).read_text()


def test_harness_catches_libraries_argo_does_not_load(lua: str, tmp_path: Path) -> None:
    script = tmp_path / "bad.lua"
    script.write_text('return {status = string.upper("healthy")}\n')
    literal = tmp_path / "object.lua"
    literal.write_text("return {}\n")
    proc = subprocess.run(
        [lua, str(HERE / "harness.lua"), str(script), str(literal)],
        capture_output=True, text=True, timeout=5, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "string" in proc.stderr


def test_lua_literal_round_trips(lua: str) -> None:
    text = 'quote " backslash \\ newline \n price $2,880/mo é'
    proc = subprocess.run(
        [lua, "-e", f"io.write({to_lua(text)})"], capture_output=True, timeout=5, check=True
    )
    assert proc.stdout.decode() == text


def test_argocd_cm_carries_each_script_verbatim() -> None:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    for kind in EXPECTED:
        key = f"resource.customizations.health.tidepool.dev_{kind}"
        assert cm["data"][key] == (CUSTOMIZATIONS / kind / "health.lua").read_text(), kind
    ignore = yaml.safe_load(
        cm["data"]["resource.customizations.ignoreDifferences.tidepool.dev_InferenceDeployment"]
    )
    assert ignore == {"jsonPointers": ["/spec/replicas"]}


def test_application_ignores_replicas_and_respects_it_on_sync() -> None:
    apps = [d for d in yaml.safe_load_all(APPLICATION.read_text()) if d]
    assert all(a["kind"] == "Application" for a in apps)
    models = next(a for a in apps if a["metadata"]["name"] == "team-a-models")
    assert {
        "group": "tidepool.dev",
        "kind": "InferenceDeployment",
        "jsonPointers": ["/spec/replicas"],
    } in (models["spec"]["ignoreDifferences"])
    assert "RespectIgnoreDifferences=true" in models["spec"]["syncPolicy"]["syncOptions"]
    assert "Git must not carry spec.replicas" in APPLICATION.read_text().replace("\n# ", " ")
