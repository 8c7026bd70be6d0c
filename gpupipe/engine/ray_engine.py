"""The Ray engine: the same pipeline as a Ray Data streaming execution, on a cluster.

    listing (driver) ─▶ blocks of inputs ─▶ unit.run_chunk (CPU tasks, or GPU actors: one per GPU)
                     ─▶ outcomes (driver: journal, progress)

Each block goes through the local engine's unit of work (``unit.run_chunk``): read,
decode, ops (on a GPU in batches, with the local engine's fallback), encode and write,
with one round of fsyncs per block. Pixels never leave the process that decoded them;
only the inputs' names go out and their outcomes come back.

The bookkeeping — claims, journal, summary, exit code — is the shared ``Driver`` on the
caller's machine, so outputs are byte-identical to the local engine's and every input
gets exactly one outcome.

Inputs and outputs must be on storage every node sees (a shared filesystem):
tasks read and write them directly; only pixels travel through Ray.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
import uuid
from pathlib import Path, PurePath
from typing import Any, Sequence

import numpy as np

from .. import sources
from ..errors import GpupipeError, UsageError
from ..spec import OpTrie, Spec
from . import stages, unit, writer
from .cancel import CancelToken
from .driver import Driver
from .options import RunOptions
from .device import Device
from .results import CANCELLED, FileOutcome, RunResult, json_value

log = logging.getLogger("gpupipe")

WINDOW = 100_000                  # inputs per Ray Data execution: bounds the driver's listing in memory
FIRST_WINDOW_WAIT = 2.0           # seconds the first window waits for a long listing before it starts


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray: pip install 'gpupipe[ray]' ({exc})") from exc
    return ray


class RayEngine(Driver):
    def __init__(self, spec: Spec, backend: str, options: RunOptions | None = None,
                 cancel: CancelToken | None = None, *, address: str | None = None, window: int = WINDOW,
                 actor_stages: bool | None = None) -> None:
        super().__init__(spec, f"{backend} on Ray", options, cancel)
        self.backend_choice = backend
        # Blocks to actors: always for a GPU; on the CPU only when asked (the tests run the GPU's
        # operator shape on CPU actors this way).
        self.actor_stages = backend == "gpu" if actor_stages is None else actor_stages
        self.address = address
        self.window = max(1, window)
        self._pending: queue.Queue = queue.Queue(maxsize=2 * self.window)   # admitted inputs, for the next window
        self._results: queue.SimpleQueue = queue.SimpleQueue()              # rows coming back from Ray
        self._in_ray: dict[int, FileOutcome] = {}                           # inputs handed to Ray, by index
        self._next_index = 0
        self._scan_done = threading.Event()
        self._first_window = True

    # ------------------------------------------------------------------ driver

    def run(self, inputs: Sequence[str | Path], output: str | Path) -> RunResult:
        ray = import_ray()
        self.output = Path(output).resolve()
        self._plan_writes(inputs, self.output)
        started_here = self._connect(ray)
        if self.backend_choice == "gpu" and not ray.cluster_resources().get("GPU"):
            cluster = self._cluster_size(ray)
            if started_here:
                ray.shutdown()
            raise UsageError(f"--backend gpu with --engine ray: the Ray cluster has no GPU ({cluster})")
        where = "Ray actors sharing the GPUs" if self.backend_choice == "gpu" else "Ray tasks"
        self.summary.backend = f"{self._describe_backend()} in {where} ({self._cluster_size(ray)})"
        # Drain signal for the tasks: a flag file on the shared output storage every node
        # already writes to (an actor would cost a process start per run, before the first read).
        drain_flag = str(self.output / ".gpupipe" / f"drain-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        outcomes: list[FileOutcome] = []
        scanner = threading.Thread(target=self._scan_all, args=(inputs,), name="gpupipe-scan", daemon=True)
        scanner.start()
        try:
            self._interruptible(lambda: self._drive(ray, drain_flag, outcomes))
        finally:
            if not self._aborted:
                self._drain_done(outcomes)
                for outcome in self._in_ray.values():       # handed to Ray, never came back: the run stopped
                    outcome.status = CANCELLED
                    self._finish(outcome, outcomes)
                self._in_ray.clear()
                self._close_summary()
            Path(drain_flag).unlink(missing_ok=True)
            if started_here:
                ray.shutdown()
        return RunResult(self.summary, outcomes)

    def _connect(self, ray) -> bool:
        """Join ``address``, or start a local cluster sized by --workers; True if started here."""
        if ray.is_initialized():
            self._configure_ray_data(ray)
            return False
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=True)
        if self.address:
            try:
                ray.init(address=self.address, **quiet)
            except Exception as exc:
                raise UsageError(f"cannot join the Ray cluster at {self.address}: {exc}") from exc
        else:
            # The cluster lives for this run only, on this machine: Ray's notice about its token
            # authentication default is noise to a gpupipe user.
            logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
            store = max(2 * self.options.max_memory, 128 * 2**20)
            ray.init(num_cpus=max(1, self.options.workers), object_store_memory=store, **quiet)
        self._configure_ray_data(ray)
        return True

    def _configure_ray_data(self, ray) -> None:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.execution_options.verbose_progress = False
        # Ray Data's streaming executor keeps what waits between operators under this.
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=self.options.max_memory)
        # Reserving resources per operator keeps a multi-operator pipeline fair, but on the
        # CPU the pipeline is one fused operator, and the reservation held half the cores
        # back for the first second of every run (measured: 16 tasks on 2 CPUs took 3.4 s
        # instead of 1.8 s).
        ctx.op_resource_reservation_enabled = self.actor_stages
        for name in ("ray.data", "ray"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # gpupipe draws its own progress: Ray Data's notice that its bars are off is noise.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

    def _cluster_size(self, ray) -> str:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        return f"{len(ray.nodes())} node(s), {int(resources.get('CPU', 0))} CPU" + (f", {gpus} GPU" if gpus else "")

    def _describe_backend(self) -> str:
        return "gpu (CuPy)" if self.backend_choice == "gpu" else "cpu (NumPy/OpenCV/Pillow)"

    def _scan_all(self, inputs: Sequence[str | Path]) -> None:
        try:
            self._scan(inputs, self.output)
        except Exception as exc:                    # a scan bug must stop the run loudly
            log.exception("internal error in the scan")
            self._trip(f"internal error in the scan: {exc.__class__.__name__}: {exc}")
        finally:
            self._scan_done.set()

    def _submit(self, source: sources.SourceFile, outcome: FileOutcome, planned: list[str], guess: str) -> None:
        # Absolute paths: Ray workers run in another directory than the caller.
        # The planned outputs stay here: renamed outputs are not claimed across the cluster.
        # Which outputs the journal wrote is asked here: the tasks have no journal.
        item = {"index": self._next_index, "path": os.path.abspath(source.path), "relative": source.relative,
                "replaceable": json.dumps(sorted(self._replaceable(planned))),
                "planned": json.dumps(planned), "size": source.size, "mtime": source.mtime, "guess": guess}
        self._next_index += 1
        while not self._stopping():
            try:
                self._pending.put((item, outcome), timeout=0.1)
                return
            except queue.Full:
                continue
        self._done.put(_cancelled(outcome))

    def _drive(self, ray, drain_flag, outcomes: list[FileOutcome]) -> None:
        """Run windows of admitted inputs through Ray until the scan is done and nothing is pending."""
        while True:
            window = self._next_window(outcomes)
            if window is None:
                return
            self._run_window(ray, drain_flag, window, outcomes)

    def _next_window(self, outcomes: list[FileOutcome]) -> list[dict] | None:
        """The next inputs to hand to Ray: up to ``window`` of them, or what the scan found so
        far once the first window has waited FIRST_WINDOW_WAIT (work starts while a long listing
        goes on, as with the local engine)."""
        window: list[dict] = []
        first_at = None
        while len(window) < self.window:
            # What the scan admitted, taken in bulk: waking for every input, as the scan puts it,
            # cost the scan the interpreter lock each time (65 µs an input over 2 000).
            try:
                while len(window) < self.window:
                    item, outcome = self._pending.get_nowait()
                    self._in_ray[item["index"]] = outcome
                    window.append(item)
                    first_at = first_at or time.monotonic()
            except queue.Empty:
                pass
            self._drain_done(outcomes)
            if self._stopping() or len(window) >= self.window:
                break
            if self._scan_done.is_set() and self._pending.empty():
                break
            if self._first_window and first_at is not None and time.monotonic() - first_at > FIRST_WINDOW_WAIT:
                break
            self._scan_done.wait(0.05)
        while self._stopping():                     # admitted but never started: accounted, not run
            try:
                item, outcome = self._pending.get_nowait()
            except queue.Empty:
                break
            self._done.put(_cancelled(outcome))
        if self._stopping():
            for item in window:
                self._done.put(_cancelled(self._in_ray.pop(item["index"])))
            window = []
        self._drain_done(outcomes)
        self._first_window = self._first_window and not window
        return window or None

    def _run_window(self, ray, drain_flag, window: list[dict], outcomes: list[FileOutcome]) -> None:
        opts = self.options
        dataset = build_dataset(ray, window, self.spec, self.output, self.backend_choice, opts, drain_flag,
                                self.write_policy, actors=self.actor_stages)
        consumer = threading.Thread(target=self._consume, args=(dataset,), name="gpupipe-ray-results", daemon=True)
        consumer.start()
        clock = _Clock()
        last_row = time.perf_counter()
        draining_told = False
        while consumer.is_alive() or not self._results.empty():
            try:
                row = self._results.get(timeout=0.05)
            except queue.Empty:
                self._drain_done(outcomes)
                self._progress()
                if self._stopping() and not draining_told:          # tell the tasks: read nothing new
                    _raise_flag(self.output, drain_flag)
                    draining_told = True
                idle = time.perf_counter() - last_row
                if idle > opts.stall_timeout and self._in_ray:
                    self._trip(f"stalled: no input came back from Ray for {idle:.0f} s with {len(self._in_ray)} "
                               f"in flight (--stall-timeout {opts.stall_timeout:g})")
                    return
                continue
            if isinstance(row, KeyboardInterrupt):
                raise row
            if isinstance(row, BaseException):          # a task or actor died: stop with Ray's reason
                self._trip(f"the Ray pipeline failed: {row.__class__.__name__}: {row}")
                return
            last_row = time.perf_counter()
            outcome = self._in_ray.pop(int(row["index"]))
            _fill(outcome, row, clock)
            failure = row.get("system_failure")
            if failure:
                self._trip(str(failure))
            for note in json.loads(row.get("notes") or "[]"):
                if note not in self.summary.notes:
                    self.summary.notes.append(note)
            self._finish(outcome, outcomes)

    def _consume(self, dataset) -> None:
        try:
            for row in dataset.iter_rows():
                self._results.put(row)
        except BaseException as exc:                # surfaced on the driver's thread
            self._results.put(exc)

    def stage_state(self) -> dict[str, Any]:
        return {"queues": {"pending": {"items": self._pending.qsize(), "bytes": 0}}, "images_bytes": 0,
                "in_flight": len(self._in_ray)}


def _raise_flag(output: Path, flag: str) -> None:
    """Create the drain flag (OUT/.gpupipe/drain-…) as every file below OUT is made: folders entered
    by fd without following a link, the file O_EXCL|O_NOFOLLOW. Where it cannot be made, the
    tasks are not told: they finish the window they have, which the driver then waits for."""
    relative = PurePath(flag).relative_to(output)
    try:
        directory = writer.open_output_dir(str(output), relative.parts[:-1])
    except GpupipeError as exc:
        log.warning("cannot tell the Ray tasks to stop reading: %s", exc)
        return
    try:
        os.close(os.open(relative.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=directory))
    except OSError as exc:
        log.warning("cannot tell the Ray tasks to stop reading: %s: %s", flag, exc.strerror)
    finally:
        os.close(directory)


# ---------------------------------------------------------------------- the Ray Data pipeline

def build_dataset(ray, items: list[dict], spec: Spec, output: Path, backend: str, opts: RunOptions, drain_flag,
                  policy: stages.WritePolicy, actors: bool = False):
    """One operator: each block of inputs through ``unit.run_chunk``, one row of outcome per input.

    On the CPU the blocks go to tasks: worker processes are reused from run to run, and the
    NumPy backend holds no state worth an actor. A GPU's state is (CUDA context, compiled
    kernels, pinned buffers), so GPU blocks go to actors, each batching its block on its
    device. Blocks are big enough that Ray's per-task cost (~10 ms) is small
    against the work, and there are enough of them (4 per CPU) that every core stays busy
    to the end.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if backend == "gpu" else 0
    cpus = max(1, int(resources.get("CPU", 1)))
    rows_per_block = max(1, min(64, -(-len(items) // (4 * cpus))))
    dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // rows_per_block)))
    work = unit.Work(spec, output, policy, opts.fsync, opts.max_pixels, int(opts.max_memory * 0.8),
                     stop_at_failure=opts.on_error == "stop", spans=opts.spans)
    how = dict(work=work, drain_flag=drain_flag)
    if not actors:
        return dataset.map_batches(_chunk_in_a_task, fn_kwargs=how, batch_size=None, num_cpus=1,
                                   batch_format="numpy")
    # On GPUs, an actor per CPU core, sharing the GPUs out (the local engine's worker processes,
    # each with its own device context): read, decode, encode and write scale with the cores.
    size = max(gpus, cpus) if gpus else 1
    return dataset.map_batches(_ChunkActor, fn_constructor_kwargs=dict(how, backend=backend,
                                                                       device_failures=opts.device_failures),
                               batch_size=None, compute=ray.data.ActorPoolStrategy(size=size),
                               num_cpus=1, num_gpus=gpus / size if gpus else 0, batch_format="numpy")


_drain_checked: dict[str, tuple[float, bool]] = {}    # per worker process: flag -> (last look, answer)


def _told_to_drain(flag: str) -> bool:
    """Whether the driver said to read nothing new; looked up at most twice a second."""
    now = time.monotonic()
    checked, answer = _drain_checked.get(flag, (0.0, False))
    if not answer and now - checked > 0.5:
        answer = os.path.exists(flag)
        _drain_checked[flag] = (now, answer)
    return answer


_cpu_units: dict[str, tuple] = {}         # per worker process: spec hash -> (its Device, op trie)


def _chunk_in_a_task(batch: dict, *, work: unit.Work, drain_flag: str) -> dict:
    """A block on the CPU, in a Ray task (its worker process keeps the backend between tasks)."""
    key = work.spec.hash()
    if key not in _cpu_units:
        _cpu_units.clear()
        _cpu_units[key] = (Device(lambda: _make_backend("cpu")), OpTrie.build(work.spec.variants))
    device, trie = _cpu_units[key]
    return _run_block(batch, work, drain_flag, device, trie)


class _ChunkActor:
    """An actor holding one device context (a GPU's, or a CPU core in the tests) for its blocks."""

    def __init__(self, work: unit.Work, drain_flag: str, backend: str, device_failures: int) -> None:
        self.work, self.drain_flag = work, drain_flag
        self.device = Device(lambda: _make_backend(backend), failures_allowed=device_failures,
                             where="this Ray actor")
        self.trie = OpTrie.build(work.spec.variants)

    def __call__(self, batch: dict) -> dict:
        return _run_block(batch, self.work, self.drain_flag, self.device, self.trie)


def _run_block(batch: dict, work: unit.Work, drain_flag: str, device: Device, trie: OpTrie) -> dict:
    """The local engine's unit of work (unit.run_chunk) on one block of inputs: pixels never leave
    the process, and the block's files get one round of fsyncs. A block has no claims and no
    journal: the paths the journal wrote come with each input, and an output whose path the
    decoded format changed is written here, unclaimed."""
    items = [unit.Item(int(index), str(path), str(relative), tuple(json.loads(planned)),
                       int(size), float(mtime), guess or None)
             for index, path, relative, planned, size, mtime, guess in zip(
                 batch["index"], batch["path"], batch["relative"], batch["planned"], batch["size"], batch["mtime"],
                 batch["guess"])]
    replaceable = frozenset(p for paths in batch["replaceable"] for p in json.loads(paths))
    work = dataclasses.replace(work, replaceable=replaceable)
    # asked per input (answered from a cache twice a second): a drain stops a long block too
    done = unit.run_chunk(items, work, device, trie, unit.Budget(work.memory),
                          stop=lambda: unit.STOP if _told_to_drain(drain_flag) else unit.GO,
                          worker=f"ray-{os.getpid()}")
    outcomes = dict(done.outcomes)
    for unclaimed in done.unclaimed:
        failure = unit.write_unclaimed(outcomes[unclaimed.key], unclaimed.files, unclaimed.errors, work)
        done.system_failure = done.system_failure or failure
    offset = time.time() - time.perf_counter()            # spans as wall-clock times: the driver maps them
    metas = [json.dumps(_meta(key, outcomes[key], offset), default=json_value)
             for key in (int(i) for i in batch["index"])]
    notes = json.dumps([done.handover] if done.handover else [])
    return {"index": batch["index"], "meta": np.array(metas, dtype=object),
            "system_failure": np.array([done.system_failure or "" for _ in metas], dtype=object),
            "notes": np.array([notes for _ in metas], dtype=object)}


def _meta(index: int, outcome: FileOutcome, offset: float) -> dict:
    """An outcome as the driver's _fill reads it back."""
    return {"index": index, "status": outcome.status, "error_class": outcome.error_class, "message": outcome.message,
            "format": outcome.format, "width": outcome.width, "height": outcome.height, "attempts": outcome.attempts,
            "bytes_in": outcome.bytes_in, "bytes_out": outcome.bytes_out, "outputs": outcome.outputs,
            "sizes": outcome.output_sizes, "checksums": outcome.output_checksums, "seconds": outcome.seconds,
            "size": outcome.size, "mtime": outcome.mtime, "fault": outcome.fault, "tags": outcome.tags,
            "spans": [[stage, start + offset, end + offset, worker] for stage, start, end, worker in outcome.spans]}


# ---------------------------------------------------------------------- helpers


def _make_backend(choice: str):
    from ..backends import select_backend
    backend = select_backend(choice, workers=1)
    if backend.name == "cpu":
        import cv2
        cv2.setNumThreads(1)          # one actor per core already: OpenCV's pool would only contend
    return backend


def _cancelled(outcome: FileOutcome) -> FileOutcome:
    outcome.status = CANCELLED
    return outcome


class _Clock:
    """Maps worker wall-clock times onto the driver's perf_counter timeline (for --trace)."""

    def __init__(self) -> None:
        self.offset = time.perf_counter() - time.time()

    def __call__(self, wall: float) -> float:
        return wall + self.offset


def _fill(outcome: FileOutcome, row: dict, clock: _Clock) -> None:
    meta = json.loads(row["meta"])
    outcome.status = meta["status"]
    outcome.error_class, outcome.message = meta.get("error_class"), meta.get("message")
    outcome.format, outcome.width, outcome.height = meta.get("format"), meta.get("width"), meta.get("height")
    outcome.attempts = meta.get("attempts", 0)
    outcome.bytes_in = meta.get("bytes_in", outcome.bytes_in)
    outcome.bytes_out = meta.get("bytes_out", 0)
    outcome.outputs, outcome.output_sizes, outcome.output_checksums = (
        meta.get("outputs", []), meta.get("sizes", []), meta.get("checksums", []))
    outcome.seconds = meta.get("seconds", {})
    if meta.get("mtime") is not None:       # the file as read, which may differ from what the scan saw
        outcome.size, outcome.mtime = meta["size"], meta["mtime"]
    outcome.fault = meta.get("fault")
    outcome.tags = meta.get("tags") or {}
    outcome.spans = [(stage, clock(start), clock(end), worker) for stage, start, end, worker in meta.get("spans", [])]

