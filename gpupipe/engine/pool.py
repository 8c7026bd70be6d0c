"""Worker processes for the local engine: each runs ``unit.run_chunk`` on the chunks it is sent.

Workers are forked from the run's process when the run starts, before the engine starts
any thread of its own, so they begin with everything imported and the spec built (a fresh
interpreter took 0.3 s and 60 MB each). The run's own process needs no pixel libraries: it
loads the workers' modules (``WORKER_MODULES``, the backend's) just before the fork. Each
builds its own backend (``BackendChoice.make``): a GPU worker its own CUDA context, which the
run's process never opens (it would not survive the fork). A worker that dies is forked again
while the engine holds the locks its threads take (``fork_guard``), so no lock is copied
held.

What the engine and its workers share, besides one pipe each (chunks out, their outcomes
back), is a few words of shared memory:

- ``at[w]``: the input worker ``w`` is on (-1: between inputs or placing its chunk's
  files), and ``beat[w]``, when it started it. If a worker dies, the input it was on is
  the one that failed as ``crashed``; the rest of its chunk, and of the chunk queued behind
  it (``QUEUED_CHUNKS``), is done again by another. A worker stuck on one input for
  ``--stall-timeout`` is found the same way.
- the memory budget (``SharedBudget``): the bytes of decoded images all workers hold
  together, each worker's part in a slot of its own so the part of one that dies is
  given back.
- ``stop``: set when the run drains or aborts; workers cancel what is left of their chunks.
- ``lost``: set by the first worker whose GPU failed for good; the others go on on the CPU too.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from typing import Sequence

from ..backends import BackendChoice
from ..records import dataclass
from ..spec import OpTrie
from . import unit
from .tuning import libc, tune_allocator
from .writer import close_parent_only_fds, remove_live_temporaries

log = logging.getLogger("gpupipe")

_fork = multiprocessing.get_context("fork")

# The unit of work's own modules beyond those the run's process has: its devices (and with them
# the op walk and NumPy) and the codecs' pixel side (simplejpeg, and Pillow's reading where a
# format needs it).
WORKER_MODULES = ("gpupipe.engine.device", "gpupipe.codecs.decoding", "gpupipe.codecs.encoding",
                  "gpupipe.codecs.probing")
PR_SET_PDEATHSIG = 1
WAIT_FOR_ROOM = 0.002       # seconds between looks at a full memory budget
ABORT = signal.SIGUSR1      # the engine to a worker: remove your temporaries and exit now
# A worker that cannot start its thread (the limit on processes met: a container's pids limit
# counts threads) exits with this status, quietly: its engine says why.
NO_THREAD = 75
TRIM_AT_LEAST = 64 * 2**20  # free heap a worker keeps before trimming, whatever its share of the budget
# Chunks a worker holds besides the one it works on: it starts the next as soon as it finishes
# one. Waiting for the run's process to hand it the next (which first had the interpreter lock
# to win from the scan) left each worker idle 4-7 ms a chunk: 5-10 % of its time on tiny files.
QUEUED_CHUNKS = 1


class SharedBudget(unit.Budget):
    """unit.Budget across processes: ``held[w]`` is worker ``w``'s part, ``used`` the sum."""

    def __init__(self, total: int, workers: int) -> None:
        super().__init__(total)
        self._lock = _fork.Lock()
        self._owner = _fork.RawValue(ctypes.c_int, -1)       # the worker holding _lock, to free it if it dies
        self._used = _fork.RawValue(ctypes.c_longlong, 0)
        self._held = _fork.RawArray(ctypes.c_longlong, workers)
        self._peak = _fork.RawArray(ctypes.c_longlong, workers)    # the most each worker held at once
        self.worker = -1                                      # set in each worker after the fork

    # The lock is taken by hand, not through a context manager: a worker takes it twice per input,
    # and contextlib's generator cost 3 µs of the ~200 µs a tiny input takes.
    def _lock_up(self) -> None:
        self._lock.acquire()
        self._owner.value = self.worker

    def _unlock(self) -> None:
        self._owner.value = -1
        self._lock.release()

    def acquire(self, amount: int) -> None:
        while not self.try_acquire(amount):
            time.sleep(WAIT_FOR_ROOM)

    def try_acquire(self, amount: int) -> bool:
        self._lock_up()
        try:
            used = self._used.value
            if used + amount > self.total and used != 0:
                return False
            self._used.value = used + amount
            worker = self.worker
            held = self._held[worker] = self._held[worker] + amount
            if held > self._peak[worker]:
                self._peak[worker] = held
            return True
        finally:
            self._unlock()

    def release(self, amount: int) -> None:
        self._lock_up()
        try:
            self._used.value -= amount
            self._held[self.worker] -= amount
        finally:
            self._unlock()

    def reclaim(self, worker: int) -> None:
        """Worker ``worker`` died: give its part back (and the lock, if it died holding it)."""
        if self._owner.value == worker:
            self._owner.value = -1
            self._lock.release()
        self._lock_up()
        try:
            self._used.value -= self._held[worker]
            self._held[worker] = 0
        finally:
            self._unlock()

    @property
    def used(self) -> int:
        return self._used.value

    @property
    def peaks(self) -> list[int]:
        """The most each worker held at once."""
        return list(self._peak)


@dataclass
class Crash:
    """A worker died: the input it was on (None: between inputs), the rest of its chunk, and why."""

    worker: int
    on: unit.Item | None
    rest: list[unit.Item]
    cause: str
    limit: bool = False                # it could not start (the limit on processes): no input's fault


class WorkerPool:
    def __init__(self, count: int, work: unit.Work, backend: BackendChoice, fork_guard: Sequence = (),
                 device_failures: int = 3) -> None:
        self.count, self.work, self.backend = count, work, backend
        self.device_failures = device_failures
        self._lost = _fork.RawValue(ctypes.c_int, 0)
        self._opencv_threads: int | None = None          # this process's setting, restored by close()
        self.budget = SharedBudget(work.memory, count)
        self._at = _fork.RawArray(ctypes.c_int, [-1] * count)            # the input it is on, in its chunk
        self._beat = _fork.RawArray(ctypes.c_double, count)
        self._stop = _fork.RawValue(ctypes.c_int, unit.GO)
        self._fork_guard = fork_guard
        self._processes: list = [None] * count
        self._conns: list = [None] * count
        # worker -> the chunks sent to it and not yet handed back, in order: the first is the one it
        # works on (or will start), the others are queued (QUEUED_CHUNKS).
        self.busy: dict[int, collections.deque[list[unit.Item]]] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        # Workers run side by side, so OpenCV's own thread pool in each would only contend. Where
        # this process has OpenCV loaded, the pool is set here, before forking (a forked child that
        # changes it hangs if this process had used the pool), and restored by close(). Otherwise
        # each worker loads OpenCV itself if its ops need it, with one thread (_serve): a run that
        # needs none (a thumbnail) never pays its 35 ms import.
        opencv = sys.modules.get("cv2")
        if opencv is not None:
            self._opencv_threads = opencv.getNumThreads()
            if self.count > 1 and self._opencv_threads != 1:
                opencv.setNumThreads(1)
        _load(WORKER_MODULES + self.backend.modules)
        for worker in range(self.count):
            self._fork_worker(worker)

    def _fork_worker(self, worker: int) -> None:
        ours, theirs = _fork.Pipe()
        process = _fork.Process(target=_serve, args=(self, worker, theirs), name=f"gpupipe-worker-{worker}",
                                daemon=True)
        with contextlib.ExitStack() as held:
            for lock in self._fork_guard:        # no thread of ours may hold them across the fork
                held.enter_context(lock)
            # The worker's collector leaves every object it inherits alone (they stay frozen there):
            # its collections would otherwise walk them all and copy every page they touch (a third
            # of a tiny-file run's page faults). This process collects them again at once.
            gc.freeze()
            try:
                process.start()
            finally:
                gc.unfreeze()
        theirs.close()
        self._processes[worker], self._conns[worker] = process, ours
        self._at[worker] = -1
        log.debug("worker %d: process %d", worker, process.pid)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p is not None]

    def idle(self) -> list[int]:
        """The workers with no chunk."""
        return [w for w in range(self.count) if w not in self.busy]

    def queueable(self) -> list[int]:
        """The workers that work on a chunk and may be sent another to start next."""
        return [w for w, chunks in self.busy.items() if len(chunks) <= QUEUED_CHUNKS]

    def working(self) -> int:
        """Inputs sent to the workers and not yet handed back."""
        return sum(len(chunk) for chunks in list(self.busy.values()) for chunk in chunks)

    def send(self, worker: int, chunk: list[unit.Item]) -> None:
        chunks = self.busy.setdefault(worker, collections.deque())
        if not chunks:                     # the stall watchdog's clock starts with its first chunk
            self._beat[worker] = time.perf_counter()
        chunks.append(chunk)
        try:
            self._conns[worker].send(chunk)
        except OSError:          # it died idle: wait() reports it, and its chunk goes to another
            pass

    def stop(self) -> None:
        """Drain: each worker cancels what is left of its chunk."""
        self._stop.value = unit.STOP

    def wait(self, timeout: float, wake=None) -> list[tuple[int, unit.ChunkDone] | Crash]:
        """The chunks finished and the workers that died, within ``timeout`` seconds, or as soon as
        ``wake`` (anything with a fileno) is readable."""
        waiting = {}
        for worker in self.busy:
            waiting[self._conns[worker]] = worker
            waiting[self._processes[worker].sentinel] = worker
        events: list = []
        seen = set()
        for ready in multiprocessing.connection.wait([*waiting, *([wake] if wake is not None else [])], timeout):
            if ready is wake:
                continue
            worker = waiting[ready]
            if worker in seen:
                continue
            seen.add(worker)
            try:
                done = self._conns[worker].recv()
            except (EOFError, OSError):
                events.append(self._crashed(worker))
                continue
            chunks = self.busy[worker]
            chunks.popleft()
            if not chunks:
                del self.busy[worker]
            events.append((worker, done))
        return events

    def _on(self, worker: int) -> unit.Item | None:
        """The input a busy worker is on (None: between inputs, or placing its chunk's files), in
        the first chunk it holds: asked of a worker that died, once its pipe was read to the end, or
        of one stuck for seconds, so every chunk it finished before has been handed back."""
        chunk, index = self.busy[worker][0], self._at[worker]
        return chunk[index] if 0 <= index < len(chunk) else None

    def _crashed(self, worker: int) -> Crash:
        process = self._processes[worker]
        process.join(5)
        on = self._on(worker)
        rest = [item for chunk in self.busy.pop(worker) for item in chunk if item is not on]
        self.budget.reclaim(worker)
        cause, limit = _death(process.exitcode), process.exitcode == NO_THREAD
        self._conns[worker].close()
        if self._stop.value == unit.GO and not limit:
            self._fork_worker(worker)
        return Crash(worker, on, rest, cause, limit)

    def stuck(self, timeout: float) -> list[tuple[int, unit.Item | None, float]]:
        """Busy workers on one input (or one chunk's files) for longer than ``timeout``."""
        now = time.perf_counter()
        found = []
        for worker in self.busy:
            idle = now - self._beat[worker]
            if idle >= timeout:
                found.append((worker, self._on(worker), idle))
        return found

    def close(self, abort: bool = False) -> None:
        """Stop every worker: once idle (they are told), or at once (``abort``: each removes its
        temporaries first). Workers still running after that are killed."""
        for worker, process in enumerate(self._processes):
            if process is None or not process.is_alive():
                continue
            try:
                if abort:
                    os.kill(process.pid, ABORT)
                elif worker not in self.busy:
                    self._conns[worker].send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for process in self._processes:
            if process is not None:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    # A read stuck in a dead mount may outlast even SIGKILL: left to the kernel.
                    process.join(5)
                    if process.is_alive():
                        log.warning("worker process %d does not end (stuck in the kernel?): left behind",
                                    process.pid)
        for conn in self._conns:
            if conn is not None:
                conn.close()
        opencv = sys.modules.get("cv2")
        if self._opencv_threads is not None and opencv.getNumThreads() != self._opencv_threads:
            opencv.setNumThreads(self._opencv_threads)


class InProcessPool:
    """WorkerPool's interface with one worker: a thread of this process. For a GPU that this
    process opened before the run (``BackendChoice.in_process``), which no forked worker could
    use. It has no crash isolation: a crash in a codec or the driver ends the run."""

    count = 1
    pids: list[int] = []

    def __init__(self, work: unit.Work, backend: BackendChoice, device_failures: int = 3) -> None:
        self.work = work
        self.budget = unit.Budget(work.memory)
        self.busy: dict[int, list[unit.Item]] = {}
        from .device import Device
        self._device = Device(backend.make, failures_allowed=device_failures)
        self._trie = OpTrie.build(work.spec.variants)
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = unit.GO
        self._at, self._beat = -1, 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        pass

    def idle(self) -> list[int]:
        return [] if self.busy else [0]

    def queueable(self) -> list[int]:
        return []                          # its one thread takes a chunk at a time

    def working(self) -> int:
        return sum(map(len, list(self.busy.values())))

    def send(self, worker: int, chunk: list[unit.Item]) -> None:
        self.busy[0] = chunk
        self._on(-1)
        self._thread = threading.Thread(target=self._work, args=(chunk,), name="gpupipe-worker-0", daemon=True)
        self._thread.start()

    def _on(self, index: int) -> None:
        self._at, self._beat = index, time.perf_counter()

    def _work(self, chunk: list[unit.Item]) -> None:
        self._done.put(unit.run_chunk_safely(chunk, self.work, self._device, self._trie, self.budget, at=self._on,
                                             stop=lambda: self._stop, worker="gpupipe-worker-0"))

    def stop(self) -> None:
        self._stop = unit.STOP

    def wait(self, timeout: float, wake=None) -> list[tuple[int, unit.ChunkDone] | Crash]:
        try:
            done = self._done.get(timeout=timeout)
        except queue.Empty:
            return []
        del self.busy[0]
        return [(0, done)]

    def stuck(self, timeout: float) -> list[tuple[int, unit.Item | None, float]]:
        idle = time.perf_counter() - self._beat
        if not self.busy or idle < timeout:
            return []
        chunk = self.busy[0]
        return [(0, chunk[self._at] if 0 <= self._at < len(chunk) else None, idle)]

    def close(self, abort: bool = False) -> None:
        self._stop = unit.STOP
        if self._thread is not None:
            self._thread.join(None if not abort else 5)
        self._device.close()


def _death(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + ("; out of memory?" if -code == signal.SIGKILL else "")
    if code == NO_THREAD:
        return "it could not start a thread: the limit on processes is reached"
    return f"exit status {code}"


# ---------------------------------------------------------------------- in the worker

def _serve(pool: WorkerPool, worker: int, conn) -> None:
    """A worker's life: chunks in, ChunkDone out, until told to stop or the engine is gone."""
    for lock in pool._fork_guard:          # held by the thread that forked us, for the fork alone
        lock.release()
    close_parent_only_fds()
    # Ctrl+C reaches the whole process group, and systemd's stop the whole cgroup: the engine
    # decides what they mean (drain, then abort), not us. It aborts us with ABORT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(ABORT, _abort)
    _die_with_parent()
    if pool.count > 1:                     # read by OpenCV when it loads here (start() set it if it was loaded)
        os.environ["OPENCV_FOR_THREADS_NUM"] = "1"
    # A worker's freed heap is kept up to its share of the memory budget before it goes back to
    # the kernel: at 64 MB, W2 on 12 MP photos page-faulted 940 000 times a run and spent 2.2 s
    # in the kernel (45 000 and 0.15 s at its share, 205 MB; 15 % faster). All workers together
    # then keep at most the budget, which they may hold anyway.
    tune_allocator(trim_threshold=max(TRIM_AT_LEAST, pool.work.memory // pool.count))
    pool.budget.worker = worker
    work = pool.work
    from .device import Device                # loaded before the fork (_load): found at once
    device = Device(pool.backend.make, failures_allowed=pool.device_failures, lost=pool._lost)
    trie = OpTrie.build(work.spec.variants)
    at, beat, stop = pool._at, pool._beat, pool._stop
    name = f"gpupipe-worker-{worker}"

    def on(index: int) -> None:
        at[worker] = index
        beat[worker] = time.perf_counter()

    # Chunks are taken off the pipe as they come, so that the engine never waits to send one (a
    # queued chunk, QUEUED_CHUNKS) while this worker works on another.
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                chunk = conn.recv()
            except (EOFError, OSError):    # the engine is gone
                chunk = None
            inbox.put(chunk)
            if chunk is None:
                return

    try:
        threading.Thread(target=receive, name=f"{name}-inbox", daemon=True).start()
    except RuntimeError:                   # "can't start new thread"
        os._exit(NO_THREAD)
    while True:
        chunk = inbox.get()
        if chunk is None:
            return
        done = unit.run_chunk_safely(chunk, work, device, trie, pool.budget, at=on, stop=lambda: stop.value,
                                     worker=name)
        at[worker] = -1
        try:
            conn.send(done)
        except OSError:                    # the engine is gone
            return
        del chunk, done


def _load(modules: Sequence[str]) -> None:
    """Import ``modules`` here, to be inherited by the workers forked next; the collector held
    back while they are made (gc.freeze in _fork_worker then keeps the workers' walks off them),
    as __main__ holds it back for the command line's own imports."""
    missing = [name for name in modules if name not in sys.modules]
    if not missing:
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in missing:
            importlib.import_module(name)
    finally:
        if was_enabled:
            gc.enable()


def _abort(signum, frame) -> None:
    """The engine aborts (a second Ctrl+C): no temporary of ours may stay behind."""
    remove_live_temporaries()
    os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the engine's process dies (SIGKILL, a crash)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:                  # it died before prctl took effect
        os._exit(1)
