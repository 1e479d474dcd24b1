"""Go-style durations and ``set_condition``'s apimachinery rules."""

import argparse
import re
from datetime import UTC, datetime, timedelta

import pytest

from tidepool.api import conditions, durations
from tidepool.api.conditions import ConditionType, Reason
from tidepool.api.v1alpha1 import Condition

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("5m", timedelta(minutes=5), id="minutes"),
        pytest.param("1h30m", timedelta(minutes=90), id="hours-and-minutes"),
        pytest.param("1.5h", timedelta(minutes=90), id="fractional-hours"),
        pytest.param("250ms", timedelta(milliseconds=250), id="milliseconds"),
        pytest.param("0s", timedelta(0), id="zero"),
        pytest.param("2h0m5s", timedelta(hours=2, seconds=5), id="three-parts"),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert durations.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("5 minutes", id="words"),
        pytest.param("30", id="no-unit"),
        pytest.param("", id="empty"),
        pytest.param("-5m", id="negative"),
        pytest.param("5d", id="days-unit"),
        pytest.param("m5", id="unit-first"),
    ],
)
def test_parse_refuses_with_the_value_in_the_message(text: str) -> None:
    with pytest.raises(durations.InvalidDurationError) as caught:
        durations.parse(text)

    assert repr(text) in str(caught.value)
    assert "90s" in str(caught.value)


def test_seconds_flag_gives_seconds_or_an_argparse_error_naming_the_value() -> None:
    assert durations.seconds_flag("2m") == 120.0
    with pytest.raises(argparse.ArgumentTypeError, match="'2 minutes' is not a duration"):
        durations.seconds_flag("2 minutes")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(45, "45s", id="under-a-minute"),
        pytest.param(60, "1m", id="one-minute"),
        pytest.param(90, "90s", id="ninety-seconds-stays-seconds"),
        pytest.param(600, "10m", id="ten-minutes"),
        pytest.param(3600, "1h", id="one-hour"),
        pytest.param(5400, "1h30m", id="hour-and-a-half"),
        pytest.param(3725, "1h2m5s", id="all-units"),
        pytest.param(59.6, "1m", id="rounds-to-nearest-second"),
    ],
)
def test_format_seconds(seconds: float, expected: str) -> None:
    assert durations.format_seconds(seconds) == expected


@pytest.mark.parametrize(
    "seconds", [pytest.param(s, id=f"{s}s") for s in (0, 1, 59, 60, 61, 119, 120, 3599, 5400)]
)
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert durations.parse(durations.format_seconds(seconds)) == timedelta(seconds=seconds)


def _ready(status: str, reason: str = "ReplicasReady", when: datetime = T0) -> Condition:
    return Condition(
        type="Ready",
        status=status,
        reason=reason,
        message="before",
        last_transition_time=when,
        observed_generation=1,
    )


def _set(
    conds: list[Condition],
    status: bool | None,
    reason: Reason,
    message: str = "before",
    gen: int = 1,
) -> tuple[list[Condition], bool]:
    return conditions.set_condition(
        conds,
        type_=ConditionType.READY,
        status=status,
        reason=reason,
        message=message,
        generation=gen,
        now=T1,
    )


@pytest.mark.parametrize(
    ("before", "status", "reason", "message", "gen", "expect_time", "expect_changed"),
    [
        pytest.param(
            [_ready("True")],
            True,
            Reason.REPLICAS_READY,
            "before",
            1,
            T0,
            False,
            id="identical-keeps-time-and-reports-unchanged",
        ),
        pytest.param(
            [_ready("True")],
            True,
            Reason.SCALED_TO_ZERO,
            "after",
            1,
            T0,
            True,
            id="reason-and-message-change-keep-time",
        ),
        pytest.param(
            [_ready("True")],
            True,
            Reason.REPLICAS_READY,
            "before",
            2,
            T0,
            True,
            id="generation-change-keeps-time",
        ),
        pytest.param(
            [_ready("True")],
            False,
            Reason.WAITING_FOR_REPLICAS,
            "after",
            1,
            T1,
            True,
            id="status-change-moves-time",
        ),
        pytest.param(
            [_ready("False")],
            None,
            Reason.WAITING_FOR_REPLICAS,
            "after",
            1,
            T1,
            True,
            id="to-unknown-moves-time",
        ),
        pytest.param(
            [],
            True,
            Reason.REPLICAS_READY,
            "before",
            1,
            T1,
            True,
            id="new-condition-gets-now",
        ),
    ],
)
def test_set_condition(
    *,
    before: list[Condition],
    status: bool | None,
    reason: Reason,
    message: str,
    gen: int,
    expect_time: datetime,
    expect_changed: bool,
) -> None:
    after, changed = _set(before, status, reason, message, gen)

    (ready,) = after
    assert ready.last_transition_time == expect_time
    assert changed is expect_changed
    assert ready.reason == reason
    assert ready.message == message
    assert ready.observed_generation == gen
    assert ready.status == {True: "True", False: "False", None: "Unknown"}[status]


def test_set_condition_keeps_order_and_other_types_untouched() -> None:
    other = Condition(
        type="Scheduled", status="True", reason="AllPodsScheduled", last_transition_time=T0
    )
    before = [other, _ready("True")]

    after, _ = _set(before, False, Reason.WAITING_FOR_REPLICAS)
    appended, _ = conditions.set_condition(
        [other],
        type_=ConditionType.MIGRATING,
        status=False,
        reason=Reason.NOT_MIGRATING,
        message="",
        generation=None,
        now=T1,
    )

    assert [c.type for c in after] == ["Scheduled", "Ready"]
    assert after[0] is other
    assert [c.type for c in appended] == ["Scheduled", "Migrating"]
    assert before[1].status == "True", "the input list must not be mutated"


def test_find() -> None:
    conds = [_ready("True")]

    assert conditions.find(conds, ConditionType.READY) == conds[0]
    assert conditions.find(conds, ConditionType.SCHEDULED) is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("999999999999h", id="overflowed-timedelta"),
        pytest.param("1000000h", id="seven-digits"),
        pytest.param("8761h", id="just-over-a-year"),
        pytest.param("8760h1ms", id="a-year-and-a-millisecond"),
        pytest.param("999999h999999h", id="parts-that-add-up"),
    ],
)
def test_parse_refuses_durations_over_the_maximum(text: str) -> None:
    """``999999999999h`` matched the pattern, then overflowed ``timedelta`` on every reconcile."""
    with pytest.raises(durations.InvalidDurationError) as caught:
        durations.parse(text)

    assert repr(text) in str(caught.value)
    assert durations.MAX_TEXT in str(caught.value)


def test_the_maximum_itself_parses() -> None:
    assert durations.parse(durations.MAX_TEXT) == durations.MAX


def test_the_pattern_bounds_the_digits_so_the_api_server_refuses_an_overflow() -> None:
    assert re.fullmatch(durations.PATTERN, "999999h")
    assert not re.fullmatch(durations.PATTERN, "9999999h")
    assert not re.fullmatch(durations.PATTERN, "1.0000001s")
