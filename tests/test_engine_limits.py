"""The engine's limits: every input found gets exactly one outcome however a run ends, inputs are
read as they are when read (not as the scan saw them), and --max-memory holds for big images
and enlarging ops. Real files, real threads and locks, real subprocesses."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import gpupipe
from gpupipe import ops, sources
from gpupipe.backends import select_backend
from gpupipe.engine import stages
from gpupipe.engine.local import LocalEngine
from gpupipe.engine.options import RunOptions
from gpupipe.errors import InputError, UnreadableInput
from gpupipe.spec import Spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "photos"
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


def _photos(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copy(PHOTOS[i % len(PHOTOS)], directory / f"{i:02d}.jpg")
    return directory


def _one_outcome_each(result, found: int) -> None:
    """Exactly one outcome per input found, and the summary's counts agree with them."""
    summary = result.summary
    paths = [o.path for o in result.outcomes]
    assert len(paths) == len(set(paths)) == found == summary.discovered
    assert summary.processed + summary.failed + summary.skipped + summary.cancelled == found


# ------------------------------------------------------------------ finding 12: one outcome each


@pytest.mark.parametrize("stall_timeout", [-1.0, 0.0, 0.02])
def test_a_watchdog_that_fires_while_threads_still_work_never_counts_an_input_twice(
        tmp_path: Path, stall_timeout: float) -> None:
    """A stall timeout shorter than one image's work (or none at all: the API and the CLI refuse
    those, the engine must still count right) fails the inputs the threads hold; the threads then
    come back with those same inputs. Each must still be counted once."""
    src = _photos(tmp_path / "in", 3)
    spec = Spec.single([ops.Resize(2000, 2000, mode="exact"), ops.GaussianBlur(4.0)])
    engine = LocalEngine(spec, select_backend("cpu", workers=2),
                         RunOptions(workers=2, stall_timeout=stall_timeout))
    result = engine.run([src], tmp_path / "out")
    time.sleep(1.0)                       # let the threads the watchdog gave up on come back
    _one_outcome_each(result, 3)
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
    scanned = {item.path.name: item for item in sources.discover([src])}
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
