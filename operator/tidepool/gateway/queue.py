"""A bounded FIFO of held requests with deadlines: what the gateway does while no replica fits.

Role: per model, at most ``capacity`` requests wait, oldest first; each has an absolute
deadline (monotonic seconds). A full queue refuses at once (the caller answers 503) instead of
growing without bound, and :meth:`HoldQueue.expire` hands back every waiter whose deadline has
passed. This separates the cold-start wait budget (``--queue-timeout``) from the engine's own
request timeout, as KEDA's HTTP add-on does with ``readiness`` vs ``request`` timeouts.

Must not: know about routing, futures or the event loop (a waiter carries an opaque ``token``
the async layer resolves), or read the clock (``now`` is passed in).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Waiter:
    """One held request. Identity equality: two waiters are never the same request."""

    model: tuple[str, str]
    enqueued_at: float
    deadline: float
    token: object = field(default=None, repr=False)


class HoldQueue:
    __slots__ = ("_items", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"queue capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: deque[Waiter] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(self._items)

    def push(self, waiter: Waiter) -> bool:
        """Append; False (and nothing stored) when the queue is full."""
        if len(self._items) >= self.capacity:
            return False
        self._items.append(waiter)
        return True

    def head(self) -> Waiter | None:
        return self._items[0] if self._items else None

    def pop(self) -> Waiter:
        return self._items.popleft()

    def remove(self, waiter: Waiter) -> bool:
        try:
            self._items.remove(waiter)
        except ValueError:
            return False
        return True

    def expire(self, now: float) -> list[Waiter]:
        """Remove and return every waiter with ``deadline <= now``, in queue order.

        Deadlines are not sorted by position (a timeout could be shortened at runtime), so this
        scans the whole queue; it is bounded by ``capacity``.
        """
        expired = [w for w in self._items if w.deadline <= now]
        if expired:
            self._items = deque(w for w in self._items if w.deadline > now)
        return expired

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self._items), default=None)
