"""The loop every per-object daemon runs: reconcile, then sleep until poked or requeued.

Why the daemons are async: Kopf runs a *sync* daemon on a thread of its executor for the
object's whole life, so an operator with more objects than ``settings.execution.max_workers``
threads leaves the rest without a daemon at all, and its sync handlers (the wake, the spec
poke) queue behind them. With 1,000 InferenceDeployments and 400 threads, 600 objects never got
a status. An async daemon costs a coroutine while it sleeps; it borrows an executor thread only
for the one reconcile it is running (the reconcile itself stays synchronous: blocking API and
Prometheus calls). Threads then bound how many objects reconcile at once, not how many exist.

Why a poked reconcile has a lane of its own: the ticks of a thousand objects queue on the
executor (first in, first out), and a spec change or a held request poked into that queue waits
behind every tick already in it. At 1,000 tenants on two cores that was 14 s at the median for
a spec change and 3 s for a wake. A poke therefore runs on ``Deps.urgent_executor``, and a poke
that arrives while the object's tick still waits in the queue withdraws the tick and goes first
(a tick already running is left to finish: two reconciles of one object never run at once).
The executor is the API server's fairness in miniature: Kubernetes' API Priority and Fairness
likewise keeps a lane for requests that must not wait behind bulk traffic.
"""

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Final, TypeVar

import kopf

from tidepool.adapters.kube import TransientKubeError
from tidepool.adapters.prometheus import utc_now
from tidepool.handlers.deps import Deps

_T = TypeVar("_T")


class Poke:
    """Tells one daemon to reconcile now rather than at its next tick.

    ``set`` may come from the event loop (a watch event) or from any thread (a reconcile in the
    executor); only the daemon waits, on the event loop. A poke that arrives while the daemon is
    reconciling is kept, so the daemon reconciles once more straight after. The time of the
    first poke not yet taken is kept with it, for the wait it measures.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._poked_at: float | None = None
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def set(self) -> None:
        with self._lock:
            if self._poked_at is None:
                self._poked_at = self._clock()
            waiter = self._waiter
        if waiter is not None:
            loop, event = waiter
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(event.set)

    def pending(self) -> bool:
        """Whether a poke came since the last ``take`` (and leaves it there)."""
        with self._lock:
            return self._poked_at is not None

    def take(self) -> float | None:
        """When the first poke since the last ``take`` came (the clock's seconds), or None if
        none did; clears it."""
        with self._lock:
            at, self._poked_at = self._poked_at, None
            return at

    async def wait(self, timeout: float | None, stopped: kopf.DaemonStopped) -> None:
        """Return when poked, when the daemon is told to stop, or after ``timeout`` seconds
        (None: no limit). A poke not yet taken returns at once."""
        event = asyncio.Event()
        with self._lock:
            if self._poked_at is not None:
                return
            self._waiter = (asyncio.get_running_loop(), event)
        poked = asyncio.ensure_future(event.wait())
        stopping = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({poked, stopping}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            poked.cancel()
            stopping.cancel()
            with self._lock:
                # Only this wait's own: a cancelled wait may finish after the next one began.
                if self._waiter is not None and self._waiter[1] is event:
                    self._waiter = None


#: The ``lane`` label of the reconcile timings: a poked reconcile, or one whose requeue ran out.
URGENT: Final = "urgent"
TIMED: Final = "timed"


async def reconcile_until_stopped(
    stopped: kopf.DaemonStopped,
    poked: Poke,
    reconcile: Callable[[], float],
    *,
    deps: Deps,
) -> None:
    """Reconcile, then sleep until poked or for the seconds the reconcile returned, until Kopf
    stops the daemon. Each reconcile runs on an executor thread: a poked one on the urgent lane,
    a timed one on Kopf's executor unless a poke overtakes it there."""
    while not stopped:
        poked_at = poked.take()
        if poked_at is not None:
            work = _measured(reconcile, deps=deps, lane=URGENT, due=poked_at)
            wait = await in_executor(deps.urgent_executor, work)
        else:
            wait = await _timed_reconcile(reconcile, poked, stopped, deps=deps)
        await poked.wait(wait, stopped)


async def _timed_reconcile(
    reconcile: Callable[[], float], poked: Poke, stopped: kopf.DaemonStopped, *, deps: Deps
) -> float:
    """Run ``reconcile`` on Kopf's executor, or on the urgent lane if a poke comes while it
    still waits for a thread there."""
    work = _measured(reconcile, deps=deps, lane=TIMED, due=time.monotonic())
    if deps.executor is None:  # the loop's default executor: one lane, nothing to overtake
        return await in_executor(None, work)
    context = contextvars.copy_context()
    queued: Future[float] = deps.executor.submit(context.run, work)
    done = asyncio.wrap_future(queued)
    poke = asyncio.ensure_future(poked.wait(None, stopped))
    either: set[asyncio.Future[Any]] = {done, poke}
    try:
        await asyncio.wait(either, return_when="FIRST_COMPLETED")
    finally:
        poke.cancel()
    # A tick already running is left to finish; the poke stays pending, so the loop reconciles
    # again straight after it.
    if not done.done() and poked.pending() and queued.cancel():
        deps.telemetry.overtaken_ticks.inc()  # it had not started: withdrawn, the poke goes first
        poked_at = poked.take()
        due = time.monotonic() if poked_at is None else poked_at
        urgent = _measured(reconcile, deps=deps, lane=URGENT, due=due)
        return await in_executor(deps.urgent_executor, urgent)
    return await done


def _measured(
    reconcile: Callable[[], float], *, deps: Deps, lane: str, due: float
) -> Callable[[], float]:
    """``reconcile`` timed into the operator's metrics: how long it waited for a thread after it
    was due (poked, or its requeue ran out; ``time.monotonic`` seconds), and how long it ran.
    The two split a slow status at scale into queueing and work."""

    def run() -> float:
        started = time.monotonic()
        deps.telemetry.reconcile_wait_seconds.labels(lane=lane).observe(started - due)
        try:
            return reconcile_or_raise(reconcile, deps=deps)
        finally:
            deps.telemetry.reconcile_seconds.labels(lane=lane).observe(time.monotonic() - started)

    return run


async def in_executor(executor: Executor | None, work: Callable[[], _T]) -> _T:
    """Run blocking ``work`` on ``executor`` (None: the loop's default) with this task's
    context variables, as Kopf does for its sync handlers, so that ``kopf.event`` and Kopf's
    per-object logging work from the thread."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, work)


def reconcile_or_raise(reconcile: Callable[[], float], *, deps: Deps) -> float:
    """Run one reconcile; count its outcome and hand its errors to Kopf to retry.

    A transient API error waits what the server asked for, else one tick (the pace the
    daemon keeps anyway); any other error propagates to Kopf, which logs it with its
    traceback and restarts the daemon after the handler backoff.
    """
    try:
        wait = reconcile()
    except TransientKubeError as exc:
        deps.telemetry.reconciles.labels(result="retry").inc()
        deps.last_error = str(exc)
        delay = exc.retry_after if exc.retry_after is not None else deps.tick_seconds
        raise kopf.TemporaryError(f"transient API error: {exc}", delay=delay) from exc
    except Exception as exc:
        deps.telemetry.reconciles.labels(result="error").inc()
        deps.last_error = str(exc) or type(exc).__name__
        raise
    deps.telemetry.reconciles.labels(result="ok").inc()
    deps.last_reconciled = utc_now()
    deps.last_error = None
    return wait
