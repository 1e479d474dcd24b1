"""The per-object daemon loop: many daemons share a few threads, and a poke from anywhere wakes
one at once.

Kopf's own stop flag is used as it is (``FlagSetter`` and its async waiter, what Kopf hands a
daemon as ``stopped``), so the loop is tested against the real thing.
"""

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from fakes import make_deps
from tidepool.handlers.daemon import Poke, in_executor, reconcile_until_stopped
from tidepool.handlers.deps import Deps


def kopf_stop_flag() -> tuple[FlagSetter, AsyncFlagWaiter]:  # type: ignore[type-arg]
    setter: FlagSetter = FlagSetter()  # type: ignore[type-arg]
    return setter, AsyncFlagWaiter(setter)


async def test_more_daemons_than_threads_all_reconcile() -> None:
    """The failure this module exists for: 1,000 daemons on 4 threads each reconcile, where
    Kopf's sync daemons would have left all but 4 without one."""
    seen: set[int] = set()
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=4) as executor:
        deps = make_deps(executor, tick=60.0)
        setter, stopped = kopf_stop_flag()

        def reconciler(index: int) -> float:
            def reconcile() -> float:
                with lock:
                    seen.add(index)
                return 60.0

            return reconcile

        loops = [
            asyncio.create_task(reconcile_until_stopped(stopped, Poke(), reconciler(i), deps=deps))
            for i in range(1000)
        ]
        deadline = time.monotonic() + 20
        while len(seen) < 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        setter.set()
        await asyncio.wait_for(asyncio.gather(*loops), timeout=10)
    assert len(seen) == 1000


@pytest.mark.parametrize("from_thread", [False, True], ids=["from-the-loop", "from-a-thread"])
async def test_a_poke_wakes_the_daemon_before_its_tick(from_thread: bool) -> None:
    calls: list[float] = []
    poke = Poke()
    with ThreadPoolExecutor(max_workers=2) as executor:
        deps = make_deps(executor, tick=60.0)
        setter, stopped = kopf_stop_flag()

        def reconcile() -> float:
            calls.append(time.monotonic())
            return 60.0

        loop = asyncio.create_task(reconcile_until_stopped(stopped, poke, reconcile, deps=deps))
        while not calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the daemon is asleep now, for up to a minute
        poked_at = time.monotonic()
        if from_thread:
            threading.Thread(target=poke.set).start()
        else:
            poke.set()
        while len(calls) < 2:
            await asyncio.sleep(0.01)
        setter.set()
        await asyncio.wait_for(loop, timeout=5)
    assert calls[1] - poked_at < 1.0


async def test_a_poke_during_a_reconcile_is_kept() -> None:
    """The spec changed while the daemon was reconciling the old one: it reconciles again at
    once instead of sleeping a tick on a stale result. A reconcile already on its thread is not
    withdrawn (nothing overtaken): the next one waits for it, never two at once."""
    poke = Poke()
    calls = 0
    with ThreadPoolExecutor(max_workers=1) as executor:
        deps = make_deps(executor, tick=60.0)
        setter, stopped = kopf_stop_flag()

        def reconcile() -> float:
            nonlocal calls
            calls += 1
            if calls == 1:
                poke.set()  # arrives mid-reconcile, after the loop cleared the last poke
            return 60.0

        loop = asyncio.create_task(reconcile_until_stopped(stopped, poke, reconcile, deps=deps))
        deadline = time.monotonic() + 5
        while calls < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        setter.set()
        await asyncio.wait_for(loop, timeout=5)
    assert calls == 2
    assert deps.telemetry.overtaken_ticks._value.get() == 0


async def test_stopping_ends_the_loop_without_waiting_out_the_tick() -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        deps = make_deps(executor, tick=60.0)
        setter, stopped = kopf_stop_flag()
        daemon = reconcile_until_stopped(stopped, Poke(), lambda: 60.0, deps=deps)
        loop = asyncio.create_task(daemon)
        await asyncio.sleep(0.1)
        asked = time.monotonic()
        setter.set()
        await asyncio.wait_for(loop, timeout=5)
    assert time.monotonic() - asked < 1.0


async def test_the_reconcile_runs_on_a_thread_with_the_daemons_context() -> None:
    """Kopf's ``kopf.event`` and per-object logger find their loop through context variables:
    the thread must see the daemon's."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker")
    marker.set("this daemon")
    seen: list[tuple[str, str]] = []

    def work() -> float:
        seen.append((threading.current_thread().name, marker.get("none")))
        return 1.0

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile") as executor:
        assert await in_executor(executor, work) == 1.0
    assert seen[0][0].startswith("reconcile")
    assert seen[0][1] == "this daemon"


async def test_a_poke_overtakes_the_ticks_queued_before_it() -> None:
    """The failure the urgent lane exists for: the one executor thread is busy and 200 ticks
    wait behind it; a poked object reconciles at once instead of after them, and its queued
    tick is withdrawn, so it never reconciles twice at once."""
    release = threading.Event()
    poke = Poke()
    poked_calls: list[float] = []
    running = 0
    overlapped = False
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=1) as executor:
        deps = make_deps(executor, tick=60.0)
        setter, stopped = kopf_stop_flag()
        blocker = executor.submit(release.wait, 30)

        def poked_object() -> float:
            nonlocal running, overlapped
            with lock:
                running += 1
                overlapped = overlapped or running > 1
            poked_calls.append(time.monotonic())
            with lock:
                running -= 1
            return 60.0

        loops = [
            asyncio.create_task(reconcile_until_stopped(stopped, Poke(), lambda: 60.0, deps=deps))
            for _ in range(200)
        ]
        loops.append(
            asyncio.create_task(reconcile_until_stopped(stopped, poke, poked_object, deps=deps))
        )
        await asyncio.sleep(0.2)  # every tick is queued behind the blocker
        poked_at = time.monotonic()
        poke.set()
        deadline = time.monotonic() + 5
        while not poked_calls and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        release.set()
        blocker.result(timeout=5)
        await asyncio.sleep(0.2)  # the rest drain; the withdrawn tick must not run
        setter.set()
        await asyncio.wait_for(asyncio.gather(*loops), timeout=10)
    assert len(poked_calls) == 1
    assert poked_calls[0] - poked_at < 1.0
    assert not overlapped
    assert deps.telemetry.overtaken_ticks._value.get() == 1
    # The metrics tell the two lanes apart: the poked reconcile waited under a second from its
    # poke; every tick was counted, and the first one queued waited out the 0.2 s the blocker
    # held their thread (the later ones may have been queued later: on a busy machine starting
    # 200 daemons takes a while).
    assert observed(deps, "reconcile_wait_seconds", "urgent") == (1, pytest.approx(0, abs=1.0))
    assert observed(deps, "reconcile_wait_seconds", "timed")[0] == 200
    assert observed(deps, "reconcile_wait_seconds", "timed", within=0.1)[0] < 200
    assert observed(deps, "reconcile_seconds", "urgent")[0] == 1


def observed(
    deps: Deps, histogram: str, lane: str, *, within: float | None = None
) -> tuple[int, float]:
    """(count, sum) of one lane of one of the operator's reconcile histograms; with ``within``,
    the count of observations up to that bucket bound instead of the count."""
    samples = {
        (s.name, s.labels.get("le")): s.value
        for metric in getattr(deps.telemetry, histogram).collect()
        for s in metric.samples
        if s.labels.get("lane") == lane
    }
    name = getattr(deps.telemetry, histogram)._name
    count = samples.get((f"{name}_count", None), 0)
    if within is not None:
        count = samples.get((f"{name}_bucket", str(within)), 0)
    return int(count), samples.get((f"{name}_sum", None), 0.0)


@pytest.mark.parametrize(
    ("pokes_at", "taken"),
    [
        ((), None),  # never poked
        ((3.0,), 3.0),
        ((3.0, 4.5, 9.0), 3.0),  # the wait counts from the first poke not yet taken
    ],
)
def test_take_gives_the_time_of_the_first_poke_and_clears_it(
    pokes_at: tuple[float, ...], taken: float | None
) -> None:
    now = [0.0]
    poke = Poke(clock=lambda: now[0])
    for at in pokes_at:
        now[0] = at
        poke.set()
    assert poke.pending() is (taken is not None)
    assert poke.take() == taken
    assert not poke.pending()
    assert poke.take() is None
