"""The Ray engine: the local engine's unit of work in Ray tasks, on a cluster.

    listing (driver) ─▶ chunks of inputs ─▶ unit.run_chunk (CPU tasks, or GPU actors: one per core)
                     ─▶ outcomes (driver: journal, progress)

The driver hands each chunk of admitted inputs to a Ray task (on a GPU, to an actor
holding a device context) as the scan admits them, keeps two chunks in flight per core
(one running, one queued behind it, so no core waits for the driver), and takes the
outcomes back as each chunk ends. Each chunk goes through ``unit.run_chunk``: read,
decode, ops (on a GPU in batches, with the local engine's fallback), encode and write,
with one round of fsyncs per chunk. Pixels never leave the process that decoded them;
only the inputs' names go out and their outcomes come back.

The bookkeeping — claims, journal, summary, exit code — is the shared ``Driver`` on the
caller's machine, so outputs are byte-identical to the local engine's and every input
gets exactly one outcome.

Inputs and outputs must be on storage every node sees (a shared filesystem):
tasks read and write them directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path, PurePath
from typing import Any, Sequence

from ..errors import GpupipeError, UsageError
from ..spec import OpTrie, Spec
from . import unit, writer
from .cancel import CancelToken
from .driver import CHUNK_WAIT, Admitted, Driver
from .options import RunOptions
from .device import Device
from .results import FileOutcome, RunResult

log = logging.getLogger("gpupipe")

CHUNK_FILES = 64                  # inputs per task at most: Ray's cost per task (a few ms) is small against them
CHUNK_BYTES = 16 * 2**20          # input bytes per task: large files make small tasks (balance)
IN_FLIGHT_PER_CPU = 2             # tasks handed to Ray per core: one running, one queued behind it
ADMITTED_MOST = 20_000            # inputs admitted ahead of the tasks: bounds the driver's listing in memory
POLL = 0.05                       # seconds between looks at progress, drain and stall while tasks run
ABORT_CLEANUP_WAIT = 5.0          # seconds a run stopped mid-chunk waits for its local cluster's workers to end


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray: pip install 'gpupipe[ray]' ({exc})") from exc
    return ray


class RayEngine(Driver):
    def __init__(self, spec: Spec, backend: str, options: RunOptions | None = None,
                 cancel: CancelToken | None = None, *, address: str | None = None, chunk_files: int = CHUNK_FILES,
                 actor_stages: bool | None = None) -> None:
        super().__init__(spec, f"{backend} on Ray", options, cancel)
        self.backend_choice = backend
        # Chunks to actors: always for a GPU; on the CPU only when asked (the tests run the GPU's
        # shape on CPU actors this way).
        self.actor_stages = backend == "gpu" if actor_stages is None else actor_stages
        self.address = address
        self._admitted = Admitted(max(1, chunk_files), CHUNK_BYTES)
        self._journal_wrote: dict[int, frozenset[str]] = {}   # per admitted input: its outputs the journal wrote
        self._wake = threading.Event()                      # the scan admitted inputs, or ended
        self._scan_done = threading.Event()
        self._tasks: dict[Any, list[unit.Item]] = {}        # in flight: Ray's reference -> its chunk
        self._runner: _Runner | None = None
        self._drain_flag = ""
        self._drain_told = False
        self._last_back = 0.0

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
        self._drain_flag = str(self.output / ".gpupipe" / f"drain-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        opts = self.options
        work = unit.Work(self.spec, self.output, self.write_policy, opts.fsync, opts.max_pixels,
                         int(opts.max_memory * 0.8), stop_at_failure=opts.on_error == "stop", spans=opts.spans)
        outcomes: list[FileOutcome] = []
        scanner = threading.Thread(target=self._scan_all, args=(inputs,), name="gpupipe-scan", daemon=True)
        try:
            self._runner = _Runner(ray, work, self._drain_flag, self.backend_choice, self.actor_stages,
                                   opts.device_failures)
            scanner.start()
            self._interruptible(lambda: self._drive(ray, outcomes))
        finally:
            in_flight = [item for chunk in self._tasks.values() for item in chunk]
            if self._aborted:                           # the tasks read nothing new, and end their chunk
                self._tell_tasks_to_drain()
            else:
                if scanner.ident is not None:
                    scanner.join(timeout=5)
                self._drain_done(outcomes)
                # Admitted but never handed to Ray, or handed and never back (the run stopped): cancelled.
                self._finish_unfinished(outcomes, stalled=False)
                self._close_summary()
            Path(self._drain_flag).unlink(missing_ok=True)
            self._runner = None                         # its actors, if any, end with it
            if started_here:
                ray.shutdown()
                if in_flight:       # an abort, a stall: its workers died mid-chunk, and what they left goes
                    self._remove_dead_workers_temporaries(in_flight, wait=ABORT_CLEANUP_WAIT)
        return RunResult(self.summary, outcomes)

    def _connect(self, ray) -> bool:
        """Join ``address``, or start a local cluster sized by --workers; True if started here."""
        if ray.is_initialized():
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
        logging.getLogger("ray").setLevel(logging.WARNING)
        return True

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
            self._wake.set()

    def _submit(self, items: list[unit.Item]) -> None:
        # Absolute paths: Ray workers run in another directory than the caller.
        # The planned outputs stay here: renamed outputs are not claimed across the cluster.
        # Which outputs the journal wrote is asked here: the tasks have no journal.
        for item in items:
            wrote = self._replaceable(item.planned)
            if wrote:
                self._journal_wrote[item.key] = wrote
        self._admitted.add([dataclasses.replace(item, path=os.path.abspath(item.path)) for item in items],
                           ADMITTED_MOST, self._stopping, self._wake.set)

    def _drive(self, ray, outcomes: list[FileOutcome]) -> None:
        """Hand chunks to Ray as the scan admits inputs, take their outcomes back as they end, until
        the scan is over and nothing is in flight (or the run stops: then the tasks are told to read
        nothing new, and what they did is taken back)."""
        runner = self._runner
        while True:
            if self._stopping():
                self._tell_tasks_to_drain()
            else:
                while len(self._tasks) < runner.capacity:
                    chunk = self._admitted.take(runner.cpus, self._scan_done.is_set())
                    if not chunk:
                        break
                    if not self._tasks:                 # a stall is counted from the first chunk in flight
                        self._last_back = time.perf_counter()
                    wrote = {item.key: self._journal_wrote.pop(item.key) for item in chunk
                             if item.key in self._journal_wrote}
                    self._tasks[runner.submit(chunk, wrote)] = chunk
            if not self._tasks and (self._stopping() or (self._scan_done.is_set() and not self._admitted.pending())):
                return
            ready = []
            if self._tasks:
                room = len(self._tasks) < runner.capacity and not self._scan_done.is_set()
                ready, left = ray.wait(list(self._tasks), num_returns=1, timeout=CHUNK_WAIT if room else POLL)
                if ready and left:                  # and every other that ended meanwhile
                    ready += ray.wait(left, num_returns=len(left), timeout=0)[0]
            else:                                   # nothing in flight: wait for the scan alone
                self._wake.wait(POLL if not self._admitted else CHUNK_WAIT)
                self._wake.clear()
            for ref in ready:
                self._chunk_back(ray, ref, outcomes)
            self._drain_done(outcomes)
            self._progress()
            idle, limit = time.perf_counter() - self._last_back, self.options.stall_timeout
            if self._tasks and idle > limit:
                self._trip(f"stalled: no input came back from Ray for {idle:.0f} s with "
                           f"{sum(map(len, self._tasks.values()))} in flight (--stall-timeout {limit:g})")
                self._tell_tasks_to_drain()
                return

    def _chunk_back(self, ray, ref, outcomes: list[FileOutcome]) -> None:
        """A chunk's outcomes, taken over by the driver's own objects and recorded together."""
        chunk = self._tasks.pop(ref)
        self._runner.finished(ref)
        self._last_back = time.perf_counter()
        try:
            done: unit.ChunkDone = ray.get(ref)
        except KeyboardInterrupt:
            raise
        except _worker_died(ray) as exc:            # killed (a codec crash, the OOM killer), or its machine lost
            # Which input killed it is not known here: the chunk is done again in halves.
            log.warning("a Ray worker died (%s) holding %d input(s)", exc.__class__.__name__, len(chunk))
            self._worker_died(None, chunk, exc.__class__.__name__, outcomes, worker="Ray worker process")
            return
        except Exception as exc:                    # Ray itself failed: stop with its reason
            self._trip(f"the Ray pipeline failed: {exc.__class__.__name__}: {exc}")
            return                                  # its inputs are cancelled at the end
        self._crashes_in_a_row = 0
        if done.system_failure:
            self._trip(done.system_failure)
        if done.handover and done.handover not in self.summary.notes:
            self.summary.notes.append(done.handover)
        clock = time.perf_counter() - time.time()   # the tasks' spans are wall-clock times (other machines)
        for _, result in done.outcomes:
            result.spans = _shifted(result.spans, clock)
        self._finish_many(list(self._take_over_chunk(done.outcomes).items()), outcomes)

    def _tell_tasks_to_drain(self) -> None:
        if not self._drain_told:
            self._drain_told = True
            _raise_flag(self.output, self._drain_flag)

    def stage_state(self) -> dict[str, Any]:
        return {"queues": {"admitted": {"items": len(self._admitted), "bytes": 0}}, "images_bytes": 0,
                "in_flight": sum(map(len, list(self._tasks.values())))}     # read from the metrics' thread


def _raise_flag(output: Path, flag: str) -> None:
    """Create the drain flag (OUT/.gpupipe/drain-…) as every file below OUT is made: folders entered
    by fd without following a link, the file O_EXCL|O_NOFOLLOW. Where it cannot be made, the
    tasks are not told: they finish the chunks they have, which the driver then waits for."""
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


def _worker_died(ray) -> tuple[type[BaseException], ...]:
    """Ray's errors for a chunk whose worker process (task or actor) died or was lost with its machine."""
    errors = ray.exceptions
    return tuple(getattr(errors, name) for name in ("WorkerCrashedError", "RayActorError", "OutOfMemoryError",
                                                     "NodeDiedError", "ObjectLostError") if hasattr(errors, name))


# ---------------------------------------------------------------------- where the chunks run

class _Runner:
    """Where chunks run: Ray tasks on the CPU (their worker processes are reused from run to run,
    and the NumPy backend holds no state worth an actor), or actors holding a device context
    each (a GPU's: CUDA context, compiled kernels, pinned buffers), one per core, sharing the
    GPUs out as the local engine's worker processes do, so read, decode, encode and write scale
    with the cores."""

    def __init__(self, ray, work: unit.Work, drain_flag: str, backend: str, actors: bool,
                 device_failures: int) -> None:
        resources = ray.cluster_resources()
        self.cpus = max(1, int(resources.get("CPU", 1)))
        shared = ray.put(work)                      # once, not with every chunk
        self._load: dict[Any, int] = {}             # actor -> chunks in flight
        self._actor_of: dict[Any, Any] = {}         # chunk in flight -> its actor
        # A chunk whose worker died is not retried by Ray (it would die again on the same input):
        # the driver does it again in halves (RayEngine._crashed).
        if not actors:
            task = ray.remote(num_cpus=1, max_retries=0)(_chunk_in_a_task)
            self._submit = lambda items, wrote: task.remote(items, wrote, shared, drain_flag)
            self.capacity = IN_FLIGHT_PER_CPU * self.cpus
            return
        gpus = int(resources.get("GPU", 0)) if backend == "gpu" else 0
        size = max(gpus, self.cpus) if gpus else 1
        # An actor that died is started again (its device context with it); its chunks are not retried.
        actor = ray.remote(_ChunkActor).options(num_cpus=1, num_gpus=gpus / size if gpus else 0, max_restarts=-1,
                                                max_task_retries=0)
        self._load = {actor.remote(shared, drain_flag, backend, device_failures): 0 for _ in range(size)}
        self.capacity = IN_FLIGHT_PER_CPU * size

    def submit(self, items: list[unit.Item], wrote: dict[int, frozenset[str]]):
        """Ray's reference to the chunk's ChunkDone."""
        if not self._load:
            return self._submit(items, wrote)
        actor = min(self._load, key=self._load.get)     # the least loaded: chunks differ in length
        self._load[actor] += 1
        ref = actor.run.remote(items, wrote)
        self._actor_of[ref] = actor
        return ref

    def finished(self, ref) -> None:
        actor = self._actor_of.pop(ref, None)
        if actor is not None:
            self._load[actor] -= 1


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


def _chunk_in_a_task(items: list[unit.Item], wrote: dict[int, frozenset[str]], work: unit.Work,
                     drain_flag: str) -> unit.ChunkDone:
    """A chunk on the CPU, in a Ray task (its worker process keeps the backend between tasks)."""
    key = work.spec.hash()
    if key not in _cpu_units:
        _cpu_units.clear()
        _cpu_units[key] = (Device(lambda: _make_backend("cpu")), OpTrie.build(work.spec.variants))
    device, trie = _cpu_units[key]
    return _run_chunk(items, wrote, work, drain_flag, device, trie)


class _ChunkActor:
    """An actor holding one device context (a GPU's, or a CPU core in the tests) for its chunks."""

    def __init__(self, work: unit.Work, drain_flag: str, backend: str, device_failures: int) -> None:
        self.work, self.drain_flag = work, drain_flag
        self.device = Device(lambda: _make_backend(backend), failures_allowed=device_failures,
                             where="this Ray actor")
        self.trie = OpTrie.build(work.spec.variants)

    def run(self, items: list[unit.Item], wrote: dict[int, frozenset[str]]) -> unit.ChunkDone:
        return _run_chunk(items, wrote, self.work, self.drain_flag, self.device, self.trie)


def _run_chunk(items: list[unit.Item], wrote: dict[int, frozenset[str]], work: unit.Work, drain_flag: str,
               device: Device, trie: OpTrie) -> unit.ChunkDone:
    """The local engine's unit of work (unit.run_chunk) on one chunk: pixels never leave the
    process, and the chunk's files get one round of fsyncs. A task has no claims and no journal:
    the paths the journal wrote come with the chunk (``wrote``), and an output whose path the
    decoded format changed is written here, unclaimed."""
    work = dataclasses.replace(work, replaceable=frozenset().union(*wrote.values()))
    # asked per input (answered from a cache twice a second): a drain stops a long chunk too
    done = unit.run_chunk_safely(items, work, device, trie, unit.Budget(work.memory),
                                 stop=lambda: unit.STOP if _told_to_drain(drain_flag) else unit.GO,
                                 worker=f"ray-{os.getpid()}")
    outcomes = dict(done.outcomes)
    for unclaimed in done.unclaimed:
        failure = unit.write_unclaimed(outcomes[unclaimed.key], unclaimed.files, unclaimed.errors, work)
        done.system_failure = done.system_failure or failure
    done.unclaimed = []
    clock = time.time() - time.perf_counter()            # spans as wall-clock times: the driver maps them
    for outcome in outcomes.values():
        outcome.spans = _shifted(outcome.spans, clock)
    return done


def _shifted(spans: list[tuple], by: float) -> list[tuple]:
    """Stage spans (stage, start, end, worker) with their times moved by ``by`` seconds."""
    return [(stage, start + by, end + by, worker) for stage, start, end, worker in spans]


def _make_backend(choice: str):
    from ..backends import select_backend
    if choice == "cpu":                  # one task per core already: OpenCV's pool would only contend
        if "cv2" in sys.modules:
            sys.modules["cv2"].setNumThreads(1)
        else:                            # read by OpenCV when an op loads it
            os.environ["OPENCV_FOR_THREADS_NUM"] = "1"
    return select_backend(choice, workers=1)
