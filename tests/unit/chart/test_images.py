"""Static checks of the image recipe and its contract with the chart, the CLI and the locks.

tests/integration/test_container_images.py builds the images with podman and runs them; these checks
catch, in milliseconds, what would only fail there or in a cluster: an unpinned or
registry-qualified base, a root user, a wrong entrypoint, an unlocked or unhashed dependency,
and chart arguments the programs do not accept.
"""

import argparse
import importlib
import re
import tomllib

import pytest
import yaml
from chartkit import REPO, Render, one
from packaging.requirements import Requirement

from tidepool import cli

IMAGES = REPO / "images"
DOCKERFILE = IMAGES / "Dockerfile"
#: build target -> (ENTRYPOINT, first CMD word or None)
ENTRYPOINTS = {
    "operator": (["tidepool"], "run"),
    "gateway": (["tidepool"], "gateway"),
    "engine-sim": (["tidepool", "engine-sim"], None),
}
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (FROM line excluded)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[1].strip()
            out[current] = [("FROM", rest.split(" AS ")[0].strip())]
        elif current is not None:
            out[current].append((word, rest))
    return out


def locked(name: str) -> dict[str, str]:
    """Package -> pinned version of a lock file; every pin carries at least one hash."""
    text = (IMAGES / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", re.sub(r"(?m)^\s*#.*\n", "", text)):
        head = block.split()[0] if block.strip() else ""
        if "==" in head:
            pkg, version = head.split("==")
            assert "--hash=sha256:" in block, f"{name}: {pkg} has no hash"
            pins[pkg.lower().replace("_", "-")] = version
    return pins


def test_base_is_pinned_python_without_registry_host() -> None:
    steps = instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert PINNED_BASE.match(args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    bases = {name: s[0][1] for name, s in stages().items()}
    assert bases["build"] == bases["runtime"] == "${PYTHON_IMAGE}"
    assert {bases[t] for t in ENTRYPOINTS} == {"runtime"}
    for word, rest in steps:
        if word == "COPY" and "--from=" in rest:
            assert rest.split("--from=")[1].split()[0] == "build"
    text = DOCKERFILE.read_text() + (IMAGES / "build.sh").read_text()
    for host in ("docker.io", "ghcr.io", "quay.io", "gcr.io", "registry.example"):
        assert host not in text, host


@pytest.mark.parametrize("target", sorted(ENTRYPOINTS))
def test_target_is_non_root_and_runs_the_wheel(target: str) -> None:
    all_stages = stages()
    runtime = all_stages["runtime"]
    assert [rest for word, rest in runtime if word == "USER"] == ["65532:65532"]
    build = " ".join(rest for word, rest in all_stages["build"] if word == "RUN")
    assert "--require-hashes" in build
    assert "--no-build-isolation" in build
    assert re.search(r"install --no-deps /wheels/tidepool-\*\.whl", build)
    final = all_stages[target]
    entry, cmd = ENTRYPOINTS[target]
    assert [yaml.safe_load(rest) for word, rest in final if word == "ENTRYPOINT"] == [entry]
    cmds = [yaml.safe_load(rest) for word, rest in final if word == "CMD"]
    assert (cmds[0][0] if cmds else None) == cmd
    labels = " ".join(rest for word, rest in runtime + final if word == "LABEL")
    for key in ("source", "revision", "version", "title", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_entrypoint_sub_commands_exist() -> None:
    for entry, cmd in ENTRYPOINTS.values():
        sub = cmd if cmd is not None else entry[1]
        assert sub in cli.PROGRAMS


def test_lock_pins_every_runtime_dependency_and_no_plotting() -> None:
    """images/requirements.lock satisfies pyproject's dependencies (re-lock with `make lock`),
    and the simulator-only extra (numpy, matplotlib) stays out of the images."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked("requirements.lock")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in images/requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}: `make lock`"
    assert not {"numpy", "matplotlib", "pillow"} & set(pins)
    sim = {Requirement(r).name for r in project["optional-dependencies"]["sim"]}
    assert sim == {"numpy", "matplotlib"}
    assert "tidepool[sim]" in project["optional-dependencies"]["dev"]
    build_pins = locked("build-requirements.lock")
    assert set(build_pins) == {"setuptools"}
    build_req = Requirement(tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
                            ["requires"][0])  # fmt: skip
    assert build_req.specifier.contains(build_pins["setuptools"])


def test_dockerignore_allow_lists_the_wheel_sources_and_locks() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    copied = {
        part
        for word, rest in instructions()
        if word == "COPY" and "--from=" not in rest
        for part in rest.split()[:-1]
        if not part.startswith("--")
    }
    for source in copied:
        assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in lines}, source
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")


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
                "operator": {"watchNamespaces": ["team-a"]},
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
    expected_namespaces = ["team-a"] if "operator" in values else []
    assert parsed.namespace == expected_namespaces
    assert parsed.all_namespaces is not bool(expected_namespaces)
    gw_args = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    gw = _parse(cli.PROGRAMS["gateway"][0], gw_args["args"])
    assert gw.port == 8080
    custom = bool(values)
    assert gw.metrics_port == (9100 if custom else 9090)
    assert gw.max_body_size == (512 * 1024 if custom else 8 * 1024 * 1024)
    assert gw.all_namespaces is not custom
    assert gw.namespace == ("team-a" if custom else None)
    assert gw.drain_timeout == 110.0
    assert (gw.replicas, gw.replica_service) == (2, "tp-tidepool-gateway")
