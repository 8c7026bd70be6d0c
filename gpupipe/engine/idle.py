"""How much of their time a pool of threads spends waiting for work.

The engine asks it whether the host's encode threads have room for JPEGs a busy device
would otherwise encode. A count of idle threads at the moment of asking misleads: a device
thread asks right after handing its own batch to those threads, when they are busiest, and
saw them full however idle they were in between. The fraction of thread time spent waiting
since the last question does not.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator


class IdleMeter:
    def __init__(self, threads: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.threads = max(1, threads)
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = 0.0                       # waits that ended since the last read
        self._waiting: dict[int, float] = {}   # thread -> since when it waits (counted up to the last read)
        self._last_read = clock()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a thread's wait for its next piece of work."""
        me = threading.get_ident()
        with self._lock:
            self._waiting[me] = self._clock()
        try:
            yield
        finally:
            with self._lock:
                self._idle += self._clock() - self._waiting.pop(me)

    def spare(self) -> float:
        """The fraction of the threads' time spent waiting since the last call (0..1), waits
        still going on included."""
        with self._lock:
            now = self._clock()
            idle = self._idle + sum(now - since for since in self._waiting.values())
            self._idle = 0.0
            for thread in self._waiting:
                self._waiting[thread] = now
            span, self._last_read = now - self._last_read, now
        return min(1.0, idle / (span * self.threads)) if span > 0 else 0.0
