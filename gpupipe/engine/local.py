"""The local streaming engine: threads and bounded queues on one machine.

    scan ─▶ readers ─▶ [bytes] ─▶ decoders ─▶ [pixels] ─▶ processors ─▶ [pixels] ─▶ encoders ─▶ [bytes] ─▶ writers
                                                    (backend batches)

The GPU backend runs here, and the CPU backend with ``--parallel threads`` (by default it
runs in worker processes: processes.py). On the CPU, which takes one image at a time,
decode, process and encode run in one "compute" thread per worker: readers ─▶ [bytes] ─▶
compute ─▶ [bytes] ─▶ writers.

Each arrow is a ``CostBoundedQueue`` (bounded in bytes and in items), so a
fast stage waits for a slow one; on top, a ``MemoryBudget`` caps the bytes of
decoded images held anywhere in the pipeline, so memory never grows with the
number or size of the inputs. Readers and writers are I/O threads (a slow disk,
a network mount or fsync overlaps with compute); decoders, processors and
encoders are worker threads — the heavy calls (libjpeg-turbo, Pillow, OpenCV)
release the GIL. The processors drive the backend in batches,
``backend.concurrency`` at a time, so a GPU backend drops in without changing
anything here. The main thread only collects outcomes, reports progress and
reacts to Ctrl+C.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Sequence

import numpy as np

from .. import codecs, sources
from ..backends.base import Backend
from ..codecs import DeferredJpeg
from ..errors import DeviceFailure, ImageTooLarge, InputError, StoppedBySystemFailure, SystemFailure
from ..spec import Spec
from . import stages
from .cancel import CancelToken
from .driver import Driver
from .idle import IdleMeter
from .options import (DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, ORDERS, RunOptions,  # noqa: F401  (re-exported)
                      usable_cores)
from .process import device_jpeg_plan, process_batch, process_fitting
from .queues import Closed, CostBoundedQueue, MemoryBudget
from .tuning import tune_allocator
from .results import CANCELLED, FileOutcome, RunResult
from .writer import FolderSync, allow_writes

log = logging.getLogger("gpupipe")

WORKER_CRASHES_IN_A_ROW = 8          # then the run stops (SystemFailure) instead of failing every input
# The host's share of a busy device's JPEG encodes (_formats_for_device): the step per batch, and
# the fraction of their time the encode threads may sit idle before they are given more.
HOST_ENCODE_STEP = 0.25
SPARE_TARGET = 0.2


@dataclass
class Job:
    """One input on its way through the stages."""

    source: sources.SourceFile
    outcome: FileOutcome
    planned: list[PurePath]                     # output path per variant, claimed at scan time
    data: bytes | None = None
    decoded: codecs.Decoded | None = None
    results: list | None = None                 # per variant: array or InputError
    reserved: int = 0                           # bytes of the memory budget this job holds
    encoded: list = field(default_factory=list)  # (output path, file bytes) ready to write
    errors: list = field(default_factory=list)   # InputErrors of variants that could not be made

    activity: list = field(default_factory=lambda: [0.0])   # shared with the engine: last progress, any stage

    def timed(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.record(stage, since, now, threading.current_thread().name)
        return now

    def record(self, stage: str, start: float, end: float, worker: str) -> None:
        """A stage's span (perf_counter seconds, one clock for every process) and its progress."""
        self.activity[0] = max(self.activity[0], end)
        self.outcome.seconds[stage] = round(end - start, 6)
        self.outcome.spans.append((stage, start, end, worker))


class LocalEngine(Driver):
    def __init__(self, spec: Spec, backend: Backend, options: RunOptions | None = None,
                 cancel: CancelToken | None = None) -> None:
        options = options or RunOptions()
        super().__init__(spec, backend.describe(), options, cancel)
        self.backend = backend
        self._activity = [time.perf_counter()]  # when any stage last finished a step (see Job.timed)
        # thread ident -> the jobs it took and has not yet handed on or finished: the watchdog
        # fails these, wherever their thread waits.
        self._held: dict[int, list[Job]] = {}
        self._stalled = False
        self._stuck_threads: set[int | None] = set()   # idents of the threads a stall left holding jobs
        self._queues: tuple[CostBoundedQueue, ...] = ()     # set when the run starts
        self._device_lock = threading.Lock()
        self._device_failures = 0               # consecutive failed batches on the device
        self._cpu_backend: Backend | None = None
        self._threads: list[threading.Thread] = []
        # --gpu-decode / --gpu-encode: the inputs whose JPEG the device decoded (or encoded) and
        # those the host took because the device had a backlog; for benchmarks and the log.
        self.jpeg_decodes = {"device": 0, "host (device busy)": 0}
        self.jpeg_encodes = {"device": 0, "host (device busy)": 0}
        self._tally_lock = threading.Lock()    # the counts above, the stages' CPU, the encode share
        self._encoders = IdleMeter(1)           # the encode threads' waits (set when the run starts)
        self._host_encode_share = 0.0           # of a batch's JPEG results, while the device has a backlog

    # ------------------------------------------------------------------ driver

    def run(self, inputs: Sequence[str | Path], output: str | Path) -> RunResult:
        opts = self.options
        collect_cpu = time.thread_time()
        tune_allocator()
        allow_writes()
        self.output = Path(os.path.abspath(output))     # as the journal records outputs, whatever the cwd
        self._plan_writes(inputs, self.output)
        if opts.fsync:
            self.folder_sync = FolderSync()
            if opts.journal is not None:
                opts.journal.before_commit = self.folder_sync.sync
        # Inputs in flight reserve what they will need at their peak (decoded pixels, op results
        # and temporaries, encoder copies: stages.memory_need) from 80 % of the budget wherever
        # they are; compressed bytes waiting to decode, and encoded ones waiting to be written,
        # get a tenth each. One input that needs more than the whole budget fails (too_large).
        budget = self._budget = max(opts.max_memory, 16 * 2**20)
        workers = max(1, opts.workers)
        readers = opts.readers or max(2, workers)      # I/O threads, for reads and for writes
        depth = 4 * workers           # items a stage may run ahead of the next
        self.images = MemoryBudget(budget * 0.8, self.cancel)
        self.scan_q: CostBoundedQueue[Job] = CostBoundedQueue(4096, self.cancel, "scan")
        self.read_q: CostBoundedQueue[Job] = CostBoundedQueue(budget * 0.10, self.cancel, "read", depth)
        self.decoded_q: CostBoundedQueue[Job] = CostBoundedQueue(budget, self.cancel, "decoded",
                                                                 max(depth, 2 * self.backend.max_batch_images))
        self.processed_q: CostBoundedQueue[Job] = CostBoundedQueue(budget, self.cancel, "processed", depth)
        self.encoded_q: CostBoundedQueue[Job] = CostBoundedQueue(budget * 0.10, self.cancel, "encoded", 4 * readers)
        self._queues = (self.scan_q, self.read_q, self.decoded_q, self.processed_q, self.encoded_q)
        if self.backend.name == "cpu":         # no batches to gather: one thread takes an image through
            compute = [("compute", workers, self._compute_loop, self.encoded_q)]
        else:
            self._encoders = IdleMeter(workers)
            compute = [("decode", workers, self._decode_loop, self.decoded_q),
                       ("process", self.backend.concurrency, self._process_loop, self.processed_q),
                       ("encode", workers, self._encode_loop, self.encoded_q)]
        stages_ = [           # name, threads, loop, the queue it feeds (each loop knows what it reads)
            ("scan", 1, lambda: self._scan(inputs, self.output), self.scan_q),
            ("read", readers, self._read_loop, self.read_q),
            *compute,
            ("write", readers, self._write_loop, None),
        ]
        for name, count, target, out_q in stages_:
            self._start_threads(name, count, target, out_q)
        outcomes: list[FileOutcome] = []
        try:
            self._interruptible(lambda: self._collect(outcomes))
        finally:
            if self._cpu_backend is not None:
                self._cpu_backend.close()
            if not self._aborted:
                for q in self._queues:
                    for job in q.drain():
                        self._cancel_job(job)
                self._drain_done(outcomes)
                self._finish_unfinished(outcomes, stalled=self._stalled)
                self._close_summary()
            for job, counts in (("decode", self.jpeg_decodes), ("encode", self.jpeg_encodes)):
                if any(counts.values()):
                    log.info("JPEG %s: %d on the device, %d on the host while the device was busy", job,
                             *counts.values())
        self.summary.cpu_seconds_by_stage["collect"] = time.thread_time() - collect_cpu
        return RunResult(self.summary, outcomes)

    def _start_threads(self, name: str, count: int, target: Callable[[], None],
                       out_q: CostBoundedQueue | None) -> None:
        if out_q is not None:
            out_q.add_producer(count)           # before any starts: the queue must not close early
        first = sum(t.name.startswith(f"gpupipe-{name}-") for t in self._threads)
        for i in range(first, first + count):
            thread = threading.Thread(target=self._stage, args=(name, target, out_q), name=f"gpupipe-{name}-{i}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stage_state(self) -> dict[str, Any]:
        """A live snapshot for metrics and stall reports: each queue's depth and bytes,
        the decoded-image bytes held anywhere, and how many inputs are in flight."""
        summary = self.summary
        return {
            "queues": {q.name: {"items": q.depth, "bytes": q.used} for q in self._queues},
            "images_bytes": self.images.used if self._queues else 0,
            "in_flight": max(0, summary.discovered + summary.scan_skipped - summary.done),
        }

    def _stage(self, name: str, target: Callable[[], None], out_q: CostBoundedQueue | None) -> None:
        try:
            target()
        except Closed:
            pass
        except SystemFailure as exc:
            self._trip(str(exc))
        except Exception as exc:
            # A bug in a stage must stop the run loudly, never hang it or drop inputs silently.
            log.exception("internal error in %s", threading.current_thread().name)
            self._trip(f"internal error in {threading.current_thread().name}: {exc.__class__.__name__}: {exc}")
        finally:
            if out_q is not None:
                out_q.producer_done()
            with self._tally_lock:            # each thread's own CPU, added as it ends
                cpu = self.summary.cpu_seconds_by_stage
                cpu[name] = cpu.get(name, 0.0) + time.thread_time()

    def _collect(self, outcomes: list[FileOutcome]) -> None:
        self._last_progress = 0.0
        while not self._stalled and any(t.is_alive() for t in self._threads):
            try:
                outcome = self._done.get(timeout=0.05)
            except queue.Empty:
                self._progress()
                self._watch(outcomes)
                continue
            self._activity[0] = time.perf_counter()
            self._finish(outcome, outcomes)
        if self._stalled:
            # The threads that held nothing only waited for work: they wake up to the closed
            # queues and end. Those that held jobs (already failed) may never come back.
            for thread in self._threads:
                if thread.ident not in self._stuck_threads:
                    thread.join(timeout=5)
        self._drain_done(outcomes)

    def _take(self, taken):
        """This thread now holds ``taken`` (a job or a batch) until it hands each on or finishes it."""
        self._held[threading.get_ident()] = list(taken) if isinstance(taken, list) else [taken]
        return taken

    def _let_go(self, job: Job) -> None:
        """This thread no longer holds ``job``: it is in a queue, or its outcome is on its way."""
        held = self._held.get(threading.get_ident(), [])
        if job in held:
            held.remove(job)

    def _held_jobs(self) -> dict[int, list[Job]]:
        """A snapshot: each thread's held jobs."""
        return {ident: list(jobs) for ident, jobs in list(self._held.items()) if jobs}

    def _watch(self, outcomes: list[FileOutcome]) -> None:
        """Stall watchdog: work in flight and no stage progressing for stall_timeout → report and stop.

        A hung read (a dead network mount) or a deadlock must not hang the run forever. The
        report names every queue's depth and each busy thread's input and stack; the inputs
        stuck in busy threads fail as "stalled", everything else is accounted as usual.
        """
        idle = time.perf_counter() - self._activity[0]
        pending = self.summary.discovered - self.summary.done + self.summary.scan_skipped
        if idle < self.options.stall_timeout or pending <= 0 or self.cancel.cancelled:
            return
        self._drain_done(outcomes)              # outcomes already on their way are not stuck
        frames = sys._current_frames()
        held = self._held_jobs()
        lines, stuck = [], []
        for thread in self._threads:
            frame = frames.get(thread.ident) if thread.is_alive() else None
            if frame is None:
                continue
            jobs = [job for job in held.get(thread.ident, []) if id(job.outcome) in self._outstanding]
            if not jobs:
                lines.append(f"  {thread.name}: waiting for work")
                continue
            stuck.extend(jobs)
            self._stuck_threads.add(thread.ident)
            lines.append(f"  {thread.name}: HOLDS {', '.join(str(j.source.path) for j in jobs)}")
            lines.extend("      " + line.rstrip() for line in traceback.format_list(traceback.extract_stack(frame)[-6:]))
        depths = ", ".join(f"{q.name} {q.depth}" for q in self._queues)
        report = (f"stalled: no stage made progress for {idle:.0f} s with {pending} input(s) in flight "
                  f"(--stall-timeout {self.options.stall_timeout:g}); queues: {depths}")
        log.error("%s\n%s", report, "\n".join(lines))
        self._stalled = True
        self._trip(report + (f"; stuck on {', '.join(str(j.source.path) for j in stuck)}" if stuck else ""))
        for job in stuck:                      # their threads may never come back: account for them now
            self._finish_stalled(job.outcome, f"held for {idle:.0f} s by a thread that never handed it on",
                                 outcomes)

    def _forward(self, q: CostBoundedQueue, job: Job, cost: int) -> None:
        """Hand a job to the next stage; if the run is cancelled meanwhile, account for it."""
        # Handed on from here: the queue's put returns once the run stops (Closed), so a thread
        # waiting for room never holds a job the watchdog must fail.
        self._let_go(job)
        try:
            q.put(job, cost)
        except Closed:
            self._cancel_job(job)
            raise

    def _cancel_job(self, job: Job) -> None:
        """The run stopped before this input was done: free what it holds and say so."""
        self.images.release(job.reserved)
        job.reserved = 0
        job.outcome.status = CANCELLED
        self._let_go(job)
        self._done.put(job.outcome)

    def _fail(self, job: Job, exc: InputError) -> None:
        self.images.release(job.reserved)
        job.reserved = 0
        self._let_go(job)
        self._fail_outcome(job.outcome, exc)

    # ------------------------------------------------------------------ stages

    def _submit(self, source: sources.SourceFile, outcome: FileOutcome, planned: list[PurePath]) -> None:
        self._forward(self.scan_q, Job(source, outcome, planned, activity=self._activity), 1)

    def _read_loop(self) -> None:
        opts = self.options
        while True:
            job = self._take(self.scan_q.get())
            if self._stopping():                   # not started yet: it stays undone
                self._cancel_job(job)
                continue
            started = time.perf_counter()
            try:
                read = stages.read_input_with_retries(
                    job.source.path, retries=opts.retries, retry_delay=opts.retry_delay, wait=self.cancel.wait,
                    on_attempt=lambda n, outcome=job.outcome: setattr(outcome, "attempts", n))
            except InputError as exc:
                if getattr(exc, "fault", None) and self.cancel.cancelled:
                    self._cancel_job(job)          # its retries were cut short by the stop: not its fault
                else:
                    self._fail(job, exc)
                continue
            job.data = read.data
            # The journal records the file as read, which may differ from what the scan saw.
            job.outcome.bytes_in, job.outcome.size, job.outcome.mtime = len(read.data), read.size, read.mtime
            job.timed("read", started)
            self._forward(self.read_q, job, len(job.data))

    def _decode_loop(self) -> None:
        while True:
            job = self._take(self.read_q.get())
            if self._decode(job):
                # Batches are cut by the pixels they will hold on the device: a deferred JPEG
                # reserves only its compressed bytes here, and 64 of those made 2.3 GB batches.
                self._forward(self.decoded_q, job, job.decoded.pixels.nbytes)

    def _batch_cost(self, backend: Backend) -> int:
        """The most a batch holds, in the decoded queue's cost (bytes of decoded pixels)."""
        return backend.max_batch_pixels * 4

    def _device_backlogged(self, backend: Backend) -> bool:
        """Whether a full batch already waits for each of the device's streams: then the device is
        the bottleneck, and JPEG work the host's idle threads take off it is throughput gained.
        The shares settle by themselves where neither side waits; a device that keeps up gets all,
        and so does one whose results wait for the encode threads.
        A --max-memory too small to hold that much waiting never shows a backlog: then the device
        does all of its JPEG work, as without the overflow."""
        waiting = max(self.decoded_q.depth / backend.max_batch_images, self.decoded_q.used / self._batch_cost(backend))
        if waiting < backend.concurrency:
            return False
        # A device that waits to hand its results on is not the bottleneck: the encode threads
        # are (W2's WebP), and a core taken from them for a decode would cost throughput.
        handed_on = self.processed_q
        return handed_on.depth < (handed_on.max_items or 1 << 30) / 2 and handed_on.used < handed_on.capacity / 2

    def _host_takes_decode(self) -> bool:
        """Whether this decode thread decodes a JPEG the device's decoder would take: yes while
        the device has a backlog, and the device then only uploads its pixels. Which JPEGs the
        host takes depends on timing, so with --gpu-decode a JPEG's pixels may be libjpeg-turbo's
        or nvJPEG's (max |Δ| 1-3 levels apart) from one run to the next."""
        return self.options.host_decode_overflow and self._device_backlogged(self.backend)

    def _formats_for_device(self, backend: Backend, jobs: list[Job]) -> list[str | None]:
        """The batch's decoded formats for process_batch, None for the inputs whose JPEG results
        the host encodes instead of the device (``encodes_jpeg``), from the end of the batch.

        The host's share of the JPEGs grows by a step for each batch that finds the device with
        a backlog and the encode threads idle more than SPARE_TARGET of their time since the
        last batch, shrinks by a step when they were busier, and is 0 without a backlog: it
        settles where the encode threads keep a little room. Which files are libjpeg-turbo's
        and which nvJPEG's then depends on timing."""
        formats: list[str | None] = [job.decoded.format for job in jobs]
        if not (backend.encodes_jpeg and self.options.host_encode_overflow):
            return formats
        spare = self._encoders.spare()
        with self._tally_lock:
            if not self._device_backlogged(backend):
                self._host_encode_share = 0.0
                return formats
            step = HOST_ENCODE_STEP if spare > SPARE_TARGET else -HOST_ENCODE_STEP
            share = self._host_encode_share = min(1.0, max(0.0, self._host_encode_share + step))
        writing_jpeg = sorted(set().union(*(images for _, images in device_jpeg_plan(self.spec, formats).values())))
        for position in writing_jpeg[len(writing_jpeg) - round(share * len(writing_jpeg)):]:
            formats[position] = None
        return formats

    def _decode(self, job: Job) -> bool:
        """Decode one input within the memory budget; False if it failed (already accounted)."""
        started = time.perf_counter()
        if not self._reserve_for_decode(job):
            return False
        try:
            job.decoded = stages.decode_input(job.data, self.spec, max_pixels=self.options.max_pixels,
                                              device_jpeg=self.backend.decodes_jpeg)
            deferred = isinstance(job.decoded.pixels, DeferredJpeg)
            overflow = deferred and self._host_takes_decode()
            if overflow:
                job.decoded.pixels = stages.decode_deferred(job.decoded.pixels)
        except InputError as exc:
            self._fail(job, exc)
            return False
        finally:
            job.data = None       # the bytes are no longer needed: free them now
        pixels = job.decoded.pixels
        # Now what the real size will need on the host (a shrink-on-load decode made it smaller):
        # from the pixels, or for a JPEG the device decodes (DeferredJpeg) only its compressed
        # bytes, to the results and their encoding.
        held = len(pixels.data) if isinstance(pixels, DeferredJpeg) else pixels.nbytes
        need = stages.processing_need(self.trie, pixels.shape[1], pixels.shape[0], ops_on_host=self._ops_on_host(),
                                      held=held)
        job.reserved = self.images.resize(job.reserved, need)
        if deferred:
            with self._tally_lock:
                self.jpeg_decodes["host (device busy)" if overflow else "device"] += 1
        job.outcome.format = job.decoded.format
        job.outcome.height, job.outcome.width = pixels.shape[:2]
        job.timed("decode", started)
        return True

    def _process_loop(self) -> None:
        while True:
            backend = self.backend
            jobs = self._take(self.decoded_q.get_batch(backend.max_batch_images, self._batch_cost(backend)))
            self._process(backend, jobs)
            for position, job in enumerate(jobs):
                try:
                    self._forward(self.processed_q, job, job.reserved)
                except Closed:
                    for rest in jobs[position + 1:]:        # the batch's other jobs were not handed on either
                        self._cancel_job(rest)
                    raise

    def _process(self, backend: Backend, jobs: list[Job]) -> None:
        started = time.perf_counter()
        images = [j.decoded.pixels for j in jobs]
        for job in jobs:
            job.decoded.pixels = None        # process_batch owns (and frees) them now
        formats = self._formats_for_device(backend, jobs)
        results = self._process_on_device(backend, images, formats)
        if backend.encodes_jpeg:
            with self._tally_lock:
                for fmt, row in zip(formats, results):
                    if fmt is None:
                        self.jpeg_encodes["host (device busy)"] += 1
                    elif any(isinstance(r, codecs.EncodedImage) for r in row):
                        self.jpeg_encodes["device"] += 1
        for job, row in zip(jobs, results):
            job.results = row
            job.timed("process", started)
            cost = sum({id(r): r.nbytes for r in row if isinstance(r, (np.ndarray, codecs.EncodedImage))}.values())
            job.reserved = self.images.resize(job.reserved, cost + stages.encoding_need(row))

    def _compute_loop(self) -> None:
        """The CPU backend's stage: decode, process and encode one input in one thread. With no
        batches to gather, handing each image between three threads only cost GIL switches and
        queue work (12 % of W1's throughput on small images, measured against this loop)."""
        while True:
            job = self._take(self.read_q.get())
            if self._decode(job):
                self._process(self.backend, [job])
                if self._encode(job):
                    self._forward(self.encoded_q, job, sum(len(data) for _, data in job.encoded))

    def _reserve_for_decode(self, job: Job) -> bool:
        """Reserve, before decoding, the most this input will need at once (from its header: the
        decode, then its ops and encoders: stages.memory_need), so no thread or worker process
        holds memory the budget doesn't know of. False, the input failed as too_large, when
        that is more than the whole --max-memory."""
        need = stages.memory_need(job.data, self.spec, self.trie, ops_on_host=self._ops_on_host())
        if need.peak > self._budget:
            self._fail(job, ImageTooLarge(f"needs {need.describe()}, more than --max-memory "
                                          f"{self._budget / 2**20:,.0f} MB allows"))
            job.data = None
            return False
        try:
            job.reserved = self.images.acquire(need.peak)
        except Closed:
            self._cancel_job(job)
            raise
        return True

    def _ops_on_host(self) -> bool:
        """Whether the ops' results and temporaries take host memory: on the CPU backend."""
        return self.backend.name == "cpu"

    def _keep_outputs(self, job: Job, encoded: stages.Encoded) -> bool:
        """Take the encoded files whose paths this input may write (renamed ones claimed now);
        False, and the input failed, when none is left."""
        encoded = stages.claim_renamed(encoded, job.planned,
                                       lambda path, owner=str(job.source.path): self.claims.claim(path, owner))
        job.encoded, job.errors = encoded.files, encoded.errors
        if not job.encoded:
            self._fail(job, job.errors[0])
            return False
        return True

    def _process_on_device(self, backend: Backend, images: list[np.ndarray], formats: list[str]) -> list[list]:
        """process_batch (``formats``: the inputs' decoded formats, for a backend that encodes
        JPEG), and when the device itself fails (DeviceFailure: a lost GPU, not an image's fault)
        retry the batch; after ``device_failures`` failures in a row, hand the run over to the
        CPU backend, saying so, and finish this batch there. A batch too big for the device
        memory is halved; an image too big alone is done on the CPU. No input is lost: the host
        images are kept until the batch is done."""
        if backend.name == "cpu":
            return process_batch(backend, images, self.spec, self.trie, formats)
        while True:
            try:
                results = process_fitting(backend, images, self.spec, self.trie, self._cpu_for_big_images(), formats)
                with self._device_lock:
                    self._device_failures = 0
                return results
            except DeviceFailure as exc:        # process_fitting kept the host images: retry them
                backend = self._device_failed(backend, exc)

    def _cpu_for_big_images(self) -> Backend:
        """A one-thread CPU backend for the rare image too big for the GPU memory alone."""
        with self._device_lock:
            if self._cpu_backend is None:
                from ..backends import select_backend
                self._cpu_backend = select_backend("cpu", workers=1)
            return self._cpu_backend

    def _device_failed(self, backend: Backend, exc: DeviceFailure) -> Backend:
        with self._device_lock:
            if self.backend is not backend:             # another thread handed over already
                return self.backend
            self._device_failures += 1
            if self._device_failures < self.options.device_failures:
                log.warning("device error on %s, retrying the batch: %s", backend.describe(), exc)
                return backend
            from ..backends import select_backend
            fallback = select_backend("cpu", workers=self.options.workers)
            message = (f"{backend.describe()} failed {self._device_failures} times in a row ({exc}); "
                       f"the run continues on {fallback.describe()}")
            log.warning("%s", message)
            self.summary.notes.append(message)
            self.summary.backend = fallback.describe()
            self.backend = fallback
        try:
            backend.close()
        except Exception:                               # a dead device may fail to release: nothing to save
            pass
        if fallback.concurrency > backend.concurrency:  # the CPU wants more threads than the GPU's streams
            self._start_threads("process", fallback.concurrency - backend.concurrency, self._process_loop,
                                self.processed_q)
        return fallback

    def _encode_loop(self) -> None:
        while True:
            with self._encoders.waiting():
                taken = self.processed_q.get()
            job = self._take(taken)
            if self._encode(job):
                self._forward(self.encoded_q, job, sum(len(data) for _, data in job.encoded))

    def _encode(self, job: Job) -> bool:
        """Encode every variant and free the pixels; False if no output could be made."""
        started = time.perf_counter()
        try:
            encoded = stages.encode_variants(self.spec, job.results, job.source.relative, job.decoded.format,
                                             job.decoded.icc_profile)
        finally:
            job.results = None                       # pixels are done with: free their budget
            self.images.release(job.reserved)
            job.reserved = 0
        job.timed("encode", started)
        return self._keep_outputs(job, encoded)

    def _write_loop(self) -> None:
        while True:
            job = self._take(self.encoded_q.get())
            started = time.perf_counter()
            try:
                written = stages.write_outputs(
                    self.output, job.encoded, fsync=self.options.fsync, policy=self.write_policy,
                    folder_sync=self.folder_sync,
                    replaceable=self._recorded_outputs(), wait=self.cancel.wait)
            except SystemFailure as exc:            # the output side is broken: record, then stop the run
                self._fail(job, StoppedBySystemFailure(str(exc)))
                raise
            finally:
                job.encoded = []
            outcome = job.outcome
            outcome.outputs, outcome.output_sizes, outcome.output_checksums = (
                written.outputs, written.sizes, written.checksums)
            outcome.bytes_out = sum(written.sizes)
            if written.error is not None:
                job.errors.insert(0, written.error)
            job.timed("write", started)
            if job.errors:
                self._fail(job, job.errors[0])
            else:
                self._let_go(job)
                self._done.put(job.outcome)
