"""Fixtures for the chart's fast tests (helpers live in :mod:`chartkit`)."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chartkit
import pytest
import yaml


@pytest.fixture(scope="session")
def helm() -> str:
    path = chartkit.find_helm()
    if path is None:
        pytest.fail(
            "helm not found (PATH, $HELM or the tidepool binary cache): run `make binaries`"
        )
    return path


@pytest.fixture
def render(helm: str, tmp_path: Path) -> chartkit.Render:
    """Render the chart; return the non-empty documents. Fails the test if helm fails."""

    def _render(
        values: dict[str, Any] | None = None, *, api_versions: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        proc = chartkit.run_helm(helm, *chartkit.template_args(values, tmp_path, api_versions))
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    return _render
