"""Whole runs over hostile inputs (tests/support/hostile.py): every input found gets exactly one outcome,
the one expected; no traceback, no temporary file left, nothing written outside OUT, and no byte
of a file's content in what gpupipe says about it."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support import hostile


def _can_drop_read_override() -> str | None:
    """Why permission-denied inputs cannot be made here, or None when they can: root reads
    anything, so the run then goes without root's DAC override (util-linux setpriv)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        return "running as root without setpriv: a chmod 000 file is still readable"
    return None


def gpupipe(*args: str, drop_read_override: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gpupipe", "run", *args]
    if drop_read_override and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", *command]
    return subprocess.run(command, capture_output=True, timeout=timeout)


def snapshot(root: Path, skip: Path) -> dict[bytes, tuple]:
    """Every entry below ``root`` except ``skip``: its type, size and modification time."""
    return {path: (st.st_mode, 0 if stat.S_ISDIR(st.st_mode) else st.st_size, st.st_mtime_ns)
            for path, st in hostile.walk(root, skip=os.fsencode(skip)) if path != os.fsencode(skip)}


def leftover_temporaries(out: Path) -> list[bytes]:
    return [path for path, _ in hostile.walk(out)
            if os.path.basename(path).endswith(b".tmp") or b".gpupipe-" in os.path.basename(path)]


def report_outcomes(report: Path) -> tuple[dict[bytes, dict], dict]:
    data = json.loads(report.read_text(encoding="utf-8"))
    files = [(os.fsencode(entry["path"]), entry) for entry in data["files"]]
    by_path = dict(files)
    assert len(by_path) == len(files), "an input got more than one outcome"
    return by_path, data["summary"]


@pytest.fixture
def tmp_path(tmp_path: Path):
    """pytest's tmp_path, emptied here: its deep trees would break pytest's own clean-up."""
    yield tmp_path
    hostile.remove_tree(tmp_path)
    tmp_path.mkdir()


def test_every_hostile_input_gets_exactly_its_one_outcome(tmp_path: Path) -> None:
    inputs, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    expected = hostile.build(inputs)
    denied = _can_drop_read_override() is None
    if denied:
        expected.update(hostile.make_unreadable(inputs))
    before = snapshot(tmp_path, out)

    done = gpupipe(str(inputs), "-o", str(out), "--thumbnail", "32", "--report", str(report), "-j", "2",
                   drop_read_override=denied)

    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")[-3000:]
    assert done.returncode == 1, done.stderr.decode(errors="replace")[-3000:]
    outcomes, summary = report_outcomes(report)
    problems = [os.fsencode(p) for p in summary["scan_problems"]]
    for path, want in expected.items():
        if want.status == "scan-problem":
            assert path not in outcomes and any(p.startswith(path + b":") for p in problems), path
            continue
        got = outcomes.get(path)
        assert got is not None, f"{path!r} got no outcome"
        assert want.matches(got["status"], got.get("error_class")), (path, got, want)
    assert set(outcomes) <= set(expected), set(outcomes) - set(expected)
    assert summary["processed"] + summary["failed"] + summary["skipped"] == len(outcomes)
    assert summary["cancelled"] == 0 and summary["stop_reason"] is None

    for path, got in outcomes.items():
        for output in got.get("outputs", []):
            output_b = os.fsencode(output)
            assert output_b.startswith(os.fsencode(out) + b"/")
            with Image.open(os.fsdecode(output_b)) as im:
                im.load()
    assert leftover_temporaries(out) == []
    after = snapshot(tmp_path, out)
    after.pop(os.fsencode(report))                     # the report asked for, the one new file
    assert after == before                             # nothing else outside OUT changed
    said = report.read_bytes() + done.stderr + done.stdout + b"".join(
        p.read_bytes() for p in (out / ".gpupipe").iterdir() if p.is_file())
    assert hostile.SECRET not in said


def test_inputs_that_change_vanish_or_shrink_while_the_run_reads_them(tmp_path: Path) -> None:
    """Files rewritten, cut short, deleted and turned into FIFOs while the run goes: whatever
    each read met, every input found gets exactly one outcome and the run ends by itself."""
    inputs, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    inputs.mkdir()
    good = hostile.encoded("jpeg", hostile.small_photo((320, 240)))
    names = [inputs / f"{i:03d}.jpg" for i in range(200)]
    for path in names:
        path.write_bytes(good)
    stop = threading.Event()

    def rewrite(path: Path, data: bytes) -> None:
        """In place, as an editor or a copy in progress would; never blocking on a FIFO (ENXIO)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def meddle() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            path = rng.choice(names)
            action = rng.randrange(4)
            try:
                if action == 0:
                    rewrite(path, good[: rng.randrange(len(good))])       # shrinks
                elif action == 1:
                    path.unlink()                                          # vanishes
                elif action == 2:
                    path.unlink()
                    os.mkfifo(path)                                        # a FIFO takes its name
                else:
                    if path.is_fifo():
                        path.unlink()
                    rewrite(path, good)                                    # back, whole
            except OSError:
                pass
            time.sleep(0.001)

    meddler = threading.Thread(target=meddle, daemon=True)
    meddler.start()
    try:
        done = gpupipe(str(inputs), "-o", str(out), "--thumbnail", "32", "--report", str(report), "-j", "2",
                       timeout=300)
    finally:
        stop.set()
        meddler.join()
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")[-3000:]
    assert done.returncode in (0, 1)
    outcomes, summary = report_outcomes(report)
    assert set(outcomes) <= {os.fsencode(p) for p in names}
    assert summary["cancelled"] == 0 and summary["stop_reason"] is None
    for got in outcomes.values():
        assert got["status"] in ("ok", "failed", "skipped")
        if got["status"] == "failed":
            assert got["error_class"] in ("truncated", "corrupt", "empty", "unreadable"), got
    assert leftover_temporaries(out) == []
