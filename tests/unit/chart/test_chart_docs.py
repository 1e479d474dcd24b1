"""The chart README's values table is helm-docs' rendering of values.yaml, kept current.

helm-docs (a Go tool `make deps` builds) reads the `# --` comments of values.yaml and fills
README.md.gotmpl; `make chart-docs` writes README.md. This test renders it again (dry run) and
fails on any difference, so a new or changed value cannot go undocumented.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from chartkit import CHART


def find_helm_docs() -> str | None:
    on_path = shutil.which("helm-docs")
    if on_path:
        return on_path
    cache = Path(
        os.environ.get("TIDEPOOL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidepool"
    )
    found = sorted(cache.glob("tools/helm-docs-*/helm-docs"), reverse=True)
    return str(found[0]) if found else None


def test_readme_values_table_is_current() -> None:
    helm_docs = find_helm_docs()
    if helm_docs is None:
        pytest.fail("helm-docs not found: run `make deps` (builds it from its Go module)")
    proc = subprocess.run(
        [
            helm_docs,
            "--chart-search-root",
            ".",
            "--template-files",
            "README.md.gotmpl",
            "--dry-run",
        ],
        cwd=CHART,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (CHART / "README.md").read_text(), "README is stale: `make chart-docs`"


def test_every_value_is_documented() -> None:
    readme = (CHART / "README.md").read_text()
    for key in ("global", "extraObjects", "operator.podSecurityContext", "gateway.envFrom",
                "rbac.aggregateToDefaultRoles", "monitoring.prometheusRule.enabled",
                "operator.replicas", "operator.peering.name",
                "operator.podDisruptionBudget.maxUnavailable"):  # fmt: skip
        assert f"\n| {key} |" in readme, key
