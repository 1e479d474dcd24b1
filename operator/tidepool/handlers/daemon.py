"""The loop every per-object daemon runs: reconcile, then sleep until poked or requeued.

Why the daemons are async: Kopf runs a *sync* daemon on a thread of its executor for the
object's whole life, so an operator with more objects than ``settings.execution.max_workers``
threads leaves the rest without a daemon at all, and its sync handlers (the wake, the spec
poke) queue behind them. With 1,000 InferenceDeployments and 400 threads, 600 objects never got
a status. An async daemon costs a coroutine while it sleeps; it borrows an executor thread only
for the one reconcile it is running (the reconcile itself stays synchronous: blocking API and
Prometheus calls). Threads then bound how many objects reconcile at once, not how many exist.
"""

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

import kopf

from tidepool.adapters.kube import TransientKubeError
from tidepool.adapters.prometheus import utc_now
from tidepool.handlers.deps import Deps

_T = TypeVar("_T")


class Poke:
    """Tells one daemon to reconcile now rather than at its next tick.

    ``set`` may come from the event loop (a watch event) or from any thread (a reconcile in the
    executor); only the daemon waits, on the event loop. A poke that arrives while the daemon is
    reconciling is kept, so the daemon reconciles once more straight after.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def set(self) -> None:
        with self._lock:
            self._set = True
            waiter = self._waiter
        if waiter is not None:
            loop, event = waiter
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(event.set)

    def clear(self) -> None:
        with self._lock:
            self._set = False

    async def wait(self, timeout: float, stopped: kopf.DaemonStopped) -> None:
        """Return when poked, when the daemon is told to stop, or after ``timeout`` seconds."""
        event = asyncio.Event()
        with self._lock:
            if self._set:
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
                self._waiter = None


async def reconcile_until_stopped(
    stopped: kopf.DaemonStopped,
    poked: Poke,
    reconcile: Callable[[], float],
    *,
    deps: Deps,
) -> None:
    """Reconcile, then sleep until poked or until the reconcile's requeue (at most one tick),
    until Kopf stops the daemon. Each reconcile runs on an executor thread."""
    while not stopped:
        poked.clear()
        wait = await in_executor(deps.executor, lambda: reconcile_or_raise(reconcile, deps=deps))
        await poked.wait(min(wait, deps.tick_seconds), stopped)


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
