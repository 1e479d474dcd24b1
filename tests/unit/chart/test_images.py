"""Static checks of the image recipes and their contract with the chart and the CLI.

No Docker here (the development machines have none); .github/workflows/e2e-kind.yaml builds and
smoke-tests the images where Docker exists. These checks catch what would only fail there, or
only in a cluster: an unpinned or registry-qualified base, a root user, a wrong entrypoint, and
chart arguments the programs do not accept.
"""

import argparse
import importlib
import re

import pytest
import yaml
from chartkit import REPO, Render, one

from tidepool import cli

IMAGES = REPO / "images"
#: image -> (ENTRYPOINT, first CMD word or None)
ENTRYPOINTS = {
    "operator": (["tidepool"], "run"),
    "gateway": (["tidepool"], "gateway"),
    "engine-sim": (["tidepool", "engine-sim"], None),
}
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")


def instructions(image: str) -> list[tuple[str, str]]:
    text = (IMAGES / image / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def has_registry_host(ref: str) -> bool:
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


@pytest.mark.parametrize("image", sorted(ENTRYPOINTS))
def test_base_is_pinned_python_without_registry_host(image: str) -> None:
    steps = instructions(image)
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    assert PINNED_BASE.match(base), base
    froms = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a small final stage"
    assert all(f == "${PYTHON_IMAGE}" for f in froms), froms
    for word, rest in steps:
        if word == "COPY" and "--from=" in rest:
            assert rest.split("--from=")[1].split()[0] == "build"
    text = (IMAGES / image / "Dockerfile").read_text()
    for host in ("docker.io", "ghcr.io", "quay.io", "gcr.io", "registry."):
        assert host not in text


@pytest.mark.parametrize("image", sorted(ENTRYPOINTS))
def test_final_stage_is_non_root_and_runs_the_wheel(image: str) -> None:
    steps = instructions(image)
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users == ["65532:65532"]
    build = " ".join(rest for word, rest in steps if word == "RUN")
    assert "build --wheel" in build
    assert re.search(r"pip install --no-deps /wheels/tidepool-\*\.whl", build)
    entry, cmd = ENTRYPOINTS[image]
    entrypoints = [yaml.safe_load(rest) for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoints == [entry]
    cmds = [yaml.safe_load(rest) for word, rest in final if word == "CMD"]
    if cmd is None:
        assert cmds == []
    else:
        assert cmds[0][0] == cmd


def test_entrypoint_sub_commands_exist() -> None:
    for entry, cmd in ENTRYPOINTS.values():
        sub = cmd if cmd is not None else entry[1]
        assert sub in cli.PROGRAMS


def test_dockerignore_allow_lists_the_wheel_sources() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!operator/"} <= set(lines)


def test_workflow_builds_all_images_and_uses_kubeconfig() -> None:
    text = (REPO / ".github" / "workflows" / "e2e-kind.yaml").read_text()
    workflow = yaml.safe_load(text)
    steps = workflow["jobs"]["e2e-kind"]["steps"]
    built = {s["with"]["file"] for s in steps if s.get("uses", "").startswith("docker/build-push")}
    assert built == {f"images/{i}/Dockerfile" for i in ENTRYPOINTS}
    assert "KUBECONFIG" in text
    assert "helm install" in text


def _parse(module: str, args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"tidepool {args[0]}", exit_on_error=False)
    program = importlib.import_module(module)
    program.configure(parser)
    return parser.parse_args(args[1:])


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {
                "operator": {"watchNamespaces": ["team-a", "team-b"]},
                "gateway": {
                    "apiKeys": {"existingSecret": "keys"},
                    "metricsPort": 9100,
                    "maxBodySize": "512Ki",
                },
            },
            id="namespaced-with-keys-and-gateway-limits",
        ),
    ],
)
def test_chart_arguments_parse_with_the_programs(render: Render, values: dict[str, object]) -> None:
    """The chart passes only flags that `tidepool run` and `tidepool gateway` accept."""
    docs = render(values)
    op_args = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    parsed = _parse(cli.PROGRAMS["run"][0], op_args["args"])
    assert parsed.metrics_port == 9090
    assert parsed.health_port == 8080
    expected_namespaces = ["team-a", "team-b"] if "operator" in values else []
    assert parsed.namespace == expected_namespaces
    assert parsed.all_namespaces is not bool(expected_namespaces)
    gw_args = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    gw = _parse(cli.PROGRAMS["gateway"][0], gw_args["args"])
    assert gw.port == 8080
    custom = bool(values)
    assert gw.metrics_port == (9100 if custom else 9090)
    assert gw.max_body_size == (512 * 1024 if custom else 8 * 1024 * 1024)
    assert gw.all_namespaces is True
    assert gw.drain_timeout == 110.0
