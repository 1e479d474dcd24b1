"""policy.fair_share: the priority a SharedEngine's replicas serve tenants by, and when the
gateway may send it (every replica runs vLLM's priority scheduling)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidepool.policy import fair_share
from tidepool.policy.children import ObservedDeployment
from tidepool.policy.shared_engine import fleet_scheduling_policy


@pytest.mark.parametrize(
    ("seats", "tenants", "gateways", "expected"),
    [
        pytest.param(192, 4, 1, 48.0, id="3-replicas-of-64-4-tenants"),
        pytest.param(192, 4, 2, 24.0, id="each-of-2-gateways-counts-its-half"),
        pytest.param(64, 0, 1, 64.0, id="nobody-in-flight-yet"),
        pytest.param(0, 3, 1, 0.0, id="no-ready-replica"),
    ],
)
def test_fair_share(seats: int, tenants: int, gateways: int, expected: float) -> None:
    assert fair_share.fair_share(seats, tenants, gateways) == expected


@pytest.mark.parametrize(
    ("in_flight", "share", "expected"),
    [
        pytest.param(30.0, 48.0, 0, id="within-its-share"),
        pytest.param(48.0, 48.0, 0, id="at-its-share"),
        pytest.param(900.0, 48.0, 1, id="a-burst-goes-after-the-others"),
        pytest.param(1.0, 0.0, 1, id="no-seats-anyone-in-flight-is-beyond"),
    ],
)
def test_priority(in_flight: float, share: float, expected: int) -> None:
    assert fair_share.priority(in_flight, share) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param([], "fcfs", id="vllms-default"),
        pytest.param(["m", "--scheduling-policy", "priority"], "priority", id="rendered"),
        pytest.param(
            ["m", "--scheduling-policy", "priority", "--scheduling-policy=fcfs"],
            "fcfs",
            id="a-users-extra-args-come-last",
        ),
        pytest.param(["m", "--scheduling-policy"], "fcfs", id="flag-without-a-value"),
    ],
)
def test_scheduling_policy_of_a_command_line(args: list[str], expected: str) -> None:
    assert fair_share.scheduling_policy(args) == expected


def _dep(**kw: object) -> ObservedDeployment:
    fields: dict[str, object] = {
        "name": "sheng-llama",
        "pool": "shared",
        "replicas": 2,
        "ready_replicas": 2,
        "updated_replicas": 2,
        "generation_observed": True,
        "scheduling_policy": "priority",
    }
    fields.update(kw)
    return ObservedDeployment(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dep", "rendered", "expected"),
    [
        pytest.param(_dep(), "priority", "priority", id="rolled-out"),
        pytest.param(None, "priority", "fcfs", id="no-fleet-yet"),
        pytest.param(_dep(generation_observed=False), "priority", "fcfs", id="template-not-seen"),
        pytest.param(_dep(outdated_replicas=1), "priority", "fcfs", id="an-old-replica-serves"),
        pytest.param(_dep(scheduling_policy="fcfs"), "fcfs", "fcfs", id="a-user-turned-it-off"),
        pytest.param(_dep(), "fcfs", "fcfs", id="turned-off-in-the-spec-before-the-rollout"),
        pytest.param(
            _dep(scheduling_policy="fcfs"), "priority", "fcfs", id="turned-on-before-the-rollout"
        ),
    ],
)
def test_the_fleet_schedules_by_priority_only_once_every_replica_does(
    dep: ObservedDeployment | None, rendered: str, expected: str
) -> None:
    assert fleet_scheduling_policy(dep, rendered) == expected


@pytest.mark.parametrize(
    ("extra_args", "expected"),
    [
        pytest.param([], "priority", id="rendered"),
        pytest.param(["--scheduling-policy", "fcfs"], "fcfs", id="a-user-override"),
        pytest.param(["--max-loras", "8"], "priority", id="other-flags"),
    ],
)
def test_rendered_policy(extra_args: list[str], expected: str) -> None:
    assert fair_share.rendered_policy(extra_args) == expected


# ----------------------------------------------------------------------------- properties

_COUNTS = st.lists(st.floats(min_value=0.0, max_value=5_000.0), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    in_flight=_COUNTS,
    replicas=st.integers(min_value=0, max_value=200),
    gateways=st.integers(min_value=1, max_value=4),
)
def test_the_tenants_within_their_share_never_ask_for_more_than_the_seats(
    in_flight: list[float], replicas: int, gateways: int
) -> None:
    """Whatever the mix, the requests of the tenants within their share fit the seats one
    gateway counts: so a tenant within its share waits behind nobody beyond theirs, and priority
    0 can never be a queue of its own."""
    seats = replicas * 64
    sending = sum(1 for x in in_flight if x > 0)
    share = fair_share.fair_share(seats, sending, gateways)
    within = [x for x in in_flight if x > 0 and fair_share.priority(x, share) == 0]
    assert sum(within) <= seats / gateways + 1e-6


@settings(max_examples=300, deadline=None)
@given(
    mine=st.floats(min_value=0.0, max_value=5_000.0),
    more=st.floats(min_value=0.0, max_value=5_000.0),
    seats=st.integers(min_value=0, max_value=12_800),
    tenants=st.integers(min_value=1, max_value=400),
)
def test_more_in_flight_or_more_tenants_never_raise_a_tenants_priority(
    mine: float, more: float, seats: int, tenants: int
) -> None:
    """Priority is monotone: sending more, or another tenant starting to send, can move a tenant
    from within its share to beyond it, never back."""
    share = fair_share.fair_share(seats, tenants)
    now = fair_share.priority(mine, share)
    assert fair_share.priority(mine + more, share) >= now
    assert fair_share.priority(mine, fair_share.fair_share(seats, tenants + 1)) >= now
