"""Kopf's health endpoint and probe handlers, as the operator wires them."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from tidepool.handlers import startup
from tidepool.handlers.deps import MEMO_KEY, Deps, Telemetry
from tidepool.handlers.main import liveness_endpoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("host", "port", "expect"),
    [
        pytest.param("0.0.0.0", 8080, "http://0.0.0.0:8080/healthz", id="chart-default"),
        pytest.param("127.0.0.1", 31234, "http://127.0.0.1:31234/healthz", id="local-stack"),
        pytest.param("::", 8080, "http://[::]:8080/healthz", id="ipv6-bracketed"),
        pytest.param("0.0.0.0", 0, None, id="port-0-disables"),
    ],
)
def test_liveness_endpoint(host: str, port: int, expect: str | None) -> None:
    assert liveness_endpoint(host, port) == expect


@pytest.mark.parametrize(
    ("then", "expect"),
    [
        pytest.param(None, None, id="never"),
        pytest.param(T0, 0, id="just-now"),
        pytest.param(T0 - timedelta(seconds=90.4), 90, id="rounded-seconds"),
    ],
)
def test_seconds_since(then: datetime | None, expect: float | None) -> None:
    assert startup.seconds_since(then, T0) == expect


def _memo(**state: Any) -> kopf.Memo:
    deps = Deps(
        kube=None,  # type: ignore[arg-type]  # the probes read state, never the cluster
        metrics=None,  # type: ignore[arg-type]
        started_at=T0,
        tick_seconds=1.0,
        max_concurrent_migrations=1,
        telemetry=Telemetry(),
    )
    for key, value in state.items():
        setattr(deps, key, value)
    return kopf.Memo(**{MEMO_KEY: deps})


@pytest.mark.parametrize(
    ("state", "expect"),
    [
        pytest.param({}, "ok", id="started-no-errors"),
        pytest.param(
            {"last_error": "API server answered 503"}, "API server answered 503", id="err"
        ),
    ],
)
def test_cluster_client_probe_reports_never_raises(state: dict[str, Any], expect: str) -> None:
    assert asyncio.run(startup.cluster_client(memo=_memo(**state))) == expect


def test_reconcile_age_probe() -> None:
    assert asyncio.run(startup.last_reconcile_age(memo=_memo())) is None
    recent = datetime.now(UTC) - timedelta(seconds=30)
    age = asyncio.run(startup.last_reconcile_age(memo=_memo(last_reconciled=recent)))
    assert age is not None
    assert 29 <= age <= 40
