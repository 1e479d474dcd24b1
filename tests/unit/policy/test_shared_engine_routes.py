"""Which tenants a SharedEngine holds adapters for (``serves``), which it routes (``routes``),
and which wake it (``joining``), through a promotion and a demotion of an ``auto`` tenant."""

from datetime import UTC, datetime
from typing import Any

import pytest

from tidepool.api.v1alpha1 import DeploymentMode, InferenceDeployment, MigrationPhase, SharedEngine
from tidepool.policy import shared_engine

NOW = datetime(2025, 1, 1, tzinfo=UTC)
BASE = "org/base-8b"
ENGINE = SharedEngine.model_validate(
    {"metadata": {"name": "base"}, "spec": {"model": {"name": BASE}, "pool": "shared"}}
)
S, D, H = DeploymentMode.SERVERLESS, DeploymentMode.DEDICATED, DeploymentMode.HYBRID
START, SHIFT, DRAIN = (
    MigrationPhase.STARTING_TARGET,
    MigrationPhase.SHIFTING_TRAFFIC,
    MigrationPhase.DRAINING,
)


def tenant(
    mode: str = "auto",
    effective: DeploymentMode | None = None,
    move: tuple[DeploymentMode, MigrationPhase] | None = None,
    base: str = BASE,
) -> InferenceDeployment:
    status: dict[str, Any] = {}
    if effective is not None:
        status["effectiveMode"] = effective
    if move is not None:
        to_mode, phase = move
        status["migration"] = {
            "phase": phase,
            "fromPool": "x",
            "toPool": "y",
            "toMode": to_mode,
            "startedAt": NOW.isoformat(),
            "phaseSince": NOW.isoformat(),
        }
    return InferenceDeployment.model_validate(
        {
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {
                "mode": mode,
                "scaling": {"minReplicas": 1 if mode in ("dedicated", "hybrid") else 0},
                "model": {"name": base, "adapter": {"name": "t", "source": "/a/t"}},
            },
            "status": status,
        }
    )


@pytest.mark.parametrize(
    ("infd", "serves", "routes", "joining"),
    [
        pytest.param(tenant("serverless"), True, True, False, id="serverless-member"),
        pytest.param(tenant("dedicated", D), False, False, False, id="fixed-dedicated"),
        pytest.param(tenant(base="other/model"), False, False, False, id="other-base-model"),
        pytest.param(tenant(), True, True, False, id="auto-new"),
        pytest.param(tenant(effective=S), True, True, False, id="auto-on-the-fleet"),
        pytest.param(tenant(effective=S, move=(D, START)), True, True, False, id="promoting"),
        pytest.param(tenant(effective=S, move=(D, SHIFT)), True, False, False, id="promo-shifted"),
        pytest.param(tenant(effective=S, move=(H, DRAIN)), True, False, False, id="promo-drains"),
        pytest.param(tenant(effective=D), False, False, False, id="promoted"),
        pytest.param(tenant(effective=D, move=(S, START)), True, False, True, id="demoting"),
        pytest.param(tenant(effective=D, move=(S, SHIFT)), True, True, False, id="demo-shifted"),
        pytest.param(tenant(effective=D, move=(H, START)), False, False, False, id="ded-to-hybrid"),
    ],
)
def test_membership_routing_and_wake_through_a_move(
    infd: InferenceDeployment, serves: bool, routes: bool, joining: bool
) -> None:
    assert shared_engine.serves(ENGINE, infd) is serves
    assert shared_engine.routes(ENGINE, infd) is routes
    assert shared_engine.joining(infd) is joining
