"""The wake rule: one place decides whether the gateway's wake annotation is still pending."""

import pytest

from tidepool.api import labels

T1, T2 = "2026-01-01T00:00:01Z", "2026-01-01T00:00:05Z"


@pytest.mark.parametrize(
    ("annotations", "last_handled", "expected"),
    [
        pytest.param({labels.WAKE_REQUESTED_AT: T2}, T1, T2, id="newer-wake-is-pending"),
        pytest.param({labels.WAKE_REQUESTED_AT: T2}, None, T2, id="first-wake-is-pending"),
        pytest.param({labels.WAKE_REQUESTED_AT: T2}, T2, None, id="handled-wake-is-not"),
        pytest.param({labels.WAKE_REQUESTED_AT: ""}, None, None, id="empty-value-is-no-wake"),
        pytest.param({"other": "x"}, None, None, id="no-annotation"),
        pytest.param(None, T1, None, id="no-annotations-at-all"),
    ],
)
def test_pending_wake(
    annotations: dict[str, str] | None, last_handled: str | None, expected: str | None
) -> None:
    assert labels.pending_wake(annotations, last_handled) == expected


def test_a_huge_wake_value_is_cut_to_what_status_keeps() -> None:
    """Anyone may write the annotation; status.lastWakeHandled has a maxLength."""
    huge = "2026-01-01T00:00:05Z" + "x" * 100_000

    value = labels.pending_wake({labels.WAKE_REQUESTED_AT: huge}, None)

    assert value == huge[: labels.MAX_WAKE_VALUE]
    assert labels.pending_wake({labels.WAKE_REQUESTED_AT: huge}, value) is None
