"""The local engine's contract: chunks of inputs in worker processes.

Whatever the chunking and batching, every input found gets exactly one outcome and the
same files; a worker that dies costs the input it was on and nothing else; a
stuck one trips the watchdog; the memory budget holds across all workers together.
Faults are real: workers are killed with SIGKILL, as the OOM killer kills them, by a
decode that the test swaps in before the workers are forked (they inherit it).
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing.connection
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image

import gpupipe
from gpupipe import sources
from gpupipe.engine import pool as pool_module
from gpupipe.engine import stages
from gpupipe.engine.driver import WORKER_CRASHES_IN_A_ROW
from gpupipe.engine.processes import CHUNK_FILES
from gpupipe.ops import GaussianBlur, Thumbnail
from gpupipe.spec import Spec, Variant

from tests.support import devices, procs
from tests.support.badfiles import EXPECTED_ERROR_CLASS, PHOTO, make_bad_inputs

THUMB = Spec.single([Thumbnail(48)])
MARK = b"gpupipe-test-marker"           # after a JPEG's end: decoders ignore it, the swapped decode does not


def _jpegs(directory: Path, count: int, marked: set[int] = frozenset()) -> Path:
    directory.mkdir(parents=True)
    with Image.open(PHOTO) as im:
        small = im.resize((64, 48))
    for i in range(count):
        buffer = io.BytesIO()
        small.rotate(i).save(buffer, "JPEG", quality=90)
        (directory / f"{i:04d}.jpg").write_bytes(buffer.getvalue() + (MARK if i in marked else b""))
    return directory


def _on_marked(monkeypatch: pytest.MonkeyPatch, action) -> None:
    real = stages.decode_input

    def decode(data, spec, **how):
        if data.endswith(MARK):
            action()
        return real(data, spec, **how)
    monkeypatch.setattr(stages, "decode_input", decode)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _outputs(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file() and ".gpupipe" not in p.parts}


def _workers_of_this_process() -> list[int]:
    return [pid for pid in procs.children(os.getpid()) if procs.command_line(pid) == procs.command_line(os.getpid())]


def test_chunks_and_device_batches_make_the_same_files_and_outcomes(tmp_path: Path) -> None:
    """One worker, two, and two batching for a (stand-in) device: the same files and outcomes."""
    inputs = _jpegs(tmp_path / "in", 2 * CHUNK_FILES + 7)        # several chunks, and a partial one
    kinds = make_bad_inputs(inputs / "bad")
    # Two variants, one keeping the input's format: a PNG named .jpg is written as .png, a path
    # the worker chose and the driver must still claim.
    spec = Spec((Variant((Thumbnail(40),), name="thumb", format="jpeg"),
                 Variant((GaussianBlur(1.5),), name="blur")))
    one = gpupipe.run(inputs, tmp_path / "one", spec, backend="cpu", workers=1)
    processes = gpupipe.run(inputs, tmp_path / "processes", spec, backend="cpu", workers=2, spans=True)
    batched = devices.run_on(devices.StandInDevice, spec, inputs, tmp_path / "device", spans=True)
    assert processes.summary.backend == "cpu (NumPy/OpenCV/Pillow, 2 worker processes)"
    assert batched.summary.backend == "stand-in-device (NumPy)"
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "processes") == _outputs(tmp_path / "device")
    assert len(_outputs(tmp_path / "processes")) >= 2 * (2 * CHUNK_FILES + 7)

    def outcomes(result) -> dict:
        return {o.path: (o.status, o.error_class, o.message, o.format, o.width, o.height,
                         sorted(Path(p).name for p in o.outputs)) for o in result.outcomes}
    assert outcomes(processes) == outcomes(one) == outcomes(batched)
    # A device's batch is processed together: several inputs share one process span.
    spans = [next(span for span in o.spans if span[0] == "process") for o in batched.outcomes if o.status == "ok"]
    assert len(set(spans)) < len(spans) / 2
    by_name = {Path(o.path).name: o for o in processes.outcomes}
    for kind, path in kinds.items():
        if path.name in by_name and EXPECTED_ERROR_CLASS[kind] is not None:
            assert by_name[path.name].error_class == EXPECTED_ERROR_CLASS[kind], kind
    ok = [o for o in processes.outcomes if o.status == "ok"]
    assert all({"read", "decode", "process", "encode", "write"} <= set(o.seconds) for o in ok)
    assert {worker for o in ok for *_, worker in o.spans} == {"gpupipe-worker-0", "gpupipe-worker-1"}
    unasked = [o for o in one.outcomes if o.status == "ok"]              # spans only when asked (--trace)
    assert all(not o.spans and {"read", "decode", "process", "encode", "write"} <= set(o.seconds) for o in unasked)
    # The journal holds one row per input, and a second run skips them all.
    again = gpupipe.run(inputs, tmp_path / "processes", spec, backend="cpu", workers=2)
    assert again.summary.processed == 0 and again.summary.skipped == len(processes.outcomes)


def test_a_run_that_keeps_no_outcomes_counts_and_records_the_same(tmp_path: Path) -> None:
    """Without a list of outcomes or a callback (the CLI's usual run) the inputs that went well come
    back to the run as counts (unit.ChunkDone.counted): the same summary, the same journal, the same
    inputs skipped next time, and the failures still one by one."""
    inputs = _jpegs(tmp_path / "in", 2 * CHUNK_FILES + 7)
    make_bad_inputs(inputs / "bad")
    kept = gpupipe.run(inputs, tmp_path / "kept", THUMB, backend="cpu", workers=2)
    counted = gpupipe.run(inputs, tmp_path / "counted", THUMB, backend="cpu", workers=2, keep_outcomes=False)
    assert counted.outcomes == [] and kept.summary.failed > 0

    def comparable(summary) -> dict:
        return {k: v for k, v in summary.to_dict().items()
                if k not in ("wall_seconds", "images_per_second", "megabytes_per_second", "cpu_seconds_by_stage",
                             "memory_peak_by_worker_mb")}
    assert comparable(counted.summary) == comparable(kept.summary)
    assert counted.summary.processed == 2 * CHUNK_FILES + 7 + sum(o.status == "ok" for o in kept.outcomes
                                                                  if "/bad/" in o.path)

    def rows(out: Path) -> list:
        with sqlite3.connect(out / ".gpupipe" / "journal.sqlite") as db:
            found = db.execute("SELECT path, size, state, error_class FROM inputs ORDER BY path").fetchall()
            outputs = db.execute("SELECT size, checksum FROM outputs ORDER BY checksum").fetchall()
        return [(bytes(p).split(b"/in/")[1], *rest) for p, *rest in found] + outputs
    assert rows(tmp_path / "counted") == rows(tmp_path / "kept")
    again = gpupipe.run(inputs, tmp_path / "counted", THUMB, backend="cpu", workers=2, keep_outcomes=False)
    assert again.summary.processed == 0
    assert again.summary.skipped == kept.summary.processed + kept.summary.failed


def test_every_input_found_gets_exactly_one_outcome(tmp_path: Path) -> None:
    inputs = _jpegs(tmp_path / "in", 3 * CHUNK_FILES + 1)
    seen = []
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, on_outcome=seen.append)
    assert len(seen) == len(result.outcomes) == 3 * CHUNK_FILES + 1
    assert len({o.path for o in seen}) == len(seen) and all(o.status == "ok" for o in seen)
    with sqlite3.connect(tmp_path / "out" / ".gpupipe" / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM inputs WHERE state = 'ok'").fetchone()[0] == len(seen)
        assert db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] == len(seen)


@pytest.mark.parametrize("keep_outcomes", [True, False])
def test_a_run_stopped_while_the_scan_still_lists_gives_every_input_it_found_one_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_outcomes: bool) -> None:
    """The listing is slow (a network mount: the real scan, 2 ms an entry after the first chunk's
    worth) and the run stops at its first failure (--on-error stop) while the scan is mid-way:
    the inputs the scan had found but not yet handed on are cancelled, not dropped."""
    inputs = _jpegs(tmp_path / "in", 2 * CHUNK_FILES)
    (inputs / "0000.jpg").write_bytes(b"not a JPEG at all")
    real = sources.discover

    def slow(*args, **kwargs):
        for n, found in enumerate(real(*args, **kwargs)):
            if n >= CHUNK_FILES // 2:
                time.sleep(0.002)
            yield found
    monkeypatch.setattr(sources, "discover", slow)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, on_error="stop",
                         keep_outcomes=keep_outcomes)
    summary = result.summary
    assert not summary.scan_complete and 0 < summary.discovered < 2 * CHUNK_FILES
    assert summary.failed == 1 and summary.cancelled > 0
    assert summary.processed + summary.failed + summary.skipped + summary.cancelled == summary.discovered
    if keep_outcomes:
        assert len({o.path for o in result.outcomes}) == len(result.outcomes) == summary.discovered


def test_many_workers_committing_to_one_journal_record_each_input_once(tmp_path: Path) -> None:
    """16 workers (on however few cores), each committing the chunks it finishes to the run's journal
    (SQLite: one writer at a time, so their transactions queue): every input recorded once, with its
    output, and a rerun skips them all."""
    count = 16 * 40
    inputs = _jpegs(tmp_path / "in", count)
    out = tmp_path / "out"
    result = gpupipe.run(inputs, out, THUMB, backend="cpu", workers=16, keep_outcomes=False)
    assert result.summary.processed == count and result.exit_code == 0
    assert sum(peak > 0 for peak in result.summary.memory_peak_by_worker) >= 8     # most of them did work
    with sqlite3.connect(out / ".gpupipe" / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM inputs WHERE state = 'ok'").fetchone() == (
            count, count)
        assert db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] == count
    assert len(_outputs(out)) == count
    again = gpupipe.run(inputs, out, THUMB, backend="cpu", workers=16, keep_outcomes=False)
    assert again.summary.processed == 0 and again.summary.skipped == count


def test_a_journal_swapped_for_a_link_mid_run_stops_the_run_and_the_link_is_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker opens its own connection to the journal when it first records a chunk: one planted
    there as a symbolic link since the run began is refused, the run stops with one message, and
    the link's target is left alone."""
    inputs = _jpegs(tmp_path / "in", 24, {0})
    journal, decoy = tmp_path / "j" / "journal.sqlite", tmp_path / "decoy"
    decoy.write_bytes(b"not yours")

    def plant() -> None:
        os.rename(journal, f"{journal}.moved")
        os.symlink(decoy, journal)
    _on_marked(monkeypatch, plant)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, journal=journal)
    assert "cannot record progress in the journal" in result.summary.stop_reason
    assert "symbolic link" in result.summary.stop_reason
    assert decoy.read_bytes() == b"not yours"
    assert not [o for o in result.outcomes if o.error_class == "internal"]


def test_a_worker_killed_on_an_input_fails_that_input_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count, marked = 2 * CHUNK_FILES, {3, CHUNK_FILES + 10, 2 * CHUNK_FILES - 1}
    inputs = _jpegs(tmp_path / "in", count, marked)
    _on_marked(monkeypatch, _die)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    failed = sorted(result.failed, key=lambda o: o.path)
    assert [Path(o.path).name for o in failed] == [f"{i:04d}.jpg" for i in sorted(marked)]
    assert all(o.error_class == "crashed" and "killed by SIGKILL" in o.message for o in failed)
    assert result.summary.processed == count - len(marked)
    written = _outputs(tmp_path / "out")
    assert len(written) == count - len(marked)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]      # no temporary left
    assert not _workers_of_this_process()
    # The workers recorded the inputs they finished, the run's own process the crashed ones: one row each.
    with sqlite3.connect(tmp_path / "out" / ".gpupipe" / "journal.sqlite") as db:
        rows = dict(db.execute("SELECT error_class, COUNT(*) FROM inputs GROUP BY error_class").fetchall())
    assert rows == {None: count - len(marked), "crashed": len(marked)}
    # The next run retries the crashed inputs (not their fault), and only those.
    monkeypatch.undo()
    again = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    assert again.summary.processed == len(marked) and again.summary.skipped == count - len(marked)


def _spy_on_queued_chunks(monkeypatch: pytest.MonkeyPatch, hold: Path | None = None) -> list[bool]:
    """For each chunk the run sends: whether its worker was busy with another (it queues behind).

    With ``hold`` (a file to be), the workers wait before each input until a chunk has been queued
    behind a busy worker, which makes that file: the cases that need a queued chunk meet one
    whatever this machine's speed (on a loaded one, workers could finish their first chunks before
    the scan had admitted the inputs that queueing waits for)."""
    queued: list[bool] = []
    real_send = pool_module.WorkerPool.send

    def send(self, worker, chunk):
        queued.append(worker in self.busy)
        if hold is not None and queued[-1]:
            hold.touch()
        real_send(self, worker, chunk)
    monkeypatch.setattr(pool_module.WorkerPool, "send", send)
    if hold is not None:
        real_decode = stages.decode_input

        def decode(data, spec, **how):
            deadline = time.monotonic() + 60
            while not hold.exists() and time.monotonic() < deadline:
                time.sleep(0.002)
            return real_decode(data, spec, **how)
        monkeypatch.setattr(stages, "decode_input", decode)
    return queued


MANY = 6 * CHUNK_FILES               # enough for every worker to hold a chunk queued behind its own


def test_no_chunk_is_queued_when_less_than_twice_the_chunks_to_go_round_are_admitted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued chunk cannot move to another worker: with little work left, what is admitted goes
    to whoever is idle first, so no worker holds a chunk while another has none."""
    inputs = _jpegs(tmp_path / "in", 2 * CHUNK_FILES * 2 - 1)
    queued = _spy_on_queued_chunks(monkeypatch)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, journal=False)
    assert result.summary.processed == 2 * CHUNK_FILES * 2 - 1
    assert queued and not any(queued)


def test_the_scan_wakes_the_engine_waiting_for_its_workers() -> None:
    """The engine's wait for its workers also watches the waker the scan sets when it admits inputs."""
    import threading

    from gpupipe.engine.processes import _Waker
    waker = _Waker()
    assert not multiprocessing.connection.wait([waker], 0)
    waker.set()
    waker.set()                                         # set twice: one clear() is enough
    assert multiprocessing.connection.wait([waker], 0) == [waker]
    waker.clear()
    assert not multiprocessing.connection.wait([waker], 0)
    threading.Timer(0.05, waker.set).start()
    started = time.monotonic()
    assert multiprocessing.connection.wait([waker], 10) == [waker]
    assert time.monotonic() - started < 5


def test_a_worker_killed_with_a_chunk_queued_behind_its_own_fails_only_the_input_it_was_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marked = {5, 2 * CHUNK_FILES + 17, 5 * CHUNK_FILES + 3}
    inputs = _jpegs(tmp_path / "in", MANY, marked)
    _on_marked(monkeypatch, _die)
    queued = _spy_on_queued_chunks(monkeypatch, hold=tmp_path / "queued")
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    assert any(queued), "no chunk ever waited behind another: the case under test did not happen"
    failed = sorted(Path(o.path).name for o in result.failed)
    assert failed == [f"{i:04d}.jpg" for i in sorted(marked)]
    assert result.summary.processed == MANY - len(marked) == len(_outputs(tmp_path / "out"))
    assert len(result.outcomes) == len({o.path for o in result.outcomes}) == MANY
    with sqlite3.connect(tmp_path / "out" / ".gpupipe" / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0] == MANY
    assert not _workers_of_this_process()


def test_a_worker_stuck_with_a_chunk_queued_behind_its_own_is_named_on_the_right_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog names the input a worker is on in whichever of its chunks it works on."""
    stuck = 3 * CHUNK_FILES + 40
    inputs = _jpegs(tmp_path / "in", MANY, {stuck})
    _on_marked(monkeypatch, lambda: time.sleep(3600))
    queued = _spy_on_queued_chunks(monkeypatch, hold=tmp_path / "queued")
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, journal=False, stall_timeout=1.5)
    assert any(queued)
    stalled = [Path(o.path).name for o in result.outcomes if o.error_class == "stalled"]
    assert stalled == [f"{stuck:04d}.jpg"] and f"{stuck:04d}.jpg" in result.summary.stop_reason
    assert len(result.outcomes) == len({o.path for o in result.outcomes}) == MANY
    assert not _workers_of_this_process()


@pytest.mark.parametrize("keep_outcomes", [True, False])
def test_ctrl_c_drains_workers_holding_queued_chunks_and_a_rerun_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_outcomes: bool) -> None:
    """The first Ctrl+C: each worker finishes its input, cancels the rest of its chunk and of the one
    queued behind it; every input gets one outcome, the run says how many the journal will skip,
    and a rerun does exactly the cancelled ones."""
    inputs = _jpegs(tmp_path / "in", MANY, {2 * CHUNK_FILES + 9})
    _on_marked(monkeypatch, lambda: os.kill(os.getppid(), signal.SIGINT))
    queued = _spy_on_queued_chunks(monkeypatch, hold=tmp_path / "queued")
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, keep_outcomes=keep_outcomes)
    assert any(queued)
    summary = result.summary
    assert summary.interrupted and summary.cancelled > 0
    assert summary.processed + summary.cancelled == MANY
    assert len(result.outcomes) == (MANY if keep_outcomes else 0)
    assert f"{summary.cancelled} input(s) left to do" in summary.stop_reason
    assert f"the journal skips the {summary.processed} input(s) it recorded" in summary.stop_reason
    assert len(_outputs(tmp_path / "out")) == summary.processed
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    again = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    assert again.summary.processed == summary.cancelled and again.summary.skipped == summary.processed


def test_workers_dying_on_input_after_input_stop_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = WORKER_CRASHES_IN_A_ROW + 6
    inputs = _jpegs(tmp_path / "in", count, marked=set(range(count)))
    _on_marked(monkeypatch, _die)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1, journal=False)
    summary = result.summary
    assert summary.failures_by_class["crashed"] == WORKER_CRASHES_IN_A_ROW
    assert f"worker processes died on {WORKER_CRASHES_IN_A_ROW} inputs in a row" in summary.stop_reason
    assert result.exit_code == 1
    assert summary.processed + summary.failed + summary.cancelled == count == len(result.outcomes)


def test_a_worker_stuck_on_an_input_trips_the_watchdog_and_is_killed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung codec in a thread can never be taken back; a hung worker process can."""
    inputs = _jpegs(tmp_path / "in", 20, marked={5})
    _on_marked(monkeypatch, lambda: time.sleep(3600))
    started = time.monotonic()
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, journal=False, stall_timeout=1.5)
    assert time.monotonic() - started < 30                          # it stopped, rather than hanging
    assert result.exit_code == 1 and "stalled" in result.summary.stop_reason
    stalled = [o for o in result.outcomes if o.error_class == "stalled"]
    assert [Path(o.path).name for o in stalled] == ["0005.jpg"]
    assert "0005.jpg" in result.summary.stop_reason
    assert len(result.outcomes) == 20                               # every input accounted for, once
    assert not _workers_of_this_process()


def test_workers_ignore_ctrl_c_and_stop_with_their_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl+C reaches the whole process group; the run, not its workers, decides what it means."""
    inputs = _jpegs(tmp_path / "in", 12, marked={0, 1})
    _on_marked(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGINT))
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, journal=False)
    assert result.summary.processed == 12 and result.exit_code == 0
    assert not _workers_of_this_process()


def test_the_memory_budget_holds_across_worker_processes() -> None:
    """Four processes taking random parts of one budget never hold more than it together; the
    part of one that dies holding some (and the lock) is given back."""
    total = 1000
    budget = pool_module.SharedBudget(total, 5)
    most = pool_module._fork.RawValue(ctypes.c_longlong, 0)

    def take(worker: int) -> None:
        budget.worker = worker
        rng = random.Random(worker)
        for _ in range(300):
            amount = rng.randrange(1, 600)
            budget.acquire(amount)
            budget._lock_up()
            try:
                most.value = max(most.value, budget.used)
            finally:
                budget._unlock()
            budget.release(amount)

    def hold_and_die() -> None:
        budget.worker = 4
        budget.acquire(700)
        budget._lock.acquire()
        budget._owner.value = 4
        os.kill(os.getpid(), signal.SIGKILL)

    dying = pool_module._fork.Process(target=hold_and_die)
    dying.start()
    dying.join()
    assert budget.used == 700
    budget.reclaim(4)
    assert budget.used == 0
    takers = [pool_module._fork.Process(target=take, args=(w,)) for w in range(4)]
    for process in takers:
        process.start()
    for process in takers:
        process.join(60)
        assert process.exitcode == 0
    assert budget.used == 0 and 0 < most.value <= total
    assert all(0 < peak <= total for peak in budget.peaks[:4]) and budget.peaks[4] == 700


def test_the_summary_says_how_the_workers_shared_the_memory_budget(tmp_path: Path) -> None:
    inputs = _jpegs(tmp_path / "in", 40)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, max_memory=100 * 2**20,
                         journal=False)
    summary = result.summary.to_dict()
    assert summary["memory_budget_mb"] == 80.0                        # 80 % of --max-memory
    peaks = summary["memory_peak_by_worker_mb"]
    assert len(peaks) == 2 and all(0 < peak <= 80.0 for peak in peaks)


def test_an_input_bigger_than_the_whole_budget_fails_alone(tmp_path: Path) -> None:
    inputs = _jpegs(tmp_path / "in", 6)
    Image.new("RGB", (4000, 3000), "gray").save(inputs / "big.png")
    result = gpupipe.run(inputs, tmp_path / "out", Spec.single([GaussianBlur(2)]), backend="cpu", workers=2,
                         max_memory=64 * 2**20, journal=False)
    assert [(Path(o.path).name, o.error_class) for o in result.failed] == [("big.png", "too_large")]
    assert "--max-memory 64 MB" in result.failed[0].message
    assert result.summary.processed == 6


def test_the_run_folds_the_outputs_of_a_chunk_into_one_round_of_fsyncs(tmp_path: Path) -> None:
    """Nothing is under a final name before the chunk's files are synced: a run killed in a
    chunk leaves only temporaries there, which the next run removes."""
    inputs = _jpegs(tmp_path / "in", 10)
    # Killed (with its run) as the chunk's files are about to be synced and put in place.
    script = (f"import os, signal, gpupipe\n"
              f"from gpupipe.engine import writer\n"
              f"def finish(self):\n"
              f"    os.kill(os.getppid(), signal.SIGKILL); os.kill(os.getpid(), signal.SIGKILL)\n"
              f"writer.ChunkWrites.finish = finish\n"
              f"gpupipe.run({str(inputs)!r}, {str(tmp_path / 'out')!r}, [gpupipe.ops.Thumbnail(48)], backend='cpu', "
              f"workers=1)\n")
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    left = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".gpupipe")
    assert all(name.endswith(".tmp") for name in left) and len(left) == 10   # staged, never placed
    again = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=1)
    assert again.summary.processed == 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".gpupipe") == \
        [f"{i:04d}.jpg" for i in range(10)]


def test_workers_die_with_their_run_and_leave_nothing_locked(tmp_path: Path) -> None:
    """The run's process killed with SIGKILL (the OOM killer, kill -9) while its workers are
    busy: the kernel ends the workers too, and the next run takes OUT and its journal at once."""
    import subprocess
    import sys

    inputs = _jpegs(tmp_path / "in", 6, marked={0, 1, 2, 3, 4, 5})
    ready = tmp_path / "busy"
    script = (f"import os, time, gpupipe\n"
              f"from gpupipe.engine import stages\n"
              f"real = stages.decode_input\n"
              f"def decode(data, spec, **how):\n"
              f"    if data.endswith({MARK!r}):\n"
              f"        open({str(ready)!r} + str(os.getpid()), 'w').close()\n"
              f"        time.sleep(3600)\n"
              f"    return real(data, spec, **how)\n"
              f"stages.decode_input = decode\n"
              f"gpupipe.run({str(inputs)!r}, {str(tmp_path / 'out')!r}, [gpupipe.ops.Thumbnail(48)], backend='cpu', "
              f"workers=2)\n")
    run = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("busy*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(p.name[len("busy"):]) for p in tmp_path.glob("busy*")]
    assert len(workers) == 2 and set(workers) <= set(procs.children(run.pid))
    run.kill()
    run.wait(30)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and procs.state(pid) != "Z" for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its run"
        time.sleep(0.05)
    again = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    assert again.summary.processed == 6


def test_a_run_after_this_process_used_opencvs_thread_pool_does_not_hang(tmp_path: Path) -> None:
    """An application that used OpenCV's own thread pool, then calls gpupipe.run: a forked worker
    that changed the pool's settings would hang for ever (its parent's pool threads are not in
    the child), so the run's process sets them before forking and restores them after."""
    import cv2
    import numpy as np
    before = cv2.getNumThreads()
    cv2.setNumThreads(4)
    try:
        cv2.GaussianBlur(np.zeros((2000, 2000, 3), np.uint8), (31, 31), 0)      # the pool's threads run
        inputs = _jpegs(tmp_path / "in", 12)
        result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2, stall_timeout=20)
        assert result.exit_code == 0 and result.summary.processed == 12
        assert cv2.getNumThreads() == 4                              # the application's setting, back
    finally:
        cv2.setNumThreads(before)


def test_a_device_this_process_opened_already_works_in_this_process(tmp_path: Path) -> None:
    """CUDA opened by the application before the run cannot be used by a forked worker: the run
    then works in this process (BackendChoice.in_process), with the same files and outcomes."""
    import dataclasses

    from gpupipe.engine.options import RunOptions
    from gpupipe.engine.processes import ProcessEngine
    inputs = _jpegs(tmp_path / "in", CHUNK_FILES + 9)
    make_bad_inputs(inputs / "bad")
    here = dataclasses.replace(devices.choice(devices.StandInDevice), in_process=True)
    before = set(procs.children(os.getpid()))
    result = ProcessEngine(THUMB, here, RunOptions(workers=2, spans=True)).run([inputs], tmp_path / "here")
    forked = devices.run_on(devices.StandInDevice, THUMB, inputs, tmp_path / "forked")
    assert set(procs.children(os.getpid())) == before
    assert _outputs(tmp_path / "here") == _outputs(tmp_path / "forked")
    assert sorted((o.path, o.status, o.error_class) for o in result.outcomes) == \
        sorted((o.path, o.status, o.error_class) for o in forked.outcomes)
    assert {worker for o in result.outcomes for *_, worker in o.spans} == {"gpupipe-worker-0"}


def test_a_run_in_this_process_that_keeps_no_outcomes_records_every_input(tmp_path: Path) -> None:
    """Its worker is a thread that records nothing itself: this process records every input."""
    import dataclasses

    from gpupipe.engine.options import RunOptions
    from gpupipe.engine.processes import ProcessEngine
    from gpupipe.journal import Journal
    inputs = _jpegs(tmp_path / "in", CHUNK_FILES + 9)
    here = dataclasses.replace(devices.choice(devices.StandInDevice), in_process=True)
    journal = Journal.for_output(tmp_path / "out", THUMB.hash())
    try:
        result = ProcessEngine(THUMB, here, RunOptions(workers=2, keep_outcomes=False, journal=journal)).run(
            [inputs], tmp_path / "out")
    finally:
        journal.close()
    assert result.summary.processed == CHUNK_FILES + 9 and result.outcomes == []
    with sqlite3.connect(tmp_path / "out" / ".gpupipe" / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM inputs WHERE state = 'ok'").fetchone()[0] == CHUNK_FILES + 9


def test_workers_that_cannot_start_their_thread_stop_the_run_blaming_no_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """The limit on processes can be met inside a worker, by the one thread it starts (a container's
    pids limit counts threads, and which process takes the last one is a race): the OS refusing it
    is made certain here. The worker exits quietly, and the run stops at once with the limit's
    message: its inputs cancelled, none failed as if it had killed a worker."""
    import threading
    inputs = _jpegs(tmp_path / "in", 12)
    real_start = threading.Thread.start

    def start(thread) -> None:
        if thread.name.endswith("-inbox"):           # a worker's: the one the limit refuses here
            raise RuntimeError("can't start new thread")
        real_start(thread)
    monkeypatch.setattr(threading.Thread, "start", start)
    result = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    summary = result.summary
    assert summary.exit_code != 0 and summary.failed == 0 and summary.cancelled == 12
    assert "cannot start the worker processes (it could not start a thread: the limit on processes is reached)" in (
        summary.stop_reason)
    assert "Traceback" not in capfd.readouterr().err
    assert not _workers_of_this_process()


def test_a_limit_on_processes_stops_the_run_with_one_message(tmp_path: Path) -> None:
    """A container's pids limit leaves room for two workers of four: the run stops before any
    work with one message saying what to do, and leaves OUT free for the next run. The limit is
    real: a cgroup (v1 pids controller) the run's process is moved into."""
    import subprocess
    import sys
    pids = Path("/sys/fs/cgroup/pids")
    if not (pids / "cgroup.procs").is_file() or not os.access(pids, os.W_OK):
        pytest.skip("no writable cgroup-v1 pids controller here to limit the run's processes")
    inputs = _jpegs(tmp_path / "in", 8)
    # The run's process has threads of its libraries (OpenBLAS, OpenCV) before it forks, and each
    # counts: leave room for those and two workers of the four asked for.
    threads = int(subprocess.run([sys.executable, "-c", "import os, gpupipe.cli, cv2; from gpupipe.backends import "
                                  "choose_backend; choose_backend('cpu', workers=4); "
                                  "print(len(os.listdir('/proc/self/task')))"],
                                 capture_output=True, text=True, check=True).stdout)
    group = pids / f"gpupipe-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "pids.max").write_text(str(threads + 2))
        command = (f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -m gpupipe run {inputs} "
                   f"-o {tmp_path / 'out'} --thumbnail 32 -j 4 --backend cpu")
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    finally:
        # A helper process of the run (multiprocessing's) may still be exiting: wait for it to leave.
        deadline = time.monotonic() + 10
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        group.rmdir()
    assert done.returncode == 1, done.stderr
    assert "cannot start the worker processes" in done.stderr and "fewer --workers" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not any(p.suffix == ".jpg" for p in (tmp_path / "out").rglob("*"))     # no work was done
    again = gpupipe.run(inputs, tmp_path / "out", THUMB, backend="cpu", workers=2)
    assert again.exit_code == 0 and again.summary.processed == 8                   # OUT and its journal free
