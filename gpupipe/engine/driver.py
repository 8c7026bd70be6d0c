"""The side of a run every engine shares, on the caller's thread.

Discovery and admission (output claims, journal decisions), the one outcome
every input gets (summary, journal, callbacks), progress, Ctrl+C and system
failures. The local engine adds worker processes under it; the Ray engine
adds Ray tasks. Whatever does the work, the bookkeeping — and so the
summary, the journal and the exit code — is this one.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
import queue
import signal
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Container, Sequence

from .. import codecs, digests, sources
from ..errors import InputError, OutputConflict, StageStalled, StoppedBySystemFailure, SystemFailure, WorkerCrashed
from ..records import dataclass
from ..spec import OpTrie, Spec
from .cancel import CancelToken
from .options import ORDER_KEYS, RunOptions
from .writer import WritePolicy, remove_live_temporaries, remove_stale_temporaries
from .results import CANCELLED, FAILED, OK, REJECTED, SKIPPED, Counted, FileOutcome, RunSummary, fail

# Inputs in a row whose read failed with a system-level error (EIO, ENOTCONN, ESTALE … after the
# retries): then the input side is broken (a dead mount, a failing disk) and the run stops.
READ_FAULTS_IN_A_ROW = 8
# Inputs in a row on which a worker process died: then the fault is not the inputs' (a broken
# codec, memory too short for anything) and the run stops rather than fail every input left.
WORKER_CRASHES_IN_A_ROW = 8
CHUNK_WAIT = 0.02                # seconds a partial chunk waits for more of a running scan
# The scan admits inputs in groups of this many (one journal query each), or what it found within this long.
ADMIT_GROUP = 256
ADMIT_SECONDS = 0.05


@dataclass
class Item:
    """One admitted input: what a worker is told of it, and all the driver keeps of it until its
    outcome is needed (a run that keeps no outcomes makes none for the inputs that go well)."""

    key: int                           # the driver's name for it
    path: str
    relative: str                      # below its input root: "a/b.jpg"
    planned: tuple[str, ...]           # its output paths below OUT, claimed at admission
    size: int
    mtime: float
    guess: str | None = None           # the format its name says, which ``planned`` assumed


class _RecordedOutputs:
    """The output paths (relative to OUT) the journal recorded writing, as a lazy container."""

    def __init__(self, journal, output: Path) -> None:
        self._journal, self._output = journal, output

    def __contains__(self, path: object) -> bool:
        return self._journal is not None and self._journal.wrote(os.path.join(self._output, path))


class OutputClaims:
    """Which input writes which output path, so two inputs never silently overwrite each other."""

    def __init__(self) -> None:
        # Keyed by a digest of the path: 12 bytes an output, however long its path, for runs of
        # millions. The scan's thread and the coordinator's both claim: dict.setdefault of a bytes
        # key is one step under the interpreter lock, so no lock of its own is needed.
        self._owners: dict[bytes, str] = {}

    def claim(self, path: str, owner: str) -> str | None:
        """Claim ``path`` (below OUT) for ``owner``; return the other owner if it is taken."""
        key = digests.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=12).digest()     # os.fsencode
        current = self._owners.setdefault(key, owner)
        return None if current == owner else current


class Admitted:
    """The inputs admitted and in no chunk yet, in order, and the chunks to do again first (a dead
    worker's): the scan's thread adds, the engine's thread takes chunks. One rule cuts the chunks
    of every engine."""

    def __init__(self, files: int, most_bytes: int) -> None:
        self.files, self.most_bytes = files, most_bytes       # a chunk's inputs and input bytes at most
        self.again: collections.deque[list] = collections.deque()
        self._items: collections.deque = collections.deque()    # unit.Items
        self._oldest = 0.0                                    # when the oldest of them was admitted

    def __len__(self) -> int:
        """Inputs admitted and in no chunk (those to do again not counted)."""
        return len(self._items)

    def add(self, items: list, most: int, stopping: Callable[[], bool], wake: Callable[[], None]) -> None:
        """Queue admitted inputs, never more than ``most`` at once (the scan waits for room meanwhile,
        unless the run stops), and ``wake`` the thread that takes the chunks: before waiting, and
        once they are queued."""
        queued = self._items
        for item in items:
            if len(queued) >= most:
                wake()
                while len(queued) >= most and not stopping():
                    time.sleep(0.002)
            if not queued:
                self._oldest = time.perf_counter()
            queued.append(item)
        wake()

    def pending(self) -> bool:
        return bool(self._items or self.again)

    def take(self, workers: int, scan_done: bool) -> list | None:
        """The next chunk: one to do again first; then a worker's share (of ``workers``) of the
        queued inputs, up to ``files`` of them and about ``most_bytes`` (large files make small
        chunks, which balance and redo better), once ``files`` are queued, the scan is over or the
        oldest has waited CHUNK_WAIT."""
        if self.again:
            return self.again.popleft()
        items = self._items
        available = len(items)
        if not available:
            return None
        if available < self.files and not scan_done and time.perf_counter() - self._oldest < CHUNK_WAIT:
            return None
        size = max(1, min(self.files, math.ceil(available / workers)))
        chunk, nbytes = [], 0
        while items and len(chunk) < size and (not chunk or nbytes < self.most_bytes):
            item = items.popleft()
            chunk.append(item)
            nbytes += item.size
        self._oldest = time.perf_counter()
        return chunk


class Driver(ABC):
    _admitted: Admitted                     # each engine's, with its chunk sizes

    def __init__(self, spec: Spec, backend_description: str, options: RunOptions | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.spec = spec
        self.trie = OpTrie.build(spec.variants)
        self.options = options or RunOptions()
        self.cancel = cancel or CancelToken()
        self.claims = OutputClaims()
        self.summary = RunSummary(backend=backend_description)
        self._done: queue.SimpleQueue[tuple[int, FileOutcome]] = queue.SimpleQueue()   # (key, outcome)
        self._system_failure: str | None = None
        self._draining = threading.Event()      # first Ctrl+C: finish what was read, read nothing new
        self._aborted = False                    # a second Ctrl+C: stop at once, account for nothing more
        self._last_progress = 0.0
        # Every input found, until its one outcome is recorded (key -> its outcome, or its Item until
        # one is needed: _outcome): _finish takes each once, and whatever no stage finished gets its
        # outcome at the end (_finish_unfinished).
        self._outstanding: dict[int, FileOutcome | Item] = {}
        self._keys = itertools.count()
        self._read_faults: list[FileOutcome] = []     # the latest inputs in a row that failed on a read fault
        self._recording = False              # an outcome is being recorded (summary, report): an abort waits
        self._abort_pending = False
        self._crashes_in_a_row = 0           # inputs in a row on which a worker died (_worker_died)

    # ------------------------------------------------------------ discovery and admission

    def _scan(self, inputs: Sequence[str | Path], output: Path) -> None:
        """Find the inputs and admit them (``_admit``) in groups, streaming unless an order needs the
        whole listing. Whether the run stops is asked once a group: what was found and not handed
        on by then is cancelled (``_cancel_found``)."""
        opts = self.options
        found = sources.discover(inputs, recursive=opts.recursive, include_hidden=opts.include_hidden,
                                 all_files=opts.all_files, exclude=[output])
        streaming = opts.order == "input"
        summary, source_file, now = self.summary, sources.SourceFile, time.perf_counter
        group: list[sources.SourceFile] = []      # streaming: found, not admitted yet; else the whole listing
        since = 0.0
        for item in found:
            if isinstance(item, source_file):
                summary.discovered += 1
                # Work starts while the scan goes on, a group at a time: one journal query per group,
                # and a slow listing still hands on what it found within ADMIT_SECONDS.
                if not group:
                    since = now()
                group.append(item)
                if len(group) % ADMIT_GROUP == 0 or now() - since >= ADMIT_SECONDS:
                    if self._stopping():
                        self._cancel_found(group)
                        return
                    if streaming:
                        self._admit(group)
                        group = []
                    else:
                        since = now()
            elif isinstance(item, sources.Skipped):
                summary.scan_skipped += 1
                self._done.put(self._expect(FileOutcome(path=item.path, status=SKIPPED, message=item.reason)))
            else:
                summary.scan_problems.append(f"{item.path}: {item.message}")
        summary.scan_complete = True              # the listing is whole, whatever is admitted of it
        if self._stopping():
            self._cancel_found(group)
            return
        if not streaming:
            group.sort(key=ORDER_KEYS[opts.order])      # stable: ties keep the input order
        for start in range(0, len(group), ADMIT_GROUP):
            if self._stopping():
                self._cancel_found(group[start:])
                return
            self._admit(group[start:start + ADMIT_GROUP])

    def _cancel_found(self, found: list[sources.SourceFile]) -> None:
        """The run stops with these inputs found and not handed on: each is cancelled."""
        for source in found:
            outcome = _admitted_outcome(source, None)
            outcome.status = CANCELLED
            self._done.put(self._expect(outcome))

    def _admit(self, group: list[sources.SourceFile]) -> None:
        """Claim each input's outputs and ask the journal about the group in one query; hand what
        is left to do to ``_submit``, in order."""
        claimed: list[Item] = []
        variants = self.spec.variants
        claim = self.claims.claim
        new_key = self._keys.__next__
        # An outcome is made at admission only where someone reads it (its queue time included);
        # otherwise an input that goes well never has one here (_finish_counted).
        outstanding, wanted = self._outstanding, self.options.outcomes_wanted
        for source in group:
            path, relative = source.path, source.relative
            guess = codecs.format_from_name(relative)
            try:
                planned = tuple([v.output_path(relative, guess) for v in variants])
            except InputError as exc:               # the name template gives no valid path for this input
                self._done.put(self._expect(fail(_admitted_outcome(source, time.perf_counter()), exc)))
                continue
            for output in planned:
                other = claim(output, path)
                if other is not None:
                    conflict = OutputConflict(f"output {output} is already written by {other}; rename one input or "
                                              "use a name template with {suffix}")
                    self._done.put(self._expect(fail(_admitted_outcome(source, time.perf_counter()), conflict)))
                    break
            else:
                item = Item(new_key(), path, relative, planned, source.size, source.mtime, guess)
                outstanding[item.key] = _admitted_outcome(item, time.perf_counter()) if wanted else item
                claimed.append(item)
        decisions = None
        if self.options.journal is not None and claimed:     # claimed even when skipped: its outputs stay its own
            try:
                decisions = self.options.journal.decide_many([(item.path, item.size, item.mtime) for item in claimed])
            except SystemFailure as exc:           # the journal cannot be read: nothing can be decided
                self._trip(str(exc))
                for item in claimed:
                    outcome = self._outcome(item.key)
                    outcome.status = CANCELLED
                    self._done.put((item.key, outcome))
                return
        if decisions is not None:
            todo = []
            for item, decision in zip(claimed, decisions):
                if decision.skip:
                    outcome = self._outcome(item.key)
                    outcome.status, outcome.message, outcome.bytes_in = SKIPPED, decision.reason, 0
                    outcome.failed_before = decision.failed_before
                    self._done.put((item.key, outcome))
                else:
                    todo.append(item)
            claimed = todo
        if claimed:
            self._submit(claimed)

    def _plan_writes(self, inputs: Sequence[str | Path], output: Path) -> None:
        """The rules every write of this run follows (``WritePolicy``): OUT resolved once, the
        inputs inside it, --overwrite, and the reads' retry settings."""
        opts = self.options
        self.write_policy = WritePolicy.for_run(inputs, output, overwrite=opts.overwrite, retries=opts.retries,
                                                retry_delay=opts.retry_delay)

    def _recorded_outputs(self) -> Container[str]:
        """The output paths the journal recorded writing (``path in ...``, asked lazily): a file
        there is gpupipe's own output and may be replaced; any other file at an output path is kept.
        Writers in this process ask only when a file is already at an output path."""
        return _RecordedOutputs(self.options.journal, self.output)

    def _replaceable(self, paths: Sequence[str]) -> frozenset[str]:
        """Those of ``paths`` the journal recorded writing, asked now (for writers elsewhere: Ray)."""
        recorded = self._recorded_outputs()
        return frozenset(p for p in paths if p in recorded)

    @abstractmethod
    def _submit(self, items: list[Item]) -> None:
        """Hand admitted inputs to the engine's workers, in order (called on the scan's thread)."""

    def _stopping(self) -> bool:
        return self.cancel.cancelled or self._draining.is_set()

    def device_memory(self) -> dict[str, int] | None:
        """The device memory the run's workers use and may use, for metrics; None where unknown."""
        return None

    # ------------------------------------------------------------ outcomes

    def _expect(self, outcome: FileOutcome) -> tuple[int, FileOutcome]:
        """Register an input found: from now on it is owed exactly one outcome. Returns (its key,
        ``outcome``), as ``_finish`` takes them. (An admitted input is registered as its Item.)"""
        key = next(self._keys)
        self._outstanding[key] = outcome
        return key, outcome

    def _outcome(self, key: int) -> FileOutcome | None:
        """The outcome of the input registered as ``key``, made from its Item the first time one is
        asked for; None once the input is finished."""
        entry = self._outstanding.get(key)
        if type(entry) is Item:
            entry = self._outstanding[key] = _admitted_outcome(entry, None)
        return entry

    def _take_over(self, key: int, result: FileOutcome) -> FileOutcome | None:
        """The input's own outcome, now holding what a worker found (``result``, its copy); None if it
        was finished already (the watchdog failed it)."""
        entry = self._outstanding.get(key)
        if entry is None:
            return None
        if type(entry) is Item:                     # no outcome was made of it here: the worker's is the one
            self._outstanding[key] = result
            return result
        queued_at = entry.queued_at
        vars(entry).update(vars(result))
        entry.queued_at = queued_at
        return entry

    def _take_over_chunk(self, results: list[tuple[int, FileOutcome]]) -> dict[int, FileOutcome]:
        """``_take_over`` for a chunk's (key, result) pairs: the outcomes of those not finished already."""
        taken = {}
        for key, result in results:
            outcome = self._take_over(key, result)
            if outcome is not None:
                taken[key] = outcome
        return taken

    def _release(self, key: int, outcome: FileOutcome) -> bool:
        """Stop owing ``key`` an outcome if ``outcome`` is still the one registered for it; False
        when it was finished already (or finished as another)."""
        if self._outstanding.get(key) is not outcome:
            return False
        del self._outstanding[key]
        return True

    def _drain_done(self, outcomes: list[FileOutcome]) -> None:
        """Finish the outcomes queued for this thread (skipped, failed at admission), together."""
        queued = []
        while True:
            try:
                queued.append(self._done.get_nowait())
            except queue.Empty:
                break
        if queued:
            self._finish_many(queued, outcomes)

    def _finish(self, key: int, outcome: FileOutcome, outcomes: list[FileOutcome]) -> None:
        """Record an input's outcome (``key``: as registered), once: a second report of the same input
        (a stage that comes back after the watchdog failed its input) is dropped, so no input is ever
        counted twice."""
        self._finish_many([(key, outcome)], outcomes)

    def _finish_many(self, finished: list[tuple[int, FileOutcome]], outcomes: list[FileOutcome],
                     recorded: Container[int] = frozenset()) -> None:
        """``_finish`` for several inputs (a chunk's: (key, outcome) each), recorded in the journal
        together, but those whose key is in ``recorded``: the worker that finished them recorded them."""
        mine = [(key, outcome) for key, outcome in finished if self._release(key, outcome)]
        if not mine:
            return
        journal = self.options.journal
        if journal is not None:
            theirs = [o for key, o in mine if key in recorded]
            if theirs:
                journal.recorded_elsewhere(theirs)
            try:
                journal.record_many([o for key, o in mine if key not in recorded])
            except SystemFailure as exc:           # e.g. the disk holding the journal is full
                self._trip(str(exc))
        opts = self.options
        for _, outcome in mine:
            # The summary, the outcomes, the report (on_outcome) must all see an input or none: an
            # abort (a second Ctrl+C) waits for the end of this one.
            self._recording = True
            try:
                self.summary.record(outcome)
                if opts.keep_outcomes:
                    outcomes.append(outcome)
                if opts.on_outcome:
                    opts.on_outcome(outcome)
            finally:
                self._recording = False
            if self._abort_pending:
                self._abort_pending = False
                raise KeyboardInterrupt
            if outcome.status == FAILED and opts.on_error == "stop":
                self.cancel.cancel(f"stopped at the first failure (--on-error stop): {outcome.path}: "
                                   f"{outcome.message}")
            self._count_read_faults(outcome)
        self._progress()

    def _finish_counted(self, counted: list[Counted], recorded: bool) -> None:
        """``_finish_many`` for inputs that went well, given as counts (unit.ChunkDone.counted): the
        run keeps no outcome of them, so each costs this process a dictionary entry, not an
        outcome. ``recorded``: the worker recorded them in the journal."""
        outstanding = self._outstanding
        counted = [row for row in counted if outstanding.pop(row[0], None) is not None]
        if not counted:
            return
        journal = self.options.journal
        if journal is not None and recorded:
            journal.recorded_elsewhere([], went_well=len(counted))
        self._recording = True                   # an abort waits for the summary to hold them all
        try:
            self.summary.record_counted(counted)
        finally:
            self._recording = False
        self._read_faults.clear()                # inputs were read: the input side works
        if self._abort_pending:
            self._abort_pending = False
            raise KeyboardInterrupt
        self._progress()

    def _finish_unfinished(self, outcomes: list[FileOutcome], stalled: bool) -> None:
        """The run is over: every input found that no stage finished gets its outcome now, failed
        as "stalled" after a stall (its thread never handed it on), else cancelled (not started)."""
        for key in list(self._outstanding):
            outcome = self._outcome(key)
            if outcome.status == SKIPPED:
                self._finish(key, outcome, outcomes)
            elif stalled:
                self._finish_stalled(key, outcome, "no stage finished it before the run stopped", outcomes)
            else:
                self._finish_instead(key, outcome, dataclasses.replace(outcome, status=CANCELLED), outcomes)

    def _finish_stalled(self, key: int, outcome: FileOutcome, why: str, outcomes: list[FileOutcome]) -> None:
        failure = StageStalled(f"stalled: {why}")
        self._finish_instead(key, outcome, dataclasses.replace(outcome, status=FAILED, error_class=failure.error_class,
                                                               message=str(failure)), outcomes)

    def _finish_instead(self, key: int, outcome: FileOutcome, final: FileOutcome,
                        outcomes: list[FileOutcome]) -> None:
        """Finish ``outcome`` as ``final``, a copy: a thread still holding the input may come back
        later and change its own outcome, which is then no longer recorded anywhere."""
        if self._release(key, outcome):
            self._finish(*self._expect(final), outcomes)

    def _remove_dead_workers_temporaries(self, items: list, wait: float = 0.0) -> None:
        """A worker died on a chunk (``items``, unit.Items): the temporaries it left in their output
        folders go (those of this machine: a process id says nothing about another's). ``wait``: for
        workers still ending, seconds to wait at most (remove_stale_temporaries)."""
        deadline = time.monotonic() + wait
        for folder in {path.rpartition("/")[0] for item in items for path in item.planned}:
            remove_stale_temporaries(os.path.join(self.write_policy.root, folder),
                                     wait=max(0.0, deadline - time.monotonic()))

    def _worker_died(self, on, rest: list, cause: str, outcomes: list[FileOutcome], *,
                     worker: str = "worker process"):
        """A worker died (``cause``) holding the inputs ``rest`` (unit.Items), on the input ``on`` where
        that is known: that input fails as crashed and the rest is done again first; where it is not,
        the rest is done again in halves until the input that kills the worker is alone. The
        temporaries the worker left go. WORKER_CRASHES_IN_A_ROW such inputs stop the run. ``worker``
        names it in messages. Returns the input blamed, if any."""
        self._remove_dead_workers_temporaries([item for item in [on, *rest] if item is not None])
        blamed = on if on is not None else (rest[0] if len(rest) == 1 else None)
        if blamed is not None:
            rest = [item for item in rest if item is not blamed]
            outcome = self._outcome(blamed.key)
            if outcome is not None:
                fail(outcome, WorkerCrashed(f"the {worker} died on this input ({cause})"))
                self._finish(blamed.key, outcome, outcomes)
            self._crashes_in_a_row += 1
            if self._crashes_in_a_row >= WORKER_CRASHES_IN_A_ROW:
                self._trip(f"{worker}es died on {self._crashes_in_a_row} inputs in a row, the last: "
                           f"{blamed.path}: {cause}")
        if rest and not self._stopping():
            if blamed is None:               # it died between inputs, or which input is not known: halve
                half = len(rest) // 2
                self._admitted.again.extendleft([rest[half:], rest[:half]])
            else:
                self._admitted.again.appendleft(rest)
        return blamed

    def _count_read_faults(self, outcome: FileOutcome) -> None:
        """The input side's breaker: READ_FAULTS_IN_A_ROW inputs in a row whose reads failed with a
        system-level error mean a dead mount or disk, not bad files: stop, rather than fail every
        input left one by one after its retries. Any input that was read resets the count."""
        if outcome.status == FAILED and outcome.fault:
            self._read_faults.append(outcome)
        elif outcome.status in (OK, FAILED, REJECTED):
            self._read_faults.clear()
        faults = len(self._read_faults)
        if faults >= READ_FAULTS_IN_A_ROW:
            last = self._read_faults[-1]
            self._trip(f"reading inputs failed {faults} times in a row with system errors ({last.fault}), the "
                       f"last: {last.path}: {last.message}; the disk or mount holding the inputs looks broken "
                       f"(use --retry-failed on the next run to read those {faults} again)")

    def _progress(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.options.on_progress and (force or now - self._last_progress >= self.options.progress_interval):
            self._last_progress = now
            self.summary.wall_seconds = now - self.summary._started
            self.options.on_progress(self.summary)

    def _close_summary(self) -> None:
        """The run is over: say why it stopped early, and for a system failure what is left and how to resume."""
        self._commit_journal()
        summary = self.summary
        if self._system_failure:
            summary.stop_reason = f"{self._system_failure}. {self._resume_hint()}"
        elif summary.interrupted:
            summary.stop_reason = f"{summary.stop_reason}. {self._resume_hint(fix_first=False)}"
        elif not summary.stop_reason and self.cancel.cancelled:
            summary.stop_reason = self.cancel.reason
        summary.finish()
        self._progress(force=True)

    def _commit_journal(self) -> None:
        """The run is over: what the journal recorded must be committed before the resume hint counts it."""
        try:
            if self.options.journal is not None:
                self.options.journal.commit()
        except SystemFailure as exc:
            self._trip(str(exc))

    def _resume_hint(self, fix_first: bool = True) -> str:
        """What is left to do and how to resume it (``fix_first``: a fault stopped the run)."""
        summary = self.summary
        left = summary.cancelled + summary.failures_by_class.get(StoppedBySystemFailure.error_class, 0)
        more = "" if summary.scan_complete else " (the scan stopped early: more may remain)"
        journal = self.options.journal
        if journal is None:
            how = "run the same command again (no journal: everything is redone)"
        elif journal.force:
            how = ("run the same command without --force: the journal skips what it recorded as done and "
                   "resumes with the rest")
        else:
            # What the journal committed, not what this run processed: a batch lost with the disk is redone.
            skips = journal.will_skip()
            left = summary.discovered - skips
            how = (f"run the same command again: the journal skips the {skips} input(s) it recorded and "
                   "resumes with the rest")
        return f"{left} input(s) left to do{more}; {'fix the cause and ' if fix_first else 'to finish, '}{how}"

    # ------------------------------------------------------------ stopping

    def _catch_signals(self) -> dict:
        """Ctrl+C and SIGTERM start a drain at a safe point instead of raising mid-bookkeeping
        (an exception there could lose an input's outcome); a second one aborts. Signal
        handlers can only be set from the main thread: elsewhere KeyboardInterrupt is caught."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame) -> None:
            if self._draining.is_set():
                if self._recording:          # mid-way through an outcome: abort once it is recorded everywhere
                    self._abort_pending = True
                    return
                raise KeyboardInterrupt
            self._start_draining()

        return {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _interruptible(self, step: Callable[[], None]) -> None:
        """Run ``step`` (the engine's main loop) to its end, with Ctrl+C and SIGTERM caught
        meanwhile (``_catch_signals``). A KeyboardInterrupt raised where no signal handler could
        be installed (a run off the main thread) drains like the first Ctrl+C; one raised while
        draining aborts (``_aborted``): no temporary may stay, and it propagates."""
        previous = self._catch_signals()
        try:
            while True:
                try:
                    step()
                    return
                except KeyboardInterrupt:
                    if self._draining.is_set():
                        self._aborted = True
                        remove_live_temporaries()
                        raise
                    self._start_draining()
        finally:
            self._restore_signals(previous)

    def _start_draining(self) -> None:
        """First interrupt: nothing new is read; what was read is finished and written."""
        self.summary.interrupted = True
        self.summary.stop_reason = "interrupted: work in flight was finished, nothing new started"
        self._draining.set()
        self._progress(force=True)           # the progress line says so at once

    def _trip(self, message: str) -> None:
        """A system failure: stop the whole run once, with one clear message."""
        if self._system_failure is None:
            self._system_failure = message
            self.cancel.cancel(message)


def _admitted_outcome(found: sources.SourceFile | Item, queued_at: float | None) -> FileOutcome:
    """An admitted input's outcome before any stage has had it (``found``: as scanned, or its Item)."""
    return FileOutcome(path=found.path, status=OK, relative=found.relative, bytes_in=found.size, size=found.size,
                       mtime=found.mtime, queued_at=queued_at)
