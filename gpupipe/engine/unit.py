"""The unit of work: a chunk of admitted inputs in, their outcomes out.

``run_chunk`` takes each input through read → decode → ops → encode, writes every
output to a temporary as soon as it is encoded, and at the end of the chunk makes
them durable and puts them in place together (``writer.ChunkWrites``: one round of
fsyncs per chunk). When it returns, every output an outcome names is on disk, so the
caller may commit the chunk's journal rows at once.

It runs wherever the engine puts it — in the local engine's worker processes, in the
run's own process — and is all a worker knows of the run: the driver keeps the scan,
the output claims, the journal, the summary and the stop decisions, and talks to its
workers once per chunk, never per file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable, Container

from ..errors import ImageTooLarge, InputError, OutputConflict, StoppedBySystemFailure, SystemFailure
from ..spec import OpTrie, Spec
from . import stages
from .driver import READ_FAULTS_IN_A_ROW
from .process import process_batch
from .results import CANCELLED, FAILED, OK, FileOutcome
from .writer import ChunkWrites, WritePolicy

# What run_chunk is told about stopping, between inputs: go on, or leave the rest (drain, abort).
GO, STOP = 0, 1


@dataclass(frozen=True)
class Work:
    """What every chunk of a run shares: given to each worker once."""

    spec: Spec
    output: Path                       # OUT as outcomes and the journal record it
    policy: WritePolicy
    fsync: bool
    max_pixels: int
    memory: int                        # bytes of decoded images all workers together may hold
    replaceable: Container[PurePath] = ()   # output paths the journal recorded writing (asked lazily)
    stop_at_failure: bool = False      # --on-error stop: a chunk cancels its rest after a failure


@dataclass
class Item:
    """One admitted input."""

    key: int                           # the driver's name for it
    path: str
    relative: PurePath
    planned: tuple[PurePath, ...]      # its output paths, claimed at admission
    size: int
    mtime: float
    guess: str | None = None           # the format its name says, which ``planned`` assumed


@dataclass
class Unclaimed:
    """Outputs whose path the decoded format changed (a PNG named .jpg): the driver must claim and
    write them, and then finish the input (``errors``: its variants that failed)."""

    key: int
    files: list[tuple[PurePath, bytes]]
    errors: list[InputError]               # its variants that failed (in the worker)


@dataclass
class ChunkDone:
    outcomes: list[tuple[int, FileOutcome]] = field(default_factory=list)
    unclaimed: list[Unclaimed] = field(default_factory=list)
    system_failure: str | None = None      # the output side broke (disk full): the run must stop
    stopped: bool = False                  # an input failed with --on-error stop: the rest were cancelled


class Budget:
    """Bytes of decoded images the chunk's worker may hold: ``acquire`` waits for room (an input
    needing more than ``total`` fails before, as too_large). This one is a worker's alone (a Ray
    task, holding one image at a time): nothing to wait for. pool.SharedBudget is shared."""

    def __init__(self, total: int) -> None:
        self.total = total

    def acquire(self, amount: int) -> None:
        pass

    def release(self, amount: int) -> None:
        pass


def run_chunk(items: list[Item], work: Work, backend, trie: OpTrie, budget: Budget, *,
              at: Callable[[int], None] = lambda index: None, stop: Callable[[], int] = lambda: GO,
              worker: str = "main") -> ChunkDone:
    """Every input of ``items`` through the chain; ``at(i)`` is told which input is being worked
    on (-1: the chunk's files are being put in place), ``stop()`` is asked before each input
    (the rest are then cancelled). Never raises for an input's fault."""
    done = ChunkDone()
    writes = ChunkWrites(work.policy.root, work.fsync)
    waiting: list[Staged] = []
    read_faults = 0          # inputs in a row whose read failed with a system error (a dead mount)
    try:
        for index, item in enumerate(items):
            if done.system_failure or done.stopped or read_faults >= READ_FAULTS_IN_A_ROW or stop() != GO:
                done.outcomes.append((item.key, new_outcome(item, CANCELLED)))     # the driver decides on them
                continue
            at(index)
            try:
                staged = _one(item, work, backend, trie, budget, writes, done, stop, worker)
            except SystemFailure as exc:      # this process cannot go on (e.g. a codec switched unsafe)
                done.system_failure = str(exc)
                done.outcomes.append((item.key, new_outcome(item, CANCELLED)))
                continue
            if staged is not None:
                waiting.append(staged)
                read_faults = 0
                continue
            finished = done.outcomes[-1][1]    # _one finished it (failed or cancelled)
            read_faults = read_faults + 1 if finished.fault else 0
            if work.stop_at_failure and finished.status == FAILED:
                done.stopped = True           # --on-error stop: the driver stops the run on its outcome
        at(-1)
        _put_in_place(writes, waiting, done)
    finally:
        writes.close()
    return done


def new_outcome(item: Item, status: str) -> FileOutcome:
    """An input's outcome as a worker starts it: what the scan saw."""
    return FileOutcome(path=item.path, status=status, relative=str(item.relative), bytes_in=item.size,
                       size=item.size, mtime=item.mtime)


def fail(outcome: FileOutcome, exc: InputError) -> FileOutcome:
    """``outcome`` failed with ``exc`` (its class, message and system fault, if any)."""
    outcome.status = FAILED
    outcome.error_class, outcome.message = exc.error_class, str(exc)
    outcome.fault = getattr(exc, "fault", None)
    return outcome


def _one(item: Item, work: Work, backend, trie: OpTrie, budget: Budget, writes: ChunkWrites, done: ChunkDone,
         stop: Callable[[], int], worker: str) -> "Staged | None":
    """One input up to its staged files, or None when it is finished already (failed, cancelled)."""
    outcome = new_outcome(item, OK)
    policy = work.policy
    started = time.perf_counter()
    try:
        read = stages.read_input_with_retries(
            item.path, retries=policy.retries, retry_delay=policy.retry_delay,
            wait=lambda seconds: time.sleep(seconds) or stop() != GO,
            on_attempt=lambda n: setattr(outcome, "attempts", n))
    except InputError as exc:
        if getattr(exc, "fault", None) and stop() != GO:
            outcome.status = CANCELLED          # its retries were cut short by the stop: not its fault
        else:
            fail(outcome, exc)
        done.outcomes.append((item.key, outcome))
        return None
    data = read.data
    # The journal records the file as read, which may differ from what the scan saw.
    outcome.bytes_in, outcome.size, outcome.mtime = len(data), read.size, read.mtime
    started = _span(outcome, "read", started, worker)
    need = stages.memory_need(data, work.spec, trie, ops_on_host=True)
    if need.peak > work.memory:
        done.outcomes.append((item.key, fail(outcome, ImageTooLarge(
            f"needs {need.describe()}, more than --max-memory {work.memory / 0.8 / 2**20:,.0f} MB allows"))))
        return None
    budget.acquire(need.peak)
    try:
        try:
            decoded = stages.decode_input(data, work.spec, max_pixels=work.max_pixels)
        except InputError as exc:
            done.outcomes.append((item.key, fail(outcome, exc)))
            return None
        del data
        images, decoded.pixels = [decoded.pixels], None        # process_batch frees them as it goes
        outcome.format = decoded.format
        outcome.height, outcome.width = images[0].shape[:2]
        started = _span(outcome, "decode", started, worker)
        results = process_batch(backend, images, work.spec, trie, [decoded.format])[0]
        started = _span(outcome, "process", started, worker)
        encoded = stages.encode_variants(work.spec, results, item.relative, decoded.format, decoded.icc_profile,
                                         item.planned if decoded.format == item.guess else None)
        del results
        started = _span(outcome, "encode", started, worker)
    finally:
        budget.release(need.peak)
    mine = [(path, data) for path, data in encoded.files if path in item.planned]
    renamed = [(path, data) for path, data in encoded.files if path not in item.planned]
    if not mine and not renamed:
        done.outcomes.append((item.key, fail(outcome, encoded.errors[0])))
        return None
    try:
        _stage(writes, work, outcome, mine)
    except InputError as exc:
        encoded.errors.insert(0, exc)
    except SystemFailure as exc:          # the output side is broken: this input says so, the rest stop
        done.system_failure = str(exc)
        encoded.errors.insert(0, StoppedBySystemFailure(str(exc)))
    _span(outcome, "write", started, worker)
    return Staged(item, outcome, encoded.errors, renamed)


@dataclass
class Staged:
    """An input whose files are staged, waiting for the chunk's end to be put in place."""

    item: Item
    outcome: FileOutcome
    errors: list[InputError]               # its variants that could not be made
    renamed: list[tuple[PurePath, bytes]]  # files for the driver to claim and write (Unclaimed)


def _stage(writes: ChunkWrites, work: Work, outcome: FileOutcome, files: list[tuple[PurePath, bytes]]) -> None:
    """Stage each file (stages.write_outputs' rules, put in place later); an error stops the rest."""
    policy = work.policy
    for path, data in files:
        inside = policy.input_at(path)
        if inside is not None:
            raise OutputConflict(
                f"output {work.output / path} would be written into the input {inside}: gpupipe never writes "
                "over or among the inputs of a run; choose an output directory outside the inputs")
        replace = policy.overwrite or (lambda path=path: path in work.replaceable)
        stages.write_with_retries(lambda: writes.stage(id(outcome), path, data, replace), retries=policy.retries,
                                  retry_delay=policy.retry_delay)
        outcome.outputs.append(str(work.output / path))
        outcome.output_sizes.append(len(data))
        outcome.output_checksums.append(stages.checksum(data))


def _put_in_place(writes: ChunkWrites, waiting: list[Staged], done: ChunkDone) -> None:
    """The chunk's files made durable and put in place; each waiting input finished by how its went."""
    started = time.perf_counter()
    try:
        failures = writes.finish()
    except SystemFailure as exc:          # nothing staged may be trusted: every waiting input stops
        done.system_failure = done.system_failure or str(exc)
        for staged in waiting:
            outcome = staged.outcome
            outcome.outputs, outcome.output_sizes, outcome.output_checksums = [], [], []
            done.outcomes.append((staged.item.key, fail(outcome, StoppedBySystemFailure(str(exc)))))
        return
    took = time.perf_counter() - started
    for staged in waiting:
        outcome, errors = staged.outcome, staged.errors
        failure = failures.get(id(outcome))
        if failure is not None:            # its files from the failed one on were not put in place
            placed, error = failure
            del outcome.outputs[placed:], outcome.output_sizes[placed:], outcome.output_checksums[placed:]
            errors.insert(0, error)
        outcome.bytes_out = sum(outcome.output_sizes)
        if outcome.spans and outcome.spans[-1][0] == "write":    # the chunk's fsyncs are part of each write
            stage, start, end, thread = outcome.spans[-1]
            outcome.spans[-1] = (stage, start, end + took, thread)
            outcome.seconds[stage] = round(end + took - start, 6)
        if staged.renamed:
            done.unclaimed.append(Unclaimed(staged.item.key, staged.renamed, errors))
        elif errors:
            fail(outcome, errors[0])
        done.outcomes.append((staged.item.key, outcome))


def _span(outcome: FileOutcome, stage: str, since: float, worker: str) -> float:
    now = time.perf_counter()
    outcome.seconds[stage] = round(now - since, 6)
    outcome.spans.append((stage, since, now, worker))
    return now


def write_unclaimed(outcome: FileOutcome, files: list[tuple[PurePath, bytes]], errors: list[InputError],
                    work: Work) -> str | None:
    """Write an input's outputs whose path the decoded format changed, once whoever may grant those
    paths did (the driver claims them; a Ray task, which has no claims, writes them all), and
    finish the input with its first error. The system failure that stopped them, if any."""
    errors, failure = list(errors), None
    if files and outcome.status == OK:
        try:
            written = stages.write_outputs(work.output, files, fsync=work.fsync, policy=work.policy,
                                           replaceable=work.replaceable)
        except SystemFailure as exc:
            failure = str(exc)
            errors.insert(0, StoppedBySystemFailure(failure))
        else:
            outcome.outputs += written.outputs
            outcome.output_sizes += written.sizes
            outcome.output_checksums += written.checksums
            outcome.bytes_out = sum(outcome.output_sizes)
            if written.error is not None:
                errors.insert(0, written.error)
    if errors and outcome.status == OK:
        fail(outcome, errors[0])
    return failure
