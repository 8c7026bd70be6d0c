"""The engine's bounded queues and memory budget, with real threads: backpressure, hand-over,
closing and cancellation (every stage of the local engine meets through these)."""

from __future__ import annotations

import threading

import pytest

from gpupipe.engine import queues
from gpupipe.engine.cancel import CancelToken
from gpupipe.engine.queues import Closed, CostBoundedQueue, MemoryBudget


@pytest.fixture
def notified_only(monkeypatch):
    """Waiters no longer wake on their own every POLL_SECONDS: a hand-over that forgets to notify
    then hangs the test (its joins time out) instead of passing a moment later."""
    monkeypatch.setattr(queues, "POLL_SECONDS", 60.0)


def _started(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_producers_wait_for_room_and_every_item_arrives_in_order(notified_only) -> None:
    """Two producers, one consumer, a queue that holds two items: every item gets through, each
    producer's in order, and the queue never holds more than its bound."""
    q: CostBoundedQueue[tuple[int, int]] = CostBoundedQueue(capacity=100, cancel=CancelToken(), max_items=2)
    q.add_producer(2)

    def produce(who: int) -> None:
        for n in range(500):
            q.put((who, n), cost=10)
        q.producer_done()

    got: list[tuple[int, int]] = []

    def consume() -> None:
        while True:
            try:
                got.append(q.get())
            except Closed:
                return

    threads = [_started(produce, 0), _started(produce, 1), _started(consume)]
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a hand-over was never notified"
    assert sorted(got) == [(who, n) for who in (0, 1) for n in range(500)]
    for who in (0, 1):
        assert [n for w, n in got if w == who] == list(range(500))
    assert q.peak <= 20


def test_a_put_blocked_by_cost_goes_on_when_a_get_frees_room(notified_only) -> None:
    q: CostBoundedQueue[str] = CostBoundedQueue(capacity=10, cancel=CancelToken())
    q.put("big", cost=8)
    done = threading.Event()
    blocked = _started(lambda: (q.put("more", cost=5), done.set()))
    assert not done.wait(0.3), "the queue was full: the put must wait"
    assert q.get() == "big"
    assert done.wait(5)
    blocked.join(5)
    assert q.get() == "more"


def test_consumers_wait_for_items_then_closed_when_producers_finish(notified_only) -> None:
    q: CostBoundedQueue[int] = CostBoundedQueue(capacity=10, cancel=CancelToken())
    q.add_producer(1)
    results: list = []
    consumers = [_started(lambda: results.append(_drain(q))) for _ in range(3)]
    for n in range(30):
        q.put(n, cost=1)
    q.producer_done()
    for thread in consumers:
        thread.join(5)
    assert not any(thread.is_alive() for thread in consumers), "a waiting consumer was never notified"
    assert sorted(n for batch in results for n in batch) == list(range(30))


def _drain(q: CostBoundedQueue[int]) -> list[int]:
    out = []
    while True:
        try:
            out.extend(q.get_batch(max_items=4, max_cost=100))
        except Closed:
            return out


def test_cancelling_releases_blocked_producers_and_consumers() -> None:
    cancel = CancelToken()
    full: CostBoundedQueue[int] = CostBoundedQueue(capacity=1, cancel=cancel)
    full.put(0, cost=1)
    empty: CostBoundedQueue[int] = CostBoundedQueue(capacity=1, cancel=cancel)
    empty.add_producer(1)
    outcomes: list[str] = []

    def expect_closed(call) -> None:
        try:
            call()
        except Closed:
            outcomes.append("closed")

    waiters = [_started(expect_closed, lambda: full.put(1, cost=1)), _started(expect_closed, empty.get)]
    cancel.cancel()
    for thread in waiters:
        thread.join(5)
    assert outcomes == ["closed", "closed"]


def test_memory_budget_admits_once_memory_is_released_or_shrunk(notified_only) -> None:
    budget = MemoryBudget(capacity=100, cancel=CancelToken())
    held = budget.acquire(90)
    admitted = threading.Event()
    waiter = _started(lambda: (budget.acquire(30), admitted.set()))
    assert not admitted.wait(0.3), "90 + 30 is over the budget: the acquire must wait"
    held = budget.resize(held, 60)                 # a result smaller than its input: room for 30
    assert admitted.wait(5)
    waiter.join(5)
    assert budget.used == 90
    budget.release(held)
    assert budget.used == 30


def test_one_item_larger_than_the_whole_budget_is_admitted_alone() -> None:
    budget = MemoryBudget(capacity=100, cancel=CancelToken())
    assert budget.acquire(500) == 500
    q: CostBoundedQueue[str] = CostBoundedQueue(capacity=10, cancel=CancelToken())
    q.put("huge", cost=50)
    assert q.get() == "huge"


def test_budget_under_contention_never_exceeds_capacity(notified_only) -> None:
    """Eight threads acquiring and releasing: the budget is never over capacity (one item over
    it only when alone), and every acquire is admitted in the end."""
    budget = MemoryBudget(capacity=100, cancel=CancelToken())
    seen_over = []

    def work() -> None:
        for _ in range(200):
            held = budget.acquire(40)
            if budget.used > 100:
                seen_over.append(budget.used)
            budget.release(held)

    threads = [_started(work) for _ in range(8)]
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert seen_over == [] and budget.used == 0
