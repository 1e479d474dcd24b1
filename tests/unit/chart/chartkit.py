"""Helpers for the chart's fast tests: locate ``helm``, render the chart, pick objects.

``helm`` comes from PATH or from the control-plane cache that ``e2e/cluster/build-binaries.sh``
fills; tests that need it are skipped when neither has one. Rendering is client-side only
(``helm template``): no cluster, no network.
"""

import copy
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "tidepool"
#: `go install`ed helm reports Kubernetes v1.20 by default; the chart needs >= 1.30.
KUBE_VERSION = "1.36.3"

#: The `render` fixture: values (and --api-versions) in, rendered documents out.
Render = Callable[..., list[dict[str, Any]]]

#: Renders start from the chart as it is installed for real, with a key Secret: without
#: `gateway.apiKeys.existingSecret` (or `allowNoKeys`) the chart refuses to render. A test's
#: values override it (`{"gateway": {"apiKeys": {"existingSecret": ""}}}` takes it away).
KEY_SECRET = "tenant-keys"
WITH_KEYS: dict[str, Any] = {"gateway": {"apiKeys": {"existingSecret": KEY_SECRET}}}
#: The same for `helm lint`, which renders the chart's own defaults.
WITH_KEYS_FLAGS = ("--set", f"gateway.apiKeys.existingSecret={KEY_SECRET}")


def coalesce(base: Any, top: Any) -> Any:
    """Helm's coalescing of values: maps merge key by key, anything else (lists too) replaces."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            out[key] = coalesce(base.get(key), value)
        return out
    return copy.deepcopy(top)


def find_helm() -> str | None:
    explicit = os.environ.get("HELM")
    if explicit:
        return explicit
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    cache = Path(
        os.environ.get("TIDEPOOL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidepool"
    )
    found = sorted(cache.glob("*/bin/helm"), reverse=True)
    return str(found[0]) if found else None


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=60, check=False, cwd=REPO
    )


def template_args(
    values: dict[str, Any] | None,
    tmp_path: Path,
    api_versions: Sequence[str] = (),
    release: str = "tp",
    namespace: str = "tidepool-system",
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", KUBE_VERSION]
    for api in api_versions:
        args += ["--api-versions", api]
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(coalesce(WITH_KEYS, values or {})))
    return [*args, "--values", str(values_file)]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]
