"""``waiting.wait_for``, the one poll the e2e scripts, benchmarks and integration tests share.

Each probe here is a script of answers, one per call, so no case depends on the clock: a
timeout of 0 makes exactly one call before giving up.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from waiting import WaitAbortedError, wait_for


def scripted(*answers: Any) -> tuple[Callable[[], Any], list[int]]:
    """A probe returning (or raising) ``answers`` in turn, and a one-item list counting calls."""
    it: Iterator[Any] = iter(answers)
    calls = [0]

    def probe() -> Any:
        calls[0] += 1
        answer = next(it)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return probe, calls


@pytest.mark.parametrize(
    ("answers", "returned", "calls"),
    [
        pytest.param(("ready",), "ready", 1, id="first-answer-truthy"),
        pytest.param((None, False, 0, [], "", ["pod"]), ["pod"], 6, id="every-falsy-is-not-yet"),
        pytest.param((ConnectionRefusedError(), OSError("503"), 7), 7, 3, id="errors-are-not-yet"),
    ],
)
def test_returns_the_first_truthy_answer(
    answers: tuple[Any, ...], returned: Any, calls: int
) -> None:
    probe, made = scripted(*answers)
    assert wait_for(probe, timeout=60, what="x", interval=0) == returned
    assert made == [calls]


def test_an_aborted_wait_ends_at_once() -> None:
    probe, made = scripted(WaitAbortedError("kube-apiserver is not running"), "never reached")
    with pytest.raises(WaitAbortedError, match="kube-apiserver is not running"):
        wait_for(probe, timeout=60, what="x", interval=0)
    assert made == [1]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            [],
            "timed out after 0s waiting for 2 Ready pods (last: [])",
            id="names-what-and-the-last-value",
        ),
        pytest.param(
            KeyError("status"),
            "timed out after 0s waiting for 2 Ready pods"
            " (last: None; last error: KeyError('status'))",
            id="names-the-last-error",
        ),
    ],
)
def test_a_timeout_says_what_was_awaited_and_what_was_seen(answer: Any, message: str) -> None:
    probe, made = scripted(answer)
    with pytest.raises(TimeoutError) as caught:
        wait_for(probe, timeout=0, what="2 Ready pods", interval=0)
    assert str(caught.value) == message
    assert made == [1]
