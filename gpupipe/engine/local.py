"""The local streaming engine: threads and bounded queues on one machine.

    scan ─▶ readers ─▶ [bytes] ─▶ decoders ─▶ [pixels] ─▶ processors ─▶ [pixels] ─▶ encoders ─▶ [bytes] ─▶ writers ─▶ done
                                                    (backend batches)

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

import errno
import hashlib
import logging
import os
import queue
import random
import signal
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
from ..errors import (InputError, InternalError, OutputConflict, StageStalled, StoppedBySystemFailure,
                      SystemFailure, UnreadableInput)
from ..ops import Resize
from ..spec import OpTrie, Spec
from .cancel import CancelToken
from .process import process_batch
from .queues import Closed, CostBoundedQueue, MemoryBudget
from .tuning import tune_allocator
from .results import CANCELLED, FAILED, OK, SKIPPED, FileOutcome, RunResult, RunSummary
from .writer import allow_writes, remove_live_temporaries, write_atomic

log = logging.getLogger("gpupipe")
DEFAULT_MAX_MEMORY = 512 * 2**20
DEFAULT_MAX_PIXELS = 178_956_970


def usable_cores() -> int:
    """CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:                      # not on Linux
        return os.cpu_count() or 1


# Read errors worth another try: the device or the network may recover.
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR, errno.ESTALE, errno.ECONNRESET,
                    errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.EREMOTEIO}

ORDER_KEYS: dict[str, Callable[[sources.SourceFile], float]] = {
    "smallest-first": lambda source: source.size,
    "largest-first": lambda source: -source.size,
    "newest-first": lambda source: -source.mtime,
}
ORDERS = ("input", *ORDER_KEYS)


@dataclass
class RunOptions:
    """Everything a run needs besides inputs, output and spec; defaults are the CLI's."""

    workers: int = field(default_factory=lambda: usable_cores())
    readers: int | None = None                 # I/O threads; default 2 × workers, at most 16
    max_memory: int = DEFAULT_MAX_MEMORY
    max_pixels: int = DEFAULT_MAX_PIXELS
    recursive: bool = True
    include_hidden: bool = False
    all_files: bool = False
    on_error: str = "continue"                  # or "stop": the first failure ends the run
    order: str = "input"                        # input | smallest-first | largest-first | newest-first
    fsync: bool = True
    keep_outcomes: bool = True
    on_outcome: Callable[[FileOutcome], None] | None = None
    on_progress: Callable[[RunSummary], None] | None = None
    journal: Any = None                         # a gpupipe.journal.Journal: skip what is done, record outcomes
    stall_timeout: float = 300.0                # no stage progressing this long with work in flight: stop
    retries: int = 3                            # extra attempts after a transient read error
    retry_delay: float = 0.1                    # first backoff, doubled each attempt, with jitter
    progress_interval: float = 0.1


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
        self.activity[0] = now
        self.outcome.seconds[stage] = round(now - since, 6)
        self.outcome.spans.append((stage, since, now, threading.current_thread().name))
        return now


class OutputClaims:
    """Which input writes which output path, so two inputs never silently overwrite each other."""

    def __init__(self) -> None:
        self._owners: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def claim(self, path: PurePath, owner: str) -> str | None:
        """Claim ``path`` for ``owner``; return the other owner if it is taken."""
        key = hashlib.blake2b(os.fsencode(str(path)), digest_size=12).digest()
        with self._lock:
            current = self._owners.setdefault(key, owner)
        return None if current == owner else current


class LocalEngine:
    def __init__(self, spec: Spec, backend: Backend, options: RunOptions | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.spec = spec
        self.trie = OpTrie.build(spec.variants)
        self.backend = backend
        self.options = options or RunOptions()
        self.cancel = cancel or CancelToken()
        self.claims = OutputClaims()
        self.summary = RunSummary(backend=backend.describe())
        self._done: queue.SimpleQueue[FileOutcome] = queue.SimpleQueue()
        self._system_failure: str | None = None
        self._draining = threading.Event()      # first Ctrl+C: finish what was read, read nothing new
        self._activity = [time.perf_counter()]  # when any stage last finished a step (see Job.timed)
        self._taken: dict[int, list[Job]] = {}  # thread ident -> the job(s) it last took (stall reports)
        self._stalled = False

    # ------------------------------------------------------------------ driver

    def run(self, inputs: Sequence[str | Path], output: str | Path) -> RunResult:
        opts = self.options
        tune_allocator()
        allow_writes()
        self.output = Path(output)
        # Images in flight (decoded inputs, then results) share 40 % of the budget wherever
        # they are; compressed bytes waiting to decode get a tenth. The rest is headroom
        # for op temporaries, encoder copies and the interpreter itself.
        budget = max(opts.max_memory, 16 * 2**20)
        workers = max(1, opts.workers)
        readers = opts.readers or max(2, workers)      # I/O threads, for reads and for writes
        depth = 4 * workers           # items a stage may run ahead of the next
        self.images = MemoryBudget(budget * 0.4, self.cancel)
        self.scan_q: CostBoundedQueue[Job] = CostBoundedQueue(4096, self.cancel, "scan")
        self.read_q: CostBoundedQueue[Job] = CostBoundedQueue(budget * 0.10, self.cancel, "read", depth)
        self.decoded_q: CostBoundedQueue[Job] = CostBoundedQueue(budget, self.cancel, "decoded",
                                                                 max(depth, 2 * self.backend.max_batch_images))
        self.processed_q: CostBoundedQueue[Job] = CostBoundedQueue(budget, self.cancel, "processed", depth)
        self.encoded_q: CostBoundedQueue[Job] = CostBoundedQueue(budget * 0.10, self.cancel, "encoded", 4 * readers)
        stages = [            # name, threads, loop, the queue it feeds (each loop knows what it reads)
            ("scan", 1, lambda: self._scan(inputs), self.scan_q),
            ("read", readers, self._read_loop, self.read_q),
            ("decode", workers, self._decode_loop, self.decoded_q),
            ("process", self.backend.concurrency, self._process_loop, self.processed_q),
            ("encode", workers, self._encode_loop, self.encoded_q),
            ("write", readers, self._write_loop, None),
        ]
        threads = []
        for name, count, target, out_q in stages:
            if out_q is not None:
                out_q.add_producer(count)
            for i in range(count):
                thread = threading.Thread(target=self._stage, args=(target, out_q), name=f"gpupipe-{name}-{i}",
                                          daemon=True)
                threads.append(thread)
        outcomes: list[FileOutcome] = []
        for thread in threads:
            thread.start()
        interrupted_twice = False
        previous_handlers = self._catch_signals()
        try:
            while True:
                try:
                    self._collect(threads, outcomes)
                    break
                except KeyboardInterrupt:
                    if self._draining.is_set():          # the second interrupt: abort now
                        interrupted_twice = True
                        remove_live_temporaries()
                        raise
                    self._start_draining()               # raised where no handler could be installed
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            if not interrupted_twice:
                for q in (self.scan_q, self.read_q, self.decoded_q, self.processed_q, self.encoded_q):
                    for job in q.drain():
                        job.outcome.status = CANCELLED
                        self._finish(job.outcome, outcomes)
                self._drain_done(outcomes)
                self.summary.stop_reason = self._system_failure or self.summary.stop_reason or (
                    self.cancel.reason if self.cancel.cancelled else None)
                self.summary.finish()
                self._progress(force=True)
        return RunResult(self.summary, outcomes)

    def _catch_signals(self) -> dict:
        """Ctrl+C and SIGTERM start a drain at a safe point instead of raising mid-bookkeeping
        (an exception there could lose an input's outcome); a second one aborts. Signal
        handlers can only be set from the main thread: elsewhere KeyboardInterrupt is caught."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame) -> None:
            if self._draining.is_set():
                raise KeyboardInterrupt
            self._start_draining()

        return {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}

    def _start_draining(self) -> None:
        """First interrupt: nothing new is read; what was read is finished and written."""
        self.summary.interrupted = True
        self.summary.stop_reason = "interrupted: work in flight was finished, nothing new started"
        self._draining.set()

    def _stage(self, target: Callable[[], None], out_q: CostBoundedQueue | None) -> None:
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

    def _collect(self, threads: list[threading.Thread], outcomes: list[FileOutcome]) -> None:
        self._last_progress = 0.0
        while not self._stalled and any(t.is_alive() for t in threads):
            try:
                outcome = self._done.get(timeout=0.05)
            except queue.Empty:
                self._progress()
                self._watch(threads, outcomes)
                continue
            self._activity[0] = time.perf_counter()
            self._finish(outcome, outcomes)
        self._drain_done(outcomes)

    def _take(self, taken):
        """Remember what this thread is working on, for the stall watchdog's report."""
        self._taken[threading.get_ident()] = taken if isinstance(taken, list) else [taken]
        return taken

    def _watch(self, threads: list[threading.Thread], outcomes: list[FileOutcome]) -> None:
        """Stall watchdog: work in flight and no stage progressing for stall_timeout → report and stop.

        A hung read (a dead network mount) or a deadlock must not hang the run forever. The
        report names every queue's depth and each busy thread's input and stack; the inputs
        stuck in busy threads fail as "stalled", everything else is accounted as usual.
        """
        idle = time.perf_counter() - self._activity[0]
        pending = self.summary.discovered - self.summary.done + self.summary.scan_skipped
        if idle < self.options.stall_timeout or pending <= 0 or self.cancel.cancelled:
            return
        frames = sys._current_frames()
        lines, stuck = [], []
        for thread in threads:
            frame = frames.get(thread.ident) if thread.is_alive() else None
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            waiting = any(f.filename.endswith(("queues.py", "threading.py")) for f in stack[-4:])
            jobs = self._taken.get(thread.ident, [])
            if not waiting:
                stuck.extend(jobs)
            where = ", ".join(str(j.source.path) for j in jobs) or "-"
            lines.append(f"  {thread.name}: {'waiting for work' if waiting else 'BUSY on ' + where}")
            if not waiting:
                lines.extend("      " + line.rstrip() for line in traceback.format_list(stack[-6:]))
        depths = ", ".join(f"{q.name} {q.depth}" for q in (self.scan_q, self.read_q, self.decoded_q,
                                                           self.processed_q, self.encoded_q))
        report = (f"stalled: no stage made progress for {idle:.0f} s with {pending} input(s) in flight "
                  f"(--stall-timeout {self.options.stall_timeout:g}); queues: {depths}")
        log.error("%s\n%s", report, "\n".join(lines))
        self._stalled = True
        self._trip(report + (f"; stuck on {', '.join(str(j.source.path) for j in stuck)}" if stuck else ""))
        for job in stuck:                      # their threads may never come back: account for them now
            failure = StageStalled(f"stalled for {idle:.0f} s in a thread that never returned")
            job.outcome.status = FAILED
            job.outcome.error_class, job.outcome.message = failure.error_class, str(failure)
            self._finish(job.outcome, outcomes)

    def _drain_done(self, outcomes: list[FileOutcome]) -> None:
        while True:
            try:
                self._finish(self._done.get_nowait(), outcomes)
            except queue.Empty:
                return

    def _finish(self, outcome: FileOutcome, outcomes: list[FileOutcome]) -> None:
        self.summary.record(outcome)
        if self.options.journal is not None:
            try:
                self.options.journal.record(outcome)
            except Exception as exc:               # e.g. the disk holding the journal is full
                self.options.journal = None
                self._trip(f"cannot record progress in the journal: {exc}")
        if self.options.keep_outcomes:
            outcomes.append(outcome)
        if self.options.on_outcome:
            self.options.on_outcome(outcome)
        if outcome.status == FAILED and self.options.on_error == "stop":
            self.cancel.cancel(f"stopped at the first failure (--on-error stop): {outcome.path}: {outcome.message}")
        self._progress()

    def _progress(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.options.on_progress and (force or now - self._last_progress >= self.options.progress_interval):
            self._last_progress = now
            self.summary.wall_seconds = now - self.summary._started
            self.options.on_progress(self.summary)

    def _trip(self, message: str) -> None:
        """A system failure: stop the whole run once, with one clear message."""
        if self._system_failure is None:
            self._system_failure = message
            self.cancel.cancel(message)

    def _forward(self, q: CostBoundedQueue, job: Job, cost: int) -> None:
        """Hand a job to the next stage; if the run is cancelled meanwhile, account for it."""
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
        self._done.put(job.outcome)

    def _fail(self, job: Job, exc: InputError) -> None:
        self.images.release(job.reserved)
        job.reserved = 0
        job.outcome.status = FAILED
        job.outcome.error_class = exc.error_class
        job.outcome.message = str(exc)
        self._done.put(job.outcome)

    # ------------------------------------------------------------------ stages

    def _scan(self, inputs: Sequence[str | Path]) -> None:
        opts = self.options
        found = sources.discover(inputs, recursive=opts.recursive, include_hidden=opts.include_hidden,
                                 all_files=opts.all_files, exclude=[self.output])
        if opts.order == "input":
            admit = self._admit            # stream: work starts while the scan goes on
        else:
            pending: list[sources.SourceFile] = []
            admit = pending.append         # any other order needs the whole listing first
        for item in found:
            if self.cancel.cancelled or self._draining.is_set():
                return
            if isinstance(item, sources.SourceFile):
                self.summary.discovered += 1
                admit(item)
            elif isinstance(item, sources.Skipped):
                self.summary.scan_skipped += 1
                self._done.put(FileOutcome(path=str(item.path), status=SKIPPED, message=item.reason))
            else:
                self.summary.scan_problems.append(f"{item.path}: {item.message}")
        self.summary.scan_complete = True
        if opts.order != "input":
            pending.sort(key=ORDER_KEYS[opts.order])      # stable: ties keep the input order
            for source in pending:
                if self.cancel.cancelled or self._draining.is_set():
                    return
                self._admit(source)

    def _admit(self, source: sources.SourceFile) -> None:
        outcome = FileOutcome(path=str(source.path), status=OK, relative=str(source.relative),
                              bytes_in=source.size, queued_at=time.perf_counter(), size=source.size,
                              mtime=source.mtime)
        guess = codecs.format_from_name(source.relative.name)
        planned = [v.output_path(source.relative, guess) for v in self.spec.variants]
        job = Job(source, outcome, planned, activity=self._activity)
        for path in planned:
            other = self.claims.claim(path, str(source.path))
            if other is not None:
                self._fail(job, OutputConflict(f"output {path} is already written by {other}; "
                                               "rename one input or use a name template with {suffix}"))
                return
        if self.options.journal is not None:       # claimed even when skipped: its outputs stay its own
            decision = self.options.journal.decide(str(source.path), source.size, source.mtime)
            if decision.skip:
                outcome.status, outcome.message, outcome.bytes_in = SKIPPED, decision.reason, 0
                self._done.put(outcome)
                return
        self._forward(self.scan_q, job, 1)

    def _read_loop(self) -> None:
        while True:
            job = self._take(self.scan_q.get())
            if self._draining.is_set():            # not started yet: it stays undone
                self._cancel_job(job)
                continue
            started = time.perf_counter()
            try:
                job.data = self._read_with_retries(job)
            except InputError as exc:
                self._fail(job, exc)
                continue
            job.outcome.bytes_in = len(job.data)
            job.timed("read", started)
            self._forward(self.read_q, job, len(job.data))

    def _read_with_retries(self, job: Job) -> bytes:
        """Read an input, retrying transient I/O errors (flaky disks, network mounts) with
        exponential backoff and jitter; permanent ones (missing, a directory) fail at once."""
        opts = self.options
        for attempt in range(1, opts.retries + 2):
            job.outcome.attempts = attempt
            try:
                return sources.read_bytes(job.source.path)
            except UnreadableInput as exc:
                cause = exc.__cause__
                transient = isinstance(cause, OSError) and cause.errno in TRANSIENT_ERRNOS
                if not transient or attempt > opts.retries:
                    if transient:
                        exc.args = (f"{exc} (after {attempt} attempts)",)
                    raise
                delay = min(5.0, opts.retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                if self.cancel.wait(delay):             # the run was stopped while waiting
                    raise
        raise AssertionError("unreachable")

    def _decode_loop(self) -> None:
        spec, max_pixels = self.spec, self.options.max_pixels
        # RGBX-padded decodes only pay off when every chain starts by resampling (the
        # CPU resampler maps them without a copy); filters would copy them instead.
        padded = self.backend.name == "cpu" and all(v.ops and isinstance(v.ops[0], Resize)
                                                    for v in spec.variants)
        while True:
            job = self._take(self.read_q.get())
            started = time.perf_counter()
            try:
                # Reserve memory before decoding (header size, 4 bytes a pixel: the most a
                # decode can need), so decoders never hold images the budget doesn't know of.
                job.reserved = self.images.acquire(min(_decoded_size_bound(job.data), self.images.capacity))
            except Closed:
                self._cancel_job(job)
                raise
            try:
                job.decoded = codecs.decode(job.data, max_pixels=max_pixels, min_size=spec.decode_hint,
                                            padded_rgb=padded)
            except InputError as exc:
                self._fail(job, exc)
                continue
            except Exception as exc:  # a codec bug on one file must not end the run
                self._fail(job, _unexpected(exc))
                continue
            finally:
                job.data = None       # the bytes are no longer needed: free them now
            pixels = job.decoded.pixels
            held = _buffer_bytes(pixels)
            job.reserved = self.images.resize(job.reserved, held)      # now the real size
            job.outcome.format = job.decoded.format
            job.outcome.height, job.outcome.width = pixels.shape[:2]
            job.timed("decode", started)
            self._forward(self.decoded_q, job, held)

    def _process_loop(self) -> None:
        backend = self.backend
        while True:
            jobs = self._take(self.decoded_q.get_batch(backend.max_batch_images, backend.max_batch_pixels * 4))
            started = time.perf_counter()
            images = [j.decoded.pixels for j in jobs]
            for job in jobs:
                job.decoded.pixels = None        # process_batch owns (and frees) them now
            results = process_batch(backend, images, self.spec, self.trie)
            for job, row in zip(jobs, results):
                job.results = row
                job.timed("process", started)
                cost = sum({id(r): r.nbytes for r in row if isinstance(r, np.ndarray)}.values())
                job.reserved = self.images.resize(job.reserved, cost)
            for position, job in enumerate(jobs):
                try:
                    self._forward(self.processed_q, job, job.reserved)
                except Closed:
                    for rest in jobs[position + 1:]:        # the batch's other jobs were not handed on either
                        self._cancel_job(rest)
                    raise

    def _encode_loop(self) -> None:
        while True:
            job = self._take(self.processed_q.get())
            started = time.perf_counter()
            try:
                self._encode(job)
            finally:
                job.results = None                       # pixels are done with: free their budget
                self.images.release(job.reserved)
                job.reserved = 0
            job.timed("encode", started)
            if not job.encoded:
                self._fail(job, job.errors[0])
                continue
            self._forward(self.encoded_q, job, sum(len(data) for _, data in job.encoded))

    def _encode(self, job: Job) -> None:
        for index, (variant, result) in enumerate(zip(self.spec.variants, job.results)):
            if isinstance(result, InputError):
                job.errors.append(self._name_variant(result, variant))
                continue
            path = variant.output_path(job.source.relative, job.decoded.format)
            if path != job.planned[index]:      # the bytes said another format than the extension
                other = self.claims.claim(path, str(job.source.path))
                if other is not None:
                    job.errors.append(OutputConflict(f"output {path} is already written by {other}"))
                    continue
            try:
                data = codecs.encode(result, format=variant.output_format(job.decoded.format),
                                     quality=variant.quality, background=variant.background[:3],
                                     icc_profile=job.decoded.icc_profile)
            except InputError as exc:
                job.errors.append(self._name_variant(exc, variant))
                continue
            except Exception as exc:                # an encoder bug costs this output, not the run
                job.errors.append(self._name_variant(_unexpected(exc), variant))
                continue
            job.encoded.append((path, data))

    def _name_variant(self, exc: InputError, variant) -> InputError:
        if len(self.spec.variants) == 1:
            return exc
        return type(exc)(f"variant {variant.name}: {exc}")

    def _write_loop(self) -> None:
        while True:
            job = self._take(self.encoded_q.get())
            started = time.perf_counter()
            try:
                for path, data in job.encoded:
                    write_atomic(self.output / path, data, fsync=self.options.fsync)
                    job.outcome.outputs.append(str(self.output / path))
                    job.outcome.bytes_out += len(data)
                    job.outcome.output_sizes.append(len(data))
                    job.outcome.output_checksums.append(hashlib.blake2b(data, digest_size=16).hexdigest())
            except InputError as exc:
                job.errors.insert(0, exc)
            except SystemFailure as exc:            # the output side is broken: record, then stop the run
                self._fail(job, StoppedBySystemFailure(str(exc)))
                raise
            finally:
                job.encoded = []
            job.timed("write", started)
            if job.errors:
                self._fail(job, job.errors[0])
            else:
                self._done.put(job.outcome)


def _decoded_size_bound(data: bytes) -> int:
    """Upper bound of the decoded size from the header; 0 when the header is unreadable
    (the decode then fails at once, holding nothing)."""
    try:
        info = codecs.probe(data, max_pixels=None)
    except Exception:
        return 0
    return info.width * info.height * 4


def _buffer_bytes(pixels: np.ndarray) -> int:
    """Bytes an image really holds: an RGB view of an RGBX buffer holds the whole buffer."""
    base = pixels.base if isinstance(pixels.base, np.ndarray) else None
    return base.nbytes if base is not None and base.nbytes > pixels.nbytes else pixels.nbytes


def _unexpected(exc: Exception) -> InputError:
    return InternalError(f"unexpected {exc.__class__.__name__}: {exc}")
