"""The engine's limits: every input found gets exactly one outcome however a run ends, inputs are
read as they are when read (not as the scan saw them), and --max-memory holds for big images
and enlarging ops. Real files, real threads and locks, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest

import gpupipe
from gpupipe import ops, sources
from gpupipe.backends import choose_backend
from gpupipe.engine import stages
from gpupipe.engine.processes import ProcessEngine
from gpupipe.engine.options import RunOptions
from gpupipe.errors import InputError, UnreadableInput
from gpupipe.journal import Journal
from gpupipe.spec import OpTrie, Spec
from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


def _photos(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copy(PHOTOS[i % len(PHOTOS)], directory / f"{i:02d}.jpg")
    return directory


def _one_outcome_each(result, found: int, kept: bool = True) -> None:
    """Exactly one outcome per input found, and the summary's counts agree with them (``kept``: the
    run kept its outcomes; a run that keeps none makes an outcome only for an input that does not
    go well, and counts the rest)."""
    summary = result.summary
    paths = [o.path for o in result.outcomes]
    assert len(paths) == len(set(paths)) == (found if kept else 0)
    assert summary.discovered == found
    assert summary.processed + summary.failed + summary.skipped + summary.cancelled == found


# ------------------------------------------------------------------ finding 12: one outcome each


class _JournalThatBlocksOn(Journal):
    """A real journal whose decision for one input waits on an Event the test holds: the scan
    thread then waits inside Python's threading module, the shape of a real deadlock."""

    def __init__(self, path: Path, name: str, release: threading.Event) -> None:
        super().__init__(path, "spec")
        self._name, self._release = name, release

    def decide_many(self, found):
        if any(Path(path).name == self._name for path, _, _ in found):
            self._release.wait()
        return super().decide_many(found)


@pytest.mark.parametrize("keep_outcomes", [True, False])
def test_an_input_whose_thread_waits_forever_on_a_lock_still_gets_its_one_outcome(
        tmp_path: Path, keep_outcomes: bool) -> None:
    """The scan thread blocks (threading.Event.wait) while admitting the group holding 05.jpg: the
    watchdog stops the run, and those inputs, found but never handed on, fail as "stalled" instead
    of vanishing."""
    src = _photos(tmp_path / "in", 10)
    release = threading.Event()
    journal = _JournalThatBlocksOn(tmp_path / "journal.sqlite", "05.jpg", release)
    engine = ProcessEngine(Spec.single([ops.Thumbnail(32)]), choose_backend("cpu", workers=1),
                           RunOptions(workers=1, journal=journal, stall_timeout=1.0, keep_outcomes=keep_outcomes))
    try:
        started = time.monotonic()
        result = engine.run([src], tmp_path / "out")
        assert time.monotonic() - started < 30
    finally:
        release.set()
        journal.close(None)
    _one_outcome_each(result, 10, keep_outcomes)       # all found, in one group that was never admitted
    assert result.summary.failures_by_class == {"stalled": 10}
    assert all((o.status, o.error_class) == ("failed", "stalled") for o in result.outcomes)
    assert result.summary.processed == 0 and "stalled" in result.summary.stop_reason


@pytest.mark.parametrize("keep_outcomes", [True, False])
@pytest.mark.parametrize("stall_timeout", [-1.0, 0.0, 0.02])
def test_a_watchdog_that_fires_while_workers_still_work_never_counts_an_input_twice(
        tmp_path: Path, stall_timeout: float, keep_outcomes: bool) -> None:
    """A stall timeout shorter than one image's work (or none at all: the API and the CLI refuse
    those, the engine must still count right) fails the inputs the workers hold; a worker may
    still come back with those same inputs. Each must still be counted once."""
    src = _photos(tmp_path / "in", 3)
    spec = Spec.single([ops.Resize(2000, 2000, mode="exact"), ops.GaussianBlur(4.0)])
    engine = ProcessEngine(spec, choose_backend("cpu", workers=2),
                           RunOptions(workers=2, stall_timeout=stall_timeout, keep_outcomes=keep_outcomes))
    result = engine.run([src], tmp_path / "out")
    time.sleep(1.0)                       # let what the watchdog gave up on come back
    _one_outcome_each(result, 3, keep_outcomes)
    assert result.summary.failed == sum(result.summary.failures_by_class.values())
    if keep_outcomes:
        assert result.summary.failed == len(result.failed)


@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_every_ending_gives_every_input_found_one_outcome(tmp_path: Path, on_error: str) -> None:
    """--on-error stop ends the run at the first failure: what was in flight or queued is
    cancelled, each input once."""
    src = _photos(tmp_path / "in", 12)
    (src / "00.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(64)], backend="cpu", workers=2,
                         journal=False, on_error=on_error)
    _one_outcome_each(result, 12)
    assert result.summary.failed >= 1


# ------------------------------------------------------------------ finding 9 and inputs that change


def test_reading_refuses_special_files_swapped_in_after_the_scan_without_hanging(tmp_path: Path) -> None:
    """The scan saw regular files; by the time they are read a FIFO (no writer: a blocking open
    would never return), a socket and a device stand there. Each fails at once, clearly."""
    fifo, sock_path = tmp_path / "fifo.jpg", tmp_path / "sock.jpg"
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        for path, kind in ((fifo, "a FIFO"), (sock_path, "a socket"), (Path("/dev/zero"), "a character device")):
            started = time.monotonic()
            with pytest.raises(UnreadableInput, match=f"not a regular file \\({kind}\\)") as caught:
                stages.read_input_with_retries(path, retries=3, retry_delay=0.5, wait=lambda s: False)
            assert time.monotonic() - started < 1.0                    # no hang, and no retries
            assert getattr(caught.value, "fault", None) is None        # not a device fault either
    finally:
        server.close()


def test_an_input_is_recorded_as_it_was_read_not_as_the_scan_saw_it(tmp_path: Path) -> None:
    """Size and mtime come from the open file: what the journal keeps matches the bytes used."""
    path = tmp_path / "a.jpg"
    path.write_bytes(PHOTOS[0].read_bytes())
    scanned = path.stat()
    path.write_bytes(PHOTOS[1].read_bytes())              # changed after the scan
    os.utime(path, (scanned.st_atime + 100, scanned.st_mtime + 100))
    read = stages.read_input_with_retries(path, retries=0, retry_delay=0, wait=lambda s: False)
    assert read.data == PHOTOS[1].read_bytes()
    assert (read.size, read.mtime) == (len(read.data), scanned.st_mtime + 100)


def test_a_vanished_input_fails_as_unreadable_and_a_shrunk_one_is_decoded_as_it_is(tmp_path: Path) -> None:
    """Found by the scan, then deleted or cut short before the read: the one fails as unreadable
    ("vanished"), the other is read short and its decoder reports the truncation."""
    src = _photos(tmp_path / "in", 3)
    scanned = {item.relative: item for item in sources.discover([src])}
    (src / "01.jpg").unlink()
    data = (src / "02.jpg").read_bytes()
    (src / "02.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableInput, match="vanished"):
        sources.read_input(scanned["01.jpg"].path)
    read = sources.read_input(scanned["02.jpg"].path)
    assert read.size == len(data) // 2 < scanned["02.jpg"].size
    with pytest.raises(InputError) as caught:
        stages.decode_input(read.data, Spec.single([ops.Thumbnail(32)]), max_pixels=10**8)
    assert caught.value.error_class == "truncated"


# ------------------------------------------------------------------ finding 11: --max-memory holds


MAX_MEMORY = 512 * 2**20


def _run_measured(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """``gpupipe run ARGS`` in a process of its own: (its result, its peak RSS in bytes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gpupipe", "run", *args, "--no-journal"], stdout=out,
                                stderr=subprocess.STDOUT, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read()), usage.ru_maxrss * 1024


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A small PNG whose header and data declare width×height black RGB pixels (a header bomb
    that is also a valid image: it decodes, to gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + 3 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _report(tmp_path: Path, name: str) -> dict[str, dict]:
    data = json.loads((tmp_path / name).read_text())
    return {Path(o["path"]).name: o for o in data["files"]}


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> int:
    """What a run of one small photo peaks at: the interpreter, the libraries, the engine."""
    src = _photos(tmp_path_factory.mktemp("base") / "in", 1)
    result, peak = _run_measured(str(src), "-o", str(src.parent / "out"), "--thumbnail", "64")
    assert result.returncode == 0, result.stdout
    return peak


def test_inputs_and_chains_bigger_than_max_memory_fail_as_too_large_and_the_run_goes_on(
        tmp_path: Path, baseline_rss: int) -> None:
    """--max-memory 512MB: a PNG declaring 13000² (1.7 GB to decode), one photo resized to
    20000² (5 GB) and photos padded to 30000² (11 GB) each fail alone as too_large, with the
    figures, before any of that memory is taken; the photo that fits is made."""
    src = tmp_path / "in"
    src.mkdir()
    _png_declaring(src / "bomb.png", 13000, 13000)
    shutil.copy(PHOTOS[0], src / "photo.jpg")
    cases = {"thumbnail": (["--thumbnail", "64"], {"bomb.png"}),
             "exact": (["--resize", "20000x20000", "--exact"], {"bomb.png", "photo.jpg"}),
             "pad": (["--resize", "30000x30000", "--pad"], {"bomb.png", "photo.jpg"})}
    for name, (spec, too_large) in cases.items():
        report = f"{name}.json"
        result, peak = _run_measured(str(src), "-o", str(tmp_path / name), *spec, "--max-memory", "512MB",
                                     "--report", str(tmp_path / report))
        outcomes = _report(tmp_path, report)
        assert result.returncode == 1 and "Traceback" not in result.stdout, result.stdout
        assert {n for n, o in outcomes.items() if o.get("error_class") == "too_large"} == too_large, outcomes
        assert {n for n, o in outcomes.items() if o["status"] == "ok"} == {"photo.jpg", "bomb.png"} - too_large
        for n in too_large:
            assert "MB at its peak" in outcomes[n]["message"] and "--max-memory 512 MB" in outcomes[n]["message"]
        assert peak < baseline_rss + 64 * 2**20, (name, peak / 2**20)     # nothing big was ever allocated


def test_max_memory_holds_when_several_big_results_would_be_made_at_once(tmp_path: Path, baseline_rss: int) -> None:
    """Three inputs each enlarged to 5000² (about 300 MB apiece at the peak) by three workers:
    each fits --max-memory 512MB alone, not together, so they take turns and the run's peak RSS
    stays within the budget over what a small run takes."""
    src = tmp_path / "in"
    src.mkdir()
    for photo in sorted(EXAMPLES.glob("*.*g")):          # two JPEG photos and a PNG
        shutil.copy(photo, src / photo.name)
    result, peak = _run_measured(str(src), "-o", str(tmp_path / "out"), "--resize", "5000x5000", "--exact",
                                 "--max-memory", "512MB", "--workers", "3", "--format", "png")
    assert result.returncode == 0, result.stdout
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert peak < baseline_rss + MAX_MEMORY, (peak / 2**20, baseline_rss / 2**20)


def test_memory_need_counts_each_ops_result_and_temporaries() -> None:
    """The estimate follows the chain: an enlarging op costs its output, a shrink its input pass,
    and on a GPU the host holds only the input and the results."""
    def need(chain, on_host=True):
        return stages.processing_need(OpTrie.build(Spec.single(chain).variants), 1800, 1200, ops_on_host=on_host)

    small, big = need([ops.Thumbnail(64)]), need([ops.Resize(8000, 8000, mode="exact")])
    assert small < 40 * 2**20 and big > 8000 * 8000 * 4 * 2
    assert need([ops.Resize(8000, 8000, mode="exact"), ops.Thumbnail(64)]) > big * 0.9   # the big one in between
    assert need([ops.Resize(8000, 8000, mode="exact")], on_host=False) < big
    assert need([ops.Resize(8000, 8000, mode="pad")]) > need([ops.Resize(8000, 8000, mode="fit")])


def test_memory_need_follows_a_jpegs_shrink_on_load() -> None:
    """A thumbnail of a JPEG decodes at a DCT scale: its need is that of the small decode, so a
    small --max-memory still makes thumbnails of big photos (tests/test_api.py runs 16 MB)."""
    data = PHOTOS[0].read_bytes()

    def need(chain):
        spec = Spec.single(chain)
        return stages.memory_need(data, spec, OpTrie.build(spec.variants), ops_on_host=True)

    thumb, blur = need([ops.Thumbnail(32)]), need([ops.GaussianBlur(2.0)])
    assert thumb.decode * 32 < blur.decode and thumb.peak < 2**20 < blur.peak
