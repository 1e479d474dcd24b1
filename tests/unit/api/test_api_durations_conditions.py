"""Go-style durations, the spec's ``Duration`` field type, and ``set_condition``'s apimachinery
rules."""

import argparse
import copy
import pickle
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tidepool.api import conditions, durations
from tidepool.api.conditions import ConditionType, Reason
from tidepool.api.durations import Duration
from tidepool.api.v1alpha1 import Condition, PlacementSpec, ScalingSpec, SharedEngineScaling

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


# --------------------------------------------------------------------------------------------
# Duration: the spec's field type
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "text", "expected"),
    [
        pytest.param(ScalingSpec, "scaleToZeroAfter", "90s", timedelta(seconds=90), id="seconds"),
        pytest.param(ScalingSpec, "scaleUpStabilization", "0s", timedelta(0), id="zero"),
        pytest.param(
            ScalingSpec, "scaleDownStabilization", "1h30m", timedelta(minutes=90), id="two-parts"
        ),
        pytest.param(PlacementSpec, "window", "1.5h", timedelta(minutes=90), id="fraction"),
        pytest.param(
            PlacementSpec, "minDwell", "250ms", timedelta(milliseconds=250), id="milliseconds"
        ),
        pytest.param(
            SharedEngineScaling, "scaleToZeroAfter", "60s", timedelta(minutes=1), id="not-1m"
        ),
        pytest.param(
            ScalingSpec, "scaleToZeroAfter", "2h0m5s", timedelta(hours=2, seconds=5), id="0m-kept"
        ),
        pytest.param(ScalingSpec, "scaleToZeroAfter", "8760h", durations.MAX, id="the-maximum"),
    ],
)
def test_a_duration_field_writes_back_the_users_text_and_means_its_timedelta(
    model: type[BaseModel], field: str, text: str, expected: timedelta
) -> None:
    """What server-side apply sends and ``kubectl get -o yaml`` shows is what the user wrote:
    ``60s`` stays ``60s`` (not ``1m``, not ``60.0``)."""
    spec = model.model_validate({field: text})
    value = getattr(spec, _snake(field))

    assert spec.model_dump(by_alias=True)[field] == text
    assert spec.model_dump(by_alias=True, mode="json")[field] == text
    assert (value.text, value.delta, value.seconds) == (text, expected, expected.total_seconds())
    assert model.model_validate_json(spec.model_dump_json(by_alias=True)) == spec


@pytest.mark.parametrize(
    ("model", "field", "value", "allowed"),
    [
        pytest.param(
            ScalingSpec, "scaleToZeroAfter", "5 minutes", "e.g. 90s, 5m, 1h30m", id="words"
        ),
        pytest.param(PlacementSpec, "minDwell", "30", "a unit ms, s, m or h", id="no-unit"),
        pytest.param(PlacementSpec, "window", "5d", "a unit ms, s, m or h", id="days"),
        pytest.param(
            ScalingSpec, "scaleDownStabilization", "8761h", "maximum duration, 8760h", id="too-long"
        ),
        pytest.param(
            SharedEngineScaling, "scaleToZeroAfter", "1h" * 17, "at most 32 characters", id="wordy"
        ),
        pytest.param(ScalingSpec, "scaleUpStabilization", 300, "a valid string", id="a-number"),
    ],
)
def test_a_bad_duration_is_refused_naming_the_field_the_value_and_what_is_allowed(
    model: type[BaseModel], field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({field: value})

    message = str(caught.value)
    assert field in message
    assert repr(value) in message
    assert allowed in message


def test_the_defaults_are_durations_written_as_the_crds_show_them() -> None:
    scaling, placement = ScalingSpec(), PlacementSpec()

    assert scaling.scale_to_zero_after.delta == timedelta(minutes=5)
    assert scaling.scale_down_stabilization.delta == timedelta(minutes=10)
    assert placement.min_dwell.delta == timedelta(minutes=30)
    assert scaling.model_dump(by_alias=True)["scaleDownStabilization"] == "10m"
    assert placement.model_dump(by_alias=True)["window"] == "10m"


def test_python_callers_pass_text_or_a_duration() -> None:
    """Tests and the simulator build specs from strings; a copied field passes through as is."""
    kept = Duration("45s")

    assert ScalingSpec(scale_to_zero_after="2m").scale_to_zero_after.seconds == 120.0
    assert PlacementSpec(min_dwell=kept).min_dwell is kept
    with pytest.raises(durations.InvalidDurationError, match="'2 minutes' is not a duration"):
        Duration("2 minutes")


@pytest.mark.parametrize(
    ("shorter", "longer"),
    [
        pytest.param("90s", "5m", id="seconds-below-minutes"),
        pytest.param("999ms", "1s", id="milliseconds-below-a-second"),
        pytest.param("59m", "1h", id="not-by-text"),
        pytest.param("0s", "1ms", id="zero-below-all"),
    ],
)
def test_durations_order_by_time_not_by_text(shorter: str, longer: str) -> None:
    assert Duration(shorter) < Duration(longer)
    assert Duration(longer) > Duration(shorter)
    assert sorted([Duration(longer), Duration(shorter)]) == [Duration(shorter), Duration(longer)]


def test_two_spellings_of_one_time_are_equal_and_hash_alike_but_keep_their_text() -> None:
    sixty, minute = Duration("60s"), Duration("1m")

    assert sixty == minute
    assert hash(sixty) == hash(minute)
    assert len({sixty, minute}) == 1
    assert (str(sixty), str(minute)) == ("60s", "1m")
    assert sixty != "60s"  # a Duration is not its text: compare .text for that
    assert Duration("1m") != Duration("61s")


def test_a_duration_is_immutable_and_survives_pickle_and_copy() -> None:
    value = Duration("1h30m")

    with pytest.raises(AttributeError):
        value.text = "2h"  # type: ignore[misc]
    for copied in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
        assert (copied.text, copied.delta) == ("1h30m", timedelta(minutes=90))


#: Texts the pattern and the maximum both allow: at most four parts of under 100 hours each (so
#: under 400h, within 8760h), with numbers of up to six digits before and after the point.
_valid_texts = st.lists(
    st.tuples(
        st.one_of(
            st.tuples(st.integers(0, 99), st.just("h")),
            st.tuples(st.integers(0, 5_999), st.just("m")),
            st.tuples(st.integers(0, 359_999), st.just("s")),
            st.tuples(st.integers(0, 999_999), st.just("ms")),
        ),
        st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,6}", fullmatch=True)),
    ),
    min_size=1,
    max_size=4,
).map(lambda parts: "".join(f"{n}{point}{unit}" for (n, unit), point in parts))


@given(text=_valid_texts)
def test_any_valid_text_round_trips_and_means_what_parse_says(text: str) -> None:
    assume(len(text) <= durations.MAX_LENGTH)
    spec = ScalingSpec.model_validate({"scaleDownStabilization": text})

    assert spec.model_dump(by_alias=True)["scaleDownStabilization"] == text
    assert spec.scale_down_stabilization.delta == durations.parse(text)
    assert spec.scale_down_stabilization == Duration(text)


@given(text=st.from_regex(durations.PATTERN, fullmatch=True))
def test_the_model_refuses_exactly_what_parse_refuses_with_the_same_message(text: str) -> None:
    """Over the whole pattern (most of it beyond the maximum): one rule, one message."""
    try:
        expected = durations.parse(text)
    except durations.InvalidDurationError as refused:
        with pytest.raises(ValidationError, match=re.escape(str(refused))):
            PlacementSpec.model_validate({"window": text})
    else:
        assert PlacementSpec.model_validate({"window": text}).window.delta == expected


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
