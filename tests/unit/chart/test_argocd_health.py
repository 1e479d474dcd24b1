"""The Argo CD health check (charts/tidepool/argocd/health.lua), run by a real Lua 5.1.

Each fixture is a recorded InferenceDeployment (it must still parse with the API models, so the
fixtures cannot drift from the status the operator writes). The test turns it into a Lua table
literal and runs harness.lua, which calls the health script the way Argo CD does: `obj` global,
only the base/table/os libraries, return value {status, message}.
"""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import chartkit
import pytest
import yaml

from tidepool.api.v1alpha1 import InferenceDeployment

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
HEALTH_LUA = chartkit.CHART / "argocd" / "health.lua"
ARGOCD_CM = chartkit.CHART / "argocd" / "argocd-cm.yaml"
APPLICATION = chartkit.CHART / "argocd" / "application.yaml"
CM_KEY = "resource.customizations.health.tidepool.dev_InferenceDeployment"

CASES = [
    pytest.param("ready", "Healthy", "2/2 replicas ready", id="ready"),
    pytest.param("scaled-to-zero", "Healthy", "scaled to zero", id="scaled-to-zero-on-purpose"),
    pytest.param("ready-metrics-unknown", "Healthy", "2/2 replicas ready", id="metrics-unknown"),
    pytest.param("no-status-yet", "Progressing", "Waiting for the operator", id="no-status"),
    pytest.param(
        "new-generation-not-observed", "Progressing", "generation 4", id="generation-not-observed"
    ),
    pytest.param("ready-condition-stale", "Progressing", "generation 4", id="ready-stale"),
    pytest.param("waiting-for-replicas", "Progressing", "0/1 replicas ready", id="waiting"),
    pytest.param("ready-unknown", "Progressing", "WaitingForReplicas", id="ready-unknown"),
    pytest.param("migrating", "Progressing", "Migrating: promoted to dedicated", id="migrating"),
    pytest.param("invalid-spec", "Degraded", "InvalidSpec: engine.extraArgs", id="invalid-spec"),
    pytest.param(
        "pool-not-found", "Degraded", 'PoolNotFound: GPUPool "does-not-exist"', id="no-pool"
    ),
    pytest.param("unschedulable", "Degraded", "Unschedulable: 0/1 replicas", id="unschedulable"),
]


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


def run_health(
    lua: str, obj: dict[str, Any], tmp_path: Path, script: Path = HEALTH_LUA
) -> tuple[str, str]:
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


def load(name: str) -> dict[str, Any]:
    obj = json.loads((FIXTURES / f"{name}.json").read_text())
    assert isinstance(obj, dict)
    return obj


def test_every_fixture_has_a_case() -> None:
    names = {p.values[0] for p in CASES}
    assert names == {p.stem for p in FIXTURES.glob("*.json")}


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_fixture_matches_the_api(name: str) -> None:
    InferenceDeployment.model_validate(load(name))


@pytest.mark.parametrize(("name", "status", "message"), CASES)
def test_health(lua: str, tmp_path: Path, name: str, status: str, message: str) -> None:
    got_status, got_message = run_health(lua, load(name), tmp_path)
    assert got_status == status
    assert message in got_message


def test_scaled_to_zero_fixture_really_has_zero_replicas() -> None:
    status = load("scaled-to-zero")["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], status["replicas"]) == ("True", "ScaledToZero", 0)


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


def test_argocd_cm_carries_the_script_verbatim() -> None:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert cm["data"][CM_KEY] == HEALTH_LUA.read_text()
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
