"""The unit of work: a chunk of admitted inputs in, their outcomes out.

``run_chunk`` takes each input through read → decode → ops → encode, writes every
output to a temporary as soon as it is encoded, and at the end of the chunk makes
them durable and puts them in place together (``writer.ChunkWrites``: one round of
fsyncs per chunk). When it returns, every output an outcome names is on disk, so the
caller may commit the chunk's journal rows at once. The ops run in batches as the
worker's device takes them (``device.Device``: the CPU one image at a time, a GPU up to
its batch size), with the GPU's fallback to the CPU.

It runs wherever the engine puts it — in the local engine's worker processes, in Ray's
tasks and GPU actors — and is all a worker knows of the run: the driver keeps the scan,
the output claims, the journal, the summary and the stop decisions, and talks to its
workers once per chunk, never per file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Container

from ..errors import ImageTooLarge, InputError, OutputConflict, Rejected, StoppedBySystemFailure, SystemFailure
from ..journal import checksum
from ..records import dataclass
from ..spec import OpTrie, Spec
from . import stages
from .driver import READ_FAULTS_IN_A_ROW, Item
from .results import CANCELLED, FAILED, OK, REJECTED, Counted, FileOutcome, counted, fail
from .writer import ChunkWrites, WritePolicy

if TYPE_CHECKING:
    from .device import Device              # the workers' (it loads NumPy: not the run's own process)

log = logging.getLogger("gpupipe")

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
    replaceable: Container[str] = ()   # output paths the journal recorded writing (asked lazily)
    stop_at_failure: bool = False      # --on-error stop: a chunk cancels its rest after a failure
    spans: bool = False                # record each input's stage spans (FileOutcome.spans: --trace reads them)
    journal: Any = None                # a journal.ChunkRecorder: the worker records its chunks (else the driver)
    # The driver keeps no outcome of its own for an input that went well (no callback, report or
    # list of outcomes wants it): those come back as counts (ChunkDone.counted), not objects.
    count_ok: bool = False


@dataclass
class Unclaimed:
    """Outputs whose path the decoded format changed (a PNG named .jpg): the driver must claim and
    write them, and then finish the input (``errors``: its variants that failed)."""

    key: int
    files: list[tuple[str, bytes]]
    errors: list[InputError]               # its variants that failed (in the worker)


@dataclass
class ChunkDone:
    """What a worker hands back for a chunk: its outcomes (or counts), and what the driver must know."""

    outcomes: list[tuple[int, FileOutcome]] = field(default_factory=list)
    unclaimed: list[Unclaimed] = field(default_factory=list)
    system_failure: str | None = None      # the output side broke (disk full): the run must stop
    stopped: bool = False                  # an input failed with --on-error stop: the rest were cancelled
    handover: str | None = None            # the worker's GPU was replaced by the CPU, and why (Device)
    device_memory: dict[str, int] | None = None     # the worker's device memory (metrics), on a GPU
    recorded: bool = False                 # the worker recorded its outcomes in the journal (but ``left_to_driver``)
    # Inputs that went well, as the driver's summary needs them (Work.count_ok), instead of in
    # ``outcomes``: one ``results.Counted`` row per input.
    counted: list[Counted] = field(default_factory=list)

    def left_to_driver(self) -> set[int]:
        """The inputs whose outcome the worker does not record: the driver still writes their renamed
        outputs, and records them with those."""
        return {unclaimed.key for unclaimed in self.unclaimed}


class Budget:
    """Bytes of decoded images the chunk's worker may hold: ``acquire`` waits for room (an input
    needing more than ``total`` fails before, as too_large). This one is a worker's alone (a Ray
    task, holding one image at a time): nothing to wait for. pool.SharedBudget is shared."""

    used = 0                           # bytes held (none counted here)

    def __init__(self, total: int) -> None:
        self.total = total

    def acquire(self, amount: int) -> None:
        pass

    def try_acquire(self, amount: int) -> bool:
        """acquire if there is room now; False (nothing taken) if it would wait."""
        return True

    def release(self, amount: int) -> None:
        pass


def run_chunk(items: list[Item], work: Work, device: Device, trie: OpTrie, budget: Budget, *,
              at: Callable[[int], None] = lambda index: None, stop: Callable[[], int] = lambda: GO,
              worker: str = "main") -> ChunkDone:
    """Every input of ``items`` through the chain, in batches as the device takes them (the CPU:
    one image); ``at(i)`` is told which input is being worked on (-1: a batch of several, or the
    chunk's files being put in place), ``stop()`` is asked before each input (the rest are then
    cancelled). Never raises for an input's fault."""
    done = ChunkDone()
    writes = ChunkWrites(work.policy.root, work.fsync)
    waiting: list[Staged] = []
    batch: list[Decoded] = []
    batch_pixels = 0
    # Each stage's seconds (FileOutcome.seconds) are read by reports, logs, traces and metrics, which
    # all keep outcomes; a run that counts the inputs that go well (count_ok) never looks at them.
    # Spans cost the coordinator 14 % of its time per input: only when asked for.
    timing = _Timing(worker if work.spans else None) if work.spans or not work.count_ok else None
    read_faults = 0          # inputs in a row whose read failed with a system error (a dead mount)

    def flush() -> None:
        nonlocal batch_pixels
        if batch:
            at(batch[0].index if len(batch) == 1 else -1)
            waiting.extend(_finish_batch(batch, work, device, trie, budget, writes, done, timing, at))
            batch.clear()
            batch_pixels = 0

    try:
        for index, item in enumerate(items):
            if done.system_failure or done.stopped or read_faults >= READ_FAULTS_IN_A_ROW or stop() != GO:
                done.outcomes.append((item.key, new_outcome(item, CANCELLED)))     # the driver decides on them
                continue
            at(index)
            try:
                decoded = _read_and_decode(index, item, work, device, trie, budget, done, stop, timing, flush)
            except SystemFailure as exc:      # this process cannot go on (e.g. a codec switched unsafe)
                done.system_failure = str(exc)
                done.outcomes.append((item.key, new_outcome(item, CANCELLED)))
                continue
            if decoded is None:               # finished already: failed or cancelled
                finished = done.outcomes[-1][1]
                read_faults = read_faults + 1 if finished.fault else 0
                if work.stop_at_failure and finished.status == FAILED:
                    done.stopped = True
                continue
            read_faults = 0
            batch.append(decoded)
            batch_pixels += decoded.pixels
            backend = device.backend
            if len(batch) >= backend.max_batch_images or batch_pixels >= backend.max_batch_pixels:
                flush()
        flush()
        at(-1)
        _put_in_place(writes, waiting, done)
    finally:
        writes.close()
    _record(done, work)
    if work.count_ok and (work.journal is None or done.recorded):
        _count_ok(done)
    done.handover, done.device_memory = device.handover, device.device_memory()
    return done


def run_chunk_safely(items: list[Item], *args, worker: str = "main", **how) -> ChunkDone:
    """run_chunk; a bug in it fails every input of the chunk (internal), and the worker goes on."""
    try:
        return run_chunk(items, *args, worker=worker, **how)
    except Exception as exc:
        log.exception("internal error in %s", worker)
        return ChunkDone(outcomes=[(item.key, fail(new_outcome(item, OK), stages.unexpected(exc))) for item in items])


def _count_ok(done: ChunkDone) -> None:
    """The inputs that went well move from ``outcomes`` to ``counted``: a few numbers each cross to
    the driver instead of an outcome (an outcome's pickle and the driver's handling of it were
    most of the driver's time per input). Not for a chunk with read faults: the driver's breaker
    counts them in a row across chunks, in order (READ_FAULTS_IN_A_ROW)."""
    if any(outcome.fault for _, outcome in done.outcomes):
        return
    waiting = done.left_to_driver()
    kept = []
    for key, outcome in done.outcomes:
        if outcome.status == OK and key not in waiting:
            done.counted.append(counted(key, outcome))
        else:
            kept.append((key, outcome))
    done.outcomes = kept


def _record(done: ChunkDone, work: Work) -> None:
    """The chunk's outcomes into the journal, now that its files are on disk: one transaction."""
    if work.journal is None:
        return
    waiting = done.left_to_driver()
    try:
        work.journal.record([outcome for key, outcome in done.outcomes if key not in waiting])
    except SystemFailure as exc:          # the run stops; the driver says why
        done.system_failure = done.system_failure or str(exc)
        return
    done.recorded = True


def new_outcome(item: Item, status: str) -> FileOutcome:
    """An input's outcome as a worker starts it: what the scan saw."""
    return FileOutcome(path=item.path, status=status, relative=item.relative, bytes_in=item.size,
                       size=item.size, mtime=item.mtime)


@dataclass
class Decoded:
    """An input decoded, holding its part of the memory budget until its files are encoded."""

    index: int                             # in the chunk
    item: Item
    outcome: FileOutcome
    image: Any                             # HWC pixels (uint8, uint16), or a codecs.DeferredJpeg for a device decoder
    format: str
    icc_profile: bytes | None
    reserved: int                          # bytes of the budget
    rescale: tuple[float, float] | None = None      # measured pixels: value = slope · pixel + intercept

    @property
    def pixels(self) -> int:
        return self.image.shape[0] * self.image.shape[1]


def _read_and_decode(index: int, item: Item, work: Work, device: Device, trie: OpTrie, budget: Budget,
                     done: ChunkDone, stop: Callable[[], int], timing: _Timing | None,
                     flush: Callable[[], None]) -> Decoded | None:
    """One input read and decoded within the budget, or None when it is finished already (failed,
    cancelled). ``flush`` processes the batch gathered so far: called when the budget has no room
    for this input while the batch holds some (waiting instead could wait for ever)."""
    outcome = new_outcome(item, OK)
    policy = work.policy
    started = time.perf_counter() if timing else 0.0
    outcome.attempts = 1
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
    if timing:
        started = timing.span(outcome, "read", started)
    wanted = stages.memory_need(data, work.spec, trie, ops_on_host=device.on_host, name=item.path)
    need = wanted.peak
    if need > work.memory:
        done.outcomes.append((item.key, fail(outcome, ImageTooLarge(
            f"needs {wanted.describe()}, more than --max-memory {work.memory / 0.8 / 2**20:,.0f} MB allows"))))
        return None
    if not budget.try_acquire(need):
        flush()                                 # the batch's inputs free their part as they are encoded
        budget.acquire(need)
    try:
        backend = device.backend
        decoded = stages.decode_input(data, work.spec, max_pixels=work.max_pixels, device_jpeg=backend.decodes_jpeg,
                                      name=item.path, jpeg=backend.host_decoder)
    except InputError as exc:
        budget.release(need)
        done.outcomes.append((item.key, fail(outcome, exc)))
        return None
    except BaseException:
        budget.release(need)
        raise
    outcome.format = decoded.format
    outcome.height, outcome.width = decoded.pixels.shape[:2]
    if timing:
        timing.span(outcome, "decode", started)
    return Decoded(index, item, outcome, decoded.pixels, decoded.format, decoded.icc_profile, need, decoded.rescale)


def _finish_batch(batch: list[Decoded], work: Work, device: Device, trie: OpTrie, budget: Budget,
                  writes: ChunkWrites, done: ChunkDone, timing: _Timing | None,
                  at: Callable[[int], None]) -> list[Staged]:
    """A batch through the ops on the device, then each input encoded and staged (its part of the
    budget given back as soon as its files are made, ``at`` told which: an encoder that kills the
    worker costs that input alone); the inputs whose files wait to be put in place."""
    staged: list[Staged] = []
    started = time.perf_counter()
    try:
        images = [decoded.image for decoded in batch]
        for decoded in batch:
            decoded.image = None                # the CPU frees them as its ops go (a 12 MP photo: 36 MB a copy)
        rows = device.process(images, work.spec, trie, [decoded.format for decoded in batch],
                              [decoded.rescale for decoded in batch])
        del images
        if timing:
            processed = time.perf_counter()
            for decoded in batch:
                timing.span(decoded.outcome, "process", started, processed)
        several = len(batch) > 1
        stopped = False
        for position, decoded in enumerate(batch):
            row, rows[position] = rows[position], None
            if stopped:                         # --on-error stop: an input before it failed; not written
                budget.release(decoded.reserved)
                decoded.reserved = 0
                done.outcomes.append((decoded.item.key, new_outcome(decoded.item, CANCELLED)))
                continue
            if several:
                at(decoded.index)
            try:
                result = _encode_and_stage(decoded, row, work, writes, done, timing)
            finally:
                budget.release(decoded.reserved)
                decoded.reserved = 0
            if result is not None:
                staged.append(result)
            # --on-error stop: an input failed, or will at the chunk's end (some of its variants could
            # not be made): the driver stops the run on its outcome; here the rest are cancelled.
            failed = bool(result.errors) if result is not None else done.outcomes[-1][1].status == FAILED
            if failed and work.stop_at_failure:
                stopped = done.stopped = True
    finally:
        for decoded in batch:                   # an error above: nothing held stays held
            if decoded.reserved:
                budget.release(decoded.reserved)
                decoded.reserved = 0
    return staged


def _encode_and_stage(decoded: Decoded, results: list, work: Work, writes: ChunkWrites, done: ChunkDone,
                      timing: _Timing | None) -> Staged | None:
    """An input's results encoded and staged, or None when it is finished already (failed)."""
    item, outcome = decoded.item, decoded.outcome
    outcome.tags = dict(results.tags)
    verdict = next((r for r in results if isinstance(r, Rejected)), None)
    if verdict is not None:               # a user op rejected the input: it writes nothing
        outcome.status, outcome.message = REJECTED, str(verdict)
        done.outcomes.append((item.key, outcome))
        return None
    started = time.perf_counter() if timing else 0.0
    encoded = stages.encode_variants(work.spec, results, item.relative, decoded.format, decoded.icc_profile,
                                     item.planned if decoded.format == item.guess else None)
    del results
    if timing:
        started = timing.span(outcome, "encode", started)
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
    if timing:
        timing.span(outcome, "write", started)
    return Staged(item, outcome, encoded.errors, renamed)


@dataclass
class Staged:
    """An input whose files are staged, waiting for the chunk's end to be put in place."""

    item: Item
    outcome: FileOutcome
    errors: list[InputError]               # its variants that could not be made
    renamed: list[tuple[str, bytes]]       # files for the driver to claim and write (Unclaimed)


def _stage(writes: ChunkWrites, work: Work, outcome: FileOutcome, files: list[tuple[str, bytes]]) -> None:
    """Stage each file (stages.write_outputs' rules, put in place later); an error stops the rest."""
    policy = work.policy
    for path, data in files:
        inside = policy.input_at(path)
        if inside is not None:
            raise OutputConflict(
                f"output {os.path.join(work.output, path)} would be written into the input {inside}: gpupipe never writes "
                "over or among the inputs of a run; choose an output directory outside the inputs")
        replace = policy.overwrite or (lambda path=path: path in work.replaceable)
        stages.write_with_retries(lambda: writes.stage(id(outcome), path, data, replace), retries=policy.retries,
                                  retry_delay=policy.retry_delay)
        outcome.outputs.append(os.path.join(work.output, path))
        outcome.output_sizes.append(len(data))
        outcome.output_checksums.append(checksum(data))


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
        if "write" in outcome.seconds:         # the chunk's fsyncs are part of each write
            outcome.seconds["write"] += took
        if outcome.spans and outcome.spans[-1][0] == "write":
            stage, start, end, thread = outcome.spans[-1]
            outcome.spans[-1] = (stage, start, end + took, thread)
        if staged.renamed:
            done.unclaimed.append(Unclaimed(staged.item.key, staged.renamed, errors))
        elif errors:
            fail(outcome, errors[0])
        done.outcomes.append((staged.item.key, outcome))


class _Timing:
    """Records each stage's seconds of an input, and with ``worker`` (its name) its spans too."""

    __slots__ = ("worker",)

    def __init__(self, worker: str | None) -> None:
        self.worker = worker

    def span(self, outcome: FileOutcome, stage: str, since: float, now: float | None = None) -> float:
        """The stage's seconds (unrounded: rounding a float to 6 places costs 0.6 µs, 5 a file of a
        tiny input's 120; reports round), and its span where spans are kept; returns now."""
        now = time.perf_counter() if now is None else now
        outcome.seconds[stage] = now - since
        if self.worker is not None:
            outcome.spans.append((stage, since, now, self.worker))
        return now


def write_unclaimed(outcome: FileOutcome, files: list[tuple[str, bytes]], errors: list[InputError],
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
