"""The local engine: chunks of inputs to worker processes, on the CPU or a GPU.

    scan thread ─▶ admitted inputs ─▶ chunks ─▶ worker processes (unit.run_chunk) ─▶ outcomes
                   (claims, journal: a group per query)                (a chunk per message; journal: a chunk per transaction)

The run's own process only coordinates, a chunk at a time: its per-input work is the
scan, the admission and the bookkeeping of each outcome (summary, journal row, callbacks).
Everything that costs per file — read, decode, ops, encode, write, fsync — happens in
the workers, each with its own interpreter lock, so throughput grows with the cores. On a
GPU each worker has its own device context and sends its chunk's images to the device in
batches (``device.Device``), so the host work around the device (read, decode, encode,
write) scales with the cores as on the CPU, and no image crosses between processes.

A worker that dies costs the input it was on (``crashed``); the rest of its chunk goes to
the next worker, which is forked anew. ``WORKER_CRASHES_IN_A_ROW`` inputs in a row
crashing stops the run. Ctrl+C drains (each worker finishes the input it is on, cancels
the rest of its chunk, and puts its finished files in place); a second one aborts (each
worker removes its temporaries and exits).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import select
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Container, Sequence

from ..backends import BackendChoice
from ..errors import OutputConflict, StageStalled, SystemFailure
from ..spec import Spec
from . import unit
from .cancel import CancelToken
from .driver import CHUNK_WAIT, Admitted, Driver
from .options import RunOptions
from .pool import Crash, InProcessPool, WorkerPool
from .results import FileOutcome, RunResult, fail
from .writer import _lock as writer_lock, allow_writes

log = logging.getLogger("gpupipe")

# A chunk is one message each way and one journal transaction: its inputs share those costs. 256
# tiny files a chunk ran 5 000 of them in 0.93x the wall time of 64 (median of 15 paired runs).
CHUNK_FILES = 256                # inputs per chunk at most; never more than a worker's share of those admitted
CHUNK_BYTES = 16 * 2**20         # input bytes per chunk: large files make small chunks (balance, redo)
AHEAD_PER_WORKER = 4             # chunks' worth of inputs admitted ahead of the workers, per worker,
AHEAD_MOST = 16384               # up to this many in all (each holds about 0.5 KB until it is finished: its Item)
POLL = 0.05


class ProcessEngine(Driver):
    def __init__(self, spec: Spec, backend: BackendChoice, options: RunOptions | None = None,
                 cancel: CancelToken | None = None) -> None:
        super().__init__(spec, backend.description, options, cancel)
        self.backend = backend
        self._device_memory: dict[int, dict[str, int]] = {}     # worker -> its device memory, last told
        self._admitted = Admitted(CHUNK_FILES, CHUNK_BYTES)
        self._scan_done = threading.Event()
        self._wake = _Waker()                 # set by the scan when it admitted inputs or ended
        self._last_event = time.perf_counter()
        self._stalled = False
        self._scan_stalled = False            # the watchdog found the scan stuck, not a worker
        self.pool: WorkerPool | None = None

    # ------------------------------------------------------------------ the run

    def run(self, inputs: Sequence[str | Path], output: str | Path) -> RunResult:
        opts = self.options
        started_cpu, children_before = time.thread_time(), _children_cpu()
        allow_writes()
        self.output = Path(os.path.abspath(output))     # as the journal records outputs, whatever the cwd
        self._plan_writes(inputs, self.output)
        workers = max(1, opts.workers)
        memory = int(max(opts.max_memory, 16 * 2**20) * 0.8)
        journal = opts.journal
        work = unit.Work(self.spec, self.output, self.write_policy, opts.fsync, opts.max_pixels, memory,
                         journal.recorded_outputs(self.output) if journal is not None else (),
                         stop_at_failure=opts.on_error == "stop", spans=opts.spans,
                         # Counts suffice unless this process must record those inputs in the journal
                         # itself (its worker is a thread of its own: InProcessPool).
                         count_ok=not (opts.outcomes_wanted or (journal is not None and self.backend.in_process)))
        guard = [writer_lock] + ([journal.fork_guard] if journal is not None else [])
        if self.backend.in_process:          # CUDA is open here: no forked worker could use it
            self.pool = pool = InProcessPool(work, self.backend, device_failures=opts.device_failures)
        else:
            # Each worker records the chunks it finishes: the journal costs this process nothing per input.
            if journal is not None:
                work = dataclasses.replace(work, journal=journal.chunk_recorder())
            self.pool = pool = WorkerPool(workers, work, self.backend, fork_guard=guard,
                                          device_failures=opts.device_failures)
        log.info("%s; %.0f MB of decoded images between the workers; chunks of up to %d inputs or %d MB",
                 self.backend.description, memory / 2**20, CHUNK_FILES, CHUNK_BYTES // 2**20)
        try:
            pool.start()                         # forked before this run starts any thread
        except OSError as exc:                   # no processes left (a container's pids limit)
            pool.close(abort=True)
            raise SystemFailure(f"cannot start the worker processes: {exc.strerror or exc}; run with fewer "
                                "--workers, or raise the limit on processes") from None
        scan = threading.Thread(target=self._scan_thread, args=(inputs,), name="gpupipe-scan", daemon=True)
        try:
            scan.start()
        except RuntimeError as exc:              # "can't start new thread": the same limit, met one step later
            pool.close(abort=True)
            raise SystemFailure(f"cannot start the worker processes ({exc}); run with fewer --workers, or raise "
                                "the limit on processes") from None
        outcomes: list[FileOutcome] = []
        try:
            self._interruptible(lambda: self._coordinate(outcomes))
        finally:
            pool.close(abort=self._aborted or self._stalled)
            if not self._aborted:
                scan.join(timeout=5)
                self._drain_done(outcomes)
                # A stuck worker's input failed already, and the rest waited; a stuck scan held its own.
                self._finish_unfinished(outcomes, stalled=self._scan_stalled)
                self._close_summary()
            cpu = self.summary.cpu_seconds_by_stage
            cpu["coordinate"] = time.thread_time() - started_cpu
            cpu["workers"] = _children_cpu() - children_before
            self.summary.memory_budget = memory
            self.summary.memory_peak_by_worker = getattr(pool.budget, "peaks", [])
        return RunResult(self.summary, outcomes)

    def _scan_thread(self, inputs: Sequence[str | Path]) -> None:
        started = time.thread_time()
        try:
            self._scan(inputs, self.output)
        except SystemFailure as exc:
            self._trip(str(exc))
        except Exception as exc:                 # a bug in the scan must stop the run loudly, never hang it
            log.exception("internal error in the scan")
            self._trip(f"internal error in the scan: {exc.__class__.__name__}: {exc}")
        finally:
            self._scan_done.set()
            self._wake.set()
            self.summary.cpu_seconds_by_stage["scan"] = time.thread_time() - started

    def _submit(self, items: list[unit.Item]) -> None:
        """Admitted inputs join the queue for the next chunks (the scan waits while it is full)."""
        self._admitted.add(items, min(AHEAD_PER_WORKER * CHUNK_FILES * self.pool.count, AHEAD_MOST), self._stopping,
                           self._wake.set)

    def _coordinate(self, outcomes: list[FileOutcome]) -> None:
        pool = self.pool
        stopping_told = False
        while True:
            if self._stopping():
                if not stopping_told:
                    pool.stop()
                    stopping_told = True
            else:
                self._dispatch()
            if not pool.busy and (self._stopping() or (self._scan_done.is_set() and not self._admitted.pending())):
                break
            if pool.busy:                        # the workers, or the scan if it admits more
                events = pool.wait(POLL, wake=self._wake)
            else:                                # nothing in flight: wait for the scan alone
                self._wake.wait(POLL if not self._admitted else CHUNK_WAIT)
                events = []
            self._wake.clear()
            if events:
                self._last_event = time.perf_counter()
            for event in events:
                if isinstance(event, Crash):
                    self._crashed(event, outcomes)
                else:
                    self._chunk_done(*event, outcomes)
            self._drain_done(outcomes)
            self._progress()
            self._watch(outcomes)
            if self._stalled:
                return

    def _dispatch(self) -> None:
        """A chunk for each idle worker, as far as there are any; then, while twice the chunks to
        go round are admitted, another for each busy one to start next (pool.QUEUED_CHUNKS). A
        queued chunk cannot go to another worker: near the end of the run, what is left goes to
        whoever is idle first instead, in equal shares, so no worker is left with a chunk queued
        while another has nothing (W2's chunks take seconds each)."""
        pool = self.pool
        for worker in pool.idle():
            if not self._send_next(worker):
                return
        for worker in pool.queueable():
            if (self._admitted.again or len(self._admitted) < 2 * CHUNK_FILES * pool.count
                    or not self._send_next(worker)):
                return

    def _send_next(self, worker: int) -> bool:
        chunk = self._admitted.take(self.pool.count, self._scan_done.is_set())
        if not chunk:
            return False
        log.debug("worker %d takes %d input(s), %s first", worker, len(chunk), chunk[0].path)
        self.pool.send(worker, chunk)
        return True

    # ------------------------------------------------------------------ outcomes

    def _chunk_done(self, worker: int, done: unit.ChunkDone, outcomes: list[FileOutcome]) -> None:
        self._crashes_in_a_row = 0
        log.debug("worker %d finished %d input(s)", worker, len(done.outcomes))
        if done.handover is not None and not self.summary.backend.startswith("cpu"):
            self.summary.notes.append(done.handover)        # the first worker's words: the run is on the CPU now
            self.summary.backend = _on_the_cpu(self.pool.count)
        if done.device_memory is not None:
            self._device_memory[worker] = done.device_memory
        finished = self._take_over_chunk(done.outcomes)
        for unclaimed in done.unclaimed:
            outcome = finished.get(unclaimed.key)
            if outcome is not None:
                self._write_unclaimed(outcome, unclaimed)
        recorded: Container[int] = ()              # the worker recorded these in the journal
        if done.recorded:
            recorded = finished.keys() - done.left_to_driver()
        self._finish_many(list(finished.items()), outcomes, recorded)
        self._finish_counted(done.counted, done.recorded)
        if done.system_failure is not None:
            self._trip(done.system_failure)

    def _write_unclaimed(self, outcome: FileOutcome, unclaimed: unit.Unclaimed) -> None:
        """Outputs whose path the decoded format changed: claimed here, then written (rare)."""
        errors = list(unclaimed.errors)
        granted = []
        for path, data in unclaimed.files:
            other = self.claims.claim(path, outcome.path)
            if other is not None:
                errors.append(OutputConflict(f"output {path} is already written by {other}"))
            else:
                granted.append((path, data))
        failure = unit.write_unclaimed(outcome, granted, errors, self.pool.work)
        if failure is not None:
            self._trip(failure)

    def _crashed(self, crash: Crash, outcomes: list[FileOutcome]) -> None:
        """A worker died: the input it was on fails as crashed, the rest of its chunks is done again.
        One that could not start (the limit on processes) stops the run: its inputs are cancelled."""
        if crash.limit:
            self._trip(f"cannot start the worker processes ({crash.cause}); run with fewer --workers, or raise "
                       "the limit on processes")
            return
        blamed = self._worker_died(crash.on, crash.rest, crash.cause, outcomes)
        log.warning("worker %d died (%s)%s", crash.worker, crash.cause,
                    f" on {blamed.path}" if blamed is not None else "")

    def _watch(self, outcomes: list[FileOutcome]) -> None:
        """Stall watchdog: an input that keeps its worker for --stall-timeout (a hung read), or no
        progress at all with inputs in flight, stops the run, saying where it stuck."""
        timeout = self.options.stall_timeout
        if self.cancel.cancelled:
            return
        stuck = self.pool.stuck(timeout)
        idle = time.perf_counter() - self._last_event
        pending = self.summary.discovered + self.summary.scan_skipped - self.summary.done
        if not stuck and (self.pool.busy or idle < timeout or pending <= 0):
            return
        where = "; ".join(f"worker {w} on {item.path if item else 'its files'} for {seconds:.0f} s"
                          for w, item, seconds in stuck) or "the scan"
        report = (f"stalled: no progress for {timeout:g} s (--stall-timeout) with {pending} input(s) in flight: "
                  f"{where}")
        log.error("%s", report)
        self._stalled, self._scan_stalled = True, not stuck and not self.pool.busy
        self._trip(report)
        for _, item, seconds in stuck:
            outcome = self._outcome(item.key) if item is not None else None
            if outcome is not None:
                failure = StageStalled(f"stalled: held for {seconds:.0f} s by a worker that never finished it")
                fail(outcome, failure)
                self._finish(item.key, outcome, outcomes)

    def device_memory(self) -> dict[str, int] | None:
        """The workers' device memory together, as each last told it (metrics); None on the CPU."""
        told = list(self._device_memory.values())
        if not told:
            return None
        return {"used": sum(m["used"] for m in told), "limit": sum(m["limit"] for m in told)}

    def stage_state(self) -> dict[str, Any]:
        """A live snapshot for metrics: inputs waiting for a chunk, bytes of decoded images held."""
        summary = self.summary
        return {
            "queues": {"admitted": {"items": len(self._admitted), "bytes": 0},
                       "working": {"items": self.pool.working() if self.pool is not None else 0, "bytes": 0}},
            "images_bytes": self.pool.budget.used if self.pool is not None else 0,
            "in_flight": max(0, summary.discovered + summary.scan_skipped - summary.done),
        }


class _Waker:
    """threading.Event's set, clear and wait on a pipe, so that the coordinator's wait for its
    workers (multiprocessing.connection.wait) wakes when the scan admits inputs too: a worker
    with no chunk waited up to POLL (50 ms) for the next ones while another worked."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Closed with the engine, not at the run's end: a scan thread still stuck in a dead mount
        # then may set it later, and must never write into a reused descriptor.
        weakref.finalize(self, _close_both, self._read, self._write)

    def fileno(self) -> int:
        return self._read

    def set(self) -> None:
        try:
            os.write(self._write, b"!")
        except BlockingIOError:             # set many times over already
            pass

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> None:
        select.select([self._read], [], [], timeout)


def _close_both(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _on_the_cpu(workers: int) -> str:
    from ..backends import choose_backend
    return choose_backend("cpu", workers=workers).description


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
