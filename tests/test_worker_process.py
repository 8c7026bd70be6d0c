"""--parallel processes: the CPU backend's workers as real processes of their own.

They must make the same files and the same outcomes as the threads they replace, and a
worker that dies (killed here with real signals, as the OOM killer does) must cost the
one input it was on and nothing else.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path, PurePath

import pytest
from PIL import Image

import gpupipe
from gpupipe.engine.local import WORKER_CRASHES_IN_A_ROW
from gpupipe.engine.worker_process import WorkerProcess
from gpupipe.errors import WorkerCrashed
from gpupipe.ops import GaussianBlur, Thumbnail
from gpupipe.spec import Spec, Variant

from . import procs
from .badfiles import EXPECTED_ERROR_CLASS, PHOTO, make_bad_inputs
from .corpus import CORPUS, KODAK

THUMB = Spec.single([Thumbnail(48)])


def _small_jpegs(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True)
    with Image.open(PHOTO) as im:
        small = im.resize((64, 48))
    for i in range(count):
        small.rotate(i).save(directory / f"{i:02d}.jpg", quality=90)
    return directory


def _workers_of_this_process() -> list[int]:
    """PIDs of the worker processes this process started."""
    return [pid for pid in procs.children(os.getpid())
            if b"gpupipe.engine.worker_process" in procs.command_line(pid)]


class _FreezeReadyWorkers(logging.Handler):
    """Freeze the next ``times`` workers with SIGSTOP the moment the engine hears each is ready,
    before it hands them an input, so each then holds an input it never answers;
    ``then_kill`` kills each 0.3 s later, as the OOM killer would. Used as a context manager."""

    def __init__(self, times: int, then_kill: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.times, self.then_kill, self.caught = times, then_kill, []
        self._logger = logging.getLogger("gpupipe")

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.endswith("worker process %d ready") and len(self.caught) < self.times:
            pid = record.args[-1]
            os.kill(pid, signal.SIGSTOP)          # runs in the engine's thread, before it sends an input
            self.caught.append(pid)
            if self.then_kill:
                threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()

    def __enter__(self) -> "_FreezeReadyWorkers":
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def _outputs(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file() and ".gpupipe" not in p.parts}


def test_processes_make_the_same_files_and_outcomes_as_threads(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    kinds = make_bad_inputs(inputs / "bad")
    for path in KODAK[:4]:
        shutil.copy(path, inputs / Path(path).name)
    for name in ("Landscape_6.jpg", "Portrait_3.jpg"):           # EXIF orientations
        shutil.copy(CORPUS / "exif-orientation" / name, inputs / name)
    # Two variants, one keeping the input's format: a PNG named .jpg is written as .png, a
    # path the worker chose and the engine must still claim.
    spec = Spec((Variant((Thumbnail(64),), name="thumb", format="jpeg"),
                 Variant((GaussianBlur(1.5),), name="blur")))
    results = {}
    for parallel in ("threads", "processes"):
        results[parallel] = gpupipe.run(inputs, tmp_path / parallel, spec, backend="cpu", workers=2,
                                        parallel=parallel, journal=False, fsync=False)
    threads, processes = results["threads"], results["processes"]
    assert processes.summary.backend == "cpu (NumPy/OpenCV/Pillow, 2 worker processes)"
    assert threads.summary.backend == "cpu (NumPy/OpenCV/Pillow, 2 worker threads)"

    assert _outputs(tmp_path / "threads") == _outputs(tmp_path / "processes")
    assert len(_outputs(tmp_path / "processes")) >= 2 * 6

    def outcomes(result) -> dict:
        return {o.path: (o.status, o.error_class, o.message, o.format, o.width, o.height, o.outputs and
                         [Path(p).name for p in o.outputs]) for o in result.outcomes}
    assert outcomes(processes) == outcomes(threads)
    by_name = {Path(o.path).name: o for o in processes.outcomes}
    for kind, path in kinds.items():
        if path.name in by_name and EXPECTED_ERROR_CLASS[kind] is not None:
            assert by_name[path.name].error_class == EXPECTED_ERROR_CLASS[kind], kind
    ok = [o for o in processes.outcomes if o.status == "ok"]
    assert all({"decode", "process", "encode", "write"} <= set(o.seconds) for o in ok)
    assert all(worker.endswith("-process") for o in ok for stage, _, _, worker in o.spans if stage == "decode")


def test_a_worker_killed_on_an_input_fails_that_input_alone(tmp_path: Path) -> None:
    inputs = _small_jpegs(tmp_path / "in", 12)
    with _FreezeReadyWorkers(1) as killer:
        result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, parallel="processes",
                             journal=False, fsync=False)
    assert len(killer.caught) == 1
    failed = result.failed
    assert [o.error_class for o in failed] == ["crashed"], [(o.path, o.message) for o in failed]
    assert "killed by SIGKILL" in failed[0].message
    assert result.summary.processed == 11
    written = _outputs(tmp_path / "out")
    assert len(written) == 11 and not any(name.startswith(".") for name in written)   # no temporary left
    assert Path(failed[0].path).name not in written


def test_workers_dying_on_every_input_stop_the_run(tmp_path: Path) -> None:
    inputs = _small_jpegs(tmp_path / "in", WORKER_CRASHES_IN_A_ROW + 6)
    with _FreezeReadyWorkers(WORKER_CRASHES_IN_A_ROW):
        result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, parallel="processes",
                             journal=False, fsync=False)
    assert result.summary.failures_by_class["crashed"] == WORKER_CRASHES_IN_A_ROW
    assert result.exit_code == 1
    assert f"worker processes died on {WORKER_CRASHES_IN_A_ROW} inputs in a row" in result.summary.stop_reason
    assert result.summary.processed + result.summary.failed + result.summary.cancelled == len(list(inputs.iterdir()))


def test_a_worker_that_hangs_trips_the_stall_watchdog_and_is_killed(tmp_path: Path) -> None:
    """A hung codec in a thread can never be taken back; a hung worker process can."""
    inputs = _small_jpegs(tmp_path / "in", 6)
    started = time.monotonic()
    with _FreezeReadyWorkers(1, then_kill=False) as freezer:     # as a codec stuck in a loop: alive, silent
        result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, parallel="processes",
                             journal=False, stall_timeout=1.5)
    frozen = freezer.caught
    assert time.monotonic() - started < 30                               # it stopped, rather than hanging
    assert frozen and result.exit_code == 1 and "stalled" in result.summary.stop_reason
    stalled = [o for o in result.outcomes if o.error_class == "stalled"]
    assert len(stalled) == 1 and Path(stalled[0].path).name in result.summary.stop_reason
    assert len(result.outcomes) == 6                                     # every input accounted for, once
    deadline = time.monotonic() + 10                                     # and the frozen worker is gone
    while Path(f"/proc/{frozen[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _workers_of_this_process()


def _jpeg(size: tuple[int, int]) -> bytes:
    with Image.open(PHOTO) as im:
        buffer = io.BytesIO()
        im.resize(size).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def worker():
    """A started worker process for the thumbnail spec, closed after the test."""
    started = WorkerProcess(THUMB, 10**8, "test-worker")
    started.start()
    yield started
    started.close()


def test_a_worker_that_died_idle_is_replaced_without_losing_the_input(worker: WorkerProcess) -> None:
    first = worker.compute(_jpeg((64, 48)), PurePath("a.jpg"))
    assert first.failure is None and first.size == (48, 64)
    os.kill(worker.pid, signal.SIGKILL)
    dead = worker.pid
    deadline = time.monotonic() + 10
    while Path(f"/proc/{dead}").exists() and Path(f"/proc/{dead}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    again = worker.compute(_jpeg((80, 60)), PurePath("b.jpg"))
    assert again.failure is None and again.size == (60, 80) and worker.pid != dead
    [(path, data)] = again.encoded.files
    assert path == PurePath("b.jpg") and Image.open(io.BytesIO(data)).size == (48, 36)


def test_a_worker_killed_while_busy_raises_worker_crashed_and_restarts(worker: WorkerProcess) -> None:
    os.kill(worker.pid, signal.SIGSTOP)                # it holds the input below and never answers
    victim = worker.pid
    threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
    with pytest.raises(WorkerCrashed, match="killed by SIGKILL; out of memory"):
        worker.compute(_jpeg((64, 48)), PurePath("a.jpg"))
    after = worker.compute(_jpeg((64, 48)), PurePath("a.jpg"))
    assert after.failure is None and worker.pid != victim


def test_workers_ignore_ctrl_c_and_close_when_asked(worker: WorkerProcess) -> None:
    assert worker.compute(_jpeg((64, 48)), PurePath("a.jpg")).failure is None   # up and serving
    pid, process = worker.pid, worker._process
    os.kill(pid, signal.SIGINT)                        # Ctrl+C reaches the whole process group
    os.kill(pid, signal.SIGTERM)                       # as systemd's stop reaches the whole cgroup
    time.sleep(0.2)
    assert worker.compute(_jpeg((64, 48)), PurePath("b.jpg")).failure is None
    assert worker.pid == pid and process.poll() is None         # the same worker, not a replacement
    worker.close()
    assert process.returncode == 0                     # it left on its own when told, not killed


@pytest.mark.parametrize("interpreter,reason", [
    (shutil.which("false"), "a worker process did not start (exit status 1"),     # exits at once
    ("/nonexistent/python", "cannot start a worker process with '/nonexistent/python'"),   # an embedded Python
])
def test_a_worker_that_cannot_start_stops_the_run_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  interpreter: str, reason: str) -> None:
    inputs = _small_jpegs(tmp_path / "in", 3)
    monkeypatch.setattr("sys.executable", interpreter)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, parallel="processes",
                         journal=False)
    assert result.exit_code == 1
    assert reason in result.summary.stop_reason
    assert result.summary.cancelled == 3 and not _outputs(tmp_path / "out")


def test_workers_import_this_gpupipe_not_one_in_the_working_directory(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = _small_jpegs(tmp_path / "in", 3)
    decoy = tmp_path / "cwd" / "gpupipe"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy gpupipe in the working directory')\n")
    monkeypatch.chdir(decoy.parent)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, parallel="processes",
                         journal=False)
    assert result.summary.processed == 3, result.summary.stop_reason


def test_parallel_must_be_threads_or_processes(tmp_path: Path) -> None:
    with pytest.raises(gpupipe.UsageError, match="parallel must be one of threads, processes"):
        gpupipe.run(tmp_path, tmp_path / "out", THUMB, parallel="fibers")
