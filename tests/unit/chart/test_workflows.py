"""The GitHub workflows: actionlint-clean, and the kind workflow consistent with the chart.

The workflows cannot run here (no Docker, no GitHub). What can be checked without them is
checked: actionlint's own analysis (syntax, expressions, shell), and every name the kind
workflow takes from the chart, the images or the test tree.
"""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import REPO, one, run_helm, template_args

WORKFLOWS = REPO / ".github" / "workflows"
TARGETS = {"operator", "gateway", "engine-sim"}


def find_actionlint() -> str | None:
    on_path = shutil.which("actionlint")
    if on_path:
        return on_path
    cache = Path(
        os.environ.get("TIDEPOOL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidepool"
    )
    found = sorted(cache.glob("tools/actionlint-*/actionlint"), reverse=True)
    return str(found[0]) if found else None


def workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def steps(name: str, job: str) -> list[dict[str, Any]]:
    out = workflow(name)["jobs"][job]["steps"]
    assert isinstance(out, list)
    return out


def test_actionlint_passes() -> None:
    actionlint = find_actionlint()
    if actionlint is None:
        pytest.fail("actionlint not found: run `make deps` (builds it from its Go module)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yaml"))
    assert {Path(f).name for f in files} == {"ci.yaml", "e2e-kind.yaml", "release.yaml"}
    proc = subprocess.run(
        [actionlint, *files], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kind_workflow_builds_every_target_of_the_one_dockerfile() -> None:
    builds = [s for s in steps("e2e-kind.yaml", "e2e-kind") if "build-push" in s.get("uses", "")]
    assert {s["with"]["file"] for s in builds} == {"images/Dockerfile"}
    assert {s["with"]["target"] for s in builds} == TARGETS


def test_kind_cluster_has_an_untainted_worker_for_the_operator_and_gateway() -> None:
    text = (WORKFLOWS / "e2e-kind.yaml").read_text()
    config_step = next(
        s
        for s in steps("e2e-kind.yaml", "e2e-kind")
        if s.get("name") == "Write the kind cluster config"
    )
    body = config_step["run"].split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    cluster = yaml.safe_load(body.replace("\n          ", "\n").strip())
    system = [
        n for n in cluster["nodes"] if n.get("labels", {}).get("tidepool.dev/role") == "system"
    ]
    assert len(system) == 1
    assert "nvidia.com/gpu.present" not in system[0]["labels"]  # so the GPU taint skips it
    assert "operator.nodeSelector.tidepool\\\\.dev/role=system" in text
    assert "gateway.nodeSelector.tidepool\\\\.dev/role=system" in text
    assert "--set gateway.apiKeys.allowNoKeys=true" in text  # its suite sends no key


def test_kind_workflow_names_what_the_chart_creates(helm: str, tmp_path: Path) -> None:
    wf = workflow("e2e-kind.yaml")
    release = wf["env"]["RELEASE"]
    run = next(
        s for s in steps("e2e-kind.yaml", "e2e-kind") if s.get("name") == "Run the e2e suite"
    )
    service = run["env"]["TIDEPOOL_E2E_GATEWAY_SERVICE"].replace("${{ env.RELEASE }}", release)
    proc = run_helm(helm, *template_args({}, tmp_path, release=release))
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert service in {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert one(docs, "Deployment", "-operator")["metadata"]["name"] == f"{release}-operator"
    assert "deploy/$RELEASE-$c" in (WORKFLOWS / "e2e-kind.yaml").read_text()


def test_kind_workflow_runs_a_suite_that_exists() -> None:
    args = workflow("e2e-kind.yaml")["env"]["E2E_PYTEST_ARGS"]
    target = args.split("'")[1].split()[0]
    tests = list((REPO / target).glob("test_*.py"))
    assert tests, f"{target} has no tests: pytest would exit 4"
    assert "def test_a_cold_request_wakes" in "".join(t.read_text() for t in tests)


def test_release_pushes_every_image_and_the_chart_without_naming_a_registry() -> None:
    text = (WORKFLOWS / "release.yaml").read_text()
    assert workflow("release.yaml")[True]["push"]["tags"] == ["v*.*.*"]  # YAML 1.1: on -> True
    assert "for target in operator gateway engine-sim" in text
    assert "helm push" in text
    assert "${{ vars.IMAGE_REGISTRY }}" in text
    assert "${{ vars.CHART_REGISTRY }}" in text
