"""A queue bounded by cost (bytes, pixels), not by item count.

Every arrow of the pipeline is one of these, so memory is capped by
configuration whatever the number or size of the inputs: a producer blocks
while the queue holds ``capacity`` worth of items, or ``max_items`` of them
(backpressure). One item
larger than the whole capacity is still admitted when the queue is empty, so a
huge image slows the run down instead of deadlocking it.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

from .cancel import CancelToken

T = TypeVar("T")

# How often a waiting thread looks at the cancel token (cancelling notifies nobody); every other
# change a waiter cares about notifies it at once.
POLL_SECONDS = 0.1


class Closed(Exception):
    """The queue was closed and drained, or the run was cancelled."""


class _Waiters:
    """A condition that counts the threads waiting on it, so a notify nobody waits for is skipped:
    it still cost Python work, per item and stage, which adds up on small images. Every method is
    called with the lock held, so no wake-up is lost."""

    def __init__(self, lock) -> None:
        self._condition = threading.Condition(lock)
        self._count = 0

    def wait(self) -> None:
        """Until notified, or POLL_SECONDS (the caller looks at the cancel token then)."""
        self._count += 1
        try:
            self._condition.wait(POLL_SECONDS)
        finally:
            self._count -= 1

    def notify(self) -> None:
        if self._count:
            self._condition.notify()

    def notify_all(self) -> None:
        if self._count:
            self._condition.notify_all()


class CostBoundedQueue(Generic[T]):
    def __init__(self, capacity: int, cancel: CancelToken, name: str = "queue", max_items: int | None = None) -> None:
        self.capacity = max(1, int(capacity))
        # A few items per consumer keep every stage busy; more only costs memory.
        self.max_items = max_items
        self.name = name
        self._cancel = cancel
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._used = 0
        self._producers = 0
        self._closed = False
        # Two conditions on one lock: a put wakes one consumer, a get wakes the
        # producers. notify_all on a single condition woke every idle thread of two
        # stages per item, and each wake-up costs a GIL round trip.
        self._lock = threading.Lock()
        self._not_empty = _Waiters(self._lock)
        self._not_full = _Waiters(self._lock)
        self.peak = 0

    # Producers register so the queue knows when the last one has finished.
    def add_producer(self, count: int = 1) -> None:
        with self._lock:
            self._producers += count

    def producer_done(self) -> None:
        with self._lock:
            self._producers -= 1
            if self._producers <= 0:
                self._closed = True
                self._not_empty.notify_all()

    def put(self, item: T, cost: int) -> None:
        """Block until the item fits; raise Closed if the run is cancelled meanwhile."""
        cost = max(0, int(cost))
        with self._lock:
            while self._items and (self._used + cost > self.capacity or
                                   (self.max_items is not None and len(self._items) >= self.max_items)):
                if self._cancel.cancelled:
                    raise Closed(self.name)
                self._not_full.wait()
            self._items.append((item, cost))
            self._used += cost
            self.peak = max(self.peak, self._used)
            self._not_empty.notify()

    def get(self) -> T:
        """Next item; raise Closed when every producer is done and nothing is left."""
        with self._lock:
            self._wait_for_items()
            return self._take()

    def get_batch(self, max_items: int, max_cost: int) -> list[T]:
        """One item (blocking as ``get``) plus whatever else is ready, within the limits."""
        with self._lock:
            self._wait_for_items()
            batch = [self._take()]
            cost = 0
            while self._items and len(batch) < max_items and cost + self._items[0][1] <= max_cost:
                cost += self._items[0][1]
                batch.append(self._take())
            return batch

    def drain(self) -> list[T]:
        """Everything still queued (after cancellation: to account for it as not done)."""
        with self._lock:
            items = [item for item, _ in self._items]
            self._items.clear()
            self._used = 0
            self._not_full.notify_all()
            return items

    def _wait_for_items(self) -> None:
        """(Holding the lock.) Return once an item is queued; Closed when none will come."""
        while not self._items:
            if self._closed or self._cancel.cancelled:
                raise Closed(self.name)
            self._not_empty.wait()

    def _take(self) -> T:
        item, cost = self._items.popleft()
        self._used -= cost
        self._not_full.notify_all()
        return item

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def used(self) -> int:
        return self._used


class MemoryBudget:
    """Bytes of decoded images in flight, across every stage and worker.

    Queues cap what waits between stages; this caps what the whole pipeline
    holds, including images a worker is busy with. Decoding is the only place
    that waits for room (admission); later stages adjust their reservation
    without waiting, so work already admitted always drains (no deadlock). One
    image larger than the whole budget is admitted when nothing else is held.
    """

    def __init__(self, capacity: int, cancel: CancelToken) -> None:
        self.capacity = max(1, int(capacity))
        self._cancel = cancel
        self._used = 0
        self._lock = threading.Lock()
        self._room = _Waiters(self._lock)      # threads in acquire
        self.peak = 0

    def acquire(self, amount: int) -> int:
        with self._lock:
            while self._used and self._used + amount > self.capacity:
                if self._cancel.cancelled:
                    raise Closed("memory budget")
                self._room.wait()
            self._used += amount
            self.peak = max(self.peak, self._used)
            return amount

    def resize(self, held: int, amount: int) -> int:
        """Swap a reservation of ``held`` bytes for ``amount`` without waiting."""
        with self._lock:
            self._used += amount - held
            self.peak = max(self.peak, self._used)
            self._room.notify_all()
            return amount

    def release(self, held: int) -> None:
        if held:
            with self._lock:
                self._used -= held
                self._room.notify_all()

    @property
    def used(self) -> int:
        return self._used
