"""What a run tells its caller: one outcome per input, and a summary."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, field
from typing import Any

from ..records import dataclass

OK, FAILED, SKIPPED, CANCELLED = "ok", "failed", "skipped", "cancelled"
REJECTED = "rejected"          # a user op rejected it (gpupipe.Reject): no output, not a failure
FIRST_PATHS_KEPT = 5          # failures listed by path per error class in the summary


def json_value(value: Any) -> Any:
    """``json.dumps``' default for what JSON cannot hold in an outcome (a user op's tags): NumPy
    scalars as numbers, anything else as its repr."""
    return value.item() if hasattr(value, "item") and getattr(value, "size", 1) == 1 else repr(value)


@dataclass
class FileOutcome:
    """The fate of one input file."""

    path: str
    status: str                              # ok | failed | rejected | skipped | cancelled
    relative: str | None = None
    outputs: list[str] = field(default_factory=list)
    error_class: str | None = None
    message: str | None = None              # failed: what went wrong; rejected: the reason
    tags: dict[str, Any] = field(default_factory=dict)   # what user ops said of it (gpupipe.Tagged)
    failed_before: str | None = None         # skipped: the error class of the earlier failure it still has
    format: str | None = None
    width: int | None = None                 # upright size as decoded (after orientation)
    height: int | None = None
    attempts: int = 0                        # reads tried (more than 1 after transient errors)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: dict[str, float] = field(default_factory=dict)   # per stage: read, decode, process, encode, write
    # For logs and traces (not in reports): when the input was queued, and each stage's
    # (name, start, end, thread) in time.perf_counter() seconds.
    queued_at: float | None = field(default=None, repr=False)
    spans: list[tuple[str, float, float, str]] = field(default_factory=list, repr=False)
    # For the journal: the input as the scan saw it, and each output's size and checksum.
    size: int | None = field(default=None, repr=False)
    mtime: float | None = field(default=None, repr=False)
    output_sizes: list[int] = field(default_factory=list, repr=False)
    output_checksums: list[str] = field(default_factory=list, repr=False)
    # The system-level errno (EIO, ENOTCONN …) a failed read ended with: the input-side breaker counts these.
    fault: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        skip = {"queued_at", "spans", "size", "mtime", "output_sizes", "output_checksums", "fault"}
        fields = {k: v for k, v in asdict(self).items() if k not in skip and v not in (None, [], {})}
        if "seconds" in fields:                 # kept to the µs where they are made; shown to it here
            fields["seconds"] = {stage: round(seconds, 6) for stage, seconds in fields["seconds"].items()}
        return fields


# An input that went well, as a run that keeps no outcomes hands it to its summary instead of an
# outcome (unit.ChunkDone.counted): its key, bytes read, bytes written, outputs and pixels.
Counted = tuple[int, int, int, int, int]


def fail(outcome: FileOutcome, exc: Exception) -> FileOutcome:
    """``outcome`` failed with ``exc``, an InputError (its class, message and system fault, if any)."""
    outcome.status = FAILED
    outcome.error_class, outcome.message = exc.error_class, str(exc)
    outcome.fault = getattr(exc, "fault", None)
    return outcome


def counted(key: int, outcome: FileOutcome) -> Counted:
    return (key, outcome.bytes_in, outcome.bytes_out, len(outcome.outputs),
            (outcome.width or 0) * (outcome.height or 0))


@dataclass
class RunSummary:
    """A run's counts, failures by class, timings and notes: what the CLI prints and ``report`` keeps."""

    backend: str = "?"
    processed: int = 0
    failed: int = 0
    rejected: int = 0                         # user ops rejected them (no output; not failures)
    skipped: int = 0
    skipped_failed: int = 0                   # of the skipped, those whose last outcome was a failure
    cancelled: int = 0
    discovered: int = 0
    scan_complete: bool = False
    scan_skipped: int = 0                     # files the scan looked at and left (e.g. not images)
    outputs_written: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    pixels_in: int = 0
    wall_seconds: float = 0.0
    interrupted: bool = False
    stop_reason: str | None = None            # why the run stopped early (Ctrl+C, disk full, --on-error stop)
    failures_by_class: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failure_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    scan_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # things the user must know (e.g. GPU handed over to CPU)
    # CPU seconds of each pipeline stage's threads (the local engine; "collect" is the thread that
    # ran it): against workers x wall time, a stage that used little CPU was waiting (lock, I/O).
    cpu_seconds_by_stage: dict[str, float] = field(default_factory=dict)
    # Bytes of decoded images the workers may hold together (80 % of --max-memory), and the most
    # each worker held at once: how the budget was shared (the local engine).
    memory_budget: int = 0
    memory_peak_by_worker: list[int] = field(default_factory=list)
    # Side files (--report, --log, --trace, --metrics-file) that could not be written (a full disk):
    # the outputs and the journal are fine, but the run did not deliver everything asked for.
    side_file_errors: list[str] = field(default_factory=list)
    _started: float = field(default_factory=time.perf_counter, repr=False)
    finished: bool = field(default=False, repr=False)     # the run is over (finish() ran)

    def record(self, outcome: FileOutcome) -> None:
        self.bytes_in += outcome.bytes_in
        if outcome.status == OK:
            self.processed += 1
            self.outputs_written += len(outcome.outputs)
            self.bytes_out += outcome.bytes_out
            self.pixels_in += (outcome.width or 0) * (outcome.height or 0)
        elif outcome.status == FAILED:
            self.failed += 1
            cls = outcome.error_class or "error"
            self.failures_by_class[cls] += 1
            if len(self.failure_examples[cls]) < FIRST_PATHS_KEPT:
                first_line = (outcome.message or "").split("\n", 1)[0]      # a traceback stays in the report
                self.failure_examples[cls].append(f"{outcome.path}: {first_line}")
            self.outputs_written += len(outcome.outputs)
        elif outcome.status == REJECTED:
            self.rejected += 1
        elif outcome.status == SKIPPED:
            self.skipped += 1
            self.skipped_failed += outcome.failed_before is not None
        else:
            self.cancelled += 1

    def record_counted(self, rows: list[Counted]) -> None:
        """``record`` for inputs that went well, given as ``Counted`` rows rather than as outcomes."""
        if rows:
            _, bytes_in, bytes_out, outputs, pixels = zip(*rows)
            self.processed += len(rows)
            self.bytes_in += sum(bytes_in)
            self.bytes_out += sum(bytes_out)
            self.outputs_written += sum(outputs)
            self.pixels_in += sum(pixels)

    def finish(self) -> None:
        self.wall_seconds = time.perf_counter() - self._started
        self.finished = True

    @property
    def done(self) -> int:
        return self.processed + self.failed + self.rejected + self.skipped + self.cancelled

    @property
    def images_per_second(self) -> float:
        return (self.processed + self.failed + self.rejected) / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_in / 1e6 / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        # Inputs still failed from an earlier run are failures of this output too, until retried.
        return 1 if (self.failed or self.skipped_failed or self.stop_reason or self.side_file_errors) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "processed": self.processed, "failed": self.failed, "rejected": self.rejected,
            "skipped": self.skipped, "skipped_failed": self.skipped_failed, "cancelled": self.cancelled, "discovered": self.discovered,
            "outputs_written": self.outputs_written, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "megapixels_in": round(self.pixels_in / 1e6, 3), "wall_seconds": round(self.wall_seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "megabytes_per_second": round(self.megabytes_per_second, 2),
            "interrupted": self.interrupted, "stop_reason": self.stop_reason,
            "failures_by_class": dict(self.failures_by_class),
            "failure_examples": dict(self.failure_examples), "scan_problems": self.scan_problems,
            "notes": self.notes, "side_file_errors": self.side_file_errors,
            "cpu_seconds_by_stage": {stage: round(seconds, 3) for stage, seconds in self.cpu_seconds_by_stage.items()},
            "memory_budget_mb": round(self.memory_budget / 2**20, 1),
            "memory_peak_by_worker_mb": [round(peak / 2**20, 1) for peak in self.memory_peak_by_worker],
            "exit_code": self.exit_code,
        }


@dataclass
class RunResult:
    """What ``gpupipe.run`` returns: the summary, and every input's outcome where the caller kept them."""

    summary: RunSummary
    outcomes: list[FileOutcome]               # every input's outcome, when the caller kept them

    @property
    def exit_code(self) -> int:
        return self.summary.exit_code

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]
