"""Decision Events within the operator's budget: a storm across objects posts a minute's worth,
then the refill; every decision is counted either way."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fakes import ManualClock, make_deps
from tidepool.handlers.deps import EventBudget
from tidepool.handlers.posting import post_decisions
from tidepool.policy.plan import Event, EventType


def unknown(i: int) -> Event:
    return Event(EventType.NORMAL, "MetricsUnknown", f"tenant {i}: metrics unknown " + "x" * 2000)


@pytest.mark.parametrize(
    ("per_minute", "events", "later_s", "posted"),
    [
        pytest.param(300, 100, 0.0, 200, id="under-the-burst-all-posted"),
        pytest.param(300, 1000, 0.0, 300, id="a-1000-tenant-storm-posts-a-minutes-worth"),
        pytest.param(300, 1000, 2.0, 310, id="then-five-a-second"),
        pytest.param(60, 61, 0.5, 60, id="half-a-token-is-not-one"),
    ],
)
def test_the_budget_posts_a_minutes_worth_then_the_refill(
    per_minute: int, events: int, later_s: float, posted: int
) -> None:
    """Two rounds of ``events`` decisions, ``later_s`` apart: ``posted`` Events in all."""
    clock = ManualClock()
    sent: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as executor:
        deps = make_deps(executor, tick=5.0)
    deps.event_budget = EventBudget(per_minute, clock=clock.seconds)

    def post(body: object, **event: Any) -> None:
        sent.append(event)

    post_decisions({}, [unknown(i) for i in range(events)], deps=deps, post=post)
    clock.advance(later_s)
    post_decisions({}, [unknown(i) for i in range(events)], deps=deps, post=post)
    assert len(sent) == posted
    assert all(len(e["message"]) == 1000 for e in sent)
    decisions = deps.telemetry.decisions.labels(reason="MetricsUnknown")._value.get()
    dropped = deps.telemetry.events_dropped.labels(reason="MetricsUnknown")._value.get()
    assert decisions == 2 * events
    assert dropped == 2 * events - posted
